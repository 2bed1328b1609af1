// LlamaForCausalLM: RMSNorm pre-norm decoder, rotate-half RoPE, grouped-query attention,
// SwiGLU MLP. Conventions follow HF modeling_llama.py (see shared/reference/README.md).
#include "surf/causal_lm.h"
#include "surf/plan.h"

namespace {

using namespace surf;

// The name table: inside a layer, a tensor's name is its HF name after "model.layers.N.".
namespace names {
constexpr TensorName embed{"weight", "embed_tokens.weight"};
constexpr TensorName attn_norm{"input_layernorm.weight"};
constexpr LinearName q{"self_attn.q_proj"}, k{"self_attn.k_proj"}, v{"self_attn.v_proj"}, o{"self_attn.o_proj"};
constexpr TensorName mlp_norm{"post_attention_layernorm.weight"};
constexpr LinearName gate{"mlp.gate_proj"}, up{"mlp.up_proj"}, down{"mlp.down_proj"};
constexpr TensorName final_norm{"weight", "norm.weight"};
}  // namespace names

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
                                            " is not a multiple of num_key_value_heads " + std::to_string(kv_heads));
    }
    if (c.has("rope_scaling")) fail(ErrorCode::unsupported, "llama config: rope_scaling is not supported yet");
  }
};

class Llama final : public CausalLM {
 public:
  explicit Llama(const ModelConfig& c) : Llama(LlamaConfig(c)) {}

 private:
  explicit Llama(const LlamaConfig& cfg)
      : CausalLM({cfg.layers, cfg.hidden, cfg.vocab, cfg.max_positions, "max_position_embeddings"}),
        cfg_(cfg),
        rope_(cfg.head_dim, cfg.theta),
        attention_(AttentionSpec::causal_lm(cfg.heads, cfg.kv_heads, cfg.head_dim)) {}

  Tensor embed(const Pass& pass, ComponentSource& src) override {
    return ops::embedding(get(*src.acquire("embed"), names::embed), pass.ids());
  }

  void layer(LayerContext& ctx, const Component& w, Tensor& x) override {
    const auto eps = static_cast<float>(cfg_.eps);
    Tensor n = ops::rms_norm(x, get(w, names::attn_norm), eps);
    Tensor q = linear(n, w, names::q), k = linear(n, w, names::k), v = linear(n, w, names::v);
    rope_.apply(q, cfg_.heads, cfg_.head_dim, ctx.positions());
    rope_.apply(k, cfg_.kv_heads, cfg_.head_dim, ctx.positions());
    ops::add(x, linear(ctx.self_attention(q, k, v, attention_), w, names::o));
    Tensor n2 = ops::rms_norm(x, get(w, names::mlp_norm), eps);
    Tensor g = linear(n2, w, names::gate);
    ops::activate(g, cfg_.act);
    ops::multiply(g, linear(n2, w, names::up));
    ops::add(x, linear(g, w, names::down));
  }

  Tensor final_norm(ComponentSource& src, const Tensor& x) override {
    return ops::rms_norm(x, get(*src.acquire("final_norm"), names::final_norm), static_cast<float>(cfg_.eps));
  }

  Tensor head(ComponentSource& src, const Tensor& x) override {
    ComponentRef c = src.acquire(cfg_.tied ? "embed" : "lm_head");
    return ops::linear(x, c->get("weight"));
  }

  LlamaConfig cfg_;
  ops::RotaryEmbedding rope_;
  AttentionSpec attention_;
};

struct LlamaArchitecture {
  static ComponentPlan plan(const ModelConfig& c) {
    const LlamaConfig cfg(c);
    const Bias attention_bias = cfg.attention_bias ? Bias::required : Bias::none;
    const Bias mlp_bias = cfg.mlp_bias ? Bias::required : Bias::none;
    PlanBuilder p("model.");
    p.add("embed", ComponentRole::resident).tensor(names::embed);
    for (int64_t i = 0; i < cfg.layers; ++i) {
      const std::string id = "layers." + std::to_string(i);
      p.add(id, ComponentRole::streamed, id + ".")
          .tensor(names::attn_norm)
          .tensor(names::mlp_norm)
          .linear(names::q, attention_bias)
          .linear(names::k, attention_bias)
          .linear(names::v, attention_bias)
          .linear(names::o, cfg.attention_bias ? Bias::optional : Bias::none)
          .linear(names::gate, mlp_bias)
          .linear(names::up, mlp_bias)
          .linear(names::down, mlp_bias);
    }
    p.add("final_norm", ComponentRole::resident).tensor(names::final_norm);
    if (cfg.tied) {
      p.ignore_suffix("lm_head.weight");
    } else {
      p.add("lm_head", ComponentRole::streamed).tensor_from("weight", {"lm_head.weight"});
    }
    return p.ignore_suffix("rotary_emb.inv_freq").build();
  }

  static std::unique_ptr<Model> create(const ModelConfig& c) { return std::make_unique<Llama>(c); }
};

}  // namespace

SURF_PLUGIN(LlamaArchitecture, "llama", "0.2.0", "llama")
