// What every layer stack shares, so an architecture is mostly its math:
//   Pass          which sequences a pass over the layers runs and where their rows sit in the
//                 stacked activations [rows, width] (a padded batch in forward, the pending
//                 tokens of several sequences when decoding);
//   LayerContext  one layer of a pass: positions, self-attention through each sequence's
//                 key/value cache (or a scratch one), cross-attention, hidden-state recording;
//   AttentionSpec the attention arguments in one place (heads, scale, causal, window, bias).
#pragma once

#include <concepts>
#include <cstdint>
#include <vector>

#include "surf/decoding.h"
#include "surf/ops.h"
#include "surf/plugin.h"
#include "surf/tensor.h"
#include "surf/export.h"

SURF_SDK_PUBLIC_BEGIN

namespace surf {

// One sequence's part of a pass.
struct PassSequence {
  int64_t row = 0;                    // first row of its new tokens in the stacked activations
  int64_t len = 0;                    // new tokens in this pass
  int64_t past = 0;                   // tokens already in its key/value caches
  const int64_t* key_mask = nullptr;  // [past + len] 1 = real key (padded batches); null: all real
  Sequence* state = nullptr;          // decoding state whose caches persist; null: scratch
};

class Pass {
 public:
  // A plain forward over a padded batch: B sequences of L rows, positions and masks from `in`.
  static Pass batch(const TokenInputs& in);
  // A decoding step: each sequence's pending tokens at positions length, length + 1, ...
  static Pass decode(const std::vector<Sequence*>& sequences);

  int64_t rows() const { return static_cast<int64_t>(positions_.size()); }
  const Tensor& ids() const { return ids_; }  // I64 [rows]
  const int64_t* positions() const { return positions_.data(); }
  Tensor position_ids() const { return Tensor::view(DType::I64, {rows()}, positions_.data(), nullptr); }  // I64 [rows]
  const std::vector<PassSequence>& sequences() const { return sequences_; }
  // The row of each sequence's last new token: [sequences, width].
  Tensor last_rows(const Tensor& x) const;
  // After a decoding pass: every sequence's pending tokens are now in its caches.
  void finish() const;

 private:
  Tensor ids_;
  std::vector<int64_t> positions_;
  std::vector<PassSequence> sequences_;
};

// Attention arguments, filled once per architecture (one builder instead of field-by-field blocks).
struct AttentionSpec {
  int64_t heads = 1, kv_heads = 1, head_dim = 0;
  float scale = 1.0f;
  bool causal = true;
  int64_t window = 0;  // sliding window over key positions (0: none)
  // Additive score bias per sequence of the pass, each [heads, len, past + len] (T5).
  const std::vector<Tensor>* bias = nullptr;

  // Scores scaled by 1/sqrt(head_dim), causal: what decoder-only models use.
  static AttentionSpec causal_lm(int64_t heads, int64_t kv_heads, int64_t head_dim);
  // Scaled by 1/sqrt(head_dim), every real key visible: encoders.
  static AttentionSpec bidirectional(int64_t heads, int64_t head_dim);
};

// Keys and values a sequence's queries attend to in cross-attention: rows [len, width] with
// `stride` floats between rows, and an optional key mask [len].
struct KeysValues {
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t len = 0;
  int64_t stride = 0;
  const int64_t* mask = nullptr;
};

class LayerContext {
 public:
  // `hidden_states` (optional) receives the residual stream: [layers + 1, rows, width].
  LayerContext(const Pass& pass, int64_t layer, Tensor* hidden_states = nullptr)
      : pass_(pass), layer_(layer), hidden_states_(hidden_states) {}

  int64_t layer() const { return layer_; }
  const Pass& pass() const { return pass_; }
  const int64_t* positions() const { return pass_.positions(); }

  // Appends k and v [rows, kv_heads * head_dim] to each sequence's cache for this layer (in a
  // plain forward, they are used in place) and attends q [rows, heads * head_dim] over it.
  Tensor self_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionSpec& spec);
  // q attends to keys/values that `source(i)` gives for the pass's i-th sequence.
  template <class Source>
  requires std::invocable<Source&, size_t> Tensor cross_attention(const Tensor& q, const AttentionSpec& spec,
                                                                  Source&& source) {
    std::vector<KeysValues> kv;
    for (size_t i = 0; i < pass_.sequences().size(); ++i) kv.push_back(source(i));
    return cross_attention(q, spec, kv);
  }
  Tensor cross_attention(const Tensor& q, const AttentionSpec& spec, const std::vector<KeysValues>& kv);

  // Stores x as hidden state `index` (0: embeddings, l + 1: after layer l) when recording.
  void record(int64_t index, const Tensor& x) const;

 private:
  const Pass& pass_;
  int64_t layer_;
  Tensor* hidden_states_;
};

}  // namespace surf

SURF_SDK_PUBLIC_END
