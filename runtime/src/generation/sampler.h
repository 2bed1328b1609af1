// Picks the next token from a row of logits: repetition penalty, then greedy argmax or sampling
// with temperature, top-k, top-p and min-p (in HF's order), from a seeded generator we own so a
// seed gives the same tokens on every machine and run.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace surf {

struct SamplingParams {
  bool sample = false;  // false: greedy
  float temperature = 1.0f;
  int64_t top_k = 0;                // 0: off
  float top_p = 1.0f;               // 1: off
  float min_p = 0.0f;               // 0: off
  float repetition_penalty = 1.0f;  // 1: off
};

// xoshiro256** seeded through splitmix64: small, fast, and the same everywhere.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next();
  double uniform();  // [0, 1)

 private:
  uint64_t s_[4];
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params) : p_(params) {}
  // `history`: the tokens seen so far (prompt and generated) for the repetition penalty.
  // `logits` may be modified in place.
  int64_t pick(std::span<float> logits, std::span<const int64_t> history, Rng& rng) const;

 private:
  SamplingParams p_;
  mutable std::vector<std::pair<float, int32_t>> scratch_;
};

}  // namespace surf
