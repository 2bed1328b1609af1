// Dense row-major tensors with shared, 64-byte aligned storage.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "surf/error.h"
#include "surf/export.h"

SURF_SDK_PUBLIC_BEGIN

namespace surf {

enum class DType : uint8_t { F32, F16, BF16, I64 };

using Shape = std::vector<int64_t>;

size_t dtype_size(DType dtype) noexcept;
// Safetensors spelling: "F32", "F16", "BF16", "I64".
const char* dtype_name(DType dtype) noexcept;
// Either spelling, any case ("BF16", "bf16"). Throws Error(unsupported) naming the dtype for anything else.
DType dtype_from_name(std::string_view name);
bool is_float(DType dtype) noexcept;
std::string shape_string(const Shape& shape);
// Element count. Throws Error(invalid_argument) for a negative dimension or more than 2^63 elements.
int64_t shape_numel(const Shape& shape);
// Bytes of a tensor of this shape; throws as shape_numel does, and above 2^62 bytes.
size_t shape_bytes(const Shape& shape, DType dtype);

// Element conversions to f32 (vectorisable loops; bf16 is a shift, f16 uses F16C when present).
void convert_to_f32(DType from, const void* src, float* dst, size_t count);
// f32 -> bf16/f16 with round-to-nearest-even (for the chunker's --dtype option).
void convert_from_f32(DType to, const float* src, void* dst, size_t count);

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(DType dtype, Shape shape);
  static Tensor zeros(DType dtype, Shape shape);
  // A view over memory owned elsewhere; `owner` keeps it alive.
  static Tensor view(DType dtype, Shape shape, const void* data, std::shared_ptr<const void> owner);
  static Tensor from_f32(Shape shape, const std::vector<float>& values);
  static Tensor from_i64(Shape shape, const std::vector<int64_t>& values);

  bool defined() const noexcept { return data_ != nullptr; }
  DType dtype() const noexcept { return dtype_; }
  const Shape& shape() const noexcept { return shape_; }
  int rank() const noexcept { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const;
  int64_t numel() const noexcept { return shape_numel(shape_); }
  size_t nbytes() const noexcept { return static_cast<size_t>(numel()) * dtype_size(dtype_); }

  const void* raw() const noexcept { return data_; }
  void* raw_mutable() const noexcept { return data_; }

  float* f32() { check(DType::F32); return static_cast<float*>(data_); }
  const float* f32() const { check(DType::F32); return static_cast<const float*>(data_); }
  int64_t* i64() { check(DType::I64); return static_cast<int64_t*>(data_); }
  const int64_t* i64() const { check(DType::I64); return static_cast<const int64_t*>(data_); }

  // Same storage, new shape with the same element count.
  Tensor reshape(Shape shape) const;
  // A deep copy (always owning).
  Tensor clone() const;
  // Float tensors as f32 (a copy unless already f32, then shared).
  Tensor to_f32() const;

 private:
  void check(DType want) const;

  std::shared_ptr<const void> owner_;
  void* data_ = nullptr;
  DType dtype_ = DType::F32;
  Shape shape_;
};

using TensorMap = std::map<std::string, Tensor, std::less<>>;

// Throws Error(invalid_argument) "NAME: expected ..." if the tensor does not match.
void expect_shape(const Tensor& t, const Shape& shape, std::string_view name);
void expect_dtype(const Tensor& t, DType dtype, std::string_view name);

}  // namespace surf

SURF_SDK_PUBLIC_END
