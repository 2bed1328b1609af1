#include "surf/layers.h"

#include <cmath>
#include <cstring>

namespace surf {

Pass Pass::batch(const TokenInputs& in) {
  Pass p;
  p.ids_ = in.ids.reshape({in.batch * in.len});
  p.positions_.assign(in.positions.i64(), in.positions.i64() + in.batch * in.len);
  for (int64_t b = 0; b < in.batch; ++b) {
    p.sequences_.push_back({b * in.len, in.len, 0, in.mask.i64() + b * in.len, nullptr});
  }
  return p;
}

Pass Pass::decode(const std::vector<Sequence*>& sequences) {
  Pass p;
  int64_t rows = 0;
  for (const Sequence* s : sequences) {
    if (s->pending.empty()) fail(ErrorCode::invalid_argument, "decoding step: a sequence has no pending tokens");
    if (s->length + static_cast<int64_t>(s->pending.size()) > s->capacity) {
      fail(ErrorCode::invalid_argument, "decoding step: sequence of " + std::to_string(s->length) + " tokens + " +
                                            std::to_string(s->pending.size()) + " exceeds its capacity " +
                                            std::to_string(s->capacity));
    }
    rows += static_cast<int64_t>(s->pending.size());
  }
  p.ids_ = Tensor::empty(DType::I64, {rows});
  int64_t row = 0;
  for (Sequence* s : sequences) {
    const auto len = static_cast<int64_t>(s->pending.size());
    std::copy(s->pending.begin(), s->pending.end(), p.ids_.i64() + row);
    for (int64_t i = 0; i < len; ++i) p.positions_.push_back(s->length + i);
    p.sequences_.push_back({row, len, s->length, nullptr, s});
    row += len;
  }
  return p;
}

Tensor Pass::last_rows(const Tensor& x) const {
  const int64_t width = x.dim(-1);
  Tensor out = Tensor::empty(DType::F32, {static_cast<int64_t>(sequences_.size()), width});
  for (size_t i = 0; i < sequences_.size(); ++i) {
    const PassSequence& s = sequences_[i];
    std::memcpy(out.f32() + static_cast<int64_t>(i) * width, x.f32() + (s.row + s.len - 1) * width,
                static_cast<size_t>(width) * 4);
  }
  return out;
}

void Pass::finish() const {
  for (const PassSequence& s : sequences_) {
    if (s.state == nullptr) continue;
    s.state->length += s.len;
    s.state->pending.clear();
  }
}

AttentionSpec AttentionSpec::causal_lm(int64_t heads, int64_t kv_heads, int64_t head_dim) {
  AttentionSpec a;
  a.heads = heads;
  a.kv_heads = kv_heads;
  a.head_dim = head_dim;
  a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  a.causal = true;
  return a;
}

AttentionSpec AttentionSpec::bidirectional(int64_t heads, int64_t head_dim) {
  AttentionSpec a = causal_lm(heads, heads, head_dim);
  a.causal = false;
  return a;
}

namespace {

ops::AttentionArgs args_for(const AttentionSpec& spec, const PassSequence& s) {
  ops::AttentionArgs a;
  a.batch = 1;
  a.q_len = s.len;
  a.heads = spec.heads;
  a.kv_heads = spec.kv_heads;
  a.head_dim = spec.head_dim;
  a.scale = spec.scale;
  a.causal = spec.causal;
  a.window = spec.window;
  return a;
}

void check_rows(const Tensor& t, int64_t rows, int64_t width, const char* what) {
  if (t.rank() != 2 || t.dim(0) != rows || t.dim(1) != width) {
    fail(ErrorCode::invalid_argument, std::string("attention: ") + what + shape_string(t.shape()) + " is not [" +
                                          std::to_string(rows) + ", " + std::to_string(width) + "]");
  }
}

}  // namespace

Tensor LayerContext::self_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionSpec& spec) {
  const int64_t rows = pass_.rows(), q_width = spec.heads * spec.head_dim, kv_width = spec.kv_heads * spec.head_dim;
  check_rows(q, rows, q_width, "q");
  check_rows(k, rows, kv_width, "k");
  check_rows(v, rows, kv_width, "v");
  const auto& seqs = pass_.sequences();
  if (spec.bias && spec.bias->size() != seqs.size())
    fail(ErrorCode::invalid_argument, "attention: one bias per sequence");
  Tensor out = Tensor::empty(DType::F32, {rows, q_width});
  for (size_t i = 0; i < seqs.size(); ++i) {
    const PassSequence& s = seqs[i];
    ops::AttentionArgs a = args_for(spec, s);
    const float *keys = k.f32() + s.row * kv_width, *values = v.f32() + s.row * kv_width;
    a.kv_len = a.kv_capacity = s.len;
    if (s.state != nullptr) {  // keys/values persist in the sequence's cache for this layer
      auto& caches = s.state->kv;
      if (static_cast<int64_t>(caches.size()) <= layer_) caches.resize(static_cast<size_t>(layer_ + 1));
      ops::KVCache& cache = caches[static_cast<size_t>(layer_)];
      if (cache.capacity() == 0) cache.reset(1, s.state->capacity, kv_width);
      a.past = cache.length();
      cache.append(keys, values, s.len);
      keys = cache.k();
      values = cache.v();
      a.kv_len = cache.length();
      a.kv_capacity = cache.capacity();
    }
    a.key_mask = s.key_mask;
    if (spec.bias) a.bias = (*spec.bias)[i].f32();
    ops::attention(q.f32() + s.row * q_width, keys, values, out.f32() + s.row * q_width, a);
  }
  return out;
}

Tensor LayerContext::cross_attention(const Tensor& q, const AttentionSpec& spec, const std::vector<KeysValues>& kv) {
  const int64_t rows = pass_.rows(), q_width = spec.heads * spec.head_dim;
  check_rows(q, rows, q_width, "q");
  const auto& seqs = pass_.sequences();
  Tensor out = Tensor::empty(DType::F32, {rows, q_width});
  for (size_t i = 0; i < seqs.size(); ++i) {
    const PassSequence& s = seqs[i];
    ops::AttentionArgs a = args_for(spec, s);
    a.causal = false;
    a.kv_len = a.kv_capacity = kv[i].len;
    a.kv_stride = kv[i].stride;
    a.key_mask = kv[i].mask;
    ops::attention(q.f32() + s.row * q_width, kv[i].k, kv[i].v, out.f32() + s.row * q_width, a);
  }
  return out;
}

void LayerContext::record(int64_t index, const Tensor& x) const {
  if (hidden_states_ != nullptr) store_layer(*hidden_states_, index, x);
}

}  // namespace surf
