// Helpers every architecture needs around the layers: reading token inputs with clear errors,
// and the greedy generation loop of decoder-only models.
#pragma once

#include <functional>
#include <string>
#include <vector>
#include <string_view>

#include "surf/ops.h"
#include "surf/plugin.h"
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

// A decoder-only causal LM (LLaMA, GPT-2 and kin): the architecture supplies the layer stack,
// the final norm and the head; forward (logits, last_hidden_state, hidden_states) and greedy
// generation with a KV cache are shared.
class CausalLM : public Model {
 public:
  struct Dims {
    int64_t layers, hidden, vocab, kv_width, max_positions;
    std::string limit_name;  // the config key of max_positions, for messages
  };
  explicit CausalLM(Dims dims) : dims_(std::move(dims)) {}
  void forward(const TensorMap& inputs, const RunOptions& options, ComponentSource& source, TensorMap& outputs) override;
  void generate(const TensorMap& inputs, const RunOptions& options, ComponentSource& source, TensorMap& outputs) override;

 protected:
  // Embeds ids [batch, len] at `positions` and runs every layer. With `cached`, keys/values are
  // appended to caches[layer] and attention covers the cache; otherwise caches[0] is per-layer
  // scratch. Stores the residual stream into hidden_states ([layers+1, ...]) when given.
  virtual Tensor run_layers(ComponentSource& source, const Tensor& ids, const Tensor& positions,
                            const Tensor& key_mask, int64_t batch, int64_t len, std::vector<ops::KVCache>& caches,
                            bool cached, Tensor* hidden_states) = 0;
  virtual Tensor final_norm(ComponentSource& source, const Tensor& x) = 0;
  virtual Tensor head(ComponentSource& source, const Tensor& x) = 0;

 private:
  Dims dims_;
};

}  // namespace surf
