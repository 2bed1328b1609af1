#include "generation/generator.h"

#include <algorithm>

namespace surf {

TensorMap generate_greedy(PluginModel& model, LayerCache& cache, const TensorMap& inputs, int64_t max_new_tokens) {
  if (max_new_tokens <= 0) fail(ErrorCode::invalid_argument, "max_new_tokens must be at least 1");
  cache.begin_pass(PassKind::start);
  std::vector<SequenceHandle> owned = model.start(inputs, max_new_tokens, cache);
  std::vector<Sequence*> sequences;
  for (auto& s : owned) sequences.push_back(s.get());
  const auto rows = static_cast<int64_t>(sequences.size());
  const auto prefix = static_cast<int64_t>(rows ? sequences[0]->output_prefix.size() : 0);
  for (const Sequence* s : sequences) {
    if (static_cast<int64_t>(s->output_prefix.size()) != prefix) fail(ErrorCode::internal, "sequences of one batch differ in prefix length");
  }
  const int64_t width = prefix + max_new_tokens;
  Tensor generated = Tensor::empty(DType::I64, {rows, width});
  for (int64_t r = 0; r < rows; ++r) std::copy_n(sequences[r]->output_prefix.data(), prefix, generated.i64() + r * width);
  Tensor step_logits;
  for (int64_t s = 0; s < max_new_tokens; ++s) {
    cache.begin_pass(PassKind::step);
    const Tensor logits = model.step(sequences, cache);
    const int64_t vocab = logits.dim(-1);
    if (s == 0) step_logits = Tensor::empty(DType::F32, {rows, max_new_tokens, vocab});
    const auto next = ops::argmax_rows(logits.f32(), rows, vocab);
    for (int64_t r = 0; r < rows; ++r) {
      std::copy_n(logits.f32() + r * vocab, vocab, step_logits.f32() + (r * max_new_tokens + s) * vocab);
      generated.i64()[r * width + prefix + s] = next[r];
      sequences[r]->pending = {next[r]};
    }
  }
  return {{"generated_ids", generated}, {"generation_logits", step_logits}};
}

}  // namespace surf
