// RoPE scaling (HF rope_scaling: linear, llama3) and sliding-window attention in the SDK.
#include <gtest/gtest.h>

#include <cmath>

#include "surf/config.h"
#include "surf/ops.h"

using namespace surf;

namespace {

ops::RopeScaling scaling_of(const std::string& json) { return ops::RopeScaling::from_config(ModelConfig::parse(json)); }

std::string error_of(const std::string& json) {
  try {
    scaling_of(json);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void expect_near_rel(const std::vector<double>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-14 * want[i]) << i;
}

}  // namespace

// Expected frequencies were computed by shared/reference/ref_models.py rope_inv_freq (float64).
TEST(RopeScaling, Llama3MatchesTheReference) {
  const auto s = scaling_of(R"({"rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                "original_max_position_embeddings": 64, "rope_type": "llama3"}})");
  EXPECT_EQ(s.type, ops::RopeScaling::Type::llama3);
  // head_dim 16, theta 5e5: one frequency kept, one smoothed, six divided by 8.
  expect_near_rel(s.inv_freq(16, 500000.0),
                  {1.0, 0.0794030091792082, 0.004700753866357992, 0.0009115830921521388, 0.0001767766952966369,
                   3.428102195952591e-05, 6.647869871181236e-06, 1.2891731721515574e-06});
  const ops::RotaryEmbedding rope(16, 500000.0, s);
  EXPECT_EQ(rope.rotary_dims(), 16);
  EXPECT_NEAR(rope.inv_freq()[1], 0.0794030091792082, 1e-16);
}

TEST(RopeScaling, LinearWithTheOlderTypeKeyDividesEveryFrequency) {
  const auto s = scaling_of(R"({"rope_scaling": {"type": "linear", "factor": 2.0}})");
  EXPECT_EQ(s.type, ops::RopeScaling::Type::linear);
  expect_near_rel(s.inv_freq(8, 10000.0), {0.5, 0.05, 0.005, 0.0005});
  // Dividing the frequencies is dividing the positions: position 2 scaled == position 1 unscaled.
  Tensor a = Tensor::from_f32({1, 8}, {1, 2, 3, 4, 5, 6, 7, 8}), b = a.clone();
  const int64_t two[] = {2}, one[] = {1};
  ops::RotaryEmbedding(8, 10000.0, s).apply(a, 1, 8, two);
  ops::RotaryEmbedding(8, 10000.0).apply(b, 1, 8, one);
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(a.f32()[i], b.f32()[i], 1e-6) << i;
}

TEST(RopeScaling, AbsentNullAndDefaultAreNoScaling) {
  for (const char* json : {R"({})", R"({"rope_scaling": null})", R"({"rope_scaling": {"rope_type": "default"}})",
                           R"({"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}})"}) {
    const auto s = scaling_of(json);
    EXPECT_EQ(s.type, ops::RopeScaling::Type::none) << json;
    expect_near_rel(s.inv_freq(4, 10000.0), {1.0, 0.01});
  }
  // transformers v5 writes it as rope_parameters.
  EXPECT_EQ(scaling_of(R"({"rope_parameters": {"rope_type": "linear", "factor": 4.0}})").type,
            ops::RopeScaling::Type::linear);
}

TEST(RopeScaling, UnsupportedTypesAndMissingFieldsAreClearErrors) {
  for (const char* type : {"yarn", "dynamic", "longrope"}) {
    const std::string msg =
        error_of(std::string(R"({"rope_scaling": {"rope_type": ")") + type + R"(", "factor": 4.0}})");
    EXPECT_NE(msg.find(std::string("type '") + type + "' is not supported"), std::string::npos) << msg;
  }
  EXPECT_NE(error_of(R"({"rope_scaling": {"type": "dynamic", "factor": 2.0}})").find("'dynamic'"), std::string::npos);
  const std::string missing =
      error_of(R"({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                        "high_freq_factor": 4.0}})");
  EXPECT_NE(missing.find("rope_scaling.original_max_position_embeddings"), std::string::npos) << missing;
  EXPECT_NE(error_of(R"({"rope_scaling": {"rope_type": "linear"}})").find("rope_scaling.factor"), std::string::npos);
}

TEST(ModelConfigTest, ContainsSeesNullKeysThatHasDoesNot) {
  const auto c = ModelConfig::parse(R"({"sliding_window": null, "a": {"b": null}})");
  EXPECT_FALSE(c.has("sliding_window"));
  EXPECT_TRUE(c.contains("sliding_window"));
  EXPECT_TRUE(c.contains("a.b"));
  EXPECT_FALSE(c.contains("missing"));
}

// Sliding window: key j is visible to query i iff j <= i and i - j < window, i and j counting
// rows of the key/value sequence (pads included, the cached past included).
TEST(Attention, SlidingWindowCountsRowsIncludingPadsAndThePast) {
  // head_dim 1, q = 0 everywhere: every visible key gets the same score, so each output is the
  // mean of the visible values.
  const int64_t n = 6;
  std::vector<float> q(n, 0.0f), k(n, 0.0f), v{1, 2, 4, 8, 16, 32};
  std::vector<float> out(n);
  ops::AttentionArgs a;
  a.q_len = a.kv_len = n;
  a.head_dim = 1;
  a.causal = true;
  a.window = 3;
  ops::attention(q.data(), k.data(), v.data(), out.data(), a);
  const std::vector<float> want{1, 1.5f, 7.0f / 3, 14.0f / 3, 28.0f / 3, 56.0f / 3};
  for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(out[i], want[i], 1e-5) << i;

  // A pad at row 1 is masked but still counts towards the window.
  const int64_t mask[] = {1, 0, 1, 1, 1, 1};
  a.key_mask = mask;
  ops::attention(q.data(), k.data(), v.data(), out.data(), a);
  EXPECT_NEAR(out[2], 2.5f, 1e-5);  // rows 0 and 2 (row 1 is a pad)
  EXPECT_NEAR(out[3], 6.0f, 1e-5);  // rows 2, 3 only: row 1 is inside the window, row 0 is not
  a.key_mask = nullptr;

  // Incremental: the last two queries against the six cached keys give the same as the full pass.
  std::vector<float> tail(2);
  a.q_len = 2;
  a.past = 4;
  ops::attention(q.data() + 4, k.data(), v.data(), tail.data(), a);
  EXPECT_NEAR(tail[0], want[4], 1e-5);
  EXPECT_NEAR(tail[1], want[5], 1e-5);
}
