#include "targets.h"

#include <string_view>

#include "surf/config.h"
#include "surf/error.h"
#include "surf/storage/chunk.h"
#include "surf/storage/manifest.h"
#include "surf/storage/safetensors.h"
#include "surf/storage/torch_checkpoint.h"

namespace surf::fuzz {

namespace {

template <class Fn>
std::optional<std::string> refusal(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return std::string(e.what());
  }
  return std::nullopt;
}

std::string_view text(const uint8_t* data, size_t size) { return {reinterpret_cast<const char*>(data), size}; }

std::optional<std::string> chunk(const uint8_t* data, size_t size) {
  return refusal([&] {
    ByteBuffer scratch;
    const DecodedChunk d = decode_chunk(reinterpret_cast<const std::byte*>(data), size, "", scratch);
    for (const auto& t : d.tensors) {  // touch every byte the decoder claims is there
      volatile std::byte sink{};
      for (size_t i = 0; i < t.length; i += 4096) sink = t.data[i];
      (void)sink;
    }
  });
}

std::optional<std::string> safetensors_header(const uint8_t* data, size_t size) {
  return refusal([&] { parse_safetensors_header(text(data, size), 1 << 20, "fuzz"); });
}

std::optional<std::string> manifest(const uint8_t* data, size_t size) {
  return refusal([&] {
    const Manifest m = Manifest::from_json(std::string(text(data, size)));
    (void)ModelConfig::parse(m.config_json).model_type();
  });
}

std::optional<std::string> config(const uint8_t* data, size_t size) {
  return refusal([&] {
    const ModelConfig c = ModelConfig::parse(text(data, size));
    (void)c.model_type();
    (void)c.get_int("num_hidden_layers", 0);
    (void)c.get_float("rope_theta", 0.0);
    (void)c.dump();
  });
}

// data.pkl of a pytorch_model.bin: the restricted unpickler.
std::optional<std::string> torch_pickle(const uint8_t* data, size_t size) {
  return refusal([&] { (void)parse_torch_state_dict(text(data, size), "fuzz"); });
}

}  // namespace

const std::vector<Target>& targets() {
  static const std::vector<Target> all = {
      {"chunk", chunk},   {"safetensors_header", safetensors_header}, {"manifest", manifest},
      {"config", config}, {"torch_pickle", torch_pickle}};
  return all;
}

const Target& target(const std::string& name) {
  for (const auto& t : targets()) {
    if (name == t.name) return t;
  }
  fail(ErrorCode::not_found, "no fuzz target '" + name + "'");
}

}  // namespace surf::fuzz
