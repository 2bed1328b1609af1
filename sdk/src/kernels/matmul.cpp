#include "kernels/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu.h"
#include "kernels/gemm.h"
#include "kernels/gemv.h"
#include "kernels/pool.h"
#include "kernels/quant.h"

namespace surf::kernels {

namespace {

template <class T>
T* grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// Weight rows per task: at least 32 KB of weights, so the small k/v projections still use every
// thread; up to 16 tasks per thread, so a core that another process takes for a while holds up
// little of a bandwidth-bound matmul.
int64_t gemv_grain(DType dtype, int64_t k) {
  const int64_t bytes = static_cast<int64_t>(row_bytes(dtype, k));
  return std::max<int64_t>(4, (32 << 10) / std::max<int64_t>(bytes, 1));
}

GemvKernel float_kernel(const Isa& cpu) {
  switch (cpu.level) {
    case IsaLevel::avx512:
      return gemv_float_avx512;
    case IsaLevel::avx2:
      return gemv_float_avx2;
    default:
      return gemv_float_scalar;
  }
}

GemvKernel quant_kernel(const Isa& cpu, bool integer) {
  if (!integer) {
    switch (cpu.level) {
      case IsaLevel::avx512:
        return gemv_qf_avx512;
      case IsaLevel::avx2:
        return gemv_qf_avx2;
      default:
        return gemv_qf_scalar;
    }
  }
  if (cpu.level == IsaLevel::avx512 && cpu.vnni) return gemv_qi_avx512vnni;
  if (cpu.level != IsaLevel::scalar) return cpu.vnni ? gemv_qi_avxvnni : gemv_qi_avx2;
  return gemv_qi_scalar;
}

}  // namespace

void linear(const float* x, int64_t m, int64_t k, const std::byte* w, DType dtype, int64_t n, float* y,
            ops::ActivationRounding rounding) {
  if (m <= 0 || n <= 0) return;
  if (k == 0) {
    std::fill(y, y + m * n, 0.0f);
    return;
  }
  const Isa& cpu = isa();
  if (m > kGemvMaxRows) {
    if (dtype == DType::BF16 && rounding == ops::ActivationRounding::all && cpu.level == IsaLevel::avx512 && cpu.bf16) {
      gemm_bf16_dot(x, m, k, w, n, y);
    } else {
      gemm(x, m, k, w, dtype, n, y);
    }
    return;
  }
  GemvArgs a;
  a.w = w;
  a.dtype = dtype;
  a.n = n;
  a.k = k;
  a.m = m;
  a.x = x;
  a.y = y;
  GemvKernel kernel;
  if (is_quantized(dtype)) {
    const bool integer = rounding != ops::ActivationRounding::none;
    kernel = quant_kernel(cpu, integer);
    if (integer) {
      thread_local std::vector<int8_t> q;
      thread_local std::vector<float> d, dsum;
      const size_t blocks = static_cast<size_t>(m * k / kBlock);
      a.xq = {grow(q, static_cast<size_t>(m * k)), grow(d, blocks), grow(dsum, blocks)};
      auto* qp = const_cast<int8_t*>(a.xq.q);
      auto* dp = const_cast<float*>(a.xq.d);
      auto* sp = const_cast<float*>(a.xq.dsum);
      if (cpu.level == IsaLevel::scalar) {
        quantize_rows_scalar(x, m, k, qp, dp, sp);
      } else {
        quantize_rows_avx2(x, m, k, qp, dp, sp);
      }
    }
  } else {
    kernel = float_kernel(cpu);
  }
  Pool::get().run_ranges(
      n, gemv_grain(dtype, k), 16, [&](int64_t n0, int64_t n1) { kernel(a, n0, n1); }, 16);
}

void linear_in_out(const float* x, int64_t m, int64_t k, const std::byte* w, DType dtype, int64_t n, float* y) {
  if (m <= 0 || n <= 0) return;
  const Isa& cpu = isa();
  Pool& pool = Pool::get();
  if (m <= kGemvMaxRows) {
    const int64_t grain = std::max<int64_t>(64, (64 << 10) / std::max<int64_t>(k * 2, 1));
    pool.run_ranges(n, grain, 16, [&](int64_t c0, int64_t c1) {
      if (cpu.level == IsaLevel::scalar) {
        gemv_kn_scalar(dtype, w, x, y, m, n, k, c0, c1);
      } else {
        gemv_kn_avx2(dtype, w, x, y, m, n, k, c0, c1);
      }
    });
    return;
  }
  // Columns of y split over the pool; each task runs sgemm on its slice of w (16-bit weights
  // widened a few rows at a time: rows of w are a slice of the reduction).
  const size_t rb = row_bytes(dtype, n);
  pool.run_ranges(n, 64, 16, [&](int64_t c0, int64_t c1) {
    const int64_t cols = c1 - c0;
    if (dtype == DType::F32) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(cols),
                  static_cast<int>(k), 1.0f, x, static_cast<int>(k), reinterpret_cast<const float*>(w) + c0,
                  static_cast<int>(n), 0.0f, y + c0, static_cast<int>(n));
      return;
    }
    thread_local std::vector<float> panel_buf;
    const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(k, (1 << 18) / std::max<int64_t>(cols, 1)));
    float* panel = grow(panel_buf, static_cast<size_t>(rows * cols));
    for (int64_t r0 = 0; r0 < k; r0 += rows) {
      const int64_t r = std::min(rows, k - r0);
      for (int64_t i = 0; i < r; ++i) {
        convert_to_f32(dtype, w + (r0 + i) * rb + row_bytes(dtype, c0), panel + i * cols, static_cast<size_t>(cols));
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(cols),
                  static_cast<int>(r), 1.0f, x + r0, static_cast<int>(k), panel, static_cast<int>(cols),
                  r0 == 0 ? 0.0f : 1.0f, y + c0, static_cast<int>(n));
    }
  });
}

}  // namespace surf::kernels
