#include "surf/causal_lm.h"

namespace surf {

Tensor CausalLM::run_layers(const Pass& pass, ComponentSource& src, Tensor* hidden_states) {
  Tensor x = embed(pass, src);
  LayerContext embeddings(pass, -1, hidden_states);
  embeddings.record(0, x);
  for (int64_t l = 0; l < dims_.layers; ++l) {
    ComponentRef w = src.acquire(layer_id(l));
    LayerContext ctx(pass, l, hidden_states);
    layer(ctx, *w, x);
    ctx.record(l + 1, x);
  }
  return x;
}

void CausalLM::forward(const TensorMap& in, const RunOptions& opt, ComponentSource& src, TensorMap& out) {
  const TokenInputs t = read_token_inputs(in, dims_.max_positions, dims_.limit_name);
  Tensor hs;
  if (opt.hidden_states) hs = Tensor::empty(DType::F32, {dims_.layers + 1, t.batch, t.len, dims_.hidden});
  const Pass pass = Pass::batch(t);
  Tensor x = run_layers(pass, src, opt.hidden_states ? &hs : nullptr);
  Tensor last = final_norm(src, x);
  out["logits"] = head(src, last).reshape({t.batch, t.len, dims_.vocab});
  out["last_hidden_state"] = last.reshape({t.batch, t.len, dims_.hidden});
  if (opt.hidden_states) out["hidden_states"] = hs;
}

std::vector<std::unique_ptr<Sequence>> CausalLM::start(const TensorMap& in, int64_t max_new_tokens, ComponentSource&) {
  return start_sequences(in, max_new_tokens, dims_.max_positions, dims_.limit_name);
}

Tensor CausalLM::step(const std::vector<Sequence*>& sequences, ComponentSource& src) {
  const Pass pass = Pass::decode(sequences);
  Tensor x = run_layers(pass, src, nullptr);
  Tensor logits = head(src, final_norm(src, pass.last_rows(x)));
  pass.finish();
  return logits;
}

}  // namespace surf
