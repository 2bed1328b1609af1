// The matmuls behind ops::linear / ops::linear_in_out: one entry point per weight layout that picks
// the kernel for the weight dtype, the number of activation rows and the CPU, and runs it on the pool.
#pragma once

#include <cstddef>
#include <cstdint>

#include "surf/ops.h"
#include "surf/tensor.h"

namespace surf::kernels {

// y[m, n] = x[m, k] w[n, k]^T; w in F32, F16, BF16, Q8_0 or Q4_0 (row_bytes(dtype, k) per row).
void linear(const float* x, int64_t m, int64_t k, const std::byte* w, DType dtype, int64_t n, float* y,
            ops::ActivationRounding rounding);
// y[m, n] = x[m, k] w[k, n]; w in F32, F16 or BF16.
void linear_in_out(const float* x, int64_t m, int64_t k, const std::byte* w, DType dtype, int64_t n, float* y);

}  // namespace surf::kernels
