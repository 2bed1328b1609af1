// T5ForConditionalGeneration: RMS pre-norm encoder/decoder, relative position buckets (block 0's
// bias shared by all blocks), no score scaling, relu or gated feed-forward, cross-attention,
// tied head rescaled by d_model^-0.5. Conventions follow HF modeling_t5.py
// (shared/reference/README.md). Encoder and decoder blocks are separate streamed components.
#include <algorithm>
#include <cmath>

#include "surf/layers.h"
#include "surf/plan.h"

namespace {

using namespace surf;

// The name table: a tensor's name inside its block and its HF name relative to the sublayer
// ("encoder.block.N.layer.K.", K = 0 self-attention, then cross-attention in the decoder, then
// the feed-forward).
namespace names {
constexpr TensorName self_q{"self.q.weight", "SelfAttention.q.weight"},
    self_k{"self.k.weight", "SelfAttention.k.weight"}, self_v{"self.v.weight", "SelfAttention.v.weight"},
    self_o{"self.o.weight", "SelfAttention.o.weight"};
constexpr TensorName position_bias{"self.relative_attention_bias.weight",
                                   "SelfAttention.relative_attention_bias.weight"};
constexpr TensorName self_norm{"self_norm.weight", "layer_norm.weight"};
constexpr TensorName cross_q{"cross.q.weight", "EncDecAttention.q.weight"},
    cross_k{"cross.k.weight", "EncDecAttention.k.weight"}, cross_v{"cross.v.weight", "EncDecAttention.v.weight"},
    cross_o{"cross.o.weight", "EncDecAttention.o.weight"};
constexpr TensorName cross_norm{"cross_norm.weight", "layer_norm.weight"};
constexpr TensorName wi{"ff.wi.weight", "DenseReluDense.wi.weight"},
    wi_0{"ff.wi_0.weight", "DenseReluDense.wi_0.weight"}, wi_1{"ff.wi_1.weight", "DenseReluDense.wi_1.weight"},
    wo{"ff.wo.weight", "DenseReluDense.wo.weight"};
constexpr TensorName ff_norm{"ff_norm.weight", "layer_norm.weight"};
constexpr TensorName norm{"weight"};
}  // namespace names

Tensor linear(const Tensor& x, const Component& w, const TensorName& n) { return ops::linear(x, get(w, n)); }

struct T5Config {
  int64_t d_model, d_kv, d_ff, enc_layers, dec_layers, heads, vocab, buckets, max_distance, start_token;
  double eps;
  bool gated, tied;
  ops::Activation act;

