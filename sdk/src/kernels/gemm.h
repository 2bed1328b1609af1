// Prefill matmuls (more than kGemvMaxRows activation rows): y[m, n] = x[m, k] w[n, k]^T in f32
// arithmetic for every weight dtype. Activations are packed once per call into column panels of
// 32 rows; weights are widened (bf16, f16) or dequantized (Q8_0, Q4_0) panel by panel, 8 rows
// at a time, into a small buffer that stays in L1; an AVX-512 (or AVX2) micro-kernel keeps a
// 32 x 8 tile of y in registers. The pool splits the weight rows.
#pragma once

#include <cstddef>
#include <cstdint>

#include "surf/tensor.h"

namespace surf::kernels {

void gemm(const float* x, int64_t m, int64_t k, const std::byte* w, DType dtype, int64_t n, float* y);

// BF16 weights with activations rounded to bf16: AVX512_BF16 dot products (vdpbf16ps, f32
// accumulation), twice the f32 kernel's arithmetic per instruction. Needs isa().bf16.
void gemm_bf16_dot(const float* x, int64_t m, int64_t k, const std::byte* w, int64_t n, float* y);

}  // namespace surf::kernels
