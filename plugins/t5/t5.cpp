// T5ForConditionalGeneration: RMS pre-norm encoder/decoder, relative position buckets (block 0's
// bias shared by all blocks), no score scaling, relu or gated feed-forward, cross-attention,
// tied head rescaled by d_model^-0.5. Conventions follow HF modeling_t5.py
// (shared/reference/README.md). Encoder and decoder blocks are separate streamed components.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "surf/decoding.h"
#include "surf/ops.h"
#include "surf/plugin.h"

namespace {

using namespace surf;

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
    act = ops::activation_from_name(ff == "gated-gelu" ? "gelu_new" : ff.substr(dash == std::string::npos ? 0 : dash + 1));
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

// [heads, q_len, k_len] bias for queries at q_offset.. and keys 0..k_len-1 from table [buckets, heads].
Tensor position_bias(const Tensor& table, int64_t q_len, int64_t k_len, int64_t q_offset, bool bidirectional,
                     const T5Config& cfg) {
  if (table.rank() != 2 || table.dim(0) != cfg.buckets || table.dim(1) != cfg.heads) {
    fail(ErrorCode::invalid_argument, "relative_attention_bias " + shape_string(table.shape()) + " is not [" +
                                          std::to_string(cfg.buckets) + ", " + std::to_string(cfg.heads) + "]");
  }
  Tensor bias = Tensor::empty(DType::F32, {cfg.heads, q_len, k_len});
  for (int64_t i = 0; i < q_len; ++i) {
    for (int64_t j = 0; j < k_len; ++j) {
      const int64_t b = relative_bucket(j - (i + q_offset), bidirectional, cfg.buckets, cfg.max_distance);
      for (int64_t h = 0; h < cfg.heads; ++h) bias.f32()[(h * q_len + i) * k_len + j] = table.f32()[b * cfg.heads + h];
    }
  }
  return bias;
}

std::string enc_id(int64_t i) { return "encoder." + std::to_string(i); }
std::string dec_id(int64_t i) { return "decoder." + std::to_string(i); }

class T5 final : public Model {
 public:
  explicit T5(const ModelConfig& c) : cfg_(c) {}

  void forward(const TensorMap& in, const RunOptions& opt, ComponentSource& src, TensorMap& out) override {
    const TokenInputs enc_in = read_token_inputs(in, kMaxLen, "the maximum length");
    src.begin_pass();
    Tensor enc_hs;
    if (opt.hidden_states) enc_hs = Tensor::empty(DType::F32, {cfg_.enc_layers + 1, enc_in.batch, enc_in.len, cfg_.d_model});
    const Tensor enc = encode(src, enc_in, opt.hidden_states ? &enc_hs : nullptr);
    out["encoder_last_hidden_state"] = enc.reshape({enc_in.batch, enc_in.len, cfg_.d_model});
    if (opt.hidden_states) out["encoder_hidden_states"] = enc_hs;
    if (!optional_input(in, "decoder_input_ids")) return;  // encoder outputs only
    const TokenInputs dec_in = read_token_inputs(in, kMaxLen, "the maximum length", "decoder_input_ids");
    if (dec_in.batch != enc_in.batch) {
      fail(ErrorCode::invalid_argument, "decoder_input_ids has batch " + std::to_string(dec_in.batch) +
                                            ", input_ids has " + std::to_string(enc_in.batch));
    }
    DecoderState st = new_state(dec_in.batch, dec_in.len);
    Tensor dec_hs;
    if (opt.hidden_states) dec_hs = Tensor::empty(DType::F32, {cfg_.dec_layers + 1, dec_in.batch, dec_in.len, cfg_.d_model});
    const Tensor last = decode(src, dec_in.ids, enc, enc_in, st, opt.hidden_states ? &dec_hs : nullptr);
    out["decoder_last_hidden_state"] = last.reshape({dec_in.batch, dec_in.len, cfg_.d_model});
    out["logits"] = head(src, last).reshape({dec_in.batch, dec_in.len, cfg_.vocab});
    if (opt.hidden_states) out["decoder_hidden_states"] = dec_hs;
  }

