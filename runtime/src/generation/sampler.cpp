#include "generation/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace surf {

namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

Rng::Rng(uint64_t seed) {
  for (auto& s : s_) s = splitmix64(seed);
}

uint64_t Rng::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

int64_t Sampler::pick(std::span<float> logits, std::span<const int64_t> history, Rng& rng) const {
  const auto vocab = static_cast<int64_t>(logits.size());
  if (p_.repetition_penalty != 1.0f) {
    // As HF: every token seen so far, once; positive logits divided, negative multiplied.
    std::vector<bool> seen(logits.size(), false);
    for (int64_t id : history) {
      if (id < 0 || id >= vocab || seen[static_cast<size_t>(id)]) continue;
      seen[static_cast<size_t>(id)] = true;
      float& l = logits[static_cast<size_t>(id)];
      l = l > 0 ? l / p_.repetition_penalty : l * p_.repetition_penalty;
    }
  }
  if (!p_.sample) {
    // First maximum, as argmax does (greedy ids stay those of ops::argmax_rows).
    return std::max_element(logits.begin(), logits.end()) - logits.begin();
  }
  const float inv_t = 1.0f / std::max(p_.temperature, 1e-6f);
  auto& c = scratch_;
  c.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) c[i] = {logits[i] * inv_t, static_cast<int32_t>(i)};
  // Highest first; ties by lower id so the order (and the draw) is deterministic.
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t keep = c.size();
  if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < keep) {
    keep = static_cast<size_t>(p_.top_k);
    std::partial_sort(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(keep), c.end(), by_logit);
  } else {
    std::sort(c.begin(), c.end(), by_logit);
  }
  c.resize(keep);
  // Softmax over what is left.
  const float top = c[0].first;
  std::vector<double> prob(keep);
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += prob[i] = std::exp(static_cast<double>(c[i].first - top));
  for (auto& p : prob) p /= sum;
  if (p_.top_p < 1.0f) {
    // Smallest prefix whose mass reaches top_p (at least one token).
    double mass = 0;
    size_t n = 0;
    while (n < keep) {
      mass += prob[n++];
      if (mass >= p_.top_p) break;
    }
    keep = std::max<size_t>(1, n);
  }
  if (p_.min_p > 0.0f) {
    const double floor = prob[0] * p_.min_p;
    size_t n = 1;
    while (n < keep && prob[n] >= floor) ++n;
    keep = n;
  }
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += prob[i];
  double r = rng.uniform() * total;
  for (size_t i = 0; i < keep; ++i) {
    r -= prob[i];
    if (r < 0) return c[i].second;
  }
  return c[keep - 1].second;
}

}  // namespace surf
