// BertModel: post-LN encoder, absolute + token-type embeddings, erf GELU, tanh pooler.
// Conventions follow HF modeling_bert.py (shared/reference/README.md).
#include <algorithm>
#include <cmath>

#include "surf/decoding.h"
#include "surf/ops.h"
#include "surf/plugin.h"

namespace {

using namespace surf;

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
      fail(ErrorCode::unsupported, "bert config: position_embedding_type '" + pos_type + "' is not supported (absolute)");
    }
    head_dim = hidden / heads;
  }
};

std::string layer_id(int64_t i) { return "layers." + std::to_string(i); }

class Bert final : public Model {
 public:
  explicit Bert(const ModelConfig& c) : cfg_(c) {}

  void forward(const TensorMap& in, const RunOptions& opt, ComponentSource& src, TensorMap& out) override {
    const TokenInputs t = read_token_inputs(in, cfg_.positions, "max_position_embeddings");
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
    Tensor hs;
    if (opt.hidden_states) hs = Tensor::empty(DType::F32, {cfg_.layers + 1, t.batch, t.len, cfg_.hidden});
    src.begin_pass();
    Tensor x;
    {
      ComponentRef e = src.acquire("embed");
      x = ops::embedding(e->get("word_embeddings.weight"), t.ids);
      ops::add(x, ops::embedding(e->get("token_type_embeddings.weight"), types));
      ops::add(x, ops::embedding(e->get("position_embeddings.weight"), t.positions));
      x = ops::layer_norm(x, e->get("LayerNorm.weight"), e->get("LayerNorm.bias"), static_cast<float>(cfg_.eps));
    }
    if (opt.hidden_states) store_layer(hs, 0, x);
    const float eps = static_cast<float>(cfg_.eps);
    for (int64_t l = 0; l < cfg_.layers; ++l) {
      ComponentRef layer = src.acquire(layer_id(l));
      const Component& w = *layer;
      Tensor q = ops::linear(x, w.get("attention.self.query.weight"), w.find("attention.self.query.bias"));
      Tensor k = ops::linear(x, w.get("attention.self.key.weight"), w.find("attention.self.key.bias"));
      Tensor v = ops::linear(x, w.get("attention.self.value.weight"), w.find("attention.self.value.bias"));
      ops::AttentionArgs a;
      a.batch = t.batch;
      a.q_len = a.kv_len = t.len;
      a.heads = a.kv_heads = cfg_.heads;
      a.head_dim = cfg_.head_dim;
      a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(cfg_.head_dim)));
      a.key_mask = t.mask.i64();
      Tensor ctx = Tensor::empty(DType::F32, {t.batch * t.len, cfg_.hidden});
      ops::attention(q.f32(), k.f32(), v.f32(), ctx.f32(), a);
      Tensor attn = ops::linear(ctx, w.get("attention.output.dense.weight"), w.find("attention.output.dense.bias"));
      ops::add(attn, x);
      attn = ops::layer_norm(attn, w.get("attention.output.LayerNorm.weight"), w.get("attention.output.LayerNorm.bias"), eps);
      Tensor mid = ops::linear(attn, w.get("intermediate.dense.weight"), w.find("intermediate.dense.bias"));
      ops::activate(mid, cfg_.act);
      Tensor y = ops::linear(mid, w.get("output.dense.weight"), w.find("output.dense.bias"));
      ops::add(y, attn);
      x = ops::layer_norm(y, w.get("output.LayerNorm.weight"), w.get("output.LayerNorm.bias"), eps);
      if (opt.hidden_states) store_layer(hs, l + 1, x);
    }
    out["last_hidden_state"] = x.reshape({t.batch, t.len, cfg_.hidden});
    if (opt.hidden_states) out["hidden_states"] = hs;
    ComponentRef pooler = src.acquire("pooler");
    if (const Tensor* pw = pooler->find("dense.weight")) {
      Tensor first = Tensor::empty(DType::F32, {t.batch, cfg_.hidden});
      for (int64_t b = 0; b < t.batch; ++b) {
        std::copy_n(x.f32() + b * t.len * cfg_.hidden, cfg_.hidden, first.f32() + b * cfg_.hidden);
      }
      Tensor pooled = ops::linear(first, *pw, pooler->find("dense.bias"));
      for (int64_t i = 0; i < pooled.numel(); ++i) pooled.f32()[i] = std::tanh(pooled.f32()[i]);
      out["pooler_output"] = pooled;
    }
    pre_training_heads(src, x, t, out);
  }

 private:
  // BertForPreTraining checkpoints carry cls.predictions (masked-LM) and cls.seq_relationship
  // (next-sentence) heads; when present their logits are returned under HF's names.
  void pre_training_heads(ComponentSource& src, const Tensor& x, const TokenInputs& t, TensorMap& out) {
    ComponentRef heads = src.acquire("heads");
    if (const Tensor* dense = heads->find("transform.dense.weight")) {
      Tensor h = ops::linear(x, *dense, heads->find("transform.dense.bias"));
      ops::activate(h, cfg_.act);
      h = ops::layer_norm(h, heads->get("transform.LayerNorm.weight"), heads->get("transform.LayerNorm.bias"),
                          static_cast<float>(cfg_.eps));
      const Tensor* decoder = heads->find("decoder.weight");
      ComponentRef embed;
      if (decoder == nullptr) {  // tied to the word embeddings
        embed = src.acquire("embed");
        decoder = &embed->get("word_embeddings.weight");
      }
      out["prediction_logits"] = ops::linear(h, *decoder, heads->find("bias")).reshape({t.batch, t.len, cfg_.vocab});
    }
    if (const Tensor* nsp = heads->find("seq_relationship.weight"); nsp && out.count("pooler_output")) {
      out["seq_relationship_logits"] = ops::linear(out.at("pooler_output"), *nsp, heads->find("seq_relationship.bias"));
    }
  }

  BertConfig cfg_;
};