  void generate(const TensorMap& in, const RunOptions& opt, ComponentSource& src, TensorMap& out) override {
    TensorMap enc_only{{"input_ids", require_input(in, "input_ids")}};
    if (const Tensor* m = optional_input(in, "attention_mask")) enc_only["attention_mask"] = *m;
    const TokenInputs enc_in = read_token_inputs(enc_only, kMaxLen, "the maximum length");
    const int64_t steps = opt.max_new_tokens, batch = enc_in.batch;
    if (steps <= 0) fail(ErrorCode::invalid_argument, "max_new_tokens must be at least 1");
    src.begin_pass();
    const Tensor enc = encode(src, enc_in, nullptr);
    DecoderState st = new_state(batch, steps);
    Tensor generated = Tensor::empty(DType::I64, {batch, steps + 1});
    Tensor step_logits = Tensor::empty(DType::F32, {batch, steps, cfg_.vocab});
    Tensor tokens = Tensor::empty(DType::I64, {batch, 1});
    for (int64_t b = 0; b < batch; ++b) generated.i64()[b * (steps + 1)] = tokens.i64()[b] = cfg_.start_token;
    for (int64_t s = 0; s < steps; ++s) {
      if (s > 0) src.begin_pass(dec_id(0));
      const Tensor logits = head(src, decode(src, tokens, enc, enc_in, st, nullptr));
      const auto next = ops::argmax_rows(logits.f32(), batch, cfg_.vocab);
      for (int64_t b = 0; b < batch; ++b) {
        std::copy_n(logits.f32() + b * cfg_.vocab, cfg_.vocab, step_logits.f32() + (b * steps + s) * cfg_.vocab);
        generated.i64()[b * (steps + 1) + s + 1] = tokens.i64()[b] = next[b];
      }
    }
    out["generated_ids"] = generated;
    out["generation_logits"] = step_logits;
  }

 private:
  static constexpr int64_t kMaxLen = 1 << 20;  // relative positions: no learned limit

  struct DecoderState {
    std::vector<ops::KVCache> self;
    std::vector<Tensor> cross_k, cross_v;  // computed once per layer from the encoder output
  };

  DecoderState new_state(int64_t batch, int64_t capacity) const {
    DecoderState st;
    st.self.resize(cfg_.dec_layers);
    for (auto& c : st.self) c.reset(batch, capacity, cfg_.inner());
    st.cross_k.resize(cfg_.dec_layers);
    st.cross_v.resize(cfg_.dec_layers);
    return st;
  }

  Tensor rms(const Tensor& x, const Component& w, const char* name) const {
    return ops::rms_norm(x, w.get(name), static_cast<float>(cfg_.eps));
  }

  void feed_forward(Tensor& x, const Component& w) const {
    Tensor h = rms(x, w, "ff_norm.weight");
    Tensor m;
    if (cfg_.gated) {
      m = ops::linear(h, w.get("ff.wi_0.weight"));
      ops::activate(m, cfg_.act);
      ops::multiply(m, ops::linear(h, w.get("ff.wi_1.weight")));
    } else {
      m = ops::linear(h, w.get("ff.wi.weight"));
      ops::activate(m, cfg_.act);
    }
    ops::add(x, ops::linear(m, w.get("ff.wo.weight")));
  }

  // Attention of q [batch*q_len, inner] over k/v [batch, kv_capacity, inner] (first kv_len rows).
  Tensor attend(const Tensor& q, const float* k, const float* v, int64_t batch, int64_t q_len, int64_t kv_len,
                int64_t kv_capacity, int64_t past, bool causal, const int64_t* key_mask, const Tensor* bias) const {
    ops::AttentionArgs a;
    a.batch = batch;
    a.q_len = q_len;
    a.kv_len = kv_len;
    a.kv_capacity = kv_capacity;
    a.heads = a.kv_heads = cfg_.heads;
    a.head_dim = cfg_.d_kv;
    a.past = past;
    a.scale = 1.0f;  // T5 does not scale scores
    a.causal = causal;
    a.key_mask = key_mask;
    a.bias = bias ? bias->f32() : nullptr;
    Tensor out = Tensor::empty(DType::F32, {batch * q_len, cfg_.inner()});
    ops::attention(q.f32(), k, v, out.f32(), a);
    return out;
  }