  explicit T5Config(const ModelConfig& c) {
    d_model = c.get_int("d_model");
    d_kv = c.get_int("d_kv");
    d_ff = c.get_int("d_ff");
    enc_layers = c.get_int("num_layers");
    dec_layers = c.get_int("num_decoder_layers", enc_layers);
    heads = c.get_int("num_heads");
    vocab = c.get_int("vocab_size");
    buckets = c.get_int("relative_attention_num_buckets", 32);
    max_distance = c.get_int("relative_attention_max_distance", 128);
    start_token = c.get_int("decoder_start_token_id", c.get_int("pad_token_id", 0));
    eps = c.get_float("layer_norm_epsilon", 1e-6);
    tied = c.get_bool("tie_word_embeddings", true);
    const std::string ff = c.get_string("feed_forward_proj", "relu");
    const size_t dash = ff.find('-');
    gated = dash != std::string::npos && ff.substr(0, dash) == "gated";
    if (dash != std::string::npos && (!gated || ff.find('-', dash + 1) != std::string::npos)) {
      fail(ErrorCode::invalid_argument, "t5 config: feed_forward_proj '" + ff + "' is not 'ACT' or 'gated-ACT'");
    }
    // T5Config maps gated-gelu to the tanh form for backwards compatibility.
    act = ops::activation_from_name(ff == "gated-gelu" ? "gelu_new"
                                                       : ff.substr(dash == std::string::npos ? 0 : dash + 1));
    if (d_model <= 0 || d_kv <= 0 || heads <= 0 || enc_layers <= 0 || dec_layers <= 0 || vocab <= 0 || buckets < 2) {
      fail(ErrorCode::invalid_argument, "t5 config: sizes must be positive");
    }
  }
  int64_t inner() const { return heads * d_kv; }
};

// HF T5Attention._relative_position_bucket, including its float32 log and truncation.
int64_t relative_bucket(int64_t rp, bool bidirectional, int64_t num_buckets, int64_t max_distance) {
  int64_t ret = 0, n = num_buckets;
  if (bidirectional) {
    n /= 2;
    if (rp > 0) ret += n;
    rp = std::abs(rp);
  } else {
    rp = -std::min<int64_t>(rp, 0);
  }
  const int64_t max_exact = n / 2;
  if (rp < max_exact) return ret + rp;
  float v = std::log(static_cast<float>(rp) / static_cast<float>(max_exact));
  v = v / static_cast<float>(std::log(static_cast<double>(max_distance) / static_cast<double>(max_exact)));
  v = v * static_cast<float>(n - max_exact);
  return ret + std::min<int64_t>(max_exact + static_cast<int64_t>(v), n - 1);
}

// [heads, len, past + len] bias for each sequence of the pass, from table [buckets, heads].
std::vector<Tensor> position_bias(const Tensor& table, const Pass& pass, bool bidirectional, const T5Config& cfg) {
  if (table.rank() != 2 || table.dim(0) != cfg.buckets || table.dim(1) != cfg.heads) {
    fail(ErrorCode::invalid_argument, "relative_attention_bias " + shape_string(table.shape()) + " is not [" +
                                          std::to_string(cfg.buckets) + ", " + std::to_string(cfg.heads) + "]");
  }
  std::vector<Tensor> out;
  for (const PassSequence& s : pass.sequences()) {
    if (!out.empty() && s.len == pass.sequences()[0].len && s.past == pass.sequences()[0].past) {
      out.push_back(out.front());  // same shape and offsets: same bias
      continue;
    }
    const int64_t k_len = s.past + s.len;
    Tensor bias = Tensor::empty(DType::F32, {cfg.heads, s.len, k_len});
    for (int64_t i = 0; i < s.len; ++i) {
      for (int64_t j = 0; j < k_len; ++j) {
        const int64_t b = relative_bucket(j - (i + s.past), bidirectional, cfg.buckets, cfg.max_distance);
        for (int64_t h = 0; h < cfg.heads; ++h)
          bias.f32()[(h * s.len + i) * k_len + j] = table.f32()[b * cfg.heads + h];
      }
    }
    out.push_back(bias);
  }
  return out;
}

std::string enc_id(int64_t i) { return "encoder." + std::to_string(i); }
std::string dec_id(int64_t i) { return "decoder." + std::to_string(i); }

// Where the decoder's cross-attention looks: the encoder output rows of each sequence, their
// mask, and per layer the keys/values computed from them (once, on first use).
struct Encoded {
  Tensor states;  // [rows, d_model]
  Tensor mask;    // I64 [rows]
  std::vector<Tensor> k, v;
};

struct T5Sequence final : Sequence {
  Encoded encoded;
};

class T5 final : public Model {
 public:
  explicit T5(const ModelConfig& c) : cfg_(c) {}

