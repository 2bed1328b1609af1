// Helpers every architecture needs around the layers: reading token inputs with clear errors,
// and the greedy generation loop of decoder-only models.
#pragma once

#include <functional>
#include <string_view>

#include "surf/tensor.h"

namespace surf {

struct TokenInputs {
  Tensor ids;        // I64 [batch, len]
  Tensor mask;       // I64 [batch, len], ones when absent
  Tensor positions;  // I64 [batch, len]: position_ids if given, else arange(len) per row
  int64_t batch = 0, len = 0;
};

// Reads `ids_name` (and attention_mask, position_ids) from inputs. Errors: missing or empty ids,
// wrong dtype/shape, len > max_positions (naming `limit_name`), a position id outside
// [0, max_positions).
TokenInputs read_token_inputs(const TensorMap& inputs, int64_t max_positions, std::string_view limit_name,
                              std::string_view ids_name = "input_ids");

Tensor ones_like_ids(int64_t batch, int64_t len);
// Rows (b+1)*len-1 of x[batch*len, width]: the last position of each sequence -> [batch, width].
Tensor last_positions(const Tensor& x, int64_t batch, int64_t len);
// [rows, width] rows gathered into out[layer] of a [layers, rows, width] tensor.
void store_layer(Tensor& stack, int64_t layer, const Tensor& x);

// One incremental step: run `tokens` [batch, n] at `positions` [batch, n] against keys
// `key_mask` [batch, past + n] (KV caches sized `capacity`, reset when past == 0) and return the
// logits of the last position of each row [batch, vocab].
using DecoderStep = std::function<Tensor(const Tensor& tokens, const Tensor& positions, const Tensor& key_mask,
                                         int64_t past, int64_t capacity)>;

// Greedy decoding of a decoder-only model, positions by HF generate()'s rule (cumsum(mask) - 1,
// pads at 1). Writes generated_ids [batch, len + max_new] and generation_logits
// [batch, max_new, vocab]. Never stops early.
void greedy_generate(const TensorMap& inputs, int64_t max_new_tokens, int64_t max_positions,
                     std::string_view limit_name, const DecoderStep& step, TensorMap& outputs);

}  // namespace surf