  Tensor encode(ComponentSource& src, const TokenInputs& in, Tensor* hs) {
    Tensor x;
    {
      ComponentRef shared = src.acquire("shared");
      x = ops::embedding(shared->get("weight"), in.ids);  // no embedding scaling in T5
    }
    if (hs) store_layer(*hs, 0, x);
    Tensor bias;
    for (int64_t l = 0; l < cfg_.enc_layers; ++l) {
      ComponentRef layer = src.acquire(enc_id(l));
      const Component& w = *layer;
      if (l == 0) bias = position_bias(w.get("self.relative_attention_bias.weight"), in.len, in.len, 0, true, cfg_);
      Tensor h = rms(x, w, "self_norm.weight");
      Tensor q = ops::linear(h, w.get("self.q.weight"));
      Tensor k = ops::linear(h, w.get("self.k.weight"));
      Tensor v = ops::linear(h, w.get("self.v.weight"));
      Tensor a = attend(q, k.f32(), v.f32(), in.batch, in.len, in.len, in.len, 0, false, in.mask.i64(), &bias);
      ops::add(x, ops::linear(a, w.get("self.o.weight")));
      feed_forward(x, w);
      if (hs) store_layer(*hs, l + 1, x);
    }
    ComponentRef norm = src.acquire("encoder_norm");
    return rms(x, *norm, "weight");
  }

  // Runs `ids` [batch, n] through the decoder, appending to the self-attention caches.
  Tensor decode(ComponentSource& src, const Tensor& ids, const Tensor& enc, const TokenInputs& enc_in,
                DecoderState& st, Tensor* hs) {
    const int64_t batch = ids.dim(0), n = ids.dim(1);
    Tensor x;
    {
      ComponentRef shared = src.acquire("shared");
      x = ops::embedding(shared->get("weight"), ids);
    }
    if (hs) store_layer(*hs, 0, x);
    const int64_t past = st.self[0].length();
    Tensor bias;
    for (int64_t l = 0; l < cfg_.dec_layers; ++l) {
      ComponentRef layer = src.acquire(dec_id(l));
      const Component& w = *layer;
      if (l == 0) {
        bias = position_bias(w.get("self.relative_attention_bias.weight"), n, past + n, past, false, cfg_);
      }
      Tensor h = rms(x, w, "self_norm.weight");
      Tensor q = ops::linear(h, w.get("self.q.weight"));
      Tensor k = ops::linear(h, w.get("self.k.weight"));
      Tensor v = ops::linear(h, w.get("self.v.weight"));
      ops::KVCache& cache = st.self[l];
      cache.append(k.f32(), v.f32(), n);
      Tensor a = attend(q, cache.k(), cache.v(), batch, n, cache.length(), cache.capacity(), past, true, nullptr, &bias);
      ops::add(x, ops::linear(a, w.get("self.o.weight")));
      Tensor hc = rms(x, w, "cross_norm.weight");
      if (!st.cross_k[l].defined()) {
        st.cross_k[l] = ops::linear(enc, w.get("cross.k.weight"));
        st.cross_v[l] = ops::linear(enc, w.get("cross.v.weight"));
      }
      Tensor qc = ops::linear(hc, w.get("cross.q.weight"));
      Tensor c = attend(qc, st.cross_k[l].f32(), st.cross_v[l].f32(), batch, n, enc_in.len, enc_in.len, 0, false,
                        enc_in.mask.i64(), nullptr);
      ops::add(x, ops::linear(c, w.get("cross.o.weight")));
      feed_forward(x, w);
      if (hs) store_layer(*hs, l + 1, x);
    }
    ComponentRef norm = src.acquire("decoder_norm");
    return rms(x, *norm, "weight");
  }

  Tensor head(ComponentSource& src, const Tensor& last) {
    if (cfg_.tied) {
      Tensor scaled = last.clone();
      ops::scale(scaled, static_cast<float>(1.0 / std::sqrt(static_cast<double>(cfg_.d_model))));
      ComponentRef shared = src.acquire("shared");
      return ops::linear(scaled, shared->get("weight"));
    }
    ComponentRef lm = src.acquire("lm_head");
    return ops::linear(last, lm->get("weight"));
  }

