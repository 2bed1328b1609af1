// AVX2 + FMA + F16C kernels (8 lanes); the int8 kernels use maddubs, or AVX-VNNI where present.
// Every function carries its target attribute: nothing here may run on a CPU without AVX2.
#include <immintrin.h>

#include <cstring>

#include "kernels/gemv.h"
#include "kernels/quant.h"

#define SURF_AVX2 __attribute__((target("avx2,fma,f16c")))
#define SURF_AVXVNNI __attribute__((target("avx2,fma,f16c,avxvnni")))

namespace surf::kernels {

namespace {

template <DType D>
SURF_AVX2 inline __m256 load8(const std::byte* row, int64_t i) {
  if constexpr (D == DType::F32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + i);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(row) + i));
    if constexpr (D == DType::F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

template <DType D>
SURF_AVX2 inline float widen1(const std::byte* row, int64_t i) {
  if constexpr (D == DType::F32) {
    return reinterpret_cast<const float*>(row)[i];
  } else if constexpr (D == DType::F16) {
    return _cvtsh_ss(reinterpret_cast<const uint16_t*>(row)[i]);
  } else {
    const uint32_t bits = static_cast<uint32_t>(reinterpret_cast<const uint16_t*>(row)[i]) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
}

SURF_AVX2 inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

// Four running sums per activation row over 32 weights a step.
template <int R, DType D>
SURF_AVX2 void float_rows(const GemvArgs& a, int64_t n0, int64_t n1) {
  const int64_t k = a.k;
  const size_t rb = row_bytes(D, k);
  for (int64_t j = n0; j < n1; ++j) {
    const std::byte* row = a.w + j * rb;
    __m256 acc[R][4];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= k; i += 32) {
      const __m256 w0 = load8<D>(row, i), w1 = load8<D>(row, i + 8), w2 = load8<D>(row, i + 16),
                   w3 = load8<D>(row, i + 24);
      for (int r = 0; r < R; ++r) {
        const float* x = a.x + r * k + i;
        acc[r][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x), acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + 8), acc[r][1]);
        acc[r][2] = _mm256_fmadd_ps(w2, _mm256_loadu_ps(x + 16), acc[r][2]);
        acc[r][3] = _mm256_fmadd_ps(w3, _mm256_loadu_ps(x + 24), acc[r][3]);
      }
    }
    for (; i + 8 <= k; i += 8) {
      const __m256 w0 = load8<D>(row, i);
      for (int r = 0; r < R; ++r) acc[r][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(a.x + r * k + i), acc[r][0]);
    }
    for (int r = 0; r < R; ++r) {
      float s = hsum(_mm256_add_ps(_mm256_add_ps(acc[r][0], acc[r][1]), _mm256_add_ps(acc[r][2], acc[r][3])));
      for (int64_t t = i; t < k; ++t) s += widen1<D>(row, t) * a.x[r * k + t];
      a.y[r * a.n + j] = s;
    }
  }
}

template <DType D>
SURF_AVX2 void float_dispatch(const GemvArgs& a, int64_t n0, int64_t n1) {
  switch (a.m) {
    case 1:
      float_rows<1, D>(a, n0, n1);
      break;
    case 2:
      float_rows<2, D>(a, n0, n1);
      break;
    case 3:
      float_rows<3, D>(a, n0, n1);
      break;
    default:
      float_rows<4, D>(a, n0, n1);
      break;
  }
}

// 32 weights of a block as two vectors of 8 int32 each... widened to f32 (exact kernels).
template <bool Q4>
SURF_AVX2 inline void block_f32(const std::byte* blk, __m256 w[4]) {
  if constexpr (Q4) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
    const __m128i lo = _mm_and_si128(raw, _mm_set1_epi8(0x0f));
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0x0f));
    const __m256i eight = _mm256_set1_epi32(8);
    w[0] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(lo), eight));
    w[1] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)), eight));
    w[2] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(hi), eight));
    w[3] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)), eight));
  } else {
    for (int u = 0; u < 4; ++u) {
      w[u] =
          _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 2 + 8 * u))));
    }
  }
}

