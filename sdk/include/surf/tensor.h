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

// Q8_0 and Q4_0 (ABI 1.1) are GGML's block formats: runs of 32 consecutive elements along the
// last axis, each stored as one f16 scale d and 32 codes:
//   Q8_0  { f16 d; int8 qs[32]; }   34 bytes; element j = qs[j] * d
//   Q4_0  { f16 d; uint8 qs[16]; }  18 bytes; element j in the low nibble of qs[j], element j+16
//                                   in the high nibble; element = (nibble - 8) * d
// A quantized tensor has its logical shape (a weight [out, in] stays [out, in], blocks along `in`,
// the reduction axis of ops::linear); its last dimension must be a multiple of 32.
enum class DType : uint8_t { F32, F16, BF16, I64, Q8_0, Q4_0 };

using Shape = std::vector<int64_t>;

// Bytes per element; 0 for the block formats (use shape_bytes / row_bytes).
size_t dtype_size(DType dtype) noexcept;
// Safetensors spelling: "F32", "F16", "BF16", "I64"; GGML's for the block formats: "Q8_0", "Q4_0".
const char* dtype_name(DType dtype) noexcept;
// Either spelling, any case ("BF16", "bf16", "q8_0"). Throws Error(unsupported) naming the dtype for anything else.
DType dtype_from_name(std::string_view name);
// Real numbers, whatever the storage (F32, F16, BF16 and the block formats).
bool is_float(DType dtype) noexcept;
bool is_quantized(DType dtype) noexcept;
// Elements per block (32 for Q8_0/Q4_0, 1 otherwise) and bytes per block (34, 18; element size otherwise).
int64_t dtype_block_elements(DType dtype) noexcept;
size_t dtype_block_bytes(DType dtype) noexcept;
std::string shape_string(const Shape& shape);
// Element count. Throws Error(invalid_argument) for a negative dimension or more than 2^63 elements.
int64_t shape_numel(const Shape& shape);
// Storage bytes of a tensor of this shape (block formats: whole blocks); throws as shape_numel
// does, above 2^62 bytes, and when a block format's last dimension is not a multiple of its block.
size_t shape_bytes(const Shape& shape, DType dtype);
// Bytes of `elements` consecutive elements of a row; Error(invalid_argument) unless whole blocks.
size_t row_bytes(DType dtype, int64_t elements);

// Element conversions to f32 (vectorisable loops; bf16 is a shift, f16 uses F16C when present;
// Q8_0/Q4_0 are dequantized, `count` a multiple of 32).
void convert_to_f32(DType from, const void* src, float* dst, size_t count);
// f32 -> bf16/f16 with round-to-nearest-even (for the chunker's --dtype option); f32 -> Q8_0/Q4_0
// with GGML's reference quantizers (bit for bit), `count` a multiple of 32.
void convert_from_f32(DType to, const float* src, void* dst, size_t count);

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(DType dtype, Shape shape);
  static Tensor zeros(DType dtype, Shape shape);
  // A view over memory owned elsewhere; `owner` keeps it alive. A block format's last dimension
  // must be a multiple of its block (Error(invalid_argument) otherwise), as for empty().
  static Tensor view(DType dtype, Shape shape, const void* data, std::shared_ptr<const void> owner);
  static Tensor from_f32(Shape shape, const std::vector<float>& values);
  static Tensor from_i64(Shape shape, const std::vector<int64_t>& values);

  bool defined() const noexcept { return data_ != nullptr; }
  DType dtype() const noexcept { return dtype_; }
  const Shape& shape() const noexcept { return shape_; }
  int rank() const noexcept { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const;
  int64_t numel() const noexcept { return shape_numel(shape_); }
  // Storage bytes (block formats: whole blocks; the shape was checked when the tensor was made).
  size_t nbytes() const noexcept;

  const void* raw() const noexcept { return data_; }
  void* raw_mutable() const noexcept { return data_; }

  float* f32() {
    check(DType::F32);
    return static_cast<float*>(data_);
  }
  const float* f32() const {
    check(DType::F32);
    return static_cast<const float*>(data_);
  }
  int64_t* i64() {
    check(DType::I64);
    return static_cast<int64_t*>(data_);
  }
  const int64_t* i64() const {
    check(DType::I64);
    return static_cast<const int64_t*>(data_);
  }

  // Same storage, new shape with the same element count.
  Tensor reshape(Shape shape) const;
  // A deep copy (always owning).
  Tensor clone() const;
  // Float tensors as f32 (a copy unless already f32, then shared; block formats dequantized).
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
