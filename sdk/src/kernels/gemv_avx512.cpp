// AVX-512 kernels (16 lanes); the int8 kernel uses AVX512_VNNI. Every function carries its
// target attribute: nothing here may run on a CPU without AVX-512.
#include <immintrin.h>

#include <cstring>

#include "kernels/gemv.h"
#include "kernels/quant.h"

// GCC 12 warns falsely (-Wmaybe-uninitialized) inside the AVX-512 intrinsic headers at -O3.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#define SURF_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define SURF_AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

namespace surf::kernels {

namespace {

template <DType D>
SURF_AVX512 inline __m512 load16(const std::byte* row, int64_t i) {
  if constexpr (D == DType::F32) {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(row) + i);
  } else {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(reinterpret_cast<const uint16_t*>(row) + i));
    if constexpr (D == DType::F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

template <DType D>
SURF_AVX512 inline __m512 load16_masked(const std::byte* row, int64_t i, __mmask16 m) {
  if constexpr (D == DType::F32) {
    return _mm512_maskz_loadu_ps(m, reinterpret_cast<const float*>(row) + i);
  } else {
    const __m256i h = _mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t*>(row) + i);
    if constexpr (D == DType::F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

// Four running sums per activation row over 64 weights a step; a masked step for the tail.
template <int R, DType D>
SURF_AVX512 void float_rows(const GemvArgs& a, int64_t n0, int64_t n1) {
  const int64_t k = a.k;
  const size_t rb = row_bytes(D, k);
  for (int64_t j = n0; j < n1; ++j) {
    const std::byte* row = a.w + j * rb;
    __m512 acc[R][4];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= k; i += 64) {
      const __m512 w0 = load16<D>(row, i), w1 = load16<D>(row, i + 16), w2 = load16<D>(row, i + 32),
                   w3 = load16<D>(row, i + 48);
      for (int r = 0; r < R; ++r) {
        const float* x = a.x + r * k + i;
        acc[r][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x), acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + 16), acc[r][1]);
        acc[r][2] = _mm512_fmadd_ps(w2, _mm512_loadu_ps(x + 32), acc[r][2]);
        acc[r][3] = _mm512_fmadd_ps(w3, _mm512_loadu_ps(x + 48), acc[r][3]);
      }
    }
    for (int u = 0; i < k; i += 16, u = (u + 1) & 3) {
      const __mmask16 m = k - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (k - i)) - 1);
      const __m512 w0 = load16_masked<D>(row, i, m);
      for (int r = 0; r < R; ++r) {
        acc[r][u] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m, a.x + r * k + i), acc[r][u]);
      }
    }
    for (int r = 0; r < R; ++r) {
      a.y[r * a.n + j] =
          _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]), _mm512_add_ps(acc[r][2], acc[r][3])));
    }
  }
}

template <DType D>
SURF_AVX512 void float_dispatch(const GemvArgs& a, int64_t n0, int64_t n1) {
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

// A block's 32 codes widened to f32 (q4_0: minus 8), in element order.
template <bool Q4>
SURF_AVX512 inline void block_f32(const std::byte* blk, __m512& w0, __m512& w1) {
  if constexpr (Q4) {
    const __m512i raw = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2)));
    const __m512i eight = _mm512_set1_epi32(8);
    w0 = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_and_si512(raw, _mm512_set1_epi32(0x0f)), eight));
    w1 = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(raw, 4), eight));
  } else {
    w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2))));
    w1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 18))));
  }
}

template <int R, bool Q4>
SURF_AVX512 void qf_rows(const GemvArgs& a, int64_t n0, int64_t n1) {
  const int64_t nb = a.k / kBlock;
  const size_t bb = Q4 ? sizeof(BlockQ4_0) : sizeof(BlockQ8_0);
  for (int64_t j = n0; j < n1; ++j) {
    const std::byte* blocks = a.w + j * nb * bb;
    __m512 acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const std::byte* blk = blocks + b * bb;
      uint16_t h;
      std::memcpy(&h, blk, 2);
      const __m512 d = _mm512_set1_ps(_cvtsh_ss(h));
      __m512 w0, w1;
      block_f32<Q4>(blk, w0, w1);
      for (int r = 0; r < R; ++r) {
        const float* x = a.x + r * a.k + b * kBlock;
        const __m512 t = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + 16), _mm512_mul_ps(w0, _mm512_loadu_ps(x)));
        acc[r][b & 1] = _mm512_fmadd_ps(d, t, acc[r][b & 1]);
      }
    }
    for (int r = 0; r < R; ++r) a.y[r * a.n + j] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]));
  }
}

template <bool Q4>
SURF_AVX512 void qf_dispatch(const GemvArgs& a, int64_t n0, int64_t n1) {
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

// Integer kernel: two blocks per 512-bit step. The unsigned operand of vpdpbusd is the weight
// code: q4_0 nibbles (0..15) as they are, q8_0 codes + 128 (xor 0x80); the offset (8 or 128)
// times the sum of the activation codes is subtracted through the per-block sums. The block scales
// of 16 blocks are gathered, widened and multiplied by the activation scales at once.
template <bool Q4>
SURF_AVX512VNNI inline __m512i pair_codes(const std::byte* blk0, size_t bb) {
  if constexpr (Q4) {
    const __m256i raw =
        _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk0 + 2))),
                                _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk0 + bb + 2)), 1);  // [q0 | q1]
    const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(raw), _mm256_srli_epi16(raw, 4), 1);
    // [q0, q1, q0>>4, q1>>4] -> [q0, q0>>4, q1, q1>>4]: element order of the two blocks
    return _mm512_and_si512(_mm512_shuffle_i64x2(both, both, _MM_SHUFFLE(3, 1, 2, 0)), _mm512_set1_epi8(0x0f));
  } else {
    const __m512i w =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk0 + 2))),
                           _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk0 + bb + 2)), 1);
    return _mm512_xor_si512(w, _mm512_set1_epi8(static_cast<char>(0x80)));
  }
}

