// LlamaForCausalLM: RMSNorm pre-norm decoder, rotate-half RoPE, grouped-query attention,
// SwiGLU MLP. Conventions follow HF modeling_llama.py (see shared/reference/README.md).
#include <algorithm>
#include <cmath>

#include "surf/decoding.h"
#include "surf/ops.h"
#include "surf/plugin.h"

namespace {

using namespace surf;

struct LlamaConfig {
  int64_t hidden, layers, heads, kv_heads, head_dim, intermediate, vocab, max_positions;
  double eps, theta;
  bool tied, attention_bias, mlp_bias;
  ops::Activation act;

  explicit LlamaConfig(const ModelConfig& c) {
    hidden = c.get_int("hidden_size");
    layers = c.get_int("num_hidden_layers");
    heads = c.get_int("num_attention_heads");
    kv_heads = c.get_int("num_key_value_heads", heads);
    head_dim = c.get_int("head_dim", heads > 0 ? hidden / heads : 0);
    intermediate = c.get_int("intermediate_size");
    vocab = c.get_int("vocab_size");
    max_positions = c.get_int("max_position_embeddings", 2048);
    eps = c.get_float("rms_norm_eps", 1e-6);
    // transformers v5 moved rope_theta into rope_parameters.
    theta = c.get_float("rope_theta", c.get_float("rope_parameters.rope_theta", 10000.0));
    tied = c.get_bool("tie_word_embeddings", false);
    attention_bias = c.get_bool("attention_bias", false);
    mlp_bias = c.get_bool("mlp_bias", false);
    act = ops::activation_from_name(c.get_string("hidden_act", "silu"));
    if (hidden <= 0 || layers <= 0 || heads <= 0 || kv_heads <= 0 || head_dim <= 0 || vocab <= 0) {
      fail(ErrorCode::invalid_argument, "llama config: sizes must be positive");
    }
    if (heads % kv_heads != 0) {
      fail(ErrorCode::invalid_argument, "llama config: num_attention_heads " + std::to_string(heads) +
                                            " is not a multiple of num_key_value_heads " +
                                            std::to_string(kv_heads));
    }
    if (c.has("rope_scaling")) {
      fail(ErrorCode::unsupported, "llama config: rope_scaling is not supported yet");
    }
  }
};

std::string layer_id(int64_t i) { return "layers." + std::to_string(i); }

class Llama final : public CausalLM {
 public:
  explicit Llama(const ModelConfig& c) : Llama(LlamaConfig(c)) {}

 private:
  explicit Llama(const LlamaConfig& cfg)
      : CausalLM({cfg.layers, cfg.hidden, cfg.vocab, cfg.kv_heads * cfg.head_dim, cfg.max_positions,
                  "max_position_embeddings"}),
        cfg_(cfg) {}