template <int R, bool Q4>
SURF_AVX2 void qf_rows(const GemvArgs& a, int64_t n0, int64_t n1) {
  const int64_t nb = a.k / kBlock;
  const size_t bb = Q4 ? sizeof(BlockQ4_0) : sizeof(BlockQ8_0);
  for (int64_t j = n0; j < n1; ++j) {
    const std::byte* blocks = a.w + j * nb * bb;
    __m256 acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const std::byte* blk = blocks + b * bb;
      uint16_t h;
      std::memcpy(&h, blk, 2);
      const __m256 d = _mm256_set1_ps(_cvtsh_ss(h));
      __m256 w[4];
      block_f32<Q4>(blk, w);
      for (int r = 0; r < R; ++r) {
        const float* x = a.x + r * a.k + b * kBlock;
        __m256 t = _mm256_mul_ps(w[0], _mm256_loadu_ps(x));
        t = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(x + 8), t);
        t = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(x + 16), t);
        t = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(x + 24), t);
        acc[r][b & 1] = _mm256_fmadd_ps(d, t, acc[r][b & 1]);
      }
    }
    for (int r = 0; r < R; ++r) a.y[r * a.n + j] = hsum(_mm256_add_ps(acc[r][0], acc[r][1]));
  }
}

template <bool Q4>
SURF_AVX2 void qf_dispatch(const GemvArgs& a, int64_t n0, int64_t n1) {
  switch (a.m) {
    case 1:
      qf_rows<1, Q4>(a, n0, n1);
      break;
    case 2:
      qf_rows<2, Q4>(a, n0, n1);
      break;
    case 3:
      qf_rows<3, Q4>(a, n0, n1);
      break;
    default:
      qf_rows<4, Q4>(a, n0, n1);
      break;
  }
}

// Integer kernels. q4_0: the nibbles (0..15) are the unsigned operand, the -8 is applied through
// the activations' block sums. q8_0 with maddubs: the sign trick (|w| times x with w's sign) keeps
// the pairwise 16-bit sums from saturating; with VNNI: w + 128 (w xor 0x80) as the unsigned operand,
// corrected through the block sums.
template <bool Q4>
SURF_AVX2 inline __m256i block_codes(const std::byte* blk) {
  if constexpr (Q4) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
    const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(raw), _mm_srli_epi16(raw, 4), 1);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
  } else {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
  }
}

