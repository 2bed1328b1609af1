// A decoder-only causal LM (LLaMA, GPT-2, Qwen2, Mistral, GPT-NeoX and kin): the architecture
// supplies the embeddings, one layer, the final norm and the head; forward (logits,
// last_hidden_state, hidden_states) and incremental decoding of several sequences at once are
// shared.
#pragma once

#include <string>

#include "surf/layers.h"
#include "surf/plugin.h"
#include "surf/export.h"

SURF_SDK_PUBLIC_BEGIN

namespace surf {

class CausalLM : public Model {
 public:
  struct Dims {
    int64_t layers, hidden, vocab, max_positions;
    std::string limit_name;  // the config key of max_positions, for messages
  };
  explicit CausalLM(Dims dims) : dims_(std::move(dims)) {}
  void forward(const TensorMap& inputs, const RunOptions& options, ComponentSource& source,
               TensorMap& outputs) override;
  std::vector<std::unique_ptr<Sequence>> start(const TensorMap& inputs, int64_t max_new_tokens,
                                               ComponentSource& source) override;
  Tensor step(const std::vector<Sequence*>& sequences, ComponentSource& source) override;

 protected:
  // Token embeddings of the pass [rows, hidden] (its ids and positions are in `pass`).
  virtual Tensor embed(const Pass& pass, ComponentSource& source) = 0;
  // Layer ctx.layer() on the residual stream x [rows, hidden], in place.
  virtual void layer(LayerContext& ctx, const Component& weights, Tensor& x) = 0;
  virtual Tensor final_norm(ComponentSource& source, const Tensor& x) = 0;
  virtual Tensor head(ComponentSource& source, const Tensor& x) = 0;
  // The streamed component of layer i ("layers.i").
  virtual std::string layer_id(int64_t i) const { return "layers." + std::to_string(i); }
  const Dims& dims() const { return dims_; }

 private:
  Tensor run_layers(const Pass& pass, ComponentSource& source, Tensor* hidden_states);
  Dims dims_;
};

}  // namespace surf

SURF_SDK_PUBLIC_END