  Tensor run_layers(ComponentSource& src, const Tensor& ids, const Tensor& positions, const Tensor& key_mask,
                    int64_t batch, int64_t len, std::vector<ops::KVCache>& caches, bool cached,
                    Tensor* hidden_states) override {
    Tensor x;
    {
      ComponentRef embed = src.acquire("embed");
      x = ops::embedding(embed->get("weight"), ids);
    }
    if (hidden_states) store_layer(*hidden_states, 0, x);
    const int64_t q_width = cfg_.heads * cfg_.head_dim, kv_width = cfg_.kv_heads * cfg_.head_dim;
    for (int64_t l = 0; l < cfg_.layers; ++l) {
      ComponentRef layer = src.acquire(layer_id(l));
      const Component& w = *layer;
      Tensor n = ops::rms_norm(x, w.get("input_layernorm.weight"), static_cast<float>(cfg_.eps));
      Tensor q = ops::linear(n, w.get("self_attn.q_proj.weight"), w.find("self_attn.q_proj.bias"));
      Tensor k = ops::linear(n, w.get("self_attn.k_proj.weight"), w.find("self_attn.k_proj.bias"));
      Tensor v = ops::linear(n, w.get("self_attn.v_proj.weight"), w.find("self_attn.v_proj.bias"));
      if (q.dim(-1) != q_width || k.dim(-1) != kv_width || v.dim(-1) != kv_width) {
        fail(ErrorCode::invalid_argument, "layer " + std::to_string(l) + ": q/k/v projections do not match the config's heads");
      }
      ops::rope(q, cfg_.heads, cfg_.head_dim, positions.i64(), cfg_.theta);
      ops::rope(k, cfg_.kv_heads, cfg_.head_dim, positions.i64(), cfg_.theta);
      ops::KVCache& cache = cached ? caches[l] : caches[0];
      if (!cached) cache.reset(batch, len, kv_width);
      const int64_t past = cache.length();
      cache.append(k.f32(), v.f32(), len);
      ops::AttentionArgs a;
      a.batch = batch;
      a.q_len = len;
      a.kv_len = cache.length();
      a.kv_capacity = cache.capacity();
      a.heads = cfg_.heads;
      a.kv_heads = cfg_.kv_heads;
      a.head_dim = cfg_.head_dim;
      a.past = past;
      a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(cfg_.head_dim)));
      a.causal = true;
      a.key_mask = key_mask.i64();
      Tensor attn = Tensor::empty(DType::F32, {batch * len, q_width});
      ops::attention(q.f32(), cache.k(), cache.v(), attn.f32(), a);
      ops::add(x, ops::linear(attn, w.get("self_attn.o_proj.weight"), w.find("self_attn.o_proj.bias")));
      Tensor n2 = ops::rms_norm(x, w.get("post_attention_layernorm.weight"), static_cast<float>(cfg_.eps));
      Tensor g = ops::linear(n2, w.get("mlp.gate_proj.weight"), w.find("mlp.gate_proj.bias"));
      ops::activate(g, cfg_.act);
      ops::multiply(g, ops::linear(n2, w.get("mlp.up_proj.weight"), w.find("mlp.up_proj.bias")));
      ops::add(x, ops::linear(g, w.get("mlp.down_proj.weight"), w.find("mlp.down_proj.bias")));
      if (hidden_states) store_layer(*hidden_states, l + 1, x);
    }
    return x;
  }

  Tensor final_norm(ComponentSource& src, const Tensor& x) override {
    ComponentRef norm = src.acquire("final_norm");
    return ops::rms_norm(x, norm->get("weight"), static_cast<float>(cfg_.eps));
  }

  Tensor head(ComponentSource& src, const Tensor& x) override {
    ComponentRef c = src.acquire(cfg_.tied ? "embed" : "lm_head");
    return ops::linear(x, c->get("weight"));
  }

  LlamaConfig cfg_;
};

struct LlamaArchitecture {
  static ComponentPlan plan(const ModelConfig& c) {
    const LlamaConfig cfg(c);
    ComponentPlan p;
    auto t = [](std::string name, std::string hf, bool required = true) {
      return TensorSpec{std::move(name), with_optional_prefix("model.", hf), required};
    };
    p.components.push_back({"embed", ComponentRole::resident, {t("weight", "embed_tokens.weight")}});
    p.execution_order.push_back("embed");
    for (int64_t i = 0; i < cfg.layers; ++i) {
      const std::string pre = "layers." + std::to_string(i) + ".";
      ComponentSpec s{layer_id(i), ComponentRole::streamed, {}};
      s.tensors.push_back(t("input_layernorm.weight", pre + "input_layernorm.weight"));
      s.tensors.push_back(t("post_attention_layernorm.weight", pre + "post_attention_layernorm.weight"));
      for (const char* proj : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
        const std::string n = std::string("self_attn.") + proj;
        s.tensors.push_back(t(n + ".weight", pre + n + ".weight"));
        if (cfg.attention_bias) s.tensors.push_back(t(n + ".bias", pre + n + ".bias", proj[0] != 'o'));
      }
      for (const char* proj : {"gate_proj", "up_proj", "down_proj"}) {
        const std::string n = std::string("mlp.") + proj;
        s.tensors.push_back(t(n + ".weight", pre + n + ".weight"));
        if (cfg.mlp_bias) s.tensors.push_back(t(n + ".bias", pre + n + ".bias"));
      }
      p.components.push_back(std::move(s));
      p.execution_order.push_back(layer_id(i));
    }
    p.components.push_back({"final_norm", ComponentRole::resident, {t("weight", "norm.weight")}});
    p.execution_order.push_back("final_norm");
    if (!cfg.tied) {
      p.components.push_back({"lm_head", ComponentRole::streamed, {TensorSpec{"weight", {"lm_head.weight"}, true}}});
      p.execution_order.push_back("lm_head");
    }
    p.ignored_suffixes = {"rotary_emb.inv_freq"};
    if (cfg.tied) p.ignored_suffixes.push_back("lm_head.weight");
    return p;
  }

  static std::unique_ptr<Model> create(const ModelConfig& c) { return std::make_unique<Llama>(c); }
};

}  // namespace

SURF_PLUGIN(LlamaArchitecture, "llama", "0.1.0", "llama")
