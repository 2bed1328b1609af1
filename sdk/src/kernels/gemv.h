// Few-row matmul kernels (decoding: m <= kGemvMaxRows rows of activations), one set per ISA level.
// Each computes outputs [n0, n1) of y[m, n] = x[m, k] w[n, k]^T; the pool splits n. An output's
// arithmetic does not depend on the split.
#pragma once

#include <cstddef>
#include <cstdint>

#include "surf/tensor.h"

namespace surf::kernels {

inline constexpr int64_t kGemvMaxRows = 4;

// Activations rounded to Q8_0-like blocks for the integer kernels: per row, k int8 codes and per
// block of 32 the scale d (f32) and d * sum(codes).
struct QuantizedRows {
  const int8_t* q = nullptr;    // [m, k]
  const float* d = nullptr;     // [m, k/32]
  const float* dsum = nullptr;  // [m, k/32]
};

struct GemvArgs {
  const std::byte* w = nullptr;  // [n, k] in `dtype` (rows of row_bytes(dtype, k) bytes)
  DType dtype = DType::F32;
  int64_t n = 0, k = 0, m = 0;
  const float* x = nullptr;  // [m, k]
  QuantizedRows xq;          // integer kernels only
  float* y = nullptr;        // [m, n]
};

using GemvKernel = void (*)(const GemvArgs& a, int64_t n0, int64_t n1);

// F32 / F16 / BF16 weights, f32 activations.
void gemv_float_scalar(const GemvArgs& a, int64_t n0, int64_t n1);
void gemv_float_avx2(const GemvArgs& a, int64_t n0, int64_t n1);
void gemv_float_avx512(const GemvArgs& a, int64_t n0, int64_t n1);
// Q8_0 / Q4_0 weights, f32 activations (exact: f32 arithmetic on the dequantized weights).
void gemv_qf_scalar(const GemvArgs& a, int64_t n0, int64_t n1);
void gemv_qf_avx2(const GemvArgs& a, int64_t n0, int64_t n1);
void gemv_qf_avx512(const GemvArgs& a, int64_t n0, int64_t n1);
// Q8_0 / Q4_0 weights, activations rounded to int8 blocks (a.xq): integer dot products.
void gemv_qi_scalar(const GemvArgs& a, int64_t n0, int64_t n1);
void gemv_qi_avx2(const GemvArgs& a, int64_t n0, int64_t n1);        // maddubs
void gemv_qi_avxvnni(const GemvArgs& a, int64_t n0, int64_t n1);     // AVX-VNNI (VEX)
void gemv_qi_avx512vnni(const GemvArgs& a, int64_t n0, int64_t n1);  // AVX512_VNNI

// Rounds rows of x [m, k] (k % 32 == 0) to int8 blocks: d = max|x| / 127, q = round-to-even(x / d).
void quantize_rows_scalar(const float* x, int64_t m, int64_t k, int8_t* q, float* d, float* dsum);
void quantize_rows_avx2(const float* x, int64_t m, int64_t k, int8_t* q, float* d, float* dsum);

// Conv1D layout: outputs [c0, c1) of y[m, n] = x[m, k] w[k, n] for F32 / F16 / BF16 w.
void gemv_kn_scalar(DType dtype, const void* w, const float* x, float* y, int64_t m, int64_t n, int64_t k, int64_t c0,
                    int64_t c1);
void gemv_kn_avx2(DType dtype, const void* w, const float* x, float* y, int64_t m, int64_t n, int64_t k, int64_t c0,
                  int64_t c1);

}  // namespace surf::kernels
