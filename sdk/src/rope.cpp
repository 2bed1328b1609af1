// RoPE frequency scaling as transformers' modeling_rope_utils computes it (in double here; HF
// computes inv_freq in f32, which differs by <= 1e-7 relative).
#include <cmath>
#include <numbers>

#include "surf/config.h"
#include "surf/ops.h"

namespace surf::ops {

RopeScaling RopeScaling::from_config(const ModelConfig& c) {
  RopeScaling r;
  std::string key;
  if (c.has("rope_scaling")) {
    key = "rope_scaling";
  } else if (c.has("rope_parameters")) {
    key = "rope_parameters";
  } else {
    return r;
  }
  const std::string type = c.get_string(key + ".rope_type", c.get_string(key + ".type", "default"));
  if (type == "default") return r;
  if (type == "linear") {
    r.type = Type::linear;
  } else if (type == "llama3") {
    r.type = Type::llama3;
  } else {
    fail(ErrorCode::unsupported,
         "config.json: " + key + " type '" + type + "' is not supported (supported: linear, llama3)");
  }
  r.factor = c.get_float(key + ".factor");
  if (!(r.factor > 0.0)) {
    fail(ErrorCode::invalid_argument,
         "config.json: " + key + ".factor must be positive, got " + std::to_string(r.factor));
  }
  if (r.type == Type::llama3) {
    r.low_freq_factor = c.get_float(key + ".low_freq_factor");
    r.high_freq_factor = c.get_float(key + ".high_freq_factor");
    r.original_max_position_embeddings = c.get_float(key + ".original_max_position_embeddings");
    if (!(r.high_freq_factor > r.low_freq_factor) || !(r.low_freq_factor > 0.0) ||
        !(r.original_max_position_embeddings > 0.0)) {
      fail(ErrorCode::invalid_argument, "config.json: " + key +
                                            " (llama3) needs high_freq_factor > low_freq_factor > 0 and a positive "
                                            "original_max_position_embeddings, got " +
                                            std::to_string(r.high_freq_factor) + ", " +
                                            std::to_string(r.low_freq_factor) + ", " +
                                            std::to_string(r.original_max_position_embeddings));
    }
  }
  return r;
}

std::vector<double> RopeScaling::inv_freq(int64_t rotary_dims, double theta) const {
  if (rotary_dims <= 0 || rotary_dims % 2 != 0) {
    fail(ErrorCode::invalid_argument,
         "rope: rotary dims must be even and positive, got " + std::to_string(rotary_dims));
  }
  std::vector<double> f;
  for (int64_t i = 0; i < rotary_dims / 2; ++i) {
    f.push_back(1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(rotary_dims)));
  }
  switch (type) {
    case Type::none:
      break;
    case Type::linear:
      for (double& x : f) x /= factor;
      break;
    case Type::llama3: {
      const double old_len = original_max_position_embeddings;
      const double low_freq_wavelen = old_len / low_freq_factor, high_freq_wavelen = old_len / high_freq_factor;
      for (double& x : f) {
        const double wavelen = 2.0 * std::numbers::pi / x;
        if (wavelen < high_freq_wavelen) continue;  // high frequencies are kept
        if (wavelen > low_freq_wavelen) {
          x /= factor;  // low frequencies are interpolated
          continue;
        }
        const double s = (old_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
        x = (1.0 - s) * x / factor + s * x;  // smoothly in between
      }
      break;
    }
  }
  return f;
}

RotaryEmbedding::RotaryEmbedding(int64_t rotary_dims, double theta, const RopeScaling& scaling)
    : RotaryEmbedding(scaling.inv_freq(rotary_dims, theta)) {}

}  // namespace surf::ops
