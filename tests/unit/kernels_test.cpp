// Block formats and matmul kernels: GGML's quantizers bit for bit on hand-worked blocks, round
// trips, and every kernel path (scalar, AVX2 with and without VNNI, AVX-512 with and without VNNI,
// as far as this CPU has them) against a float64 reference, for every weight dtype, few-row
// (decode) and many-row (prefill) shapes, odd sizes.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <cmath>
#include <cstring>
#include <random>
#include <thread>

#include "surf/ops.h"

using namespace surf;

namespace {

std::vector<float> random_values(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

Tensor quantized(DType dtype, Shape shape, const std::vector<float>& values) {
  Tensor t = Tensor::empty(dtype, std::move(shape));
  convert_from_f32(dtype, values.data(), t.raw_mutable(), values.size());
  return t;
}

uint16_t half_bits(const void* block) {
  uint16_t h;
  std::memcpy(&h, block, 2);
  return h;
}

}  // namespace

TEST(BlockFormats, SizesAndNames) {
  EXPECT_EQ(dtype_block_elements(DType::Q8_0), 32);
  EXPECT_EQ(dtype_block_bytes(DType::Q8_0), 34u);
  EXPECT_EQ(dtype_block_bytes(DType::Q4_0), 18u);
  EXPECT_EQ(shape_bytes({3, 64}, DType::Q8_0), 3u * 2 * 34);
  EXPECT_EQ(shape_bytes({5, 96}, DType::Q4_0), 5u * 3 * 18);
  EXPECT_EQ(shape_bytes({5, 7}, DType::BF16), 70u);
  EXPECT_EQ(row_bytes(DType::Q4_0, 64), 36u);
  EXPECT_THROW(shape_bytes({4, 33}, DType::Q8_0), Error);
  EXPECT_THROW(Tensor::empty(DType::Q4_0, {2, 48}), Error);
  EXPECT_EQ(dtype_from_name("q8_0"), DType::Q8_0);
  EXPECT_EQ(dtype_from_name("Q4_0"), DType::Q4_0);
  EXPECT_STREQ(dtype_name(DType::Q4_0), "Q4_0");
  EXPECT_TRUE(is_quantized(DType::Q8_0));
  EXPECT_FALSE(is_quantized(DType::BF16));
  EXPECT_EQ(Tensor::empty(DType::Q8_0, {3, 64}).nbytes(), 204u);
  EXPECT_THROW(Tensor::empty(DType::Q8_0, {2, 64}).reshape({4, 16}), Error);  // blocks would straddle rows
}

TEST(BlockFormats, Q8_0MatchesGgmlReferenceOnAHandWorkedBlock) {
  // x_j = (j - 16) / 2: amax 8, d = 8/127 stored as f16 0x2C08, q_j = round(x_j * 127/8), half away from zero.
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16) * 0.5f;
  std::vector<uint8_t> blk(34);
  convert_from_f32(DType::Q8_0, x.data(), blk.data(), 32);
  EXPECT_EQ(half_bits(blk.data()), 0x2C08);
  const auto* qs = reinterpret_cast<const int8_t*>(blk.data() + 2);
  for (int j = 0; j < 32; ++j) {
    EXPECT_EQ(qs[j], static_cast<int>(std::round((j - 16) * 0.5f * (127.0f / 8.0f)))) << j;
  }
  EXPECT_EQ(qs[0], -127);
  EXPECT_EQ(qs[31], 119);  // 7.5 * 15.875 = 119.06
  // The value of largest magnitude maps to +-127 exactly.
  std::vector<float> back(32);
  convert_to_f32(DType::Q8_0, blk.data(), back.data(), 32);
  EXPECT_FLOAT_EQ(back[0], -127.0f * 0.0629882812f);
}

