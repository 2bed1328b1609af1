#include "surf/decoding.h"

#include <algorithm>
#include <cstring>

#include "surf/ops.h"
#include "surf/plugin.h"

namespace surf {

Tensor ones_like_ids(int64_t batch, int64_t len) {
  Tensor t = Tensor::empty(DType::I64, {batch, len});
  std::fill_n(t.i64(), batch * len, 1);
  return t;
}

TokenInputs read_token_inputs(const TensorMap& inputs, int64_t max_positions, std::string_view limit_name,
                              std::string_view ids_name) {
  TokenInputs t;
  t.ids = require_input(inputs, ids_name);
  expect_dtype(t.ids, DType::I64, ids_name);
  if (t.ids.rank() != 2) {
    fail(ErrorCode::invalid_argument, std::string(ids_name) + ": expected [batch, seq], got " + shape_string(t.ids.shape()));
  }
  t.batch = t.ids.dim(0);
  t.len = t.ids.dim(1);
  if (t.batch == 0 || t.len == 0) {
    fail(ErrorCode::invalid_argument, std::string(ids_name) + " is empty " + shape_string(t.ids.shape()));
  }
  if (t.len > max_positions) {
    fail(ErrorCode::invalid_argument, "sequence of " + std::to_string(t.len) + " tokens exceeds " +
                                          std::string(limit_name) + " " + std::to_string(max_positions));
  }
  if (const Tensor* m = optional_input(inputs, "attention_mask"); m && ids_name == "input_ids") {
    expect_dtype(*m, DType::I64, "attention_mask");
    expect_shape(*m, {t.batch, t.len}, "attention_mask");
    t.mask = *m;
  } else {
    t.mask = ones_like_ids(t.batch, t.len);
  }
  if (const Tensor* p = optional_input(inputs, "position_ids"); p && ids_name == "input_ids") {
    expect_dtype(*p, DType::I64, "position_ids");
    if (p->numel() == t.len && t.batch > 1) {  // [1, len] broadcast over the batch
      t.positions = Tensor::empty(DType::I64, {t.batch, t.len});
      for (int64_t b = 0; b < t.batch; ++b) std::copy_n(p->i64(), t.len, t.positions.i64() + b * t.len);
    } else {
      t.positions = *p;
      expect_shape(t.positions, {t.batch, t.len}, "position_ids");
    }
    for (int64_t i = 0; i < t.positions.numel(); ++i) {
      const int64_t v = t.positions.i64()[i];
      if (v < 0 || v >= max_positions) {
        fail(ErrorCode::invalid_argument, "position id " + std::to_string(v) + " is out of range [0, " +
                                              std::to_string(max_positions) + ")");
      }
    }
  } else {
    t.positions = Tensor::empty(DType::I64, {t.batch, t.len});
    for (int64_t b = 0; b < t.batch; ++b)
      for (int64_t i = 0; i < t.len; ++i) t.positions.i64()[b * t.len + i] = i;
  }
  return t;
}

Tensor last_positions(const Tensor& x, int64_t batch, int64_t len) {
  const int64_t width = x.dim(-1);
  Tensor out = Tensor::empty(DType::F32, {batch, width});
  for (int64_t b = 0; b < batch; ++b) {
    std::memcpy(out.f32() + b * width, x.f32() + ((b + 1) * len - 1) * width, static_cast<size_t>(width) * 4);
  }
  return out;
}

void store_layer(Tensor& stack, int64_t layer, const Tensor& x) {
  const int64_t plane = x.numel();
  if ((layer + 1) * plane > stack.numel()) fail(ErrorCode::internal, "hidden state stack too small");
  std::memcpy(stack.f32() + layer * plane, x.f32(), static_cast<size_t>(plane) * 4);
}

void greedy_generate(const TensorMap& inputs, int64_t max_new, int64_t max_positions, std::string_view limit_name,
                     const DecoderStep& step, TensorMap& out) {
  TensorMap prompt_only;
  prompt_only["input_ids"] = require_input(inputs, "input_ids");
  if (const Tensor* m = optional_input(inputs, "attention_mask")) prompt_only["attention_mask"] = *m;
  const TokenInputs p = read_token_inputs(prompt_only, max_positions, limit_name);
  if (max_new <= 0) fail(ErrorCode::invalid_argument, "max_new_tokens must be at least 1");
  const int64_t batch = p.batch, len = p.len, total = len + max_new;
  if (total > max_positions) {
    fail(ErrorCode::invalid_argument, "prompt of " + std::to_string(len) + " tokens + " + std::to_string(max_new) +
                                          " new tokens exceeds " + std::string(limit_name) + " " +
                                          std::to_string(max_positions));
  }
  Tensor key_mask = Tensor::empty(DType::I64, {batch, total});
  Tensor positions = Tensor::empty(DType::I64, {batch, len});
  std::vector<int64_t> next_pos(batch);
  for (int64_t b = 0; b < batch; ++b) {
    int64_t seen = 0;
    for (int64_t t = 0; t < total; ++t) key_mask.i64()[b * total + t] = t < len ? p.mask.i64()[b * len + t] : 1;
    for (int64_t t = 0; t < len; ++t) {
      const bool real = p.mask.i64()[b * len + t] != 0;
      seen += real;
      positions.i64()[b * len + t] = real ? seen - 1 : 1;
    }
    next_pos[b] = seen;
  }
  Tensor generated = Tensor::empty(DType::I64, {batch, total});
  for (int64_t b = 0; b < batch; ++b) std::copy_n(p.ids.i64() + b * len, len, generated.i64() + b * total);
  Tensor tokens = p.ids;
  Tensor step_logits;
  for (int64_t s = 0; s < max_new; ++s) {
    const int64_t past = s == 0 ? 0 : len + s - 1;
    const int64_t kv_len = len + s;
    Tensor mask = Tensor::empty(DType::I64, {batch, kv_len});
    for (int64_t b = 0; b < batch; ++b) std::copy_n(key_mask.i64() + b * total, kv_len, mask.i64() + b * kv_len);
    const Tensor logits = step(tokens, positions, mask, past, total);
    const int64_t vocab = logits.dim(-1);
    if (s == 0) step_logits = Tensor::empty(DType::F32, {batch, max_new, vocab});
    const auto next = ops::argmax_rows(logits.f32(), batch, vocab);
    tokens = Tensor::empty(DType::I64, {batch, 1});
    positions = Tensor::empty(DType::I64, {batch, 1});
    for (int64_t b = 0; b < batch; ++b) {
      std::copy_n(logits.f32() + b * vocab, vocab, step_logits.f32() + (b * max_new + s) * vocab);
      generated.i64()[b * total + len + s] = next[b];
      tokens.i64()[b] = next[b];
      positions.i64()[b] = next_pos[b]++;
    }
  }
  out["generated_ids"] = generated;
  out["generation_logits"] = step_logits;
}

void CausalLM::forward(const TensorMap& in, const RunOptions& opt, ComponentSource& src, TensorMap& out) {
  const TokenInputs t = read_token_inputs(in, dims_.max_positions, dims_.limit_name);
  std::vector<ops::KVCache> scratch(1);
  Tensor hs;
  if (opt.hidden_states) hs = Tensor::empty(DType::F32, {dims_.layers + 1, t.batch, t.len, dims_.hidden});
  src.begin_pass();
  Tensor x = run_layers(src, t.ids, t.positions, t.mask, t.batch, t.len, scratch, false, opt.hidden_states ? &hs : nullptr);
  Tensor last = final_norm(src, x);
  out["logits"] = head(src, last).reshape({t.batch, t.len, dims_.vocab});
  out["last_hidden_state"] = last.reshape({t.batch, t.len, dims_.hidden});
  if (opt.hidden_states) out["hidden_states"] = hs;
}

void CausalLM::generate(const TensorMap& in, const RunOptions& opt, ComponentSource& src, TensorMap& out) {
  std::vector<ops::KVCache> caches(static_cast<size_t>(dims_.layers));
  greedy_generate(in, opt.max_new_tokens, dims_.max_positions, dims_.limit_name,
                  [&](const Tensor& tokens, const Tensor& positions, const Tensor& key_mask, int64_t past,
                      int64_t capacity) {
                    const int64_t batch = tokens.dim(0), len = tokens.dim(1);
                    if (past == 0) {
                      for (auto& c : caches) c.reset(batch, capacity, dims_.kv_width);
                    }
                    src.begin_pass();
                    Tensor x = run_layers(src, tokens, positions, key_mask, batch, len, caches, true, nullptr);
                    return head(src, final_norm(src, last_positions(x, batch, len)));
                  },
                  out);
}

}  // namespace surf
