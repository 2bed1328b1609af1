// The chunk codec: one msgpack map per component.
//   magic "SURFCHNK", format_version, component, compression ("none"|"zstd"), raw_size,
//   tensors [{name, dtype, shape, offset, length}], pad (bin, aligns data to 64 bytes),
//   data (bin32: the tensor bytes, possibly compressed), checksum ("xxh3:<16 hex>" of data as stored)
// Decoding references the caller's buffer: tensor bytes are never copied (unless decompressed).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "surf/storage/buffer.h"
#include "surf/tensor.h"

namespace surf {

inline constexpr int kChunkFormatVersion = 1;

enum class Compression { none, zstd };
const char* compression_name(Compression c);
Compression compression_from_name(std::string_view name);

struct ChunkTensorIn {
  std::string name;
  DType dtype;
  Shape shape;
  const void* data;
  size_t length;
};

struct ChunkTensor {
  std::string name;
  DType dtype;
  Shape shape;
  const std::byte* data;  // points into the decoded buffer
  size_t length;
};

struct DecodedChunk {
  std::string component;
  Compression compression = Compression::none;
  std::vector<ChunkTensor> tensors;
};

void encode_chunk(const std::string& component, const std::vector<ChunkTensorIn>& tensors,
                  Compression compression, int zstd_level, ByteBuffer& out);

// Verifies magic, version, component id (if expected non-empty), table bounds and, unless the
// caller already verified the whole chunk against its manifest checksum, the data checksum.
// `scratch` receives decompressed bytes when compressed. Errors are Error(corrupt) naming the
// component; a newer format version is Error(unsupported) naming both versions.
DecodedChunk decode_chunk(const std::byte* data, size_t size, std::string_view expected_component,
                          ByteBuffer& scratch, bool verify_checksum = true);

// Whether the chunk's data is compressed (cheap: reads the header only). False if unreadable.
bool chunk_is_compressed(const std::byte* data, size_t size);

// "xxh3:" + 16 lowercase hex digits of XXH3-64.
std::string checksum_of(const void* data, size_t size);

// The same checksum computed piece by piece.
class StreamingChecksum {
 public:
  StreamingChecksum();
  ~StreamingChecksum();
  StreamingChecksum(const StreamingChecksum&) = delete;
  StreamingChecksum& operator=(const StreamingChecksum&) = delete;
  void update(const void* data, size_t size);
  std::string hex() const;

 private:
  void* state_;
};

}  // namespace surf