  T5Config cfg_;
};

struct T5Architecture {
  static ComponentPlan plan(const ModelConfig& c) {
    const T5Config cfg(c);
    auto t = [](const std::string& name, const std::string& hf) { return TensorSpec{name, {hf}, true}; };
    auto add_attention = [&](ComponentSpec& s, const std::string& local, const std::string& hf) {
      for (const char* p : {"q", "k", "v", "o"}) s.tensors.push_back(t(local + "." + p + ".weight", hf + "." + p + ".weight"));
    };
    auto add_ff = [&](ComponentSpec& s, const std::string& hf) {
      if (cfg.gated) {
        s.tensors.push_back(t("ff.wi_0.weight", hf + ".DenseReluDense.wi_0.weight"));
        s.tensors.push_back(t("ff.wi_1.weight", hf + ".DenseReluDense.wi_1.weight"));
      } else {
        s.tensors.push_back(t("ff.wi.weight", hf + ".DenseReluDense.wi.weight"));
      }
      s.tensors.push_back(t("ff.wo.weight", hf + ".DenseReluDense.wo.weight"));
      s.tensors.push_back(t("ff_norm.weight", hf + ".layer_norm.weight"));
    };
    ComponentPlan p;
    p.components.push_back({"shared", ComponentRole::resident,
                            {TensorSpec{"weight", {"shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}, true}}});
    p.execution_order.push_back("shared");
    for (int64_t i = 0; i < cfg.enc_layers; ++i) {
      const std::string pre = "encoder.block." + std::to_string(i) + ".layer.";
      ComponentSpec s{enc_id(i), ComponentRole::streamed, {}};
      add_attention(s, "self", pre + "0.SelfAttention");
      if (i == 0) s.tensors.push_back(t("self.relative_attention_bias.weight", pre + "0.SelfAttention.relative_attention_bias.weight"));
      s.tensors.push_back(t("self_norm.weight", pre + "0.layer_norm.weight"));
      add_ff(s, pre + "1");
      p.components.push_back(std::move(s));
      p.execution_order.push_back(enc_id(i));
    }
    p.components.push_back({"encoder_norm", ComponentRole::resident, {t("weight", "encoder.final_layer_norm.weight")}});
    p.execution_order.push_back("encoder_norm");
    for (int64_t i = 0; i < cfg.dec_layers; ++i) {
      const std::string pre = "decoder.block." + std::to_string(i) + ".layer.";
      ComponentSpec s{dec_id(i), ComponentRole::streamed, {}};
      add_attention(s, "self", pre + "0.SelfAttention");
      if (i == 0) s.tensors.push_back(t("self.relative_attention_bias.weight", pre + "0.SelfAttention.relative_attention_bias.weight"));
      s.tensors.push_back(t("self_norm.weight", pre + "0.layer_norm.weight"));
      add_attention(s, "cross", pre + "1.EncDecAttention");
      s.tensors.push_back(t("cross_norm.weight", pre + "1.layer_norm.weight"));
      add_ff(s, pre + "2");
      p.components.push_back(std::move(s));
      p.execution_order.push_back(dec_id(i));
    }
    p.components.push_back({"decoder_norm", ComponentRole::resident, {t("weight", "decoder.final_layer_norm.weight")}});
    p.execution_order.push_back("decoder_norm");
    if (!cfg.tied) {
      p.components.push_back({"lm_head", ComponentRole::streamed, {t("weight", "lm_head.weight")}});
      p.execution_order.push_back("lm_head");
    } else {
      p.ignored_suffixes.push_back("lm_head.weight");
    }
    p.ignored_suffixes.push_back("embed_tokens.weight");  // tied copies of shared.weight
    return p;
  }

  static std::unique_ptr<Model> create(const ModelConfig& c) { return std::make_unique<T5>(c); }
};

}  // namespace

SURF_PLUGIN(T5Architecture, "t5", "0.1.0", "t5")