// The same kernel body under two targets (a VNNI-free build for CPUs without AVX-VNNI).
#define SURF_QI_ROWS(NAME, TARGET, VNNI)                                                                       \
  template <int R, bool Q4>                                                                                    \
  TARGET void NAME(const GemvArgs& a, int64_t n0, int64_t n1) {                                                \
    const int64_t nb = a.k / kBlock;                                                                           \
    const size_t bb = Q4 ? sizeof(BlockQ4_0) : sizeof(BlockQ8_0);                                              \
    [[maybe_unused]] const __m256i ones16 = _mm256_set1_epi16(1);                                              \
    for (int64_t j = n0; j < n1; ++j) {                                                                        \
      const std::byte* blocks = a.w + j * nb * bb;                                                             \
      __m256 acc[R][2];                                                                                        \
      float corr[R];                                                                                           \
      for (int r = 0; r < R; ++r) {                                                                            \
        acc[r][0] = acc[r][1] = _mm256_setzero_ps();                                                           \
        corr[r] = 0;                                                                                           \
      }                                                                                                        \
      for (int64_t b = 0; b < nb; ++b) {                                                                       \
        const std::byte* blk = blocks + b * bb;                                                                \
        uint16_t h;                                                                                            \
        std::memcpy(&h, blk, 2);                                                                               \
        const float dw = _cvtsh_ss(h);                                                                         \
        const __m256i w = block_codes<Q4>(blk);                                                                \
        __m256i aw = w; /* the unsigned operand */                                                             \
        if constexpr (!Q4) {                                                                                   \
          aw = VNNI ? _mm256_xor_si256(w, _mm256_set1_epi8(static_cast<char>(0x80))) : _mm256_sign_epi8(w, w); \
        }                                                                                                      \
        for (int r = 0; r < R; ++r) {                                                                          \
          __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.xq.q + r * a.k + b * kBlock));    \
          if constexpr (!Q4 && !VNNI) xq = _mm256_sign_epi8(xq, w);                                            \
          const __m256i p = SURF_QI_DOT_##VNNI(aw, xq);                                                        \
          const float s = dw * a.xq.d[r * nb + b];                                                             \
          acc[r][b & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(s), acc[r][b & 1]);            \
          if constexpr (Q4 || VNNI) corr[r] += dw * a.xq.dsum[r * nb + b];                                     \
        }                                                                                                      \
      }                                                                                                        \
      constexpr float offset = Q4 ? 8.0f : 128.0f;                                                             \
      for (int r = 0; r < R; ++r) {                                                                            \
        float v = hsum(_mm256_add_ps(acc[r][0], acc[r][1]));                                                   \
        if constexpr (Q4 || VNNI) v -= offset * corr[r];                                                       \
        a.y[r * a.n + j] = v;                                                                                  \
      }                                                                                                        \
    }                                                                                                          \
  }                                                                                                            \
  template <bool Q4>                                                                                           \
  TARGET void NAME##_m(const GemvArgs& a, int64_t n0, int64_t n1) {                                            \
    switch (a.m) {                                                                                             \
      case 1:                                                                                                  \
        NAME<1, Q4>(a, n0, n1);                                                                                \
        break;                                                                                                 \
      case 2:                                                                                                  \
        NAME<2, Q4>(a, n0, n1);                                                                                \
        break;                                                                                                 \
      case 3:                                                                                                  \
        NAME<3, Q4>(a, n0, n1);                                                                                \
        break;                                                                                                 \
      default:                                                                                                 \
        NAME<4, Q4>(a, n0, n1);                                                                                \
        break;                                                                                                 \
    }                                                                                                          \
  }

#define SURF_QI_DOT_false(aw, xq) _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xq), ones16)
#define SURF_QI_DOT_true(aw, xq) _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), aw, xq)
SURF_QI_ROWS(qi_rows_maddubs, SURF_AVX2, false)
SURF_QI_ROWS(qi_rows_vnni, SURF_AVXVNNI, true)

}  // namespace

SURF_AVX2 void gemv_float_avx2(const GemvArgs& a, int64_t n0, int64_t n1) {
  switch (a.dtype) {
    case DType::F32:
      float_dispatch<DType::F32>(a, n0, n1);
      break;
    case DType::F16:
      float_dispatch<DType::F16>(a, n0, n1);
      break;
    default:
      float_dispatch<DType::BF16>(a, n0, n1);
      break;
  }
}

SURF_AVX2 void gemv_qf_avx2(const GemvArgs& a, int64_t n0, int64_t n1) {
  if (a.dtype == DType::Q4_0) {
    qf_dispatch<true>(a, n0, n1);
  } else {
    qf_dispatch<false>(a, n0, n1);
  }
}

SURF_AVX2 void gemv_qi_avx2(const GemvArgs& a, int64_t n0, int64_t n1) {
  if (a.dtype == DType::Q4_0) {
    qi_rows_maddubs_m<true>(a, n0, n1);
  } else {
    qi_rows_maddubs_m<false>(a, n0, n1);
  }
}

SURF_AVXVNNI void gemv_qi_avxvnni(const GemvArgs& a, int64_t n0, int64_t n1) {
  if (a.dtype == DType::Q4_0) {
    qi_rows_vnni_m<true>(a, n0, n1);
  } else {
    qi_rows_vnni_m<false>(a, n0, n1);
  }
}