TEST(BlockFormats, Q4_0MatchesGgmlReferenceOnAHandWorkedBlock) {
  // Same block: the signed value of largest magnitude is -8 (j = 0), so d = -8 / -8 = 1 and
  // q_j = min(15, trunc(x_j + 8.5)); element j in the low nibble of qs[j], j + 16 in the high one.
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16) * 0.5f;
  std::vector<uint8_t> blk(18);
  convert_from_f32(DType::Q4_0, x.data(), blk.data(), 32);
  EXPECT_EQ(half_bits(blk.data()), 0x3C00);  // 1.0
  for (int j = 0; j < 16; ++j) {
    const int lo = std::min(15, static_cast<int>(x[j] + 8.5f)), hi = std::min(15, static_cast<int>(x[j + 16] + 8.5f));
    EXPECT_EQ(blk[2 + j], lo | (hi << 4)) << j;
  }
  EXPECT_EQ(blk[2] & 0x0f, 0);      // -8 -> code 0
  EXPECT_EQ(blk[2 + 15] >> 4, 15);  // x_31 = 7.5 -> trunc(16) clamped to 15
  std::vector<float> back(32);
  convert_to_f32(DType::Q4_0, blk.data(), back.data(), 32);
  EXPECT_EQ(back[0], -8.0f);
  EXPECT_EQ(back[31], 7.0f);
  // A positive extreme gives a negative scale: max / -8.
  std::vector<float> p(32, 0.25f);
  p[5] = 4.0f;
  convert_from_f32(DType::Q4_0, p.data(), blk.data(), 32);
  EXPECT_EQ(half_bits(blk.data()), 0xB800);  // -0.5
  convert_to_f32(DType::Q4_0, blk.data(), back.data(), 32);
  EXPECT_EQ(back[5], 4.0f);  // code 0: (0 - 8) * -0.5
}

TEST(BlockFormats, AllZeroBlocks) {
  std::vector<float> z(64, 0.0f), back(64, 1.0f);
  std::vector<uint8_t> q8(68), q4(36);
  convert_from_f32(DType::Q8_0, z.data(), q8.data(), 64);
  EXPECT_EQ(half_bits(q8.data()), 0);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(q8[2 + j], 0);
  convert_to_f32(DType::Q8_0, q8.data(), back.data(), 64);
  for (float v : back) EXPECT_EQ(v, 0.0f);
  convert_from_f32(DType::Q4_0, z.data(), q4.data(), 64);
  EXPECT_EQ(half_bits(q4.data()), 0x8000);                  // 0 / -8 = -0, as GGML stores it
  for (int j = 0; j < 16; ++j) EXPECT_EQ(q4[2 + j], 0x88);  // code 8 = zero
  convert_to_f32(DType::Q4_0, q4.data(), back.data(), 64);
  for (float v : back) EXPECT_EQ(v, 0.0f);
}

TEST(BlockFormats, RoundTripErrorIsWithinHalfAStepForOddShapes) {
  for (DType dtype : {DType::Q8_0, DType::Q4_0}) {
    for (Shape shape : {Shape{1, 32}, Shape{3, 96}, Shape{7, 160}, Shape{5, 32 * 37}}) {
      const int64_t n = shape_numel(shape);
      std::vector<float> x = random_values(n, static_cast<uint32_t>(n), 0.7f);
      x[3] = 0.0f;
      Tensor q = quantized(dtype, shape, x);
      ASSERT_EQ(q.nbytes(), shape_bytes(shape, dtype));
      Tensor back = q.to_f32();
      ASSERT_EQ(back.shape(), shape);
      for (int64_t b = 0; b < n / 32; ++b) {
        float amax = 0, max = 0;
        for (int j = 0; j < 32; ++j) {
          if (std::fabs(x[b * 32 + j]) > amax) {
            amax = std::fabs(x[b * 32 + j]);
            max = x[b * 32 + j];
          }
        }
        // Half a step, plus the scale's rounding to f16 (2^-11 relative) times the largest code.
        // Q4_0 codes reach 8 steps towards the extreme but 7 away from it: values beyond 7 steps on
        // the other side clamp, up to one step off (GGML's format does the same).
        const float step = dtype == DType::Q8_0 ? amax / 127.0f : amax / 8.0f;
        const float bound = step * (0.5f + (dtype == DType::Q8_0 ? 127.0f : 8.0f) / 2048.0f) + 1e-7f;
        for (int j = 0; j < 32; ++j) {
          const int64_t i = b * 32 + j;
          const bool clamps = dtype == DType::Q4_0 && x[i] * max < 0 && std::fabs(x[i]) > 7.0f * step;
          ASSERT_LE(std::fabs(back.f32()[i] - x[i]), clamps ? 1.01f * step : bound)
              << dtype_name(dtype) << " " << shape_string(shape) << " at " << i;
        }
      }
    }
  }
  std::vector<float> x(33);
  std::vector<uint8_t> out(64);
  EXPECT_THROW(convert_from_f32(DType::Q8_0, x.data(), out.data(), 33), Error);
}

