// Writes seed inputs for the fuzzers into DIR/<target>/ with the project's own encoders (wire
// messages, chunks, a manifest), so every harness starts from well-formed inputs and mutates
// from there. scripts/fuzz.sh adds fixtures' safetensors headers, configs and pickles.
#include <filesystem>
#include <fstream>
#include <vector>

#include "surf/storage/chunk.h"
#include "surf/storage/manifest.h"
#include "transport/wire.h"

namespace fs = std::filesystem;
using namespace surf;

namespace {

void write(const fs::path& dir, const std::string& target, const std::string& name, const void* data, size_t size) {
  fs::create_directories(dir / target);
  std::ofstream(dir / target / name, std::ios::binary)
      .write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
}

void write(const fs::path& dir, const std::string& target, const std::string& name, const ByteBuffer& b) {
  write(dir, target, name, b.data(), b.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const fs::path dir = argv[1];
  ByteBuffer b;
  wire::encode_request(b, {1, wire::Hello{1, "secret"}});
  write(dir, "wire_request", "hello", b);
  wire::encode_request(b, {2, wire::ListModels{}});
  write(dir, "wire_request", "list_models", b);
  wire::encode_request(b, {3, wire::GetManifest{"llama"}});
  write(dir, "wire_request", "get_manifest", b);
  wire::encode_request(b, {4, wire::GetChunk{"llama", "layers.0"}});
  write(dir, "wire_request", "get_chunk", b);

  wire::encode_answer(b, 1, wire::ErrorAnswer{ErrorCode::not_found, "no model 'x'"});
  write(dir, "wire_answer", "error", b);
  wire::encode_answer(b, 1, wire::HelloAnswer{1, "surf/0.1", 65536});
  write(dir, "wire_answer", "hello", b);
  wire::encode_answer(b, 2, wire::ListModelsAnswer{{{"llama", "llama", 6, 1234}, {"t5", "t5", 9, 99}}});
  write(dir, "wire_answer", "list_models", b);
  wire::encode_answer(b, 3, wire::ManifestAnswer{"llama", "{\"format\": \"surf-store\"}"});
  write(dir, "wire_answer", "manifest", b);

  std::vector<float> w(256, 0.5f);
  std::vector<uint16_t> h(64, 0x3f80);
  const std::vector<ChunkTensorIn> tensors = {{"w", DType::F32, {16, 16}, w.data(), w.size() * 4},
                                              {"norm", DType::BF16, {64}, h.data(), h.size() * 2}};
  for (Compression c : {Compression::none, Compression::zstd}) {
    ByteBuffer chunk;
    encode_chunk("layers.0", tensors, c, 3, chunk);
    write(dir, "chunk", std::string("chunk-") + compression_name(c), chunk);
    wire::ChunkAnswer a{"llama", "layers.0", checksum_of(chunk.data(), chunk.size()), nullptr, chunk.size()};
    wire::encode_chunk_answer_head(b, 4, a);
    b.append(chunk.data(), chunk.size());
    write(dir, "wire_answer", std::string("chunk-") + compression_name(c), b);
  }
  return 0;
}
