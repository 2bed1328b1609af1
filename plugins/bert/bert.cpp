// BertModel: post-LN encoder, absolute + token-type embeddings, erf GELU, tanh pooler.
// Conventions follow HF modeling_bert.py (shared/reference/README.md).
#include <algorithm>
#include <cmath>

#include "surf/layers.h"
#include "surf/plan.h"

namespace {

using namespace surf;

// The name table: inside a layer, a tensor's name is its HF name after "bert.encoder.layer.N.".
namespace names {
constexpr TensorName words{"word_embeddings.weight"}, positions{"position_embeddings.weight"},
    types{"token_type_embeddings.weight"};
constexpr LinearName embed_norm{"LayerNorm"};
constexpr LinearName query{"attention.self.query"}, key{"attention.self.key"}, value{"attention.self.value"};
constexpr LinearName attn_out{"attention.output.dense"}, attn_norm{"attention.output.LayerNorm"};
constexpr LinearName inter{"intermediate.dense"}, out{"output.dense"}, out_norm{"output.LayerNorm"};
constexpr LinearName pooler{"dense"};
// Pre-training heads (outside the "bert." prefix): local name, HF name.
constexpr std::pair<const char*, const char*> heads[] = {
    {"transform.dense.weight", "cls.predictions.transform.dense.weight"},
    {"transform.dense.bias", "cls.predictions.transform.dense.bias"},
    {"transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.weight"},
    {"transform.LayerNorm.bias", "cls.predictions.transform.LayerNorm.bias"},
    {"bias", "cls.predictions.bias"},
    {"decoder.weight", "cls.predictions.decoder.weight"},
    {"seq_relationship.weight", "cls.seq_relationship.weight"},
    {"seq_relationship.bias", "cls.seq_relationship.bias"}};
}  // namespace names

struct BertConfig {
  int64_t hidden, layers, heads, head_dim, vocab, positions, type_vocab;
  double eps;
  ops::Activation act;

  explicit BertConfig(const ModelConfig& c) {
    hidden = c.get_int("hidden_size");
    layers = c.get_int("num_hidden_layers");
    heads = c.get_int("num_attention_heads");
    vocab = c.get_int("vocab_size");
    positions = c.get_int("max_position_embeddings", 512);  // (vocab also sizes the MLM head)
    type_vocab = c.get_int("type_vocab_size", 2);
    eps = c.get_float("layer_norm_eps", 1e-12);
    act = ops::activation_from_name(c.get_string("hidden_act", "gelu"));
    if (hidden <= 0 || layers <= 0 || heads <= 0 || hidden % heads != 0) {
      fail(ErrorCode::invalid_argument, "bert config: hidden_size must be a positive multiple of num_attention_heads");
    }
    const std::string pos_type = c.get_string("position_embedding_type", "absolute");
    if (pos_type != "absolute") {
      fail(ErrorCode::unsupported,
           "bert config: position_embedding_type '" + pos_type + "' is not supported (absolute)");
    }
    head_dim = hidden / heads;
  }
};

class Bert final : public Model {
 public:
  explicit Bert(const ModelConfig& c) : cfg_(c) {}

  void forward(const TensorMap& in, const RunOptions& opt, ComponentSource& src, TensorMap& out) override {
    const TokenInputs t = read_token_inputs(in, cfg_.positions, "max_position_embeddings");
    const Pass pass = Pass::batch(t);
    Tensor hs;
    if (opt.hidden_states) hs = Tensor::empty(DType::F32, {cfg_.layers + 1, t.batch, t.len, cfg_.hidden});
    Tensor* record = opt.hidden_states ? &hs : nullptr;
    Tensor x = embed(src, in, t, pass);
    LayerContext(pass, -1, record).record(0, x);
    const AttentionSpec spec = AttentionSpec::bidirectional(cfg_.heads, cfg_.head_dim);
    for (int64_t l = 0; l < cfg_.layers; ++l) {
      ComponentRef layer = src.acquire("layers." + std::to_string(l));
      const Component& w = *layer;
      LayerContext ctx(pass, l, record);
      Tensor ctx_out =
          ctx.self_attention(linear(x, w, names::query), linear(x, w, names::key), linear(x, w, names::value), spec);
      Tensor attn = linear(ctx_out, w, names::attn_out);
      ops::add(attn, x);
      attn = norm(attn, w, names::attn_norm);
      Tensor mid = linear(attn, w, names::inter);
      ops::activate(mid, cfg_.act);
      Tensor y = linear(mid, w, names::out);
      ops::add(y, attn);
      x = norm(y, w, names::out_norm);
      ctx.record(l + 1, x);
    }
    out["last_hidden_state"] = x.reshape({t.batch, t.len, cfg_.hidden});
    if (opt.hidden_states) out["hidden_states"] = hs;
    ComponentRef pooler = src.acquire("pooler");
    if (pooler->find(names::pooler.weight())) {
      Tensor first = Tensor::empty(DType::F32, {t.batch, cfg_.hidden});
      for (int64_t b = 0; b < t.batch; ++b) {
        std::copy_n(x.f32() + b * t.len * cfg_.hidden, cfg_.hidden, first.f32() + b * cfg_.hidden);
      }
      Tensor pooled = linear(first, *pooler, names::pooler);
      for (int64_t i = 0; i < pooled.numel(); ++i) pooled.f32()[i] = std::tanh(pooled.f32()[i]);
      out["pooler_output"] = pooled;
    }
    pre_training_heads(src, x, t, out);
  }

