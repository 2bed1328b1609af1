#include "sources/component_provider.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "surf/log.h"
#include "surf/storage/backend.h"
#include "surf/storage/chunk.h"
#include "surf/storage/safetensors.h"

namespace surf {

namespace {
// Matrices this large stay 16-bit in memory (the ops convert them panel by panel); smaller
// tensors (norms, biases, small tables) are converted to f32 once. Q8_0/Q4_0 tensors (the chunker
// quantizes only linear-layer weights) always stay quantized: the ops take them as they are.
bool keep_16bit(const RawTensor& t) {
  return (t.dtype == DType::F16 || t.dtype == DType::BF16) && t.shape.size() >= 2 && t.length / 2 >= (1u << 16);
}
size_t converted_size(const RawTensor& t) { return (t.length * 2 + 63) / 64 * 64; }
}  // namespace

std::shared_ptr<LoadedComponent> materialize(const std::string& id, const std::vector<RawTensor>& raw,
                                             std::shared_ptr<const void> holder, size_t holder_bytes,
                                             BufferPool& pool) {
  size_t convert_bytes = 0;
  for (const auto& t : raw) {
    if ((t.dtype == DType::F16 || t.dtype == DType::BF16) && !keep_16bit(t)) convert_bytes += converted_size(t);
  }
  std::shared_ptr<ByteBuffer> converted;
  if (convert_bytes) converted = pool.acquire(convert_bytes);
  std::vector<std::pair<std::string, Tensor>> tensors;
  size_t at = 0;
  bool uses_holder = false;
  for (const auto& t : raw) {
    if ((t.dtype == DType::F16 || t.dtype == DType::BF16) && !keep_16bit(t)) {
      float* dst = reinterpret_cast<float*>(converted->data() + at);
      convert_to_f32(t.dtype, t.data, dst, t.length / 2);
      tensors.emplace_back(t.name, Tensor::view(DType::F32, t.shape, dst, converted));
      at += converted_size(t);
    } else {
      const size_t align = is_quantized(t.dtype) ? 2 : dtype_size(t.dtype);  // blocks start with an f16
      if (reinterpret_cast<uintptr_t>(t.data) % align != 0) {
        fail(ErrorCode::corrupt, "component '" + id + "': tensor '" + t.name + "' is misaligned");
      }
      tensors.emplace_back(t.name, Tensor::view(t.dtype, t.shape, t.data, holder));
      uses_holder = true;
    }
  }
  const uint64_t memory = (uses_holder ? holder_bytes : 0) + convert_bytes;
  return std::make_shared<LoadedComponent>(id, std::move(tensors), memory);
}

std::shared_ptr<LoadedComponent> decode_into_component(const std::string& id, std::shared_ptr<const void> holder,
                                                       const std::byte* chunk, size_t size, BufferPool& pool) {
  // Decompression needs a buffer of its own; plain chunks are used in place.
  const ChunkLayout layout = read_chunk_layout(chunk, size, id);
  auto scratch =
      layout.compression == Compression::zstd ? pool.acquire(layout.raw_size) : std::make_shared<ByteBuffer>();
  DecodedChunk d = decode_chunk(layout, *scratch, /*verify_checksum=*/false);
  std::vector<RawTensor> raw;
  for (const auto& t : d.tensors) raw.push_back({t.name, t.dtype, t.shape, t.data, t.length});
  if (d.compression == Compression::zstd) return materialize(id, raw, scratch, scratch->capacity(), pool);
  return materialize(id, raw, std::move(holder), size, pool);
}

}  // namespace surf
