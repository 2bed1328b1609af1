#include "kernels/gemm.h"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu.h"
#include "kernels/pool.h"
#include "kernels/quant.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#define SURF_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define SURF_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace surf::kernels {

namespace {

constexpr int64_t kTile = 32;  // activation rows per packed panel (two 16-lane vectors)
constexpr int kPanel = 8;      // weight rows per packed panel

// A 64-byte aligned scratch buffer per thread, reused across calls.
float* scratch(std::vector<float>& v, size_t floats) {
  if (v.size() < floats + 16) v.resize(floats + 16);
  auto p = reinterpret_cast<uintptr_t>(v.data());
  return reinterpret_cast<float*>((p + 63) & ~uintptr_t{63});
}

// x[m, k] -> panels [tile][k][32] (rows past m are zero).
void pack_a(const float* x, int64_t m, int64_t k, float* ap, int64_t t, int64_t k0, int64_t k1) {
  float* out = ap + t * k * kTile;
  const int64_t rows = std::min<int64_t>(kTile, m - t * kTile);
  for (int64_t c = k0; c < k1; ++c) {
    float* dst = out + c * kTile;
    for (int64_t i = 0; i < rows; ++i) dst[i] = x[(t * kTile + i) * k + c];
    for (int64_t i = rows; i < kTile; ++i) dst[i] = 0.0f;
  }
}

// Rows [j0, j0 + rows) of w, columns [k0, k0 + kc), widened to f32 rows of `kc` in `out`.
SURF_AVX512 void widen_rows_avx512(const std::byte* w, DType dtype, int64_t k, int64_t j0, int rows, int64_t k0,
                                   int64_t kc, float* out) {
  const size_t rb = row_bytes(dtype, k);
  for (int r = 0; r < rows; ++r) {
    const std::byte* row = w + (j0 + r) * rb;
    float* dst = out + r * kc;
    if (dtype == DType::BF16 || dtype == DType::F16) {
      const auto* src = reinterpret_cast<const uint16_t*>(row) + k0;
      int64_t i = 0;
      for (; i < kc; i += 16) {
        const __mmask16 m = kc - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (kc - i)) - 1);
        const __m256i h = _mm256_maskz_loadu_epi16(m, src + i);
        const __m512 v = dtype == DType::F16 ? _mm512_cvtph_ps(h)
                                             : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
        _mm512_mask_storeu_ps(dst + i, m, v);
      }
    } else if (dtype == DType::Q8_0) {
      const auto* blk = reinterpret_cast<const BlockQ8_0*>(row) + k0 / kBlock;
      for (int64_t b = 0; b < kc / kBlock; ++b) {
        const __m512 d = _mm512_set1_ps(_cvtsh_ss(blk[b].d));
        const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[b].qs))));
        const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[b].qs + 16))));
        _mm512_storeu_ps(dst + b * kBlock, _mm512_mul_ps(lo, d));
        _mm512_storeu_ps(dst + b * kBlock + 16, _mm512_mul_ps(hi, d));
      }
    } else {  // Q4_0
      const auto* blk = reinterpret_cast<const BlockQ4_0*>(row) + k0 / kBlock;
      const __m512i eight = _mm512_set1_epi32(8), low = _mm512_set1_epi32(0x0f);
      for (int64_t b = 0; b < kc / kBlock; ++b) {
        const __m512 d = _mm512_set1_ps(_cvtsh_ss(blk[b].d));
        const __m512i raw = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[b].qs)));
        const __m512 lo = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_and_si512(raw, low), eight));
        const __m512 hi = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(raw, 4), eight));
        _mm512_storeu_ps(dst + b * kBlock, _mm512_mul_ps(lo, d));
        _mm512_storeu_ps(dst + b * kBlock + 16, _mm512_mul_ps(hi, d));
      }
    }
  }
}

void widen_rows_generic(const std::byte* w, DType dtype, int64_t k, int64_t j0, int rows, int64_t k0, int64_t kc,
                        float* out) {
  const size_t rb = row_bytes(dtype, k);
  for (int r = 0; r < rows; ++r) {
    convert_to_f32(dtype, w + (j0 + r) * rb + row_bytes(dtype, k0), out + r * kc, static_cast<size_t>(kc));
  }
}