namespace {

struct Case {
  int64_t m, n, k;
};

// y = x w^T in float64 on the exact (dequantized) weights; `scale` = sum |x w| per output, the
// size of the rounding a float32 computation may make.
void reference(const Tensor& x, const Tensor& w, std::vector<double>& y, std::vector<double>& scale) {
  const Tensor wf = w.to_f32();
  const int64_t m = x.dim(0), k = x.dim(1), n = w.dim(0);
  y.assign(static_cast<size_t>(m * n), 0.0);
  scale.assign(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0, a = 0;
      for (int64_t c = 0; c < k; ++c) {
        const double p = static_cast<double>(x.f32()[i * k + c]) * wf.f32()[j * k + c];
        s += p;
        a += std::fabs(p);
      }
      y[i * n + j] = s;
      scale[i * n + j] = a;
    }
  }
}

// x rounded to bf16 (nearest even), as ActivationRounding::all does before bf16 dot products.
Tensor bf16_rounded(const Tensor& x) {
  Tensor b = Tensor::empty(DType::BF16, x.shape());
  convert_from_f32(DType::BF16, x.f32(), b.raw_mutable(), static_cast<size_t>(x.numel()));
  return b.to_f32();
}

// The integer path's math in float64: activations rounded as the kernels do (f32 operations),
// exact integer dot products, scales multiplied in.
void reference_int8(const Tensor& x, const Tensor& w, std::vector<double>& y, std::vector<double>& scale) {
  const Tensor wf = w.to_f32();  // = code * d
  const int64_t m = x.dim(0), k = x.dim(1), n = w.dim(0);
  std::vector<float> xr(static_cast<size_t>(m * k));
  for (int64_t b = 0; b < m * k / 32; ++b) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(x.f32()[b * 32 + j]));
    const float d = amax / 127.0f, inv = amax != 0.0f ? 127.0f / amax : 0.0f;
    for (int j = 0; j < 32; ++j) xr[b * 32 + j] = std::nearbyint(x.f32()[b * 32 + j] * inv) * d;
  }
  y.assign(static_cast<size_t>(m * n), 0.0);
  scale.assign(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0, a = 0;
      for (int64_t c = 0; c < k; ++c) {
        const double p = static_cast<double>(xr[i * k + c]) * wf.f32()[j * k + c];
        s += p;
        a += std::fabs(p);
      }
      y[i * n + j] = s;
      scale[i * n + j] = a;
    }
  }
}

class KernelPaths : public testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    const std::string native = ops::set_kernel_isa("native"), want = GetParam();
    isa_ = ops::set_kernel_isa(want);
    // The path asked for runs whenever this CPU has it.
    const std::string level = want.substr(0, want.find('-'));
    if (native.rfind(level, 0) == 0 || level == "scalar" || (level == "avx2" && native.rfind("avx512", 0) == 0)) {
      EXPECT_EQ(isa_.rfind(level == "native" ? native : level, 0), 0u) << want << " ran as " << isa_;
      if (want.find("novnni") != std::string::npos) {
        EXPECT_EQ(isa_.find("vnni"), std::string::npos) << isa_;
      }
    }
    std::printf("kernel path %s: %s\n", want.c_str(), isa_.c_str());
  }
  void TearDown() override {
    ops::set_kernel_isa("native");
    ops::set_activation_rounding(ops::ActivationRounding::quantized);
  }
  std::string isa_;
};

}  // namespace