struct BertArchitecture {
  static ComponentPlan plan(const ModelConfig& c) {
    const BertConfig cfg(c);
    // Task models (BertForMaskedLM, ...) save the encoder under "bert."; legacy TF conversions
    // name LayerNorm parameters gamma/beta.
    auto t = [](const std::string& name, const std::string& hf, bool required = true) {
      std::vector<std::string> sources = with_optional_prefix("bert.", hf);
      for (const auto& [from, to] : {std::pair<std::string, std::string>{"LayerNorm.weight", "LayerNorm.gamma"},
                                     {"LayerNorm.bias", "LayerNorm.beta"}}) {
        if (hf.size() >= from.size() && hf.compare(hf.size() - from.size(), from.size(), from) == 0) {
          const std::string legacy = hf.substr(0, hf.size() - from.size()) + to;
          for (const auto& s : with_optional_prefix("bert.", legacy)) sources.push_back(s);
        }
      }
      return TensorSpec{name, sources, required};
    };
    ComponentPlan p;
    ComponentSpec embed{"embed", ComponentRole::resident, {}};
    for (const char* n : {"word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight",
                          "LayerNorm.weight", "LayerNorm.bias"}) {
      embed.tensors.push_back(t(n, std::string("embeddings.") + n));
    }
    p.components.push_back(std::move(embed));
    p.execution_order.push_back("embed");
    for (int64_t i = 0; i < cfg.layers; ++i) {
      const std::string pre = "encoder.layer." + std::to_string(i) + ".";
      ComponentSpec s{layer_id(i), ComponentRole::streamed, {}};
      for (const char* n : {"attention.self.query", "attention.self.key", "attention.self.value",
                            "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
                            "output.dense", "output.LayerNorm"}) {
        s.tensors.push_back(t(std::string(n) + ".weight", pre + n + ".weight"));
        s.tensors.push_back(t(std::string(n) + ".bias", pre + n + ".bias"));
      }
      p.components.push_back(std::move(s));
      p.execution_order.push_back(layer_id(i));
    }
    // BertModel(add_pooling_layer=False) checkpoints have no pooler: then no pooler_output.
    p.components.push_back({"pooler", ComponentRole::resident,
                            {t("dense.weight", "pooler.dense.weight", false), t("dense.bias", "pooler.dense.bias", false)}});
    p.execution_order.push_back("pooler");
    // Pre-training heads, when the checkpoint has them (they sit outside the "bert." prefix).
    auto head = [](const std::string& name, const std::string& hf) { return TensorSpec{name, {hf}, false}; };
    p.components.push_back({"heads", ComponentRole::resident,
                            {head("transform.dense.weight", "cls.predictions.transform.dense.weight"),
                             head("transform.dense.bias", "cls.predictions.transform.dense.bias"),
                             head("transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.weight"),
                             head("transform.LayerNorm.bias", "cls.predictions.transform.LayerNorm.bias"),
                             head("bias", "cls.predictions.bias"),
                             head("decoder.weight", "cls.predictions.decoder.weight"),
                             head("seq_relationship.weight", "cls.seq_relationship.weight"),
                             head("seq_relationship.bias", "cls.seq_relationship.bias")}});
    p.execution_order.push_back("heads");
    p.ignored_suffixes = {"embeddings.position_ids", "cls.predictions.decoder.bias"};
    return p;
  }

  static std::unique_ptr<Model> create(const ModelConfig& c) { return std::make_unique<Bert>(c); }
};

}  // namespace

SURF_PLUGIN(BertArchitecture, "bert", "0.1.0", "bert")