// y tile [32 activation rows, 8 weight rows] += ap[kc][32] x b[8][kc] (b given as row pointers).
SURF_AVX512 void micro_avx512(const float* ap, const float* const* b, int64_t kc, float* tile) {
  __m512 acc[2][kPanel];
  for (int r = 0; r < kPanel; ++r) acc[0][r] = acc[1][r] = _mm512_setzero_ps();
  const float *b0 = b[0], *b1 = b[1], *b2 = b[2], *b3 = b[3], *b4 = b[4], *b5 = b[5], *b6 = b[6], *b7 = b[7];
  for (int64_t c = 0; c < kc; ++c) {
    const __m512 a0 = _mm512_load_ps(ap + c * kTile), a1 = _mm512_load_ps(ap + c * kTile + 16);
#define SURF_STEP(r, p)                                      \
  {                                                          \
    const __m512 bv = _mm512_set1_ps(p[c]);                  \
    acc[0][r] = _mm512_fmadd_ps(a0, bv, acc[0][r]);          \
    acc[1][r] = _mm512_fmadd_ps(a1, bv, acc[1][r]);          \
  }
    SURF_STEP(0, b0) SURF_STEP(1, b1) SURF_STEP(2, b2) SURF_STEP(3, b3)
    SURF_STEP(4, b4) SURF_STEP(5, b5) SURF_STEP(6, b6) SURF_STEP(7, b7)
#undef SURF_STEP
  }
  for (int r = 0; r < kPanel; ++r) {
    _mm512_store_ps(tile + r * kTile, acc[0][r]);
    _mm512_store_ps(tile + r * kTile + 16, acc[1][r]);
  }
}

// AVX2: the 32 x 8 tile as 32 x 3 + 32 x 3 + 32 x 2.
template <int NR>
SURF_AVX2 void micro_avx2_part(const float* ap, const float* const* b, int64_t kc, float* tile) {
  __m256 acc[4][NR];
  for (int r = 0; r < NR; ++r) acc[0][r] = acc[1][r] = acc[2][r] = acc[3][r] = _mm256_setzero_ps();
  for (int64_t c = 0; c < kc; ++c) {
    const float* a = ap + c * kTile;
    const __m256 a0 = _mm256_load_ps(a), a1 = _mm256_load_ps(a + 8), a2 = _mm256_load_ps(a + 16),
                 a3 = _mm256_load_ps(a + 24);
    for (int r = 0; r < NR; ++r) {
      const __m256 bv = _mm256_broadcast_ss(b[r] + c);
      acc[0][r] = _mm256_fmadd_ps(a0, bv, acc[0][r]);
      acc[1][r] = _mm256_fmadd_ps(a1, bv, acc[1][r]);
      acc[2][r] = _mm256_fmadd_ps(a2, bv, acc[2][r]);
      acc[3][r] = _mm256_fmadd_ps(a3, bv, acc[3][r]);
    }
  }
  for (int r = 0; r < NR; ++r) {
    for (int v = 0; v < 4; ++v) _mm256_store_ps(tile + r * kTile + 8 * v, acc[v][r]);
  }
}

SURF_AVX2 void micro_avx2(const float* ap, const float* const* b, int64_t kc, float* tile) {
  micro_avx2_part<3>(ap, b, kc, tile);
  micro_avx2_part<3>(ap, b + 3, kc, tile + 3 * kTile);
  micro_avx2_part<2>(ap, b + 6, kc, tile + 6 * kTile);
}

// Adds (or, for the first block of the reduction, stores) a finished tile into y.
void scatter_tile(const float* tile, float* y, int64_t n, int64_t t, int64_t m, int64_t j0, int rows, bool first) {
  const int64_t valid = std::min<int64_t>(kTile, m - t * kTile);
  for (int64_t i = 0; i < valid; ++i) {
    float* out = y + (t * kTile + i) * n + j0;
    if (first) {
      for (int r = 0; r < rows; ++r) out[r] = tile[r * kTile + i];
    } else {
      for (int r = 0; r < rows; ++r) out[r] += tile[r * kTile + i];
    }
  }
}

int64_t block_of_k(int64_t k) {
  constexpr int64_t target = 1024;
  const int64_t blocks = (k + target - 1) / target;
  return (k + blocks - 1) / blocks + kBlock - 1 - ((k + blocks - 1) / blocks + kBlock - 1) % kBlock;
}

