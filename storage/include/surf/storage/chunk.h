// The chunk codec: one msgpack map per component.
//   magic "SURFCHNK", format_version, component, compression ("none"|"zstd"), raw_size,
//   tensors [{name, dtype, shape, offset, length}], pad (bin, aligns data to 64 bytes),
//   data (bin32: the tensor bytes, possibly compressed), checksum ("xxh3:<16 hex>" of data as stored)
// Decoding references the caller's buffer: tensor bytes are never copied (unless decompressed).
// Nothing else reads or writes this layout: callers ask read_chunk_layout, never scan for bytes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "surf/storage/buffer.h"
#include "surf/tensor.h"

namespace surf {

// Version 2 added the GGML block dtypes (Q8_0, Q4_0). Chunks without them are still written as
// version 1, so runtimes that predate the block formats keep reading unquantized stores.
inline constexpr int kChunkFormatVersion = 2;
inline constexpr int kChunkFormatVersionUnquantized = 1;

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

// A chunk's map decoded without touching its tensor bytes: magic, version and component checked,
// the tensor table checked against raw_size, the data field located (referenced, not copied).
struct ChunkLayout {
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    uint64_t offset;  // into the raw (decompressed) data
    uint64_t length;
  };
  std::string component;
  Compression compression = Compression::none;
  uint64_t raw_size = 0;
  std::vector<Entry> tensors;
  const std::byte* stored = nullptr;  // the data field as stored (compressed or not), in the input
  size_t stored_size = 0;
  std::string checksum;  // of the stored data, as the chunk records it
};

void encode_chunk(const std::string& component, const std::vector<ChunkTensorIn>& tensors, Compression compression,
                  int zstd_level, ByteBuffer& out);

// Verifies magic, version, component id (if expected non-empty), table bounds and, unless the
// caller already verified the whole chunk against its manifest checksum, the data checksum.
// `scratch` receives decompressed bytes when compressed. Errors are Error(corrupt) naming the
// component; a newer format version is Error(unsupported) naming both versions.
DecodedChunk decode_chunk(const std::byte* data, size_t size, std::string_view expected_component, ByteBuffer& scratch,
                          bool verify_checksum = true);

// The two steps of decode_chunk, for callers that choose the scratch buffer from the header
// (e.g. only when compressed, sized raw_size). Same errors.
ChunkLayout read_chunk_layout(const std::byte* data, size_t size, std::string_view expected_component);
// Tensors point into the input when stored plain, else into `scratch` (resized to raw_size).
DecodedChunk decode_chunk(const ChunkLayout& layout, ByteBuffer& scratch, bool verify_checksum = true);

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
