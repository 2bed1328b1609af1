#include "kernels/gemm.h"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu.h"
#include "kernels/pool.h"
#include "kernels/quant.h"

// GCC 12 warns falsely inside the AVX-512 intrinsic headers at -O3 (uninitialised upper halves).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#define SURF_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define SURF_AVX2 __attribute__((target("avx2,fma,f16c")))
#define SURF_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")))

namespace surf::kernels {

namespace {

// Blocking (BLIS-style). A packed weight panel of kNr rows x kKc columns (k-major, f32) stays in
// L1 and serves every activation row; the activations of one kKc slice (m x kKc) stay in L2 and
// serve every panel. The micro-kernel keeps an MR x NR tile of y in registers.
constexpr int64_t kKc = 256;
constexpr int kNr512 = 32, kMr512 = 12;  // 12 x 32: 24 zmm accumulators
constexpr int kNr256 = 16, kMr256 = 6;   // 6 x 16: 12 ymm accumulators

float* aligned(std::vector<float>& v, size_t floats) {
  if (v.size() < floats + 16) v.resize(floats + 16);
  const auto p = reinterpret_cast<uintptr_t>(v.data());
  return reinterpret_cast<float*>((p + 63) & ~uintptr_t{63});
}

// Rows [j0, j0 + rows) of w, columns [k0, k0 + kc), widened to f32 rows of `ld` floats.
SURF_AVX512 void widen_rows_avx512(const std::byte* w, DType dtype, int64_t k, int64_t j0, int rows, int64_t k0,
                                   int64_t kc, float* out, int64_t ld) {
  const size_t rb = row_bytes(dtype, k);
  for (int r = 0; r < rows; ++r) {
    const std::byte* row = w + (j0 + r) * rb;
    float* dst = out + r * ld;
    if (dtype == DType::F32) {
      std::memcpy(dst, reinterpret_cast<const float*>(row) + k0, static_cast<size_t>(kc) * 4);
    } else if (dtype == DType::BF16 || dtype == DType::F16) {
      const auto* src = reinterpret_cast<const uint16_t*>(row) + k0;
      for (int64_t i = 0; i < kc; i += 16) {
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
        const __m128i* q = reinterpret_cast<const __m128i*>(blk[b].qs);
        _mm512_storeu_ps(dst + b * kBlock,
                         _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q))), d));
        _mm512_storeu_ps(dst + b * kBlock + 16,
                         _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q + 1))), d));
      }
    } else {  // Q4_0
      const auto* blk = reinterpret_cast<const BlockQ4_0*>(row) + k0 / kBlock;
      const __m512i eight = _mm512_set1_epi32(8), low = _mm512_set1_epi32(0x0f);
      for (int64_t b = 0; b < kc / kBlock; ++b) {
        const __m512 d = _mm512_set1_ps(_cvtsh_ss(blk[b].d));
        const __m512i raw = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[b].qs)));
        _mm512_storeu_ps(dst + b * kBlock,
                         _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_and_si512(raw, low), eight)), d));
        _mm512_storeu_ps(dst + b * kBlock + 16,
                         _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(raw, 4), eight)), d));
      }
    }
  }
}

// 16 x 16 f32 transpose: rows r[0..15] (each 16 floats at src + i * lds) -> dst + c * ldd.
SURF_AVX512 inline void transpose16(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * lds);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
  }
  // r[4q + s] holds, per 128-bit lane L, elements (row 4q + 0..3, column 4L + s).
  for (int q = 0; q < 4; q += 2) {
    for (int s = 0; s < 4; ++s) {
      t[4 * q + s] = _mm512_shuffle_f32x4(r[4 * q + s], r[4 * (q + 1) + s], 0x88);        // lanes 0, 2
      t[4 * (q + 1) + s] = _mm512_shuffle_f32x4(r[4 * q + s], r[4 * (q + 1) + s], 0xdd);  // lanes 1, 3
    }
  }
  // t[4q + s] (q in {0, 2}): [rows 4q..4q+3 | rows 4q+4..] of columns (lane 0: s, lane 1: 8 + s, ...)
  for (int s = 0; s < 4; ++s) {
    const __m512 a = _mm512_shuffle_f32x4(t[s], t[8 + s], 0x88), b = _mm512_shuffle_f32x4(t[s], t[8 + s], 0xdd);
    const __m512 c = _mm512_shuffle_f32x4(t[4 + s], t[12 + s], 0x88),
                 d = _mm512_shuffle_f32x4(t[4 + s], t[12 + s], 0xdd);
    _mm512_storeu_ps(dst + (s)*ldd, a);
    _mm512_storeu_ps(dst + (8 + s) * ldd, b);
    _mm512_storeu_ps(dst + (4 + s) * ldd, c);
    _mm512_storeu_ps(dst + (12 + s) * ldd, d);
  }
}