  void forward(const TensorMap& in, const RunOptions& opt, ComponentSource& src, TensorMap& out) override {
    const TokenInputs enc_in = read_token_inputs(in, kMaxLen, "the maximum length");
    Tensor enc_hs;
    if (opt.hidden_states)
      enc_hs = Tensor::empty(DType::F32, {cfg_.enc_layers + 1, enc_in.batch, enc_in.len, cfg_.d_model});
    const Tensor enc = encode(src, enc_in, opt.hidden_states ? &enc_hs : nullptr);
    out["encoder_last_hidden_state"] = enc.reshape({enc_in.batch, enc_in.len, cfg_.d_model});
    if (opt.hidden_states) out["encoder_hidden_states"] = enc_hs;
    if (!optional_input(in, "decoder_input_ids")) return;  // encoder outputs only
    const TokenInputs dec_in = read_token_inputs(in, kMaxLen, "the maximum length", "decoder_input_ids");
    if (dec_in.batch != enc_in.batch) {
      fail(ErrorCode::invalid_argument, "decoder_input_ids has batch " + std::to_string(dec_in.batch) +
                                            ", input_ids has " + std::to_string(enc_in.batch));
    }
    Encoded encoded{enc, enc_in.mask.reshape({enc_in.batch * enc_in.len}), {}, {}};
    Tensor dec_hs;
    if (opt.hidden_states)
      dec_hs = Tensor::empty(DType::F32, {cfg_.dec_layers + 1, dec_in.batch, dec_in.len, cfg_.d_model});
    const Pass pass = Pass::batch(dec_in);
    const Tensor last = decode(
        src, pass, [&](int64_t l, size_t i) { return cross(encoded, l, enc_in.len, static_cast<int64_t>(i)); },
        [&](int64_t l, const Component& w) { cross_kv({&encoded}, l, w); }, opt.hidden_states ? &dec_hs : nullptr);
    out["decoder_last_hidden_state"] = last.reshape({dec_in.batch, dec_in.len, cfg_.d_model});
    out["logits"] = head(src, last).reshape({dec_in.batch, dec_in.len, cfg_.vocab});
    if (opt.hidden_states) out["decoder_hidden_states"] = dec_hs;
  }

  std::vector<std::unique_ptr<Sequence>> start(const TensorMap& in, int64_t max_new_tokens,
                                               ComponentSource& src) override {
    TensorMap enc_only{{"input_ids", require_input(in, "input_ids")}};
    if (const Tensor* m = optional_input(in, "attention_mask")) enc_only["attention_mask"] = *m;
    const TokenInputs enc_in = read_token_inputs(enc_only, kMaxLen, "the maximum length");
    if (max_new_tokens <= 0) fail(ErrorCode::invalid_argument, "max_new_tokens must be at least 1");
    const Tensor enc = encode(src, enc_in, nullptr);
    std::vector<std::unique_ptr<Sequence>> out;
    for (int64_t b = 0; b < enc_in.batch; ++b) {
      auto s = std::make_unique<T5Sequence>();
      s->pending = s->output_prefix = {cfg_.start_token};
      s->capacity = max_new_tokens;  // the start token and every new token but the last are fed
      // Keep the padded rows with their mask: cross-attention then sees what the batch saw.
      s->encoded.states = Tensor::empty(DType::F32, {enc_in.len, cfg_.d_model});
      std::copy_n(enc.f32() + b * enc_in.len * cfg_.d_model, enc_in.len * cfg_.d_model, s->encoded.states.f32());
      s->encoded.mask = Tensor::empty(DType::I64, {enc_in.len});
      std::copy_n(enc_in.mask.i64() + b * enc_in.len, enc_in.len, s->encoded.mask.i64());
      out.push_back(std::move(s));
    }
    return out;
  }

  Tensor step(const std::vector<Sequence*>& sequences, ComponentSource& src) override {
    const Pass pass = Pass::decode(sequences);
    auto encoded = [&](size_t i) -> Encoded& { return static_cast<T5Sequence*>(sequences[i])->encoded; };
    const Tensor last = decode(
        src, pass, [&](int64_t l, size_t i) { return cross(encoded(i), l, encoded(i).states.dim(0), 0); },
        [&](int64_t l, const Component& w) {
          std::vector<Encoded*> all;
          for (size_t i = 0; i < sequences.size(); ++i) all.push_back(&encoded(i));
          cross_kv(all, l, w);
        },
        nullptr);
    Tensor logits = head(src, pass.last_rows(last));
    pass.finish();
    return logits;
  }

 private:
  static constexpr int64_t kMaxLen = 1 << 20;  // relative positions: no learned limit

  Tensor rms(const Tensor& x, const Component& w, const char* name) const {
    return ops::rms_norm(x, w.get(name), static_cast<float>(cfg_.eps));
  }

  void feed_forward(Tensor& x, const Component& w) const {
    Tensor h = rms(x, w, names::ff_norm.name);
    Tensor m = linear(h, w, cfg_.gated ? names::wi_0 : names::wi);
    ops::activate(m, cfg_.act);
    if (cfg_.gated) ops::multiply(m, linear(h, w, names::wi_1));
    ops::add(x, linear(m, w, names::wo));
  }

