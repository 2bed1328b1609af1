// An architecture written outside the Surfing Weights tree: a token-embedding model with residual
// MLP blocks. config.json: {"model_type": "example-mlp", "hidden_size": H, "intermediate_size": I,
// "num_layers": N, "vocab_size": V}. Tensors: embed.weight [V, H]; blocks.N.norm.{weight,bias} [H],
// blocks.N.up.{weight,bias} [I, H] / [I], blocks.N.down.{weight,bias} [H, I] / [H].
// Block: x = x + down(gelu(up(layer_norm(x)))). Outputs last_hidden_state [B, L, H] and
// pooler_output [B, H] = mean of last_hidden_state over positions whose attention_mask is 1.
#include <surf/decoding.h>
#include <surf/ops.h>
#include <surf/plugin.h>

namespace {

struct Sizes {
  int64_t hidden, inter, layers, vocab;
  explicit Sizes(const surf::ModelConfig& c)
      : hidden(c.get_int("hidden_size")),
        inter(c.get_int("intermediate_size")),
        layers(c.get_int("num_layers")),
        vocab(c.get_int("vocab_size")) {}
};

std::string block(int64_t i) { return "blocks." + std::to_string(i); }

class MlpModel final : public surf::Model {
 public:
  explicit MlpModel(const surf::ModelConfig& c) : s_(c) {}

  void forward(const surf::TensorMap& in, const surf::RunOptions&, surf::ComponentSource& src,
               surf::TensorMap& out) override {
    using namespace surf;
    const TokenInputs t = read_token_inputs(in, 1 << 20, "the maximum length");
    src.begin_pass();
    Tensor x;
    {
      ComponentRef e = src.acquire("embed");
      x = ops::embedding(e->get("weight"), t.ids);
    }
    for (int64_t l = 0; l < s_.layers; ++l) {
      ComponentRef b = src.acquire(block(l));  // streamed: held only while this block runs
      Tensor h = ops::layer_norm(x, b->get("norm.weight"), b->get("norm.bias"), 1e-5f);
      Tensor u = ops::linear(h, b->get("up.weight"), b->find("up.bias"));
      ops::activate(u, ops::Activation::gelu_erf);
      ops::add(x, ops::linear(u, b->get("down.weight"), b->find("down.bias")));
    }
    Tensor pooled = Tensor::zeros(DType::F32, {t.batch, s_.hidden});
    for (int64_t b = 0; b < t.batch; ++b) {
      int64_t n = 0;
      for (int64_t i = 0; i < t.len; ++i) {
        if (t.mask.i64()[b * t.len + i] == 0) continue;
        ++n;
        for (int64_t j = 0; j < s_.hidden; ++j) pooled.f32()[b * s_.hidden + j] += x.f32()[(b * t.len + i) * s_.hidden + j];
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
  static surf::ComponentPlan plan(const surf::ModelConfig& c) {
    const Sizes s(c);
    surf::ComponentPlan p;
    p.components.push_back({"embed", surf::ComponentRole::resident, {{"weight", {"embed.weight"}, true}}});
    p.execution_order.push_back("embed");
    for (int64_t i = 0; i < s.layers; ++i) {
      surf::ComponentSpec spec{block(i), surf::ComponentRole::streamed, {}};
      for (const char* n : {"norm.weight", "norm.bias", "up.weight", "up.bias", "down.weight", "down.bias"}) {
        spec.tensors.push_back({n, {block(i) + "." + n}, true});
      }
      p.components.push_back(std::move(spec));
      p.execution_order.push_back(block(i));
    }
    return p;
  }
  static std::unique_ptr<surf::Model> create(const surf::ModelConfig& c) { return std::make_unique<MlpModel>(c); }
};

}  // namespace

SURF_PLUGIN(MlpArchitecture, "example-mlp", "1.0.0", "example-mlp")