// Packs weight rows [j0, j0 + rows) (rows <= 32), columns [k0, k0 + kc), as panel[k][32] f32.
SURF_AVX512 void pack_panel_avx512(const std::byte* w, DType dtype, int64_t k, int64_t j0, int rows, int64_t k0,
                                   int64_t kc, float* rows_buf, float* panel) {
  const int64_t kc16 = (kc + 15) / 16 * 16;
  widen_rows_avx512(w, dtype, k, j0, rows, k0, kc, rows_buf, kc16);
  for (int r = 0; r < kNr512; ++r) {
    float* row = rows_buf + r * kc16;
    if (r >= rows) {
      std::memset(row, 0, static_cast<size_t>(kc16) * 4);
    } else if (kc16 > kc) {
      std::memset(row + kc, 0, static_cast<size_t>(kc16 - kc) * 4);
    }
  }
  for (int64_t c = 0; c < kc16; c += 16) {
    transpose16(rows_buf + c, kc16, panel + c * kNr512, kNr512);
    transpose16(rows_buf + 16 * kc16 + c, kc16, panel + c * kNr512 + 16, kNr512);
  }
}

// y[MR rows, 32 columns from y] (+)= a[kc][kMrPack] (packed activations, MR <= kMrPack used) *
// panel[kc][32]; `cols` valid columns.
// Cache lines to bring into L2 while a micro-kernel runs: the next panel's weights (which sit in
// short runs, one per row: too short for the hardware prefetcher to catch).
struct Prefetch {
  const std::byte* base = nullptr;
  size_t row_stride = 0, bytes = 0;  // per row
  int rows = 0;
  int64_t lines() const { return base ? rows * static_cast<int64_t>((bytes + 63) / 64) : 0; }
  const char* line(int64_t i) const {
    return reinterpret_cast<const char*>(base) + (i % rows) * row_stride + (i / rows) * 64;
  }
};