 private:
  Tensor norm(const Tensor& x, const Component& w, const LinearName& n) const {
    return ops::layer_norm(x, w.get(n.weight()), w.get(n.bias()), static_cast<float>(cfg_.eps));
  }

  Tensor embed(ComponentSource& src, const TensorMap& in, const TokenInputs& t, const Pass& pass) const {
    Tensor types;
    if (const Tensor* tt = optional_input(in, "token_type_ids")) {
      expect_dtype(*tt, DType::I64, "token_type_ids");
      expect_shape(*tt, {t.batch, t.len}, "token_type_ids");
      for (int64_t i = 0; i < tt->numel(); ++i) {
        if (tt->i64()[i] < 0 || tt->i64()[i] >= cfg_.type_vocab) {
          fail(ErrorCode::invalid_argument, "token type id " + std::to_string(tt->i64()[i]) + " is out of range [0, " +
                                                std::to_string(cfg_.type_vocab) + ")");
        }
      }
      types = *tt;
    } else {
      types = Tensor::zeros(DType::I64, {t.batch, t.len});
    }
    ComponentRef e = src.acquire("embed");
    Tensor x = ops::embedding(get(*e, names::words), pass.ids());
    ops::add(x, ops::embedding(get(*e, names::types), types));
    ops::add(x, ops::embedding(get(*e, names::positions), pass.position_ids()));
    return norm(x, *e, names::embed_norm);
  }

  // BertForPreTraining checkpoints carry cls.predictions (masked-LM) and cls.seq_relationship
  // (next-sentence) heads; when present their logits are returned under HF's names.
  void pre_training_heads(ComponentSource& src, const Tensor& x, const TokenInputs& t, TensorMap& out) {
    ComponentRef heads = src.acquire("heads");
    if (const Tensor* dense = heads->find("transform.dense.weight")) {
      Tensor h = ops::linear(x, *dense, heads->find("transform.dense.bias"));
      ops::activate(h, cfg_.act);
      h = norm(h, *heads, LinearName{"transform.LayerNorm"});
      const Tensor* decoder = heads->find("decoder.weight");
      ComponentRef embed;
      if (decoder == nullptr) {  // tied to the word embeddings
        embed = src.acquire("embed");
        decoder = &get(*embed, names::words);
      }
      out["prediction_logits"] = ops::linear(h, *decoder, heads->find("bias")).reshape({t.batch, t.len, cfg_.vocab});
    }
    if (const Tensor* nsp = heads->find("seq_relationship.weight"); nsp && out.count("pooler_output")) {
      out["seq_relationship_logits"] = ops::linear(out.at("pooler_output"), *nsp, heads->find("seq_relationship.bias"));
    }
  }

  BertConfig cfg_;
};

// Task models (BertForMaskedLM, ...) save the encoder under "bert."; legacy TF conversions name
// LayerNorm parameters gamma/beta.
std::vector<std::string> bert_variants(const std::string& hf) {
  std::vector<std::string> out = with_optional_prefix("bert.", hf);
  for (const auto& [from, to] : {std::pair<std::string, std::string>{"LayerNorm.weight", "LayerNorm.gamma"},
                                 {"LayerNorm.bias", "LayerNorm.beta"}}) {
    if (hf.size() >= from.size() && hf.compare(hf.size() - from.size(), from.size(), from) == 0) {
      for (const auto& s : with_optional_prefix("bert.", hf.substr(0, hf.size() - from.size()) + to)) out.push_back(s);
    }
  }
  return out;
}

struct BertArchitecture {
  static ComponentPlan plan(const ModelConfig& c) {
    const BertConfig cfg(c);
    PlanBuilder p;
    p.variants(bert_variants);
    p.add("embed", ComponentRole::resident, "embeddings.")
        .tensor(names::words)
        .tensor(names::positions)
        .tensor(names::types)
        .linear(names::embed_norm, Bias::required);
    for (int64_t i = 0; i < cfg.layers; ++i) {
      auto& layer =
          p.add("layers." + std::to_string(i), ComponentRole::streamed, "encoder.layer." + std::to_string(i) + ".");
      for (const auto& n : {names::query, names::key, names::value, names::attn_out, names::attn_norm, names::inter,
                            names::out, names::out_norm}) {
        layer.linear(n, Bias::required);
      }
    }
    // BertModel(add_pooling_layer=False) checkpoints have no pooler: then no pooler_output.
    auto& pooler = p.add("pooler", ComponentRole::resident, "pooler.");
    pooler.tensor({"dense.weight"}, false).tensor({"dense.bias"}, false);
    auto& heads = p.add("heads", ComponentRole::resident);
    for (const auto& [name, hf] : names::heads) heads.tensor_from(name, {hf}, false);
    return p.ignore_suffix("embeddings.position_ids").ignore_suffix("cls.predictions.decoder.bias").build();
  }

  static std::unique_ptr<Model> create(const ModelConfig& c) { return std::make_unique<Bert>(c); }
};

}  // namespace

SURF_PLUGIN(BertArchitecture, "bert", "0.2.0", "bert")