TEST_P(KernelPaths, LinearMatchesFloat64ReferenceForEveryDtype) {
  const std::vector<Case> cases = {{1, 1, 32},  {1, 37, 96},   {2, 300, 160}, {3, 17, 1024}, {4, 64, 2048},
                                   {5, 37, 96}, {33, 70, 160}, {70, 45, 256}, {128, 24, 64}, {6, 8, 2048}};
  const std::vector<Case> float_only = {{1, 5, 17}, {6, 9, 200}, {2, 3, 1}, {40, 13, 7}};
  for (DType dtype : {DType::F32, DType::BF16, DType::F16, DType::Q8_0, DType::Q4_0}) {
    std::vector<Case> all = cases;
    if (!is_quantized(dtype)) all.insert(all.end(), float_only.begin(), float_only.end());
    for (const Case& c : all) {
      const std::vector<float> wv = random_values(c.n * c.k, 11, 0.05f);
      Tensor w = quantized(dtype, {c.n, c.k}, wv);
      Tensor x = Tensor::from_f32({c.m, c.k}, random_values(c.m * c.k, 7));
      for (auto rounding :
           {ops::ActivationRounding::none, ops::ActivationRounding::quantized, ops::ActivationRounding::all}) {
        ops::set_activation_rounding(rounding);
        const bool integer = is_quantized(dtype) && c.m <= 4 && rounding != ops::ActivationRounding::none;
        const bool bf16_dot = dtype == DType::BF16 && c.m > 4 && rounding == ops::ActivationRounding::all &&
                              isa_.find("bf16") != std::string::npos && isa_.rfind("avx512", 0) == 0;
        std::vector<double> ref, scale;
        if (integer) {
          reference_int8(x, w, ref, scale);
        } else {
          reference(bf16_dot ? bf16_rounded(x) : x, w, ref, scale);
        }
        const Tensor y = ops::linear(x, w);
        ASSERT_EQ(y.shape(), (Shape{c.m, c.n}));
        for (int64_t i = 0; i < y.numel(); ++i) {
          const double tol = 2e-6 * scale[i] + 1e-7 * std::sqrt(static_cast<double>(c.k));
          ASSERT_NEAR(y.f32()[i], ref[i], tol)
              << isa_ << " " << dtype_name(dtype) << " m=" << c.m << " n=" << c.n << " k=" << c.k
              << " integer=" << integer << " bf16_dot=" << bf16_dot << " at " << i;
        }
      }
    }
  }
}

