// Random-weight HuggingFace checkpoints with the shapes of real models, for benchmarks and demos.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "synth.h"
#include "surf/runtime.h"
#include "surf/storage/safetensors.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace surf {

namespace {

struct LlamaPreset {
  const char* name;
  int64_t hidden, layers, heads, kv_heads, intermediate, vocab, max_positions;
  double eps;
};

constexpr LlamaPreset kLlamaPresets[] = {
    {"tiny", 64, 3, 4, 2, 172, 512, 128, 1e-6},
    {"small", 512, 8, 8, 4, 1376, 8000, 512, 1e-5},
    {"medium", 1024, 12, 16, 4, 2816, 16000, 1024, 1e-5},
    {"tinyllama-1.1b", 2048, 22, 32, 4, 5632, 32000, 2048, 1e-5},
};

// xorshift-based uniform noise with the given std; fast enough for GBs.
struct Noise {
  uint64_t s;
  float next(float stddev) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    const float u = static_cast<float>(s >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;  // [-1, 1)
    return u * stddev * 1.7320508f;                                                    // uniform with that std
  }
};

}  // namespace

std::vector<std::string> synth_presets(const std::string& arch) {
  std::vector<std::string> out;
  if (arch == "llama") {
    for (const auto& p : kLlamaPresets) out.push_back(p.name);
  }
  return out;
}

void synth_checkpoint(const std::string& out_dir, const SynthOptions& o) {
  if (o.arch != "llama") fail(ErrorCode::unsupported, "synth: unknown --arch '" + o.arch + "' (llama)");
  const LlamaPreset* p = nullptr;
  for (const auto& c : kLlamaPresets) {
    if (o.preset == c.name) p = &c;
  }
  if (p == nullptr) {
    std::string names;
    for (const auto& c : kLlamaPresets) names += std::string(names.empty() ? "" : ", ") + c.name;
    fail(ErrorCode::invalid_argument, "synth: unknown --preset '" + o.preset + "' (" + names + ")");
  }
  const DType dtype = dtype_from_name(o.dtype);
  if (!is_float(dtype)) fail(ErrorCode::invalid_argument, "synth: --dtype must be f32, bf16 or f16");

  fs::create_directories(out_dir);
  const int64_t head_dim = p->hidden / p->heads;
  json cfg = {{"architectures", {"LlamaForCausalLM"}},
              {"model_type", "llama"},
              {"hidden_size", p->hidden},
              {"num_hidden_layers", p->layers},
              {"num_attention_heads", p->heads},
              {"num_key_value_heads", p->kv_heads},
              {"intermediate_size", p->intermediate},
              {"vocab_size", p->vocab},
              {"max_position_embeddings", p->max_positions},
              {"rms_norm_eps", p->eps},
              {"rope_theta", 10000.0},
              {"hidden_act", "silu"},
              {"tie_word_embeddings", false},
              {"torch_dtype", dtype == DType::BF16  ? "bfloat16"
                              : dtype == DType::F16 ? "float16"
                                                    : "float32"},
              {"bos_token_id", 1},
              {"eos_token_id", 2}};
  std::ofstream(fs::path(out_dir) / "config.json") << cfg.dump(2) << "\n";

  struct Spec {
    std::string name;
    Shape shape;
    float stddev;  // 0: a norm weight (1 + small noise)
  };
  std::vector<Spec> specs;
  const float proj = 1.0f / std::sqrt(static_cast<float>(p->hidden));
  specs.push_back({"model.embed_tokens.weight", {p->vocab, p->hidden}, 0.02f});
  for (int64_t l = 0; l < p->layers; ++l) {
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    specs.push_back({pre + "input_layernorm.weight", {p->hidden}, 0});
    specs.push_back({pre + "self_attn.q_proj.weight", {p->heads * head_dim, p->hidden}, proj});
    specs.push_back({pre + "self_attn.k_proj.weight", {p->kv_heads * head_dim, p->hidden}, proj});
    specs.push_back({pre + "self_attn.v_proj.weight", {p->kv_heads * head_dim, p->hidden}, proj});
    specs.push_back({pre + "self_attn.o_proj.weight", {p->hidden, p->heads * head_dim}, proj});
    specs.push_back({pre + "post_attention_layernorm.weight", {p->hidden}, 0});
    specs.push_back({pre + "mlp.gate_proj.weight", {p->intermediate, p->hidden}, proj});
    specs.push_back({pre + "mlp.up_proj.weight", {p->intermediate, p->hidden}, proj});
    specs.push_back({pre + "mlp.down_proj.weight",
                     {p->hidden, p->intermediate},
                     1.0f / std::sqrt(static_cast<float>(p->intermediate))});
  }
  specs.push_back({"model.norm.weight", {p->hidden}, 0});
  specs.push_back({"lm_head.weight", {p->vocab, p->hidden}, proj});

  // Shards of at most shard_bytes, in tensor order, with an index like HF's when more than one.
  std::vector<std::vector<const Spec*>> shards(1);
  uint64_t in_shard = 0, total = 0;
  for (const auto& s : specs) {
    const uint64_t bytes = static_cast<uint64_t>(shape_numel(s.shape)) * dtype_size(dtype);
    if (in_shard > 0 && in_shard + bytes > o.shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&s);
    in_shard += bytes;
    total += bytes;
  }
  Noise noise{o.seed * 0x9E3779B97F4A7C15ull + 1};
  json weight_map = json::object();
  std::vector<float> f32;
  std::vector<std::byte> bytes;
  for (size_t i = 0; i < shards.size(); ++i) {
    char name[64];
    if (shards.size() == 1) {
      std::snprintf(name, sizeof name, "model.safetensors");
    } else {
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    }
    std::vector<SafetensorsWriter::Entry> entries;
    for (const Spec* s : shards[i]) {
      entries.push_back({s->name, dtype, s->shape});
      weight_map[s->name] = name;
    }
    SafetensorsWriter w(fs::path(out_dir) / name, entries, {{"format", "pt"}});
    for (const Spec* s : shards[i]) {
      const size_t n = static_cast<size_t>(shape_numel(s->shape));
      f32.resize(n);
      for (size_t k = 0; k < n; ++k) f32[k] = s->stddev > 0 ? noise.next(s->stddev) : 1.0f + noise.next(0.1f);
      bytes.resize(n * dtype_size(dtype));
      convert_from_f32(dtype, f32.data(), bytes.data(), n);
      w.write(bytes.data(), bytes.size());
    }
    w.finish();
  }
  // Sample inputs so a demo or benchmark can run the checkpoint right away.
  Tensor ids = Tensor::empty(DType::I64, {1, 32});
  for (int64_t i = 0; i < 32; ++i) {
    ids.i64()[i] = static_cast<int64_t>(noise.s % static_cast<uint64_t>(p->vocab));
    noise.next(1.0f);
  }
  Tensor mask = Tensor::empty(DType::I64, {1, 32});
  std::fill_n(mask.i64(), 32, 1);
  write_safetensors(fs::path(out_dir) / "inputs.safetensors", {{"input_ids", ids}, {"attention_mask", mask}});
  if (shards.size() > 1) {
    json idx = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    std::ofstream(fs::path(out_dir) / "model.safetensors.index.json") << idx.dump(2) << "\n";
  }
}

}  // namespace surf
