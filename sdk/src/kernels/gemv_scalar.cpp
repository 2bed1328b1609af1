// Portable kernels: the reference the SIMD paths are tested against, and what runs on CPUs
// without AVX2.
#include <cmath>
#include <cstring>

#include "kernels/gemv.h"
#include "kernels/quant.h"

namespace surf::kernels {

namespace {

float widen(DType dtype, const std::byte* row, int64_t i) {
  switch (dtype) {
    case DType::F32: {
      float f;
      std::memcpy(&f, row + 4 * i, 4);
      return f;
    }
    case DType::BF16: {
      uint16_t h;
      std::memcpy(&h, row + 2 * i, 2);
      const uint32_t bits = static_cast<uint32_t>(h) << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
    default: {
      uint16_t h;
      std::memcpy(&h, row + 2 * i, 2);
      return half_to_float(h);
    }
  }
}

}  // namespace

void gemv_float_scalar(const GemvArgs& a, int64_t n0, int64_t n1) {
  const size_t rb = row_bytes(a.dtype, a.k);
  for (int64_t j = n0; j < n1; ++j) {
    const std::byte* row = a.w + j * rb;
    for (int64_t r = 0; r < a.m; ++r) {
      const float* x = a.x + r * a.k;
      float s[4] = {0, 0, 0, 0};
      for (int64_t i = 0; i < a.k; ++i) s[i & 3] += widen(a.dtype, row, i) * x[i];
      a.y[r * a.n + j] = (s[0] + s[1]) + (s[2] + s[3]);
    }
  }
}

void gemv_qf_scalar(const GemvArgs& a, int64_t n0, int64_t n1) {
  const int64_t nb = a.k / kBlock;
  for (int64_t j = n0; j < n1; ++j) {
    float w[kBlock];
    float acc[kGemvMaxRows] = {0, 0, 0, 0};
    for (int64_t b = 0; b < nb; ++b) {
      float d;
      if (a.dtype == DType::Q8_0) {
        const auto& blk = reinterpret_cast<const BlockQ8_0*>(a.w)[j * nb + b];
        d = half_to_float(blk.d);
        for (int i = 0; i < kBlock; ++i) w[i] = static_cast<float>(blk.qs[i]);
      } else {
        const auto& blk = reinterpret_cast<const BlockQ4_0*>(a.w)[j * nb + b];
        d = half_to_float(blk.d);
        for (int i = 0; i < kBlock / 2; ++i) {
          w[i] = static_cast<float>((blk.qs[i] & 0x0f) - 8);
          w[i + kBlock / 2] = static_cast<float>((blk.qs[i] >> 4) - 8);
        }
      }
      for (int64_t r = 0; r < a.m; ++r) {
        const float* x = a.x + r * a.k + b * kBlock;
        float t = 0;
        for (int i = 0; i < kBlock; ++i) t += w[i] * x[i];
        acc[r] += d * t;
      }
    }
    for (int64_t r = 0; r < a.m; ++r) a.y[r * a.n + j] = acc[r];
  }
}

void gemv_qi_scalar(const GemvArgs& a, int64_t n0, int64_t n1) {
  const int64_t nb = a.k / kBlock;
  for (int64_t j = n0; j < n1; ++j) {
    float acc[kGemvMaxRows] = {0, 0, 0, 0};
    for (int64_t b = 0; b < nb; ++b) {
      int w[kBlock];
      float d;
      if (a.dtype == DType::Q8_0) {
        const auto& blk = reinterpret_cast<const BlockQ8_0*>(a.w)[j * nb + b];
        d = half_to_float(blk.d);
        for (int i = 0; i < kBlock; ++i) w[i] = blk.qs[i];
      } else {
        const auto& blk = reinterpret_cast<const BlockQ4_0*>(a.w)[j * nb + b];
        d = half_to_float(blk.d);
        for (int i = 0; i < kBlock / 2; ++i) {
          w[i] = (blk.qs[i] & 0x0f) - 8;
          w[i + kBlock / 2] = (blk.qs[i] >> 4) - 8;
        }
      }
      for (int64_t r = 0; r < a.m; ++r) {
        const int8_t* q = a.xq.q + r * a.k + b * kBlock;
        int32_t dot = 0;
        for (int i = 0; i < kBlock; ++i) dot += w[i] * q[i];
        acc[r] += static_cast<float>(dot) * (d * a.xq.d[r * nb + b]);
      }
    }
    for (int64_t r = 0; r < a.m; ++r) a.y[r * a.n + j] = acc[r];
  }
}

void quantize_rows_scalar(const float* x, int64_t m, int64_t k, int8_t* q, float* d, float* dsum) {
  for (int64_t blk = 0; blk < m * k / kBlock; ++blk) {
    const float* v = x + blk * kBlock;
    float amax = 0;
    for (int i = 0; i < kBlock; ++i) amax = std::fmax(amax, std::fabs(v[i]));
    const float scale = amax / 127.0f;
    const float inv = amax != 0.0f ? 127.0f / amax : 0.0f;
    int sum = 0;
    for (int i = 0; i < kBlock; ++i) {
      const int c = static_cast<int>(std::nearbyint(v[i] * inv));
      q[blk * kBlock + i] = static_cast<int8_t>(c);
      sum += c;
    }
    d[blk] = scale;
    dsum[blk] = scale * static_cast<float>(sum);
  }
}

void gemv_kn_scalar(DType dtype, const void* w, const float* x, float* y, int64_t m, int64_t n, int64_t k, int64_t c0,
                    int64_t c1) {
  const auto* base = static_cast<const std::byte*>(w);
  const size_t rb = row_bytes(dtype, n);
  for (int64_t r = 0; r < m; ++r) std::memset(y + r * n + c0, 0, static_cast<size_t>(c1 - c0) * 4);
  for (int64_t i = 0; i < k; ++i) {
    const std::byte* row = base + i * rb;
    for (int64_t c = c0; c < c1; ++c) {
      const float v = widen(dtype, row, c);
      for (int64_t r = 0; r < m; ++r) y[r * n + c] += v * x[r * k + i];
    }
  }
}

}  // namespace surf::kernels