template <int MR>
SURF_AVX512 void micro_avx512(const float* a, const float* panel, int64_t kc, float* y, int64_t ldy, int cols,
                              bool accumulate, const Prefetch& pf) {
  __m512 acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  const int64_t lines = pf.lines();
  for (int64_t c = 0; c < kc; ++c) {
    if (2 * c < lines) {  // two lines per step: f32 panels have twice a bf16 one's
      _mm_prefetch(pf.line(2 * c), _MM_HINT_T1);
      if (2 * c + 1 < lines) _mm_prefetch(pf.line(2 * c + 1), _MM_HINT_T1);
    }
    const __m512 b0 = _mm512_load_ps(panel + c * kNr512), b1 = _mm512_load_ps(panel + c * kNr512 + 16);
    for (int i = 0; i < MR; ++i) {
      const __m512 av = _mm512_set1_ps(a[c * kMr512 + i]);
      acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
    }
  }
  const __mmask16 m0 = cols >= 16 ? __mmask16(0xffff) : __mmask16((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32 ? __mmask16(0xffff) : cols <= 16 ? __mmask16(0) : __mmask16((1u << (cols - 16)) - 1);
  for (int i = 0; i < MR; ++i) {
    float* out = y + i * ldy;
    if (accumulate) {
      acc[i][0] = _mm512_add_ps(acc[i][0], _mm512_maskz_loadu_ps(m0, out));
      acc[i][1] = _mm512_add_ps(acc[i][1], _mm512_maskz_loadu_ps(m1, out + 16));
    }
    _mm512_mask_storeu_ps(out, m0, acc[i][0]);
    _mm512_mask_storeu_ps(out + 16, m1, acc[i][1]);
  }
}

// Every activation row: packed tiles of kMr512 rows (the last one may be shorter).
SURF_AVX512 void micro_avx512_rows(int64_t rows, const float* ap, const float* panel, int64_t kc, float* y, int64_t ldy,
                                   int cols, bool accumulate, const Prefetch& next) {
  const Prefetch none;
  for (int64_t i = 0; i < rows; i += kMr512) {
    const float* a = ap + (i / kMr512) * kc * kMr512;
    float* out = y + i * ldy;
    // The first tile asks for the next panel while it computes.
    const Prefetch& use = i == 0 ? next : none;
    switch (std::min<int64_t>(kMr512, rows - i)) {
#define SURF_TILE(n)                                                \
  case n:                                                           \
    micro_avx512<n>(a, panel, kc, out, ldy, cols, accumulate, use); \
    break;
      SURF_TILE(1)
      SURF_TILE(2) SURF_TILE(3) SURF_TILE(4) SURF_TILE(5) SURF_TILE(6) SURF_TILE(7) SURF_TILE(8) SURF_TILE(9)
          SURF_TILE(10) SURF_TILE(11) SURF_TILE(12) SURF_TILE(13) SURF_TILE(14)
#undef SURF_TILE
              default : break;
    }
  }
}

// AVX2: panel[k][16], 6 x 16 tiles.
void pack_panel_generic(const std::byte* w, DType dtype, int64_t k, int64_t j0, int rows, int64_t k0, int64_t kc,
                        float* rows_buf, float* panel, int nr) {
  const size_t rb = row_bytes(dtype, k);
  for (int r = 0; r < rows; ++r) {
    convert_to_f32(dtype, w + (j0 + r) * rb + row_bytes(dtype, k0), rows_buf + r * kc, static_cast<size_t>(kc));
  }
  for (int64_t c = 0; c < kc; ++c) {
    for (int r = 0; r < nr; ++r) panel[c * nr + r] = r < rows ? rows_buf[r * kc + c] : 0.0f;
  }
}

template <int MR>
SURF_AVX2 void micro_avx2(const float* a, const float* panel, int64_t kc, float* y, int64_t ldy, int cols,
                          bool accumulate) {
  __m256 acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int64_t c = 0; c < kc; ++c) {
    const __m256 b0 = _mm256_load_ps(panel + c * kNr256), b1 = _mm256_load_ps(panel + c * kNr256 + 8);
    for (int i = 0; i < MR; ++i) {
      const __m256 av = _mm256_broadcast_ss(a + c * kMr256 + i);
      acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    float* out = y + i * ldy;
    if (cols == kNr256) {
      if (accumulate) {
        acc[i][0] = _mm256_add_ps(acc[i][0], _mm256_loadu_ps(out));
        acc[i][1] = _mm256_add_ps(acc[i][1], _mm256_loadu_ps(out + 8));
      }
      _mm256_storeu_ps(out, acc[i][0]);
      _mm256_storeu_ps(out + 8, acc[i][1]);
    } else {
      alignas(32) float tmp[kNr256];
      _mm256_store_ps(tmp, acc[i][0]);
      _mm256_store_ps(tmp + 8, acc[i][1]);
      for (int c = 0; c < cols; ++c) out[c] = accumulate ? out[c] + tmp[c] : tmp[c];
    }
  }
}

SURF_AVX2 void micro_avx2_rows(int64_t rows, const float* ap, const float* panel, int64_t kc, float* y, int64_t ldy,
                               int cols, bool accumulate) {
  for (int64_t i = 0; i < rows; i += kMr256) {
    const float* a = ap + (i / kMr256) * kc * kMr256;
    float* out = y + i * ldy;
    switch (std::min<int64_t>(kMr256, rows - i)) {
      case 1:
        micro_avx2<1>(a, panel, kc, out, ldy, cols, accumulate);
        break;
      case 2:
        micro_avx2<2>(a, panel, kc, out, ldy, cols, accumulate);
        break;
      case 3:
        micro_avx2<3>(a, panel, kc, out, ldy, cols, accumulate);
        break;
      case 4:
        micro_avx2<4>(a, panel, kc, out, ldy, cols, accumulate);
        break;
      case 5:
        micro_avx2<5>(a, panel, kc, out, ldy, cols, accumulate);
        break;
      default:
        micro_avx2<6>(a, panel, kc, out, ldy, cols, accumulate);
        break;
    }
  }
}

// Activations x[m, k] -> for each block of kKc columns, tiles of `mr` rows: [tile][kc][mr]
// (rows past m are zero). Block b starts at b * m_padded * kKc.
void pack_activations(const float* x, int64_t m, int64_t k, int mr, float* out, int64_t b, int64_t t) {
  const int64_t tiles = (m + mr - 1) / mr;
  const int64_t k0 = b * kKc, kc = std::min(kKc, k - k0);
  float* dst = out + b * tiles * mr * kKc + t * kc * mr;
  const int64_t rows = std::min<int64_t>(mr, m - t * mr);
  for (int64_t c = 0; c < kc; ++c) {
    for (int64_t i = 0; i < rows; ++i) dst[c * mr + i] = x[(t * mr + i) * k + k0 + c];
    for (int64_t i = rows; i < mr; ++i) dst[c * mr + i] = 0.0f;
  }
}

// The portable path: panels widened to f32, then OpenBLAS sgemm on each (single-threaded inside
// the pool's tasks).
void gemm_blas(const float* x, int64_t m, int64_t k, const std::byte* w, DType dtype, int64_t n, float* y) {
  const int64_t rows = std::max<int64_t>(8, std::min<int64_t>(256, (1 << 18) / std::max<int64_t>(k, 1)));
  Pool::get().run_ranges(n, rows, 8, [&](int64_t n0, int64_t n1) {
    thread_local std::vector<float> buf;
    for (int64_t j0 = n0; j0 < n1; j0 += rows) {
      const int64_t r = std::min(rows, n1 - j0);
      const float* panel;
      if (dtype == DType::F32) {
        panel = reinterpret_cast<const float*>(w) + j0 * k;
      } else {
        float* p = aligned(buf, static_cast<size_t>(r * k));
        const size_t rb = row_bytes(dtype, k);
        for (int64_t i = 0; i < r; ++i) convert_to_f32(dtype, w + (j0 + i) * rb, p + i * k, static_cast<size_t>(k));
        panel = p;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(r),
                  static_cast<int>(k), 1.0f, x, static_cast<int>(k), panel, static_cast<int>(k), 0.0f, y + j0,
                  static_cast<int>(n));
    }
  });
}

// ---- bf16 dot products (ActivationRounding::all). A 32-bit lane holds a pair of bf16 values at
// columns (2c, 2c + 1); vdpbf16ps multiplies pairs and adds both products to an f32 lane. The
// weight panel is [pair][32 rows] of such lanes: a 32-bit transpose of the rows' pairs.
SURF_AVX512 void pack_panel_bf16(const std::byte* w, int64_t k, int64_t j0, int rows, int64_t k0, int64_t kc,
                                 uint32_t* rows_buf, uint32_t* panel) {
  const int64_t pairs = (kc + 1) / 2, pairs16 = (pairs + 15) / 16 * 16;
  const size_t rb = row_bytes(DType::BF16, k);
  for (int r = 0; r < kNr512; ++r) {
    uint32_t* dst = rows_buf + r * pairs16;
    if (r < rows) {
      const auto* src = reinterpret_cast<const uint16_t*>(w + (j0 + r) * rb) + k0;
      std::memcpy(dst, src, static_cast<size_t>(kc) * 2);
      if (kc % 2) reinterpret_cast<uint16_t*>(dst)[kc] = 0;
      std::memset(dst + pairs, 0, static_cast<size_t>(pairs16 - pairs) * 4);
    } else {
      std::memset(dst, 0, static_cast<size_t>(pairs16) * 4);
    }
  }
  for (int64_t c = 0; c < pairs16; c += 16) {
    transpose16(reinterpret_cast<const float*>(rows_buf) + c, pairs16, reinterpret_cast<float*>(panel) + c * kNr512,
                kNr512);
    transpose16(reinterpret_cast<const float*>(rows_buf) + 16 * pairs16 + c, pairs16,
                reinterpret_cast<float*>(panel) + c * kNr512 + 16, kNr512);
  }
}

// Activations rounded to bf16 (nearest even) as pairs: [tile][pair][kMr512] 32-bit lanes.
SURF_AVX512BF16 void pack_activations_bf16(const float* x, int64_t m, int64_t k, uint32_t* out, int64_t b, int64_t t) {
  const int64_t tiles = (m + kMr512 - 1) / kMr512;
  const int64_t k0 = b * kKc, kc = std::min(kKc, k - k0), pairs = (kc + 1) / 2;
  uint32_t* dst = out + b * tiles * kMr512 * (kKc / 2) + t * pairs * kMr512;
  const int64_t rows = std::min<int64_t>(kMr512, m - t * kMr512);
  for (int64_t p = 0; p < pairs; ++p) {
    for (int64_t i = 0; i < kMr512; ++i) {
      float lo = 0.0f, hi = 0.0f;
      if (i < rows) {
        const float* row = x + (t * kMr512 + i) * k + k0;
        lo = row[2 * p];
        hi = 2 * p + 1 < kc ? row[2 * p + 1] : 0.0f;
      }
      const __m128bh v = _mm_cvtneps_pbh(_mm_setr_ps(lo, hi, 0.0f, 0.0f));
      uint32_t bits;
      std::memcpy(&bits, &v, 4);
      dst[p * kMr512 + i] = bits;
    }
  }
}

template <int MR>
SURF_AVX512BF16 void micro_bf16(const uint32_t* a, const uint32_t* panel, int64_t pairs, float* y, int64_t ldy,
                                int cols, bool accumulate) {
  __m512 acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(panel + p * kNr512);
    const __m512bh b1 = (__m512bh)_mm512_load_si512(panel + p * kNr512 + 16);
    for (int i = 0; i < MR; ++i) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[p * kMr512 + i]));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], av, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], av, b1);
    }
  }
  const __mmask16 m0 = cols >= 16 ? __mmask16(0xffff) : __mmask16((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32 ? __mmask16(0xffff) : cols <= 16 ? __mmask16(0) : __mmask16((1u << (cols - 16)) - 1);
  for (int i = 0; i < MR; ++i) {
    float* out = y + i * ldy;
    if (accumulate) {
      acc[i][0] = _mm512_add_ps(acc[i][0], _mm512_maskz_loadu_ps(m0, out));
      acc[i][1] = _mm512_add_ps(acc[i][1], _mm512_maskz_loadu_ps(m1, out + 16));
    }
    _mm512_mask_storeu_ps(out, m0, acc[i][0]);
    _mm512_mask_storeu_ps(out + 16, m1, acc[i][1]);
  }
}

SURF_AVX512BF16 void micro_bf16_rows(int64_t rows, const uint32_t* ap, const uint32_t* panel, int64_t pairs, float* y,
                                     int64_t ldy, int cols, bool accumulate) {
  for (int64_t i = 0; i < rows; i += kMr512) {
    const uint32_t* a = ap + (i / kMr512) * pairs * kMr512;
    float* out = y + i * ldy;
    switch (std::min<int64_t>(kMr512, rows - i)) {
#define SURF_TILE(n)                                            \
  case n:                                                       \
    micro_bf16<n>(a, panel, pairs, out, ldy, cols, accumulate); \
    break;
      SURF_TILE(1)
      SURF_TILE(2) SURF_TILE(3) SURF_TILE(4) SURF_TILE(5) SURF_TILE(6) SURF_TILE(7) SURF_TILE(8) SURF_TILE(9)
          SURF_TILE(10) SURF_TILE(11) SURF_TILE(12)
#undef SURF_TILE
              default : break;
    }
  }
}

}  // namespace

