// Fused kernels for few-row matmuls with 16-bit weights: weights are widened in registers and
// multiplied at once, so decoding reads 2 bytes per weight instead of converting to f32 first.
#pragma once

#include <cstdint>

#include "surf/tensor.h"

namespace surf::ops::detail {

inline constexpr int64_t kFusedMaxRows = 4;

// True when the CPU has AVX2 + FMA + F16C (the kernels below need them).
bool fused16_available();

// y[m, n] = sum_k x[m, k] * w[n, k] for m < rows (<= kFusedMaxRows); w is [n_total, k] 16-bit.
void gemv16_nk(DType dtype, const void* w, const float* x, float* y, int64_t rows, int64_t n, int64_t k);
// y[m, n] = sum_k x[m, k] * w[k, n]; w is [k, n] 16-bit (Conv1D layout).
void gemv16_kn(DType dtype, const void* w, const float* x, float* y, int64_t rows, int64_t n, int64_t k);

}  // namespace surf::ops::detail
