// The generation loop: the runtime drives a plugin's incremental decoding (start, then one step
// per new token for the sequences still running), so sampling, stopping and batching live in one
// place whatever the architecture.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cache/layer_cache.h"
#include "plugins/plugin_registry.h"
#include "surf/runtime.h"
#include "surf/tokenizer.h"

namespace surf {

struct GenerationRun {
  TensorMap tensors;                        // generated_ids, generated_lengths, generation_logits
  std::vector<std::string> texts;           // new text per row (empty without a tokenizer)
  std::vector<std::string> finish_reasons;  // eos | stop_string | length | cancelled
};

// One generation request, stepped from outside so that several requests can share each step
// (Session's generate_async merges them: one stream of the model per step for all of them).
// The constructor starts the sequences (the plugin's start: a PassKind::start pass); then, while
// !done(), the caller runs model.step over active() (possibly with other requests' sequences)
// and hands this request its rows of the logits, in active()'s order.
class GenerationRequest {
 public:
  GenerationRequest(PluginModel& model, LayerCache& cache, const TensorMap& inputs, const GenerateOptions& options,
                    const std::vector<int64_t>& eos_ids, int64_t pad_id, const Tokenizer* tokenizer);
  ~GenerationRequest();
  GenerationRequest(GenerationRequest&&) noexcept;
  const std::vector<Sequence*>& active() const;  // sequences to feed at the next step
  bool done() const;
  void absorb(const float* logits, int64_t vocab);  // [active().size(), vocab]
  GenerationRun finish();

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// Decodes every row of inputs' input_ids (with attention_mask). generated_ids is
// [rows, prefix + steps] (decoder-only: the prompt row + new tokens; encoder-decoder: the decoder
// start + new tokens), rows that stopped early padded with `pad_id`; steps is the number of steps
// run (max_new_tokens unless every row stopped before). `eos_ids` stop a row (when
// options.stop_at_eos); `tokenizer` (may be null) turns tokens into text for on_token and stop
// strings.
GenerationRun run_generation(PluginModel& model, LayerCache& cache, const TensorMap& inputs,
                             const GenerateOptions& options, const std::vector<int64_t>& eos_ids, int64_t pad_id,
                             const Tokenizer* tokenizer);

// Today's greedy loop (no stopping): run_generation with stop_at_eos off.
TensorMap generate_greedy(PluginModel& model, LayerCache& cache, const TensorMap& inputs, int64_t max_new_tokens);

}  // namespace surf
