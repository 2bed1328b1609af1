// GPT2LMHeadModel: pre-LN blocks, Conv1D ([in, out]) projections, fused q|k|v, learned absolute
// positions, head tied to wte. Conventions follow HF modeling_gpt2.py (shared/reference/README.md).
#include <cmath>

#include "surf/causal_lm.h"
#include "surf/plan.h"

namespace {

using namespace surf;

// The name table: inside a block, a tensor's name is its HF name after "transformer.h.N.".
namespace names {
constexpr TensorName wte{"wte.weight"}, wpe{"wpe.weight"};
constexpr LinearName ln_1{"ln_1"}, attn{"attn.c_attn"}, attn_proj{"attn.c_proj"}, ln_2{"ln_2"};
constexpr LinearName fc{"mlp.c_fc"}, mlp_proj{"mlp.c_proj"};
constexpr TensorName ln_f_weight{"weight", "ln_f.weight"}, ln_f_bias{"bias", "ln_f.bias"};
}  // namespace names

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

Tensor layer_norm(const Tensor& x, const Component& w, const LinearName& n, double eps) {
  return ops::layer_norm(x, w.get(n.weight()), w.get(n.bias()), static_cast<float>(eps));
}

class Gpt2 final : public CausalLM {
 public:
  explicit Gpt2(const ModelConfig& c) : Gpt2(Gpt2Config(c)) {}

 private:
  explicit Gpt2(const Gpt2Config& cfg)
      : CausalLM({cfg.layers, cfg.embd, cfg.vocab, cfg.positions, "n_positions"}), cfg_(cfg) {}

  Tensor embed(const Pass& pass, ComponentSource& src) override {
    ComponentRef embed = src.acquire("embed");
    Tensor x = ops::embedding(get(*embed, names::wte), pass.ids());
    ops::add(x, ops::embedding(get(*embed, names::wpe), pass.position_ids()));
    return x;
  }

  void layer(LayerContext& ctx, const Component& w, Tensor& x) override {
    const int64_t e = cfg_.embd;
    Tensor qkv = linear_in_out(layer_norm(x, w, names::ln_1, cfg_.eps), w, names::attn);  // q | k | v
    if (qkv.dim(-1) != 3 * e) {
      fail(ErrorCode::invalid_argument, "layer " + std::to_string(ctx.layer()) + ": attn.c_attn has " +
                                            std::to_string(qkv.dim(-1)) + " outputs, expected 3 * n_embd");
    }
    AttentionSpec spec = AttentionSpec::causal_lm(cfg_.heads, cfg_.heads, cfg_.head_dim);
    double scale = cfg_.scale_weights ? 1.0 / std::sqrt(static_cast<double>(cfg_.head_dim)) : 1.0;
    if (cfg_.scale_by_layer) scale /= static_cast<double>(ctx.layer() + 1);
    spec.scale = static_cast<float>(scale);
    Tensor attn =
        ctx.self_attention(ops::columns(qkv, 0, e), ops::columns(qkv, e, e), ops::columns(qkv, 2 * e, e), spec);
    ops::add(x, linear_in_out(attn, w, names::attn_proj));
    Tensor m = linear_in_out(layer_norm(x, w, names::ln_2, cfg_.eps), w, names::fc);
    ops::activate(m, cfg_.act);
    ops::add(x, linear_in_out(m, w, names::mlp_proj));
  }

  Tensor final_norm(ComponentSource& src, const Tensor& x) override {
    ComponentRef norm = src.acquire("final_norm");
    return ops::layer_norm(x, get(*norm, names::ln_f_weight), get(*norm, names::ln_f_bias),
                           static_cast<float>(cfg_.eps));
  }

  Tensor head(ComponentSource& src, const Tensor& x) override {
    if (cfg_.tied) return ops::linear(x, get(*src.acquire("embed"), names::wte));
    return ops::linear(x, src.acquire("lm_head")->get("weight"));
  }

  Gpt2Config cfg_;
};

struct Gpt2Architecture {
  static ComponentPlan plan(const ModelConfig& c) {
    const Gpt2Config cfg(c);
    // Checkpoints saved from GPT2LMHeadModel carry the "transformer." prefix; GPT2Model's do not.
    PlanBuilder p("transformer.");
    p.add("embed", ComponentRole::resident).tensor(names::wte).tensor(names::wpe);
    for (int64_t i = 0; i < cfg.layers; ++i) {
      auto& layer = p.add("layers." + std::to_string(i), ComponentRole::streamed, "h." + std::to_string(i) + ".");
      // Conv1D weights are [in, out]: linear_in_out, so quantized stores keep them unquantized.
      for (const auto& n : {names::ln_1, names::attn, names::attn_proj, names::ln_2, names::fc, names::mlp_proj}) {
        layer.linear_in_out(n, Bias::required);
      }
    }
    p.add("final_norm", ComponentRole::resident).tensor(names::ln_f_weight).tensor(names::ln_f_bias);
    if (cfg.tied) {
      p.ignore_suffix("lm_head.weight");  // some checkpoints store the tied copy
    } else {
      p.add("lm_head", ComponentRole::streamed).tensor_from("weight", {"lm_head.weight"}).linear_weight("weight");
    }
    // Old checkpoints persisted these buffers; they are not parameters.
    return p.ignore_suffix("attn.bias").ignore_suffix("attn.masked_bias").build();
  }

  static std::unique_ptr<Model> create(const ModelConfig& c) { return std::make_unique<Gpt2>(c); }
};

}  // namespace

SURF_PLUGIN(Gpt2Architecture, "gpt2", "0.2.0", "gpt2")