// The portable path: panels widened to f32, then OpenBLAS sgemm on each.
void gemm_blas(const float* x, int64_t m, int64_t k, const std::byte* w, DType dtype, int64_t n, float* y) {
  Pool& pool = Pool::get();
  const int64_t rows = std::max<int64_t>(8, std::min<int64_t>(256, (1 << 18) / std::max<int64_t>(k, 1)));
  pool.run_ranges(n, rows, 8, [&](int64_t n0, int64_t n1) {
    thread_local std::vector<float> buf;
    for (int64_t j0 = n0; j0 < n1; j0 += rows) {
      const int64_t r = std::min(rows, n1 - j0);
      const float* panel;
      if (dtype == DType::F32) {
        panel = reinterpret_cast<const float*>(w) + j0 * k;
      } else {
        float* p = scratch(buf, static_cast<size_t>(r * k));
        widen_rows_generic(w, dtype, k, j0, static_cast<int>(r), 0, k, p);
        panel = p;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(r),
                  static_cast<int>(k), 1.0f, x, static_cast<int>(k), panel, static_cast<int>(k), 0.0f, y + j0,
                  static_cast<int>(n));
    }
  });
}

}  // namespace

void gemm(const float* x, int64_t m, int64_t k, const std::byte* w, DType dtype, int64_t n, float* y) {
  const Isa& cpu = isa();
  if (cpu.level == IsaLevel::scalar) {
    gemm_blas(x, m, k, w, dtype, n, y);
    return;
  }
  Pool& pool = Pool::get();
  const bool avx512 = cpu.level == IsaLevel::avx512;
  const int64_t tiles = (m + kTile - 1) / kTile;
  thread_local std::vector<float> a_buf;
  float* ap = scratch(a_buf, static_cast<size_t>(tiles * k * kTile));
  const int64_t kchunk = 256;
  const int64_t kchunks = (k + kchunk - 1) / kchunk;
  pool.run(tiles * kchunks, [&](int64_t task) {
    const int64_t t = task / kchunks, c = task % kchunks;
    pack_a(x, m, k, ap, t, c * kchunk, std::min(k, (c + 1) * kchunk));
  });
  const int64_t kc_block = std::min(k, block_of_k(k));
  const float* zeros = nullptr;
  thread_local std::vector<float> zero_buf;
  if (n % kPanel != 0) {
    zero_buf.assign(static_cast<size_t>(kc_block), 0.0f);
    zeros = zero_buf.data();
  }
  const size_t rb = row_bytes(dtype, k);
  // Tasks: ranges of weight rows, 8-aligned, at least 64 rows each.
  pool.run_ranges(n, 64, kPanel, [&](int64_t n0, int64_t n1) {
    thread_local std::vector<float> panel_buf, tile_buf;
    float* panel = scratch(panel_buf, static_cast<size_t>(kPanel * kc_block));
    float* tile = scratch(tile_buf, static_cast<size_t>(kPanel * kTile));
    for (int64_t k0 = 0; k0 < k; k0 += kc_block) {
      const int64_t kc = std::min(kc_block, k - k0);
      for (int64_t j0 = n0; j0 < n1; j0 += kPanel) {
        const int rows = static_cast<int>(std::min<int64_t>(kPanel, n1 - j0));
        const float* b[kPanel];
        if (dtype == DType::F32) {
          for (int r = 0; r < kPanel; ++r) {
            b[r] = r < rows ? reinterpret_cast<const float*>(w + (j0 + r) * rb) + k0 : zeros;
          }
        } else {
          if (avx512) {
            widen_rows_avx512(w, dtype, k, j0, rows, k0, kc, panel);
          } else {
            widen_rows_generic(w, dtype, k, j0, rows, k0, kc, panel);
          }
          for (int r = 0; r < kPanel; ++r) b[r] = r < rows ? panel + r * kc : zeros;
        }
        for (int64_t t = 0; t < tiles; ++t) {
          const float* a = ap + (t * k + k0) * kTile;
          if (avx512) {
            micro_avx512(a, b, kc, tile);
          } else {
            micro_avx2(a, b, kc, tile);
          }
          scatter_tile(tile, y, n, t, m, j0, rows, k0 == 0);
        }
      }
    }
  });
}

}  // namespace surf::kernels

#pragma GCC diagnostic pop
