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
    fail(ErrorCode::invalid_argument,
         std::string(ids_name) + ": expected [batch, seq], got " + shape_string(t.ids.shape()));
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
        fail(ErrorCode::invalid_argument,
             "position id " + std::to_string(v) + " is out of range [0, " + std::to_string(max_positions) + ")");
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

std::vector<std::unique_ptr<Sequence>> start_sequences(const TensorMap& inputs, int64_t max_new_tokens,
                                                       int64_t max_positions, std::string_view limit_name,
                                                       const std::function<std::unique_ptr<Sequence>()>& make) {
  TensorMap prompt_only;
  prompt_only["input_ids"] = require_input(inputs, "input_ids");
  if (const Tensor* m = optional_input(inputs, "attention_mask")) prompt_only["attention_mask"] = *m;
  const TokenInputs p = read_token_inputs(prompt_only, max_positions, limit_name);
  if (max_new_tokens <= 0) fail(ErrorCode::invalid_argument, "max_new_tokens must be at least 1");
  if (p.len + max_new_tokens > max_positions) {
    fail(ErrorCode::invalid_argument, "prompt of " + std::to_string(p.len) + " tokens + " +
                                          std::to_string(max_new_tokens) + " new tokens exceeds " +
                                          std::string(limit_name) + " " + std::to_string(max_positions));
  }
  std::vector<std::unique_ptr<Sequence>> out;
  for (int64_t b = 0; b < p.batch; ++b) {
    auto s = make();
    const int64_t* ids = p.ids.i64() + b * p.len;
    const int64_t* mask = p.mask.i64() + b * p.len;
    s->output_prefix.assign(ids, ids + p.len);
    for (int64_t t = 0; t < p.len; ++t) {
      if (mask[t] != 0) s->pending.push_back(ids[t]);
    }
    if (s->pending.empty()) fail(ErrorCode::invalid_argument, "prompt row " + std::to_string(b) + " has no real token");
    s->capacity = static_cast<int64_t>(s->pending.size()) + max_new_tokens;
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace surf
