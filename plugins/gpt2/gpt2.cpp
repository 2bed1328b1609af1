// GPT2LMHeadModel: pre-LN blocks, Conv1D ([in, out]) projections, fused q|k|v, learned absolute
// positions, head tied to wte. Conventions follow HF modeling_gpt2.py (shared/reference/README.md).
#include <cmath>

#include "surf/decoding.h"
#include "surf/ops.h"
#include "surf/plugin.h"

namespace {

using namespace surf;

struct Gpt2Config {
  int64_t embd, layers, heads, head_dim, inner, vocab, positions;
  double eps;
  bool scale_weights, scale_by_layer, tied;
  ops::Activation act;

  explicit Gpt2Config(const ModelConfig& c) {
    embd = c.get_int("n_embd");
    layers = c.get_int("n_layer");
    heads = c.get_int("n_head");
    vocab = c.get_int("vocab_size");
    positions = c.get_int("n_positions", 1024);
    inner = c.get_int("n_inner", 4 * embd);  // null means 4 * n_embd
    eps = c.get_float("layer_norm_epsilon", 1e-5);
    scale_weights = c.get_bool("scale_attn_weights", true);
    scale_by_layer = c.get_bool("scale_attn_by_inverse_layer_idx", false);
    tied = c.get_bool("tie_word_embeddings", true);
    act = ops::activation_from_name(c.get_string("activation_function", "gelu_new"));
    if (embd <= 0 || layers <= 0 || heads <= 0 || vocab <= 0 || embd % heads != 0) {
      fail(ErrorCode::invalid_argument, "gpt2 config: n_embd must be a positive multiple of n_head");
    }
    head_dim = embd / heads;
  }
};

std::string layer_id(int64_t i) { return "layers." + std::to_string(i); }

class Gpt2 final : public CausalLM {
 public:
  explicit Gpt2(const ModelConfig& c) : Gpt2(Gpt2Config(c)) {}

 private:
  explicit Gpt2(const Gpt2Config& cfg)
      : CausalLM({cfg.layers, cfg.embd, cfg.vocab, cfg.embd, cfg.positions, "n_positions"}), cfg_(cfg) {}

  Tensor run_layers(ComponentSource& src, const Tensor& ids, const Tensor& positions, const Tensor& key_mask,
                    int64_t batch, int64_t len, std::vector<ops::KVCache>& caches, bool cached, Tensor* hs) override {
    Tensor x;
    {
      ComponentRef embed = src.acquire("embed");
      x = ops::embedding(embed->get("wte.weight"), ids);
      ops::add(x, ops::embedding(embed->get("wpe.weight"), positions));
    }
    if (hs) store_layer(*hs, 0, x);
    const int64_t e = cfg_.embd;
    for (int64_t l = 0; l < cfg_.layers; ++l) {
      ComponentRef layer = src.acquire(layer_id(l));
      const Component& w = *layer;
      Tensor h = ops::layer_norm(x, w.get("ln_1.weight"), w.get("ln_1.bias"), static_cast<float>(cfg_.eps));
      Tensor qkv = ops::linear_in_out(h, w.get("attn.c_attn.weight"), w.find("attn.c_attn.bias"));
      if (qkv.dim(-1) != 3 * e) {
        fail(ErrorCode::invalid_argument, "layer " + std::to_string(l) + ": attn.c_attn has " +
                                              std::to_string(qkv.dim(-1)) + " outputs, expected 3 * n_embd");
      }
      ops::KVCache& cache = cached ? caches[l] : caches[0];
      if (!cached) cache.reset(batch, len, e);
      const int64_t past = cache.length();
      cache.append(qkv.f32() + e, qkv.f32() + 2 * e, len, 3 * e);  // q | k | v along the last axis
      ops::AttentionArgs a;
      a.batch = batch;
      a.q_len = len;
      a.kv_len = cache.length();
      a.kv_capacity = cache.capacity();
      a.heads = a.kv_heads = cfg_.heads;
      a.head_dim = cfg_.head_dim;
      a.q_stride = 3 * e;
      a.past = past;
      double scale = cfg_.scale_weights ? 1.0 / std::sqrt(static_cast<double>(cfg_.head_dim)) : 1.0;
      if (cfg_.scale_by_layer) scale /= static_cast<double>(l + 1);
      a.scale = static_cast<float>(scale);
      a.causal = true;
      a.key_mask = key_mask.i64();
      Tensor attn = Tensor::empty(DType::F32, {batch * len, e});
      ops::attention(qkv.f32(), cache.k(), cache.v(), attn.f32(), a);
      ops::add(x, ops::linear_in_out(attn, w.get("attn.c_proj.weight"), w.find("attn.c_proj.bias")));
      Tensor h2 = ops::layer_norm(x, w.get("ln_2.weight"), w.get("ln_2.bias"), static_cast<float>(cfg_.eps));
      Tensor m = ops::linear_in_out(h2, w.get("mlp.c_fc.weight"), w.find("mlp.c_fc.bias"));
      ops::activate(m, cfg_.act);
      ops::add(x, ops::linear_in_out(m, w.get("mlp.c_proj.weight"), w.find("mlp.c_proj.bias")));
      if (hs) store_layer(*hs, l + 1, x);
    }
    return x;
  }