SURF_AVX2 void quantize_rows_avx2(const float* x, int64_t m, int64_t k, int8_t* q, float* d, float* dsum) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t blk = 0; blk < m * k / kBlock; ++blk) {
    const float* v = x + blk * kBlock;
    __m256 x4[4];
    __m256 mx = _mm256_setzero_ps();
    for (int u = 0; u < 4; ++u) {
      x4[u] = _mm256_loadu_ps(v + 8 * u);
      mx = _mm256_max_ps(mx, _mm256_and_ps(x4[u], abs_mask));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    const float amax = _mm_cvtss_f32(m4);
    const float scale = amax / 127.0f;
    const __m256 inv = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
    __m256i c[4];
    for (int u = 0; u < 4; ++u) c[u] = _mm256_cvtps_epi32(_mm256_mul_ps(x4[u], inv));  // round to even
    const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(c[0], c[1]), _mm256_add_epi32(c[2], c[3]));
    // Pack 32 int32 -> 32 int8 in order (packs work per 128-bit lane: fix the order after).
    const __m256i p01 = _mm256_packs_epi32(c[0], c[1]), p23 = _mm256_packs_epi32(c[2], c[3]);
    __m256i p = _mm256_packs_epi16(p01, p23);
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + blk * kBlock), p);
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
    d[blk] = scale;
    dsum[blk] = scale * static_cast<float>(_mm_cvtsi128_si32(s4));
  }
}

namespace {

template <int R>
SURF_AVX2 void kn_cols(DType dtype, const std::byte* w, const float* x, float* y, int64_t n, int64_t k, int64_t c0,
                       int64_t c1) {
  // y[r, c0:c1] += x[r, i] * w[i, c0:c1] for every i: the y slice stays in cache.
  for (int r = 0; r < R; ++r) std::memset(y + r * n + c0, 0, static_cast<size_t>(c1 - c0) * 4);
  const size_t rb = row_bytes(dtype, n);
  for (int64_t i = 0; i < k; ++i) {
    const std::byte* row = w + i * rb;
    __m256 xs[R];
    for (int r = 0; r < R; ++r) xs[r] = _mm256_set1_ps(x[r * k + i]);
    int64_t c = c0;
    for (; c + 8 <= c1; c += 8) {
      const __m256 v = dtype == DType::F32   ? load8<DType::F32>(row, c)
                       : dtype == DType::F16 ? load8<DType::F16>(row, c)
                                             : load8<DType::BF16>(row, c);
      for (int r = 0; r < R; ++r) {
        float* out = y + r * n + c;
        _mm256_storeu_ps(out, _mm256_fmadd_ps(v, xs[r], _mm256_loadu_ps(out)));
      }
    }
    for (; c < c1; ++c) {
      const float v = dtype == DType::F32   ? widen1<DType::F32>(row, c)
                      : dtype == DType::F16 ? widen1<DType::F16>(row, c)
                                            : widen1<DType::BF16>(row, c);
      for (int r = 0; r < R; ++r) y[r * n + c] += v * x[r * k + i];
    }
  }
}

}  // namespace

SURF_AVX2 void gemv_kn_avx2(DType dtype, const void* w, const float* x, float* y, int64_t m, int64_t n, int64_t k,
                            int64_t c0, int64_t c1) {
  const auto* p = static_cast<const std::byte*>(w);
  switch (m) {
    case 1:
      kn_cols<1>(dtype, p, x, y, n, k, c0, c1);
      break;
    case 2:
      kn_cols<2>(dtype, p, x, y, n, k, c0, c1);
      break;
    case 3:
      kn_cols<3>(dtype, p, x, y, n, k, c0, c1);
      break;
    default:
      kn_cols<4>(dtype, p, x, y, n, k, c0, c1);
      break;
  }
}

}  // namespace surf::kernels
