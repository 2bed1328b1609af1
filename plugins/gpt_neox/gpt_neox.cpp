// GPTNeoXForCausalLM (Pythia): LayerNorm pre-norm blocks, one fused query_key_value projection
// laid out per head, rotate-half RoPE on the first rotary_pct of each head, parallel or sequential
// residual, exact-erf GELU MLP, untied embed_out. Conventions follow HF modeling_gpt_neox.py
// (see shared/reference/README.md).
#include "surf/causal_lm.h"
#include "surf/plan.h"

namespace {

using namespace surf;

// The name table: inside a layer, a tensor's name is its HF name after "gpt_neox.layers.N.".
namespace names {
constexpr TensorName embed{"weight", "embed_in.weight"};
constexpr LinearName ln_1{"input_layernorm"}, qkv{"attention.query_key_value"}, dense{"attention.dense"};
constexpr LinearName ln_2{"post_attention_layernorm"}, up{"mlp.dense_h_to_4h"}, down{"mlp.dense_4h_to_h"};
constexpr TensorName final_weight{"weight", "final_layer_norm.weight"}, final_bias{"bias", "final_layer_norm.bias"};
}  // namespace names

struct NeoxConfig {
  int64_t hidden, layers, heads, head_dim, rotary_dims, intermediate, vocab, max_positions;
  double eps, base;
  bool parallel_residual, attention_bias, tied;
  ops::RopeScaling rope_scaling;
  ops::Activation act;

  explicit NeoxConfig(const ModelConfig& c) {
    hidden = c.get_int("hidden_size");
    layers = c.get_int("num_hidden_layers");
    heads = c.get_int("num_attention_heads");
    intermediate = c.get_int("intermediate_size");
    vocab = c.get_int("vocab_size");
    max_positions = c.get_int("max_position_embeddings", 2048);
    eps = c.get_float("layer_norm_eps", 1e-5);
    // Newer transformers write rope_theta / partial_rotary_factor for the same two values.
    base = c.get_float("rotary_emb_base", c.get_float("rope_theta", 10000.0));
    const double pct = c.get_float("rotary_pct", c.get_float("partial_rotary_factor", 1.0));
    parallel_residual = c.get_bool("use_parallel_residual", true);
    attention_bias = c.get_bool("attention_bias", true);
    tied = c.get_bool("tie_word_embeddings", false);
    rope_scaling = ops::RopeScaling::from_config(c);
    act = ops::activation_from_name(c.get_string("hidden_act", "gelu"));
    if (hidden <= 0 || layers <= 0 || heads <= 0 || vocab <= 0 || hidden % heads != 0) {
      fail(ErrorCode::invalid_argument,
           "gpt_neox config: hidden_size must be a positive multiple of num_attention_heads");
    }
    head_dim = hidden / heads;
    rotary_dims = static_cast<int64_t>(static_cast<double>(head_dim) * pct);  // int(head_size * rotary_pct)
    if (rotary_dims <= 0 || rotary_dims % 2 != 0 || rotary_dims > head_dim) {
      fail(ErrorCode::invalid_argument, "gpt_neox config: rotary_pct " + std::to_string(pct) + " of head size " +
                                            std::to_string(head_dim) + " gives " + std::to_string(rotary_dims) +
                                            " rotary dims (must be even, positive, at most the head size)");
    }
  }
};

Tensor layer_norm(const Tensor& x, const Component& w, const LinearName& n, double eps) {
  return ops::layer_norm(x, w.get(n.weight()), w.get(n.bias()), static_cast<float>(eps));
}

class GptNeox final : public CausalLM {
 public:
  explicit GptNeox(const ModelConfig& c) : GptNeox(NeoxConfig(c)) {}

 private:
  explicit GptNeox(const NeoxConfig& cfg)
      : CausalLM({cfg.layers, cfg.hidden, cfg.vocab, cfg.max_positions, "max_position_embeddings"}),
        cfg_(cfg),
        rope_(cfg.rotary_dims, cfg.base, cfg.rope_scaling),
        attention_(AttentionSpec::causal_lm(cfg.heads, cfg.heads, cfg.head_dim)) {}