  Tensor final_norm(ComponentSource& src, const Tensor& x) override {
    ComponentRef c = src.acquire("final_norm");
    return ops::layer_norm(x, c->get("weight"), c->get("bias"), static_cast<float>(cfg_.eps));
  }

  Tensor head(ComponentSource& src, const Tensor& x) override {
    if (cfg_.tied) {
      ComponentRef c = src.acquire("embed");
      return ops::linear(x, c->get("wte.weight"));
    }
    ComponentRef c = src.acquire("lm_head");
    return ops::linear(x, c->get("weight"));
  }

  Gpt2Config cfg_;
};

struct Gpt2Architecture {
  static ComponentPlan plan(const ModelConfig& c) {
    const Gpt2Config cfg(c);
    // Checkpoints saved from GPT2LMHeadModel carry the "transformer." prefix; GPT2Model's do not.
    auto t = [](const std::string& name, const std::string& hf, bool required = true) {
      return TensorSpec{name, with_optional_prefix("transformer.", hf), required};
    };
    ComponentPlan p;
    p.components.push_back({"embed", ComponentRole::resident, {t("wte.weight", "wte.weight"), t("wpe.weight", "wpe.weight")}});
    p.execution_order.push_back("embed");
    for (int64_t i = 0; i < cfg.layers; ++i) {
      const std::string pre = "h." + std::to_string(i) + ".";
      ComponentSpec s{layer_id(i), ComponentRole::streamed, {}};
      for (const char* n : {"ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"}) {
        s.tensors.push_back(t(std::string(n) + ".weight", pre + n + ".weight"));
        s.tensors.push_back(t(std::string(n) + ".bias", pre + n + ".bias"));
      }
      p.components.push_back(std::move(s));
      p.execution_order.push_back(layer_id(i));
    }
    p.components.push_back({"final_norm", ComponentRole::resident, {t("weight", "ln_f.weight"), t("bias", "ln_f.bias")}});
    p.execution_order.push_back("final_norm");
    if (!cfg.tied) {
      p.components.push_back({"lm_head", ComponentRole::streamed, {TensorSpec{"weight", {"lm_head.weight"}, true}}});
      p.execution_order.push_back("lm_head");
    } else {
      p.ignored_suffixes.push_back("lm_head.weight");  // some checkpoints store the tied copy
    }
    // Old checkpoints persisted these buffers; they are not parameters.
    p.ignored_suffixes.push_back("attn.bias");
    p.ignored_suffixes.push_back("attn.masked_bias");
    return p;
  }

  static std::unique_ptr<Model> create(const ModelConfig& c) { return std::make_unique<Gpt2>(c); }
};

}  // namespace

SURF_PLUGIN(Gpt2Architecture, "gpt2", "0.1.0", "gpt2")