  AttentionSpec attention(bool causal) const {
    AttentionSpec a = AttentionSpec::causal_lm(cfg_.heads, cfg_.heads, cfg_.d_kv);
    a.scale = 1.0f;  // T5 does not scale scores
    a.causal = causal;
    return a;
  }

  Tensor embed(ComponentSource& src, const Tensor& ids) const {
    return ops::embedding(src.acquire("shared")->get("weight"), ids);  // no embedding scaling in T5
  }

  // Self-attention sublayer: x += o(attention(norm(x))).
  void self_attention(LayerContext& ctx, Tensor& x, const Component& w, const AttentionSpec& spec) const {
    Tensor h = rms(x, w, names::self_norm.name);
    ops::add(x, linear(ctx.self_attention(linear(h, w, names::self_q), linear(h, w, names::self_k),
                                          linear(h, w, names::self_v), spec),
                       w, names::self_o));
  }

  Tensor encode(ComponentSource& src, const TokenInputs& in, Tensor* hs) {
    const Pass pass = Pass::batch(in);
    Tensor x = embed(src, pass.ids());
    LayerContext(pass, -1, hs).record(0, x);
    std::vector<Tensor> bias;
    AttentionSpec spec = attention(false);
    for (int64_t l = 0; l < cfg_.enc_layers; ++l) {
      ComponentRef layer = src.acquire(enc_id(l));
      if (l == 0) bias = position_bias(get(*layer, names::position_bias), pass, true, cfg_);
      spec.bias = &bias;
      LayerContext ctx(pass, l, hs);
      self_attention(ctx, x, *layer, spec);
      feed_forward(x, *layer);
      ctx.record(l + 1, x);
    }
    return rms(x, *src.acquire("encoder_norm"), names::norm.name);
  }

  // Layer l's cross-attention input for sequence `row` of a batch whose encoder rows are `len` long.
  KeysValues cross(const Encoded& e, int64_t l, int64_t len, int64_t row) const {
    const int64_t at = row * len;
    return {e.k[l].f32() + at * cfg_.inner(), e.v[l].f32() + at * cfg_.inner(), len, 0, e.mask.i64() + at};
  }

  // Keys/values of layer l from the encoder outputs that lack them, computed once per layer, in
  // one matmul over all their rows.
  void cross_kv(const std::vector<Encoded*>& encoded, int64_t l, const Component& w) const {
    std::vector<Encoded*> todo;
    int64_t rows = 0;
    for (Encoded* e : encoded) {
      if (static_cast<int64_t>(e->k.size()) > l) continue;
      todo.push_back(e);
      rows += e->states.dim(0);
    }
    if (todo.empty()) return;
    Tensor states = todo[0]->states;
    if (todo.size() > 1) {
      states = Tensor::empty(DType::F32, {rows, cfg_.d_model});
      int64_t at = 0;
      for (Encoded* e : todo) {
        std::copy_n(e->states.f32(), e->states.numel(), states.f32() + at);
        at += e->states.numel();
      }
    }
    const Tensor k = linear(states, w, names::cross_k), v = linear(states, w, names::cross_v);
    int64_t row = 0;
    for (Encoded* e : todo) {
      const int64_t n = e->states.dim(0);
      e->k.push_back(todo.size() == 1 ? k : rows_of(k, row, n));
      e->v.push_back(todo.size() == 1 ? v : rows_of(v, row, n));
      row += n;
    }
  }

  static Tensor rows_of(const Tensor& x, int64_t first, int64_t n) {
    Tensor out = Tensor::empty(DType::F32, {n, x.dim(1)});
    std::copy_n(x.f32() + first * x.dim(1), n * x.dim(1), out.f32());
    return out;
  }

