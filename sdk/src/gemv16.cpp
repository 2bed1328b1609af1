#include "gemv16.h"

#include "cpu.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <thread>

namespace surf::ops::detail {

namespace {

__attribute__((target("avx2,fma,f16c"))) inline __m256 load8(DType dtype, const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if (dtype == DType::F16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

inline float widen(DType dtype, uint16_t v) {
  float f;
  convert_to_f32(dtype, &v, &f, 1);
  return f;
}

__attribute__((target("avx2,fma,f16c"))) float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

template <int R>
__attribute__((target("avx2,fma,f16c"))) void nk_rows(DType dtype, const uint16_t* w, const float* x, float* y,
                                                      int64_t n0, int64_t n1, int64_t n, int64_t k) {
  for (int64_t j = n0; j < n1; ++j) {
    const uint16_t* row = w + j * k;
    __m256 acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
      const __m256 a = load8(dtype, row + i), b = load8(dtype, row + i + 8);
      for (int r = 0; r < R; ++r) {
        acc[r][0] = _mm256_fmadd_ps(a, _mm256_loadu_ps(x + r * k + i), acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(b, _mm256_loadu_ps(x + r * k + i + 8), acc[r][1]);
      }
    }
    for (int r = 0; r < R; ++r) {
      float s = hsum(_mm256_add_ps(acc[r][0], acc[r][1]));
      for (int64_t t = i; t < k; ++t) s += widen(dtype, row[t]) * x[r * k + t];
      y[r * n + j] = s;
    }
  }
}

template <int R>
__attribute__((target("avx2,fma,f16c"))) void kn_cols(DType dtype, const uint16_t* w, const float* x, float* y,
                                                      int64_t c0, int64_t c1, int64_t n, int64_t k) {
  // y[r, c0:c1] += x[r, i] * w[i, c0:c1] for every i: the y slice stays in cache.
  for (int r = 0; r < R; ++r) std::memset(y + r * n + c0, 0, static_cast<size_t>(c1 - c0) * 4);
  for (int64_t i = 0; i < k; ++i) {
    const uint16_t* row = w + i * n;
    __m256 xs[R];
    for (int r = 0; r < R; ++r) xs[r] = _mm256_set1_ps(x[r * k + i]);
    int64_t c = c0;
    for (; c + 8 <= c1; c += 8) {
      const __m256 a = load8(dtype, row + c);
      for (int r = 0; r < R; ++r) {
        float* out = y + r * n + c;
        _mm256_storeu_ps(out, _mm256_fmadd_ps(a, xs[r], _mm256_loadu_ps(out)));
      }
    }
    for (; c < c1; ++c) {
      const float a = widen(dtype, row[c]);
      for (int r = 0; r < R; ++r) y[r * n + c] += a * x[r * k + i];
    }
  }
}

// Splits [0, n) over two threads when the work is large enough to pay for one.
template <class Fn>
void split(int64_t n, int64_t work, Fn&& fn) {
  if (work < (1 << 20) || n < 16) {
    fn(0, n);
    return;
  }
  const int64_t mid = (n / 2 + 7) / 8 * 8;
  std::thread other([&] { fn(mid, n); });
  fn(0, mid);
  other.join();
}

}  // namespace

bool fused16_available() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
  return yes;
}

void gemv16_nk(DType dtype, const void* w, const float* x, float* y, int64_t rows, int64_t n, int64_t k) {
  const auto* p = static_cast<const uint16_t*>(w);
  split(n, n * k, [&](int64_t a, int64_t b) {
    switch (rows) {
      case 1: nk_rows<1>(dtype, p, x, y, a, b, n, k); break;
      case 2: nk_rows<2>(dtype, p, x, y, a, b, n, k); break;
      case 3: nk_rows<3>(dtype, p, x, y, a, b, n, k); break;
      default: nk_rows<4>(dtype, p, x, y, a, b, n, k); break;
    }
  });
}

void gemv16_kn(DType dtype, const void* w, const float* x, float* y, int64_t rows, int64_t n, int64_t k) {
  const auto* p = static_cast<const uint16_t*>(w);
  split(n, n * k, [&](int64_t a, int64_t b) {
    switch (rows) {
      case 1: kn_cols<1>(dtype, p, x, y, a, b, n, k); break;
      case 2: kn_cols<2>(dtype, p, x, y, a, b, n, k); break;
      case 3: kn_cols<3>(dtype, p, x, y, a, b, n, k); break;
      default: kn_cols<4>(dtype, p, x, y, a, b, n, k); break;
    }
  });
}

}  // namespace surf::ops::detail
