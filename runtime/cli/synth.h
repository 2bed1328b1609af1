// `surf synth`: random-weight HuggingFace checkpoints with the shapes of real models, for
// benchmarks, demos and tests without downloads. A tool of the CLI and the tests, not of the
// runtime library.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace surf {

// Writes a random-weight HF checkpoint of a real model's shape (no download needed).
struct SynthOptions {
  std::string arch = "llama";
  std::string preset = "tiny";
  std::string dtype = "bf16";
  uint64_t seed = 1;
  uint64_t shard_bytes = 1ull << 30;
};
std::vector<std::string> synth_presets(const std::string& arch);
void synth_checkpoint(const std::string& out_dir, const SynthOptions& options);

}  // namespace surf