TEST_P(KernelPaths, ConvOneDLayoutMatchesReference) {
  for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
    for (const Case& c : std::vector<Case>{{1, 37, 40}, {3, 100, 64}, {9, 50, 33}}) {
      Tensor w = quantized(dtype, {c.k, c.n}, random_values(c.k * c.n, 3, 0.1f));
      const Tensor wf = w.to_f32();
      Tensor x = Tensor::from_f32({c.m, c.k}, random_values(c.m * c.k, 5));
      const Tensor y = ops::linear_in_out(x, w);
      for (int64_t i = 0; i < c.m; ++i) {
        for (int64_t j = 0; j < c.n; ++j) {
          double s = 0, a = 0;
          for (int64_t r = 0; r < c.k; ++r) {
            s += static_cast<double>(x.f32()[i * c.k + r]) * wf.f32()[r * c.n + j];
            a += std::fabs(static_cast<double>(x.f32()[i * c.k + r]) * wf.f32()[r * c.n + j]);
          }
          ASSERT_NEAR(y.f32()[i * c.n + j], s, 2e-6 * a + 1e-7) << isa_ << " " << dtype_name(dtype);
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, KernelPaths,
                         testing::Values("native", "avx512", "avx512-novnni", "avx2", "avx2-novnni", "scalar"),
                         [](const testing::TestParamInfo<const char*>& i) {
                           std::string s = i.param;
                           for (auto& ch : s) {
                             if (ch == '-') ch = '_';
                           }
                           return s;
                         });

TEST(Kernels, ResultsDoNotDependOnTheThreadSplit) {
  // The same matmul on one thread (any shape of split) must give the same bits.
  for (DType dtype : {DType::BF16, DType::Q4_0, DType::F32}) {
    for (int64_t m : {1, 3, 40}) {
      Tensor w = quantized(dtype, {333, 256}, random_values(333 * 256, 2, 0.05f));
      Tensor x = Tensor::from_f32({m, 256}, random_values(m * 256, 9));
      const Tensor a = ops::linear(x, w);
      Tensor b;
      std::thread([&] {
        // A second thread's call while the pool is idle; then the same call again must match.
        b = ops::linear(x, w);
      }).join();
      ASSERT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << dtype_name(dtype) << " m=" << m;
    }
  }
}

TEST(Kernels, QuantizedWeightsRejectedWhereTheyCannotWork) {
  Tensor w = quantized(DType::Q8_0, {64, 32}, random_values(64 * 32, 1));
  Tensor x = Tensor::from_f32({1, 64}, random_values(64, 2));
  EXPECT_THROW(ops::linear_in_out(x, w), Error);
  EXPECT_NO_THROW(ops::set_kernel_isa("native"));
  EXPECT_THROW(ops::set_kernel_isa("sse9"), Error);
  EXPECT_THROW(ops::activation_rounding_from_name("fast"), Error);
  EXPECT_EQ(ops::activation_rounding_from_name("all"), ops::ActivationRounding::all);
}

TEST(Kernels, EmbeddingGathersQuantizedRows) {
  const std::vector<float> v = random_values(10 * 64, 4);
  Tensor t = quantized(DType::Q8_0, {10, 64}, v);
  const Tensor e = ops::embedding(t, Tensor::from_i64({2}, {7, 2}));
  const Tensor all = t.to_f32();
  EXPECT_EQ(std::memcmp(e.f32(), all.f32() + 7 * 64, 64 * 4), 0);
  EXPECT_EQ(std::memcmp(e.f32() + 64, all.f32() + 2 * 64, 64 * 4), 0);
}

namespace {
double cpu_seconds(int who) {
  rusage u{};
  ::getrusage(who, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}
}  // namespace

// A host fetching the next layer reserves a core: kernels then use one thread fewer, the spare
// worker neither works nor spins (the whole process's CPU time is the caller's), results keep their
// bits, and giving back more than was taken is an error.
TEST(Kernels, AReservedCoreIsLeftAlone) {
  const int threads = ops::kernel_threads();
  EXPECT_EQ(ops::usable_kernel_threads(), threads);
  Tensor w = quantized(DType::BF16, {2048, 1024}, random_values(2048 * 1024, 3, 0.05f));
  Tensor x = Tensor::from_f32({4, 1024}, random_values(4 * 1024, 5));
  const Tensor all = ops::linear(x, w);
  EXPECT_EQ(ops::reserve_kernel_threads(1), 1);
  EXPECT_EQ(ops::usable_kernel_threads(), std::max(1, threads - 1));
  Tensor reserved;
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // workers' spin after the last call ends
  const double self0 = cpu_seconds(RUSAGE_SELF), thread0 = cpu_seconds(RUSAGE_THREAD);
  for (int i = 0; i < 200; ++i) reserved = ops::linear(x, w);
  const double self = cpu_seconds(RUSAGE_SELF) - self0, mine = cpu_seconds(RUSAGE_THREAD) - thread0;
  EXPECT_EQ(ops::reserve_kernel_threads(-1), 0);
  EXPECT_EQ(ops::usable_kernel_threads(), threads);
  ASSERT_EQ(std::memcmp(all.raw(), reserved.raw(), all.nbytes()), 0);
  if (threads == 2) {
    // Only the caller ran: the other threads' CPU time is small against the caller's.
    EXPECT_LT(self - mine, 0.2 * mine) << "process " << self << " s, caller " << mine << " s";
  }
  EXPECT_THROW(ops::reserve_kernel_threads(-1), Error);
  EXPECT_EQ(ops::usable_kernel_threads(), threads);
}
