// An architecture written outside the Surfing Weights tree: a token-embedding model with residual
// MLP blocks. config.json: {"model_type": "example-mlp", "hidden_size": H, "intermediate_size": I,
// "num_layers": N, "vocab_size": V}. Tensors: embed.weight [V, H]; blocks.N.norm.{weight,bias} [H],
// blocks.N.up.{weight,bias} [I, H] / [I], blocks.N.down.{weight,bias} [H, I] / [H].
// Block: x = x + down(gelu(up(layer_norm(x)))). Outputs last_hidden_state [B, L, H] and
// pooler_output [B, H] = mean of last_hidden_state over positions whose attention_mask is 1.
#include <surf/layers.h>
#include <surf/plan.h>

namespace {

using namespace surf;

// The name table: a block's tensors, named as in the checkpoint after "blocks.N.".
namespace names {
constexpr TensorName embed{"weight", "embed.weight"};
constexpr LinearName norm{"norm"}, up{"up"}, down{"down"};
}  // namespace names

struct Sizes {
  int64_t hidden, inter, layers, vocab;
  explicit Sizes(const ModelConfig& c)
      : hidden(c.get_int("hidden_size")),
        inter(c.get_int("intermediate_size")),
        layers(c.get_int("num_layers")),
        vocab(c.get_int("vocab_size")) {}
};

std::string block(int64_t i) { return "blocks." + std::to_string(i); }

class MlpModel final : public Model {
 public:
  explicit MlpModel(const ModelConfig& c) : s_(c) {}

  void forward(const TensorMap& in, const RunOptions&, ComponentSource& src, TensorMap& out) override {
    const TokenInputs t = read_token_inputs(in, 1 << 20, "the maximum length");
    Tensor x = ops::embedding(get(*src.acquire("embed"), names::embed), t.ids);
    for (int64_t l = 0; l < s_.layers; ++l) {
      ComponentRef b = src.acquire(block(l));  // streamed: held only while this block runs
      Tensor h = ops::layer_norm(x, b->get(names::norm.weight()), b->get(names::norm.bias()), 1e-5f);
      Tensor u = linear(h, *b, names::up);
      ops::activate(u, ops::Activation::gelu_erf);
      ops::add(x, linear(u, *b, names::down));
    }
    Tensor pooled = Tensor::zeros(DType::F32, {t.batch, s_.hidden});
    for (int64_t b = 0; b < t.batch; ++b) {
      int64_t n = 0;
      for (int64_t i = 0; i < t.len; ++i) {
        if (t.mask.i64()[b * t.len + i] == 0) continue;
        ++n;
        for (int64_t j = 0; j < s_.hidden; ++j)
          pooled.f32()[b * s_.hidden + j] += x.f32()[(b * t.len + i) * s_.hidden + j];
      }
      for (int64_t j = 0; j < s_.hidden && n > 0; ++j) pooled.f32()[b * s_.hidden + j] /= static_cast<float>(n);
    }
    out["last_hidden_state"] = x.reshape({t.batch, t.len, s_.hidden});
    out["pooler_output"] = pooled;
  }

 private:
  Sizes s_;
};

struct MlpArchitecture {
  static ComponentPlan plan(const ModelConfig& c) {
    const Sizes s(c);
    PlanBuilder p;
    p.add("embed", ComponentRole::resident).tensor(names::embed);
    for (int64_t i = 0; i < s.layers; ++i) {
      p.add(block(i), ComponentRole::streamed, block(i) + ".")
          .linear(names::norm, Bias::required)
          .linear(names::up, Bias::required)
          .linear(names::down, Bias::required);
    }
    return p.build();
  }
  static std::unique_ptr<Model> create(const ModelConfig& c) { return std::make_unique<MlpModel>(c); }
};

}  // namespace

SURF_PLUGIN(MlpArchitecture, "example-mlp", "1.0.0", "example-mlp")
