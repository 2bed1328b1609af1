// Helpers every architecture needs around the layers: reading token inputs with clear errors
// and starting decoding sequences from a prompt.
#pragma once

#include <functional>
#include <string>
#include <vector>
#include <string_view>

#include "surf/ops.h"
#include "surf/plugin.h"
#include "surf/tensor.h"
#include "surf/export.h"

SURF_SDK_PUBLIC_BEGIN

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

// One decoding Sequence per row of `ids_name` (pads where attention_mask is 0 left out), each
// starting with its real tokens pending and its row as output_prefix, able to hold
// `max_new_tokens` more. Errors: as read_token_inputs, max_new_tokens < 1, row + new tokens over
// max_positions. `make` creates the (possibly derived) Sequence objects.
std::vector<std::unique_ptr<Sequence>> start_sequences(
    const TensorMap& inputs, int64_t max_new_tokens, int64_t max_positions, std::string_view limit_name,
    const std::function<std::unique_ptr<Sequence>()>& make = [] { return std::make_unique<Sequence>(); });

}  // namespace surf

SURF_SDK_PUBLIC_END