  Tensor embed(const Pass& pass, ComponentSource& src) override {
    return ops::embedding(get(*src.acquire("embed"), names::embed), pass.ids());
  }

  void layer(LayerContext& ctx, const Component& w, Tensor& x) override {
    // query_key_value's outputs are [heads, 3, head_dim]: each head's q | k | v, not q | k | v blocks.
    std::vector<Tensor> qkv = ops::split_per_head(linear(layer_norm(x, w, names::ln_1, cfg_.eps), w, names::qkv),
                                                  cfg_.heads, 3, cfg_.head_dim);
    rope_.apply(qkv[0], cfg_.heads, cfg_.head_dim, ctx.positions());  // the first rotary_dims of each head
    rope_.apply(qkv[1], cfg_.heads, cfg_.head_dim, ctx.positions());
    Tensor a = linear(ctx.self_attention(qkv[0], qkv[1], qkv[2], attention_), w, names::dense);
    if (cfg_.parallel_residual) {  // x + attn(ln_1(x)) + mlp(ln_2(x))
      ops::add(a, mlp(w, layer_norm(x, w, names::ln_2, cfg_.eps)));
      ops::add(x, a);
    } else {  // h = x + attn(ln_1(x)); h + mlp(ln_2(h))
      ops::add(x, a);
      ops::add(x, mlp(w, layer_norm(x, w, names::ln_2, cfg_.eps)));
    }
  }

  Tensor mlp(const Component& w, const Tensor& n) const {
    Tensor u = linear(n, w, names::up);
    ops::activate(u, cfg_.act);
    return linear(u, w, names::down);
  }

  Tensor final_norm(ComponentSource& src, const Tensor& x) override {
    ComponentRef norm = src.acquire("final_norm");
    return ops::layer_norm(x, get(*norm, names::final_weight), get(*norm, names::final_bias),
                           static_cast<float>(cfg_.eps));
  }

  Tensor head(ComponentSource& src, const Tensor& x) override {
    if (cfg_.tied) return ops::linear(x, get(*src.acquire("embed"), names::embed));
    return ops::linear(x, src.acquire("lm_head")->get("weight"));
  }

  NeoxConfig cfg_;
  ops::RotaryEmbedding rope_;
  AttentionSpec attention_;
};

struct GptNeoxArchitecture {
  static ComponentPlan plan(const ModelConfig& c) {
    const NeoxConfig cfg(c);
    const Bias attention_bias = cfg.attention_bias ? Bias::required : Bias::none;
    PlanBuilder p("gpt_neox.");  // GPTNeoXForCausalLM's prefix; GPTNeoXModel checkpoints have none
    p.add("embed", ComponentRole::resident).tensor(names::embed);
    for (int64_t i = 0; i < cfg.layers; ++i) {
      const std::string id = "layers." + std::to_string(i);
      p.add(id, ComponentRole::streamed, id + ".")
          .linear(names::ln_1, Bias::required)
          .linear(names::qkv, attention_bias)
          .linear(names::dense, attention_bias)
          .linear(names::ln_2, Bias::required)
          .linear(names::up, Bias::required)
          .linear(names::down, Bias::required);
    }
    p.add("final_norm", ComponentRole::resident).tensor(names::final_weight).tensor(names::final_bias);
    if (cfg.tied) {
      p.ignore_suffix("embed_out.weight");
    } else {
      p.add("lm_head", ComponentRole::streamed).tensor_from("weight", {"embed_out.weight"}).linear_weight("weight");
    }
    // Buffers old checkpoints persisted: the causal mask, its fill value, the RoPE frequencies.
    return p.ignore_suffix(".attention.bias")
        .ignore_suffix(".attention.masked_bias")
        .ignore_suffix(".attention.rotary_emb.inv_freq")
        .build();
  }

  static std::unique_ptr<Model> create(const ModelConfig& c) { return std::make_unique<GptNeox>(c); }
};

}  // namespace

SURF_PLUGIN(GptNeoxArchitecture, "gpt_neox", "0.1.0", "gpt_neox")
