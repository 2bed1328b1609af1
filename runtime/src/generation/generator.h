// The generation loop: the runtime drives a plugin's incremental decoding (start, then one step
// per new token for every sequence at once), so sampling, stopping and batching live in one
// place whatever the architecture.
#pragma once

#include <cstdint>

#include "cache/layer_cache.h"
#include "plugins/plugin_registry.h"

namespace surf {

// Greedy decoding of every row of inputs' input_ids (with attention_mask). Writes generated_ids
// [rows, prefix + max_new_tokens] (decoder-only: the prompt row + new tokens; encoder-decoder:
// the decoder start + new tokens) and generation_logits [rows, max_new_tokens, vocab].
TensorMap generate_greedy(PluginModel& model, LayerCache& cache, const TensorMap& inputs, int64_t max_new_tokens);

}  // namespace surf