void gemm_bf16_dot(const float* x, int64_t m, int64_t k, const std::byte* w, int64_t n, float* y) {
  Pool& pool = Pool::get();
  const int64_t tiles = (m + kMr512 - 1) / kMr512, blocks = (k + kKc - 1) / kKc;
  thread_local std::vector<uint32_t> a_buf;
  if (a_buf.size() < static_cast<size_t>(blocks * tiles * kMr512 * (kKc / 2) + 16)) {
    a_buf.resize(static_cast<size_t>(blocks * tiles * kMr512 * (kKc / 2) + 16));
  }
  uint32_t* ap = reinterpret_cast<uint32_t*>((reinterpret_cast<uintptr_t>(a_buf.data()) + 63) & ~uintptr_t{63});
  pool.run(blocks * tiles, [&](int64_t task) { pack_activations_bf16(x, m, k, ap, task / tiles, task % tiles); });
  pool.run_ranges(n, 4 * kNr512, kNr512, [&](int64_t n0, int64_t n1) {
    thread_local std::vector<uint32_t> rows_buf, panel_buf;
    auto aligned32 = [](std::vector<uint32_t>& v, size_t words) {
      if (v.size() < words + 16) v.resize(words + 16);
      return reinterpret_cast<uint32_t*>((reinterpret_cast<uintptr_t>(v.data()) + 63) & ~uintptr_t{63});
    };
    uint32_t* rows = aligned32(rows_buf, static_cast<size_t>(kNr512 * (kKc / 2 + 16)));
    uint32_t* panel = aligned32(panel_buf, static_cast<size_t>(kNr512 * (kKc / 2 + 16)));
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t k0 = b * kKc, kc = std::min(kKc, k - k0), pairs = (kc + 1) / 2;
      const uint32_t* a = ap + b * tiles * kMr512 * (kKc / 2);
      for (int64_t j0 = n0; j0 < n1; j0 += kNr512) {
        const int cols = static_cast<int>(std::min<int64_t>(kNr512, n1 - j0));
        pack_panel_bf16(w, k, j0, cols, k0, kc, rows, panel);
        micro_bf16_rows(m, a, panel, pairs, y + j0, n, cols, b > 0);
      }
    }
  });
}

