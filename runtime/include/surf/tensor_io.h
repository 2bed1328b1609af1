// Tensors in and out of a host program: safetensors files, and tensors over the caller's own
// memory. Part of the embedding API (no storage headers needed).
//
//   surf::TensorMap in = surf::load_safetensors("inputs.safetensors");
//   std::vector<int64_t> ids = {1, 15043, 3186};
//   in["input_ids"] = surf::borrow_tensor(surf::DType::I64, {1, 3}, ids.data());   // no copy
//   surf::TensorMap out = session->forward(in);
//   surf::save_safetensors("outputs.safetensors", out);
//   const float* logits = out.at("logits").f32();   // the runtime's buffer: no copy either
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <string>

#include "surf/runtime_export.h"
#include "surf/tensor.h"

SURF_RUNTIME_PUBLIC_BEGIN

namespace surf {

// Every tensor of a safetensors file in its dtype (F32, F16, BF16, I64); I32 tensors (ids as some
// tools save them) become I64. Errors: not_found (no such file), corrupt (a malformed header, a
// tensor outside the file or whose size does not match its shape: the file and the tensor named),
// unsupported (other dtypes, named). Each tensor gets its own aligned buffer.
TensorMap load_safetensors(const std::string& path);
// The file's "__metadata__" (string to string; empty when absent).
std::map<std::string, std::string> load_safetensors_metadata(const std::string& path);
// Writes `tensors` (sorted by name) and `metadata` as a safetensors file; Error(io) if it cannot.
void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// A tensor over memory the caller owns, without a copy. The caller keeps `data` alive and
// unchanged while the tensor or any copy of it lives (a call given it as input holds it until it
// returns; a future from forward_async until it is ready). Error(invalid_argument) for a bad shape.
Tensor borrow_tensor(DType dtype, Shape shape, const void* data);
// Same, with `owner` kept alive by the tensor and its copies (e.g. a shared_ptr to the container).
Tensor borrow_tensor(DType dtype, Shape shape, const void* data, std::shared_ptr<const void> owner);
// Copies t's elements into caller memory of `capacity` bytes; Error(invalid_argument) if it does
// not fit. Outputs need no copy to be read: Tensor::raw() / f32() / i64() point at them.
void copy_tensor_to(const Tensor& t, void* dst, size_t capacity);

}  // namespace surf

SURF_RUNTIME_PUBLIC_END