  // The decoder over `pass`; `prepare(l, w)` readies layer l's cross keys/values so that
  // `cross_for(l, i)` gives sequence i's.
  template <class CrossFor, class Prepare>
  Tensor decode(ComponentSource& src, const Pass& pass, CrossFor&& cross_for, Prepare&& prepare, Tensor* hs) {
    Tensor x = embed(src, pass.ids());
    LayerContext(pass, -1, hs).record(0, x);
    std::vector<Tensor> bias;
    AttentionSpec self_spec = attention(true), cross_spec = attention(false);
    for (int64_t l = 0; l < cfg_.dec_layers; ++l) {
      ComponentRef layer = src.acquire(dec_id(l));
      const Component& w = *layer;
      if (l == 0) bias = position_bias(get(w, names::position_bias), pass, false, cfg_);
      self_spec.bias = &bias;
      LayerContext ctx(pass, l, hs);
      self_attention(ctx, x, w, self_spec);
      Tensor hc = rms(x, w, names::cross_norm.name);
      prepare(l, w);
      Tensor q = linear(hc, w, names::cross_q);
      ops::add(
          x, linear(ctx.cross_attention(q, cross_spec, [&](size_t i) { return cross_for(l, i); }), w, names::cross_o));
      feed_forward(x, w);
      ctx.record(l + 1, x);
    }
    return rms(x, *src.acquire("decoder_norm"), names::norm.name);
  }

  Tensor head(ComponentSource& src, const Tensor& last) {
    if (cfg_.tied) {
      Tensor scaled = last.clone();
      ops::scale(scaled, static_cast<float>(1.0 / std::sqrt(static_cast<double>(cfg_.d_model))));
      return ops::linear(scaled, src.acquire("shared")->get("weight"));
    }
    return ops::linear(last, src.acquire("lm_head")->get("weight"));
  }

  T5Config cfg_;
};

struct T5Architecture {
  static ComponentPlan plan(const ModelConfig& c) {
    const T5Config cfg(c);
    PlanBuilder p;
    auto self_attention = [](PlanBuilder::ComponentBuilder& b, bool first) {
      for (const auto& n : {names::self_q, names::self_k, names::self_v, names::self_o})
        b.tensor(n).linear_weight(n.name);
      if (first) b.tensor(names::position_bias);  // block 0's bias serves every block
      b.tensor(names::self_norm);
    };
    auto feed_forward = [&](PlanBuilder::ComponentBuilder& b) {
      if (cfg.gated) {
        b.tensor(names::wi_0).linear_weight(names::wi_0.name).tensor(names::wi_1).linear_weight(names::wi_1.name);
      } else {
        b.tensor(names::wi).linear_weight(names::wi.name);
      }
      b.tensor(names::wo).linear_weight(names::wo.name).tensor(names::ff_norm);
    };
    p.add("shared", ComponentRole::resident)
        .tensor_from("weight", {"shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"});
    for (int64_t i = 0; i < cfg.enc_layers; ++i) {
      const std::string pre = "encoder.block." + std::to_string(i) + ".layer.";
      auto& b = p.add(enc_id(i), ComponentRole::streamed, pre + "0.");
      self_attention(b, i == 0);
      feed_forward(b.hf_prefix(pre + "1."));
    }
    p.add("encoder_norm", ComponentRole::resident, "encoder.final_layer_norm.").tensor(names::norm);
    for (int64_t i = 0; i < cfg.dec_layers; ++i) {
      const std::string pre = "decoder.block." + std::to_string(i) + ".layer.";
      auto& b = p.add(dec_id(i), ComponentRole::streamed, pre + "0.");
      self_attention(b, i == 0);
      b.hf_prefix(pre + "1.");
      for (const auto& n : {names::cross_q, names::cross_k, names::cross_v, names::cross_o})
        b.tensor(n).linear_weight(n.name);
      b.tensor(names::cross_norm);
      feed_forward(b.hf_prefix(pre + "2."));
    }
    p.add("decoder_norm", ComponentRole::resident, "decoder.final_layer_norm.").tensor(names::norm);
    if (cfg.tied) {
      p.ignore_suffix("lm_head.weight");
    } else {
      p.add("lm_head", ComponentRole::streamed).tensor_from("weight", {"lm_head.weight"}).linear_weight("weight");
    }
    return p.ignore_suffix("embed_tokens.weight").build();  // tied copies of shared.weight
  }

  static std::unique_ptr<Model> create(const ModelConfig& c) { return std::make_unique<T5>(c); }
};

}  // namespace

SURF_PLUGIN(T5Architecture, "t5", "0.2.0", "t5")