template <bool Q4>
SURF_AVX512VNNI inline __m256i block_codes(const std::byte* blk) {
  if constexpr (Q4) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
    const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(raw), _mm_srli_epi16(raw, 4), 1);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
  } else {
    return _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2)),
                            _mm256_set1_epi8(static_cast<char>(0x80)));
  }
}

template <int R, bool Q4>
SURF_AVX512VNNI void qi_rows(const GemvArgs& a, int64_t n0, int64_t n1) {
  const int64_t nb = a.k / kBlock;
  const int bb = Q4 ? sizeof(BlockQ4_0) : sizeof(BlockQ8_0);
  const __m512i gather_at = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                               _mm512_set1_epi32(bb));
  // Lane pattern [2p x8, 2p+1 x8]: the scales of pair p of a group of 16 blocks.
  __m512i pair_index[8];
  for (int p = 0; p < 8; ++p) {
    pair_index[p] =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi32(2 * p)), _mm256_set1_epi32(2 * p + 1), 1);
  }
  for (int64_t j = n0; j < n1; ++j) {
    const std::byte* blocks = a.w + j * nb * bb;
    __m512 acc[R][2];
    __m512 corr[R];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = corr[r] = _mm512_setzero_ps();
    int64_t b = 0;
    for (; b + 16 <= nb; b += 16) {
      const std::byte* g = blocks + b * bb;
      const __m512i raw_d = _mm512_i32gather_epi32(gather_at, g, 1);
      const __m512 dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(raw_d));
      __m512 scale[R];
      for (int r = 0; r < R; ++r) {
        scale[r] = _mm512_mul_ps(dw, _mm512_loadu_ps(a.xq.d + r * nb + b));
        corr[r] = _mm512_fmadd_ps(dw, _mm512_loadu_ps(a.xq.dsum + r * nb + b), corr[r]);
      }
      for (int p = 0; p < 8; ++p) {
        const __m512i w = pair_codes<Q4>(g + 2 * p * bb, bb);
        for (int r = 0; r < R; ++r) {
          const __m512i xq = _mm512_loadu_si512(a.xq.q + r * a.k + (b + 2 * p) * kBlock);
          const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, xq);
          const __m512 s = _mm512_permutexvar_ps(pair_index[p], scale[r]);
          acc[r][p & 1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), s, acc[r][p & 1]);
        }
      }
    }
    float tail[R];
    for (int r = 0; r < R; ++r) tail[r] = 0;
    __m256 acc_t[R];
    for (int r = 0; r < R; ++r) acc_t[r] = _mm256_setzero_ps();
    for (; b < nb; ++b) {
      const std::byte* blk = blocks + b * bb;
      uint16_t h;
      std::memcpy(&h, blk, 2);
      const float dw = _cvtsh_ss(h);
      const __m256i w = block_codes<Q4>(blk);
      for (int r = 0; r < R; ++r) {
        const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.xq.q + r * a.k + b * kBlock));
        const __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, xq);
        acc_t[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(dw * a.xq.d[r * nb + b]), acc_t[r]);
        tail[r] += dw * a.xq.dsum[r * nb + b];
      }
    }
    constexpr float offset = Q4 ? 8.0f : 128.0f;
    for (int r = 0; r < R; ++r) {
      const float main = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]));
      const __m128 t4 = _mm_add_ps(_mm256_castps256_ps128(acc_t[r]), _mm256_extractf128_ps(acc_t[r], 1));
      const __m128 t2 = _mm_add_ps(t4, _mm_movehl_ps(t4, t4));
      const float rest = _mm_cvtss_f32(_mm_add_ss(t2, _mm_shuffle_ps(t2, t2, 1)));
      a.y[r * a.n + j] = (main + rest) - offset * (_mm512_reduce_add_ps(corr[r]) + tail[r]);
    }
  }
}

template <bool Q4>
SURF_AVX512VNNI void qi_dispatch(const GemvArgs& a, int64_t n0, int64_t n1) {
  switch (a.m) {
    case 1:
      qi_rows<1, Q4>(a, n0, n1);
      break;
    case 2:
      qi_rows<2, Q4>(a, n0, n1);
      break;
    case 3:
      qi_rows<3, Q4>(a, n0, n1);
      break;
    default:
      qi_rows<4, Q4>(a, n0, n1);
      break;
  }
}

}  // namespace

SURF_AVX512 void gemv_float_avx512(const GemvArgs& a, int64_t n0, int64_t n1) {
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

SURF_AVX512 void gemv_qf_avx512(const GemvArgs& a, int64_t n0, int64_t n1) {
  if (a.dtype == DType::Q4_0) {
    qf_dispatch<true>(a, n0, n1);
  } else {
    qf_dispatch<false>(a, n0, n1);
  }
}

SURF_AVX512VNNI void gemv_qi_avx512vnni(const GemvArgs& a, int64_t n0, int64_t n1) {
  if (a.dtype == DType::Q4_0) {
    qi_dispatch<true>(a, n0, n1);
  } else {
    qi_dispatch<false>(a, n0, n1);
  }
}

}  // namespace surf::kernels

#pragma GCC diagnostic pop
