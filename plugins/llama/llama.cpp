// LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM: RMSNorm pre-norm decoder, rotate-half
// RoPE (optionally scaled), grouped-query attention (optionally sliding-window), SwiGLU MLP.
// Conventions follow HF modeling_llama.py (see shared/reference/README.md).
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

// One plugin, three model_types: HF's Qwen2 and Mistral decoder layers are LLaMA's (their
// modeling files copy LlamaDecoderLayer); they differ only in which projections carry biases,
// the sliding window and config defaults. Each type's config.json is read into this one struct.
struct LlamaConfig {
  int64_t hidden, layers, heads, kv_heads, head_dim, intermediate, vocab, max_positions;
  double eps, theta;
  bool tied;
  Bias qkv_bias = Bias::none, o_bias = Bias::none, mlp_bias = Bias::none;
  int64_t window = 0;  // sliding window over key positions (0: none)
  ops::RopeScaling rope_scaling;
  ops::Activation act;

  explicit LlamaConfig(const ModelConfig& c) {
    const std::string type = c.model_type().empty() ? "llama" : c.model_type();
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
    rope_scaling = ops::RopeScaling::from_config(c);
    act = ops::activation_from_name(c.get_string("hidden_act", "silu"));
    if (type == "qwen2") {  // Qwen2Attention: q/k/v always biased, o_proj never
      qkv_bias = Bias::required;
      if (c.get_bool("use_sliding_window", false)) {
        fail(ErrorCode::unsupported, "qwen2 config: use_sliding_window true is not supported yet (sliding_window " +
                                         std::to_string(c.get_int("sliding_window", 0)) +
                                         " on layers from max_window_layers " +
                                         std::to_string(c.get_int("max_window_layers", 0)) + ")");
      }
    } else if (type == "mistral") {  // every layer slides; null means no window, absent HF's 4096
      window = c.contains("sliding_window") ? c.get_int("sliding_window", 0) : 4096;
    } else {  // llama: attention_bias biases q, k, v and o; mlp_bias gate, up and down
      const bool attention_bias = c.get_bool("attention_bias", false);
      qkv_bias = attention_bias ? Bias::required : Bias::none;
      o_bias = attention_bias ? Bias::optional : Bias::none;
      mlp_bias = c.get_bool("mlp_bias", false) ? Bias::required : Bias::none;
    }
    if (hidden <= 0 || layers <= 0 || heads <= 0 || kv_heads <= 0 || head_dim <= 0 || vocab <= 0 || window < 0) {
      fail(ErrorCode::invalid_argument, type + " config: sizes must be positive");
    }
    if (heads % kv_heads != 0) {
      fail(ErrorCode::invalid_argument, type + " config: num_attention_heads " + std::to_string(heads) +
                                            " is not a multiple of num_key_value_heads " + std::to_string(kv_heads));
    }
  }
};

class Llama final : public CausalLM {
 public:
  explicit Llama(const ModelConfig& c) : Llama(LlamaConfig(c)) {}

 private:
  explicit Llama(const LlamaConfig& cfg)
      : CausalLM({cfg.layers, cfg.hidden, cfg.vocab, cfg.max_positions, "max_position_embeddings"}),
        cfg_(cfg),
        rope_(cfg.head_dim, cfg.theta, cfg.rope_scaling),
        attention_(AttentionSpec::causal_lm(cfg.heads, cfg.kv_heads, cfg.head_dim)) {
    attention_.window = cfg.window;
  }

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
    PlanBuilder p("model.");
    p.add("embed", ComponentRole::resident).tensor(names::embed);
    for (int64_t i = 0; i < cfg.layers; ++i) {
      const std::string id = "layers." + std::to_string(i);
      p.add(id, ComponentRole::streamed, id + ".")
          .tensor(names::attn_norm)
          .tensor(names::mlp_norm)
          .linear(names::q, cfg.qkv_bias)
          .linear(names::k, cfg.qkv_bias)
          .linear(names::v, cfg.qkv_bias)
          .linear(names::o, cfg.o_bias)
          .linear(names::gate, cfg.mlp_bias)
          .linear(names::up, cfg.mlp_bias)
          .linear(names::down, cfg.mlp_bias);
    }
    p.add("final_norm", ComponentRole::resident).tensor(names::final_norm);
    if (cfg.tied) {
      p.ignore_suffix("lm_head.weight");
    } else {
      p.add("lm_head", ComponentRole::streamed).tensor_from("weight", {"lm_head.weight"}).linear_weight("weight");
    }
    return p.ignore_suffix("rotary_emb.inv_freq").build();
  }

  static std::unique_ptr<Model> create(const ModelConfig& c) { return std::make_unique<Llama>(c); }
};

}  // namespace

SURF_PLUGIN(LlamaArchitecture, "llama", "0.3.0", "llama", "qwen2", "mistral")
