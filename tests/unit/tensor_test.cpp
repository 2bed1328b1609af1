#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "../test_util.h"
#include "surf/config.h"
#include "surf/tensor.h"

using namespace surf;

TEST(DTypes, SixteenBitConversionsBothWays) {
  const uint16_t bf[] = {0x3f80, 0xc000, 0x0000};
  float f[3];
  convert_to_f32(DType::BF16, bf, f, 3);
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_EQ(f[1], -2.0f);
  const uint16_t h[] = {0x3c00, 0xc000, 0x0001, 0x7bff, 0x3c00, 0x3c00, 0x3c00, 0x3c00, 0x3555};
  float g[9];
  convert_to_f32(DType::F16, h, g, 9);  // 9 > 8 exercises the vector and the scalar tail
  EXPECT_EQ(g[0], 1.0f);
  EXPECT_EQ(g[1], -2.0f);
  EXPECT_FLOAT_EQ(g[2], 5.9604645e-8f);
  EXPECT_EQ(g[3], 65504.0f);
  EXPECT_NEAR(g[8], 0.33325195, 1e-8);
  // Round to nearest even: 1 + 2^-8 is a tie between bf16 1.0 and 1.0078125 -> 1.0.
  const float src[] = {1.00390625f, 1.01171875f, 65504.0f, 70000.0f, 1e-8f};
  uint16_t out[5];
  convert_from_f32(DType::BF16, src, out, 2);
  EXPECT_EQ(out[0], 0x3f80);
  EXPECT_EQ(out[1], 0x3f82);  // tie rounds up to even
  convert_from_f32(DType::F16, src + 2, out, 3);
  EXPECT_EQ(out[0], 0x7bff);
  EXPECT_EQ(out[1], 0x7c00);  // overflow -> inf
  EXPECT_EQ(out[2], 0x0000);  // below half the smallest subnormal -> 0
}

TEST(DTypes, LargeConversionsMatchTheScalarRule) {
  // Above 2^18 elements the streaming-store paths run; every element must still be exact.
  const size_t n = (1u << 18) + 13;
  std::vector<uint16_t> bits(n);
  for (size_t i = 0; i < n; ++i) bits[i] = static_cast<uint16_t>(i * 2654435761u >> 7);
  Tensor bf = Tensor::empty(DType::F32, {static_cast<int64_t>(n)});
  Tensor hf = Tensor::empty(DType::F32, {static_cast<int64_t>(n)});
  convert_to_f32(DType::BF16, bits.data(), bf.f32(), n);
  convert_to_f32(DType::F16, bits.data(), hf.f32(), n);
  for (size_t i = 0; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, bf.f32() + i, 4);
    ASSERT_EQ(b, static_cast<uint32_t>(bits[i]) << 16) << i;
    float small;
    convert_to_f32(DType::F16, &bits[i], &small, 1);  // the scalar path
    if (std::isnan(small)) {
      ASSERT_TRUE(std::isnan(hf.f32()[i])) << i;
    } else {
      ASSERT_EQ(hf.f32()[i], small) << i;
    }
  }
}

TEST(TensorTest, ReshapeSharesStorageAndChecksCount) {
  Tensor t = Tensor::from_f32({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor r = t.reshape({3, 2});
  EXPECT_EQ(r.raw(), t.raw());
  EXPECT_THROW(t.reshape({4}), Error);
  Tensor c = t.clone();
  EXPECT_NE(c.raw(), t.raw());
  EXPECT_EQ(c.f32()[5], 6);
  EXPECT_THROW(t.i64(), Error);
  EXPECT_THROW(dtype_from_name("F8_E4M3"), Error);
}

TEST(ModelConfigTest, TypedAccessorsNameTheKey) {
  ModelConfig c = ModelConfig::parse(
      R"({"hidden_size": 64, "rms_norm_eps": 1e-6, "tie": true, "act": "silu", "n_inner": null,
          "bad": "64", "rope_parameters": {"rope_theta": 500000.0}})");
  EXPECT_EQ(c.get_int("hidden_size"), 64);
  EXPECT_DOUBLE_EQ(c.get_float("rms_norm_eps"), 1e-6);
  EXPECT_EQ(c.get_int("n_inner", 7), 7);  // null means absent
  EXPECT_FALSE(c.has("n_inner"));
  EXPECT_DOUBLE_EQ(c.get_float("rope_parameters.rope_theta"), 500000.0);
  test::expect_error([&] { c.get_int("bad"); }, ErrorCode::invalid_argument, "'bad' must be an integer");
  test::expect_error([&] { c.get_int("num_hidden_layers"); }, ErrorCode::invalid_argument,
                     "missing key 'num_hidden_layers'");
  EXPECT_THROW(ModelConfig::parse("[1, 2]"), Error);
  EXPECT_THROW(ModelConfig::parse("{not json"), Error);
}
