// Ops against small cases worked out by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "../test_util.h"
#include "surf/ops.h"

using namespace surf;

namespace {
std::vector<float> values(const Tensor& t) { return {t.f32(), t.f32() + t.numel()}; }
}  // namespace

TEST(Linear, MatchesHandComputedProductAndBias) {
  // x = [[1,2,3],[4,5,6]], w = [[1,0,1],[0,1,0]] (nn.Linear [out, in]), b = [10, 20]
  Tensor x = Tensor::from_f32({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor w = Tensor::from_f32({2, 3}, {1, 0, 1, 0, 1, 0});
  Tensor b = Tensor::from_f32({2}, {10, 20});
  EXPECT_EQ(values(ops::linear(x, w, &b)), (std::vector<float>{14, 22, 20, 25}));
  // M = 1 takes the sgemv path.
  Tensor x1 = Tensor::from_f32({1, 3}, {1, 2, 3});
  EXPECT_EQ(values(ops::linear(x1, w)), (std::vector<float>{4, 2}));
}

TEST(Linear, InOutLayoutIsNotTransposed) {
  // Conv1D: w is [in, out]; y = x w.
  Tensor x = Tensor::from_f32({2, 2}, {1, 2, 3, 4});
  Tensor w = Tensor::from_f32({2, 3}, {1, 0, 2, 0, 1, 3});
  EXPECT_EQ(values(ops::linear_in_out(x, w)), (std::vector<float>{1, 2, 8, 3, 4, 18}));
  Tensor x1 = Tensor::from_f32({1, 2}, {1, 2});
  EXPECT_EQ(values(ops::linear_in_out(x1, w)), (std::vector<float>{1, 2, 8}));
}

TEST(Linear, ShapeMismatchIsAClearError) {
  Tensor x = Tensor::from_f32({1, 2}, {1, 2});
  Tensor w = Tensor::from_f32({2, 3}, {1, 0, 1, 0, 1, 0});
  test::expect_error([&] { ops::linear(x, w); }, ErrorCode::invalid_argument, "does not match weight");
}

TEST(Norms, RmsNormAndLayerNorm) {
  // rms of [3, 4] = sqrt(12.5); weight multiplies last and is plain w (not 1 + w).
  Tensor x = Tensor::from_f32({1, 2}, {3, 4});
  Tensor w = Tensor::from_f32({2}, {1, 2});
  auto y = values(ops::rms_norm(x, w, 0.0f));
  EXPECT_NEAR(y[0], 3 / std::sqrt(12.5), 1e-6);
  EXPECT_NEAR(y[1], 2 * 4 / std::sqrt(12.5), 1e-6);
  // [1, 2, 3]: mean 2, variance 2/3 (biased).
  Tensor x3 = Tensor::from_f32({1, 3}, {1, 2, 3});
  Tensor ones = Tensor::from_f32({3}, {1, 1, 1});
  Tensor bias = Tensor::from_f32({3}, {0, 0, 0.5});
  auto z = values(ops::layer_norm(x3, ones, bias, 0.0f));
  const double s = std::sqrt(2.0 / 3.0);
  EXPECT_NEAR(z[0], -1 / s, 1e-6);
  EXPECT_NEAR(z[1], 0, 1e-6);
  EXPECT_NEAR(z[2], 1 / s + 0.5, 1e-6);
}

TEST(Activations, KnownValuesAtOne) {
  auto at = [](ops::Activation a, float v) {
    Tensor t = Tensor::from_f32({1}, {v});
    ops::activate(t, a);
    return t.f32()[0];
  };
  EXPECT_NEAR(at(ops::Activation::silu, 1), 0.7310585786, 1e-7);
  EXPECT_NEAR(at(ops::Activation::gelu_erf, 1), 0.8413447461, 1e-7);
  EXPECT_NEAR(at(ops::Activation::gelu_tanh, 1), 0.8411919906, 1e-7);
  EXPECT_EQ(at(ops::Activation::relu, -2), 0.0f);
  EXPECT_EQ(ops::activation_from_name("gelu"), ops::Activation::gelu_erf);
  EXPECT_EQ(ops::activation_from_name("gelu_new"), ops::Activation::gelu_tanh);
  EXPECT_THROW(ops::activation_from_name("mish"), Error);
}

TEST(Softmax, RowsSumToOneAndMaskedRowsAreZero) {
  std::vector<float> row = {0, std::log(2.0f), -INFINITY, -INFINITY};
  ops::softmax_rows(row.data(), 2, 2);
  EXPECT_NEAR(row[0], 1.0 / 3, 1e-7);
  EXPECT_NEAR(row[1], 2.0 / 3, 1e-7);
  EXPECT_EQ(row[2], 0.0f);
  EXPECT_EQ(row[3], 0.0f);
}

TEST(Embedding, GathersRowsAndRejectsOutOfRangeIds) {
  Tensor table = Tensor::from_f32({3, 2}, {0, 1, 10, 11, 20, 21});
  EXPECT_EQ(values(ops::embedding(table, Tensor::from_i64({2}, {2, 0}))), (std::vector<float>{20, 21, 0, 1}));
  const std::string m = test::expect_error(
      [&] {
        ops::embedding(table, Tensor::from_i64({2}, {1, 3}));
      },
      ErrorCode::invalid_argument, "token id 3");
  EXPECT_NE(m.find("[0, 3)"), std::string::npos) << m;
}

TEST(Rope, RotateHalfPairsElementIWithIPlusHalf) {
  // head_dim 4: pairs (0,2) at inv_freq 1 and (1,3) at inv_freq 1/theta^(2/4) = 0.01 (theta 1e4).
  Tensor x = Tensor::from_f32({2, 4}, {1, 2, 3, 4, 1, 2, 3, 4});
  const int64_t pos[] = {0, 1};
  ops::rope(x, 1, 4, pos, 10000.0);
  auto y = values(x);
  EXPECT_EQ(std::vector<float>(y.begin(), y.begin() + 4), (std::vector<float>{1, 2, 3, 4}));  // position 0
  const double c = std::cos(1.0), s = std::sin(1.0), c2 = std::cos(0.01), s2 = std::sin(0.01);
  EXPECT_NEAR(y[4], 1 * c - 3 * s, 1e-6);
  EXPECT_NEAR(y[6], 3 * c + 1 * s, 1e-6);
  EXPECT_NEAR(y[5], 2 * c2 - 4 * s2, 1e-6);
  EXPECT_NEAR(y[7], 4 * c2 + 2 * s2, 1e-6);
}

TEST(Attention, WeightsValuesBySoftmaxOfScores) {
  // One query (1), keys (0, ln 3): probabilities 1/4, 3/4 over values 4, 8 -> 7.
  const float q[] = {1};
  const float k[] = {0, std::log(3.0f)};
  const float v[] = {4, 8};
  float out[1];
  ops::AttentionArgs a;
  a.q_len = 1;
  a.kv_len = 2;
  a.head_dim = 1;
  ops::attention(q, k, v, out, a);
  EXPECT_NEAR(out[0], 7, 1e-5);
}

TEST(Attention, CausalMaskKeyMaskAndBias) {
  const float q[] = {1, 1};
  const float k[] = {0, std::log(3.0f)};
  const float v[] = {4, 8};
  float out[2];
  ops::AttentionArgs a;
  a.q_len = 2;
  a.kv_len = 2;
  a.head_dim = 1;
  a.causal = true;
  ops::attention(q, k, v, out, a);
  EXPECT_NEAR(out[0], 4, 1e-6);  // query 0 sees key 0 only
  EXPECT_NEAR(out[1], 7, 1e-5);
  const int64_t mask[] = {0, 1};
  a.key_mask = mask;
  ops::attention(q, k, v, out, a);
  EXPECT_EQ(out[0], 0.0f);  // sees nothing: zeros, not NaN
  EXPECT_NEAR(out[1], 8, 1e-6);
  // Additive bias (T5-style, no scaling): zero query, bias (0, ln 3) gives 7 again.
  const float zq[] = {0};
  const float bias[] = {0, std::log(3.0f)};
  ops::AttentionArgs b;
  b.q_len = 1;
  b.kv_len = 2;
  b.head_dim = 1;
  b.bias = bias;
  ops::attention(zq, k, v, out, b);
  EXPECT_NEAR(out[0], 7, 1e-5);
}

TEST(Attention, GroupedQueryHeadsShareKvHeadByRepeat) {
  // 4 query heads, 2 kv heads: heads 0,1 use kv head 0; heads 2,3 use kv head 1 (repeat, not tile).
  const float q[] = {1, 1, 1, 1};
  const float k[] = {0, 0};  // one key
  const float v[] = {10, 20};
  float out[4];
  ops::AttentionArgs a;
  a.q_len = 1;
  a.kv_len = 1;
  a.heads = 4;
  a.kv_heads = 2;
  a.head_dim = 1;
  ops::attention(q, k, v, out, a);
  EXPECT_EQ(std::vector<float>(out, out + 4), (std::vector<float>{10, 10, 20, 20}));
}

TEST(KVCache, AppendsPerBatchRowAndRefusesOverflow) {
  ops::KVCache c;
  c.reset(2, 3, 1);
  const float k[] = {1, 2}, v[] = {3, 4};  // [batch 2, n 1, width 1]
  c.append(k, v, 1);
  c.append(k, v, 1);
  EXPECT_EQ(c.length(), 2);
  EXPECT_EQ(c.k()[0], 1);
  EXPECT_EQ(c.k()[1], 1);
  EXPECT_EQ(c.k()[3], 2);  // batch row 1 starts at capacity 3
  c.append(k, v, 1);
  EXPECT_THROW(c.append(k, v, 1), Error);
}

namespace {
// A bf16 or f16 copy of w (values chosen exactly representable) and its exact f32 twin.
std::pair<Tensor, Tensor> sixteen_bit(DType dtype, Shape shape, uint32_t seed) {
  Tensor f = Tensor::empty(DType::F32, shape);
  for (int64_t i = 0; i < f.numel(); ++i)
    f.f32()[i] = static_cast<float>(static_cast<int>((i * 7 + seed) % 33) - 16) / 16.0f;
  Tensor h = Tensor::empty(dtype, shape);
  convert_from_f32(dtype, f.f32(), h.raw_mutable(), static_cast<size_t>(f.numel()));
  return {h, f};
}
}  // namespace

TEST(Linear, SixteenBitWeightsMatchTheirF32Twin) {
  // Shapes large enough for several conversion panels (panel = 2^20 elements).
  for (DType dtype : {DType::BF16, DType::F16}) {
    for (int64_t m : {1, 3, 40}) {
      auto [w16, w32] = sixteen_bit(dtype, {700, 3000}, 5);  // 2.1M elements: 3 panels
      Tensor x = Tensor::empty(DType::F32, {m, 3000});
      for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] = static_cast<float>(i % 13) / 8.0f - 0.7f;
      const Tensor a = ops::linear(x, w16), b = ops::linear(x, w32);
      for (int64_t i = 0; i < a.numel(); ++i) ASSERT_NEAR(a.f32()[i], b.f32()[i], 1e-3) << i;
      auto [v16, v32] = sixteen_bit(dtype, {3000, 700}, 9);
      const Tensor c = ops::linear_in_out(x, v16), d = ops::linear_in_out(x, v32);
      for (int64_t i = 0; i < c.numel(); ++i) ASSERT_NEAR(c.f32()[i], d.f32()[i], 1e-3) << i;
    }
    auto [t16, t32] = sixteen_bit(dtype, {50, 8}, 3);
    const Tensor ids = Tensor::from_i64({3}, {49, 0, 7});
    const Tensor e16 = ops::embedding(t16, ids), e32 = ops::embedding(t32, ids);
    EXPECT_EQ(std::memcmp(e16.raw(), e32.raw(), e16.nbytes()), 0);
  }
}
