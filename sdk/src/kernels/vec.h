// Small vector primitives for the few-row (decoding) parts of attention, chosen by ISA at run time.
#pragma once

#include <cstdint>

namespace surf::kernels {

// sum_i a[i] * b[i]
float dot(const float* a, const float* b, int64_t n);
// y[i] += alpha * x[i]
void axpy(float alpha, const float* x, float* y, int64_t n);

}  // namespace surf::kernels