void gemm(const float* x, int64_t m, int64_t k, const std::byte* w, DType dtype, int64_t n, float* y) {
  const Isa& cpu = isa();
  if (cpu.level == IsaLevel::scalar) {
    gemm_blas(x, m, k, w, dtype, n, y);
    return;
  }
  Pool& pool = Pool::get();
  const bool avx512 = cpu.level == IsaLevel::avx512;
  const int nr = avx512 ? kNr512 : kNr256, mr = avx512 ? kMr512 : kMr256;
  // Activations packed once per call, shared by every task: contiguous broadcasts, and no cache-set
  // conflicts between rows whose stride is a multiple of 4 KB.
  const int64_t tiles = (m + mr - 1) / mr, blocks = (k + kKc - 1) / kKc;
  thread_local std::vector<float> a_buf;
  float* ap = aligned(a_buf, static_cast<size_t>(blocks * tiles * mr * kKc));
  pool.run(blocks * tiles, [&](int64_t task) { pack_activations(x, m, k, mr, ap, task / tiles, task % tiles); });
  // Tasks: ranges of weight rows, whole panels, a few per thread (dynamic: a busy core does less).
  pool.run_ranges(n, 4 * nr, nr, [&](int64_t n0, int64_t n1) {
    thread_local std::vector<float> rows_buf, panel_buf;
    float* rows = aligned(rows_buf, static_cast<size_t>(kNr512 * (kKc + 16)));
    float* panel = aligned(panel_buf, static_cast<size_t>(kNr512 * (kKc + 16)));
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t k0 = b * kKc, kc = std::min(kKc, k - k0);
      const float* a = ap + b * tiles * mr * kKc;
      for (int64_t j0 = n0; j0 < n1; j0 += nr) {
        const int cols = static_cast<int>(std::min<int64_t>(nr, n1 - j0));
        if (avx512) {
          pack_panel_avx512(w, dtype, k, j0, cols, k0, kc, rows, panel);
          Prefetch next;
          if (j0 + nr < n1) {
            const int64_t skew = k0 % dtype_block_elements(dtype);
            next.base = w + (j0 + nr) * row_bytes(dtype, k) + row_bytes(dtype, k0 - skew);
            next.row_stride = row_bytes(dtype, k);
            next.bytes = row_bytes(dtype, kc + skew);
            next.rows = static_cast<int>(std::min<int64_t>(nr, n1 - j0 - nr));
          }
          micro_avx512_rows(m, a, panel, kc, y + j0, n, cols, b > 0, next);
        } else {
          pack_panel_generic(w, dtype, k, j0, cols, k0, kc, rows, panel, kNr256);
          micro_avx2_rows(m, a, panel, kc, y + j0, n, cols, b > 0);
        }
      }
    }
  });
}

}  // namespace surf::kernels

#pragma GCC diagnostic pop
