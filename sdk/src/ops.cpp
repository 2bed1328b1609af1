// Elementwise ops, norms and matmuls. Argument checks live next to the kernels they guard.
#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "kernels/cpu.h"
#include "kernels/matmul.h"
#include "kernels/pool.h"
#include "surf/ops.h"

namespace surf::ops {

namespace {

void require(bool ok, const std::string& message) {
  if (!ok) fail(ErrorCode::invalid_argument, message);
}

int64_t rows_of(const Tensor& x) { return x.numel() / x.dim(-1); }

Shape with_last(const Shape& s, int64_t last) {
  Shape out = s;
  out.back() = last;
  return out;
}

void add_bias(float* y, int64_t m, int64_t n, const Tensor* bias) {
  if (bias == nullptr) return;
  const float* b = bias->f32();
  for (int64_t i = 0; i < m; ++i) {
    float* row = y + i * n;
    for (int64_t j = 0; j < n; ++j) row[j] += b[j];
  }
}

void check_linear(const Tensor& x, const Tensor& w, const Tensor* bias, int64_t k, int64_t n, const char* what) {
  require(x.rank() >= 1 && w.rank() == 2, std::string(what) + ": expected x[..., K] and a 2-D weight, got x" +
                                              shape_string(x.shape()) + " w" + shape_string(w.shape()));
  require(x.dim(-1) == k,
          std::string(what) + ": x" + shape_string(x.shape()) + " does not match weight " + shape_string(w.shape()));
  require(bias == nullptr || (bias->rank() == 1 && bias->dim(0) == n),
          std::string(what) + ": bias " + (bias ? shape_string(bias->shape()) : "") + " does not match output width " +
              std::to_string(n));
  expect_dtype(x, DType::F32, what);
  if (!is_float(w.dtype())) {
    fail(ErrorCode::invalid_argument, std::string(what) + ": weight has dtype " + dtype_name(w.dtype()));
  }
}

}  // namespace

void set_blas_threads(int threads) { openblas_set_num_threads(threads); }

namespace {

ActivationRounding initial_rounding() {
  const char* env = std::getenv("SURF_ACTIVATION_ROUNDING");
  if (env == nullptr || *env == '\0') return ActivationRounding::quantized;
  return activation_rounding_from_name(env);
}

std::atomic<ActivationRounding>& rounding_setting() {
  static std::atomic<ActivationRounding> value{initial_rounding()};
  return value;
}

const std::byte* row_at(const Tensor& w, int64_t row, int64_t width) {
  return static_cast<const std::byte*>(w.raw()) + static_cast<size_t>(row) * surf::row_bytes(w.dtype(), width);
}

}  // namespace

ActivationRounding activation_rounding_from_name(std::string_view name) {
  if (name == "none") return ActivationRounding::none;
  if (name == "quantized") return ActivationRounding::quantized;
  if (name == "all") return ActivationRounding::all;
  fail(ErrorCode::invalid_argument,
       "activation rounding '" + std::string(name) + "' is not one of none, quantized, all");
}

void set_activation_rounding(ActivationRounding rounding) { rounding_setting().store(rounding); }
ActivationRounding activation_rounding() { return rounding_setting().load(); }

const char* kernel_isa() { return kernels::isa_name(kernels::isa()); }

const char* set_kernel_isa(std::string_view name) {
  using kernels::IsaLevel;
  if (name == "native") {
    kernels::reset_isa_for_testing();
  } else if (name == "avx512" || name == "avx512-novnni") {
    kernels::set_isa_for_testing(IsaLevel::avx512, name == "avx512", true);
  } else if (name == "avx2" || name == "avx2-novnni") {
    kernels::set_isa_for_testing(IsaLevel::avx2, name == "avx2", false);
  } else if (name == "scalar") {
    kernels::set_isa_for_testing(IsaLevel::scalar, false, false);
  } else {
    fail(ErrorCode::invalid_argument, "kernel ISA '" + std::string(name) +
                                          "' is not one of native, avx512, avx512-novnni, avx2, avx2-novnni, scalar");
  }
  return kernel_isa();
}
int kernel_threads() { return kernels::Pool::get().threads(); }

int reserve_kernel_threads(int delta) {
  try {
    return kernels::Pool::get().reserve(delta);
  } catch (const std::invalid_argument& e) {
    fail(ErrorCode::invalid_argument, e.what());
  }
}

int usable_kernel_threads() { return kernels::Pool::get().usable_threads(); }

Tensor linear(const Tensor& x, const Tensor& w, const Tensor* bias) {
  const int64_t n = w.dim(0), k = w.dim(1);
  check_linear(x, w, bias, k, n, "linear");
  const int64_t m = rows_of(x);
  Tensor y = Tensor::empty(DType::F32, with_last(x.shape(), n));
  kernels::linear(x.f32(), m, k, static_cast<const std::byte*>(w.raw()), w.dtype(), n, y.f32(), activation_rounding());
  add_bias(y.f32(), m, n, bias);
  return y;
}

Tensor linear_in_out(const Tensor& x, const Tensor& w, const Tensor* bias) {
  const int64_t k = w.dim(0), n = w.dim(1);
  check_linear(x, w, bias, k, n, "linear_in_out");
  if (is_quantized(w.dtype())) {
    fail(ErrorCode::invalid_argument, std::string("linear_in_out: weight has dtype ") + dtype_name(w.dtype()) +
                                          ": block formats run along the reduction axis; store Conv1D weights "
                                          "unquantized (the chunker does) or transposed for ops::linear");
  }
  const int64_t m = rows_of(x);
  Tensor y = Tensor::empty(DType::F32, with_last(x.shape(), n));
  kernels::linear_in_out(x.f32(), m, k, static_cast<const std::byte*>(w.raw()), w.dtype(), n, y.f32());
  add_bias(y.f32(), m, n, bias);
  return y;
}

Tensor rms_norm(const Tensor& x, const Tensor& w, float eps) {
  const int64_t h = x.dim(-1);
  require(w.rank() == 1 && w.dim(0) == h,
          "rms_norm: weight " + shape_string(w.shape()) + " does not match x" + shape_string(x.shape()));
  const int64_t m = rows_of(x);
  Tensor y = Tensor::empty(DType::F32, x.shape());
  const float* xs = x.f32();
  const float* ws = w.f32();
  float* ys = y.f32();
  for (int64_t i = 0; i < m; ++i) {
    const float* row = xs + i * h;
    double sum = 0;
    for (int64_t j = 0; j < h; ++j) sum += static_cast<double>(row[j]) * row[j];
    const float inv = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(h) + eps));
    float* out = ys + i * h;
    for (int64_t j = 0; j < h; ++j) out[j] = ws[j] * (row[j] * inv);
  }
  return y;
}

Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps) {
  const int64_t h = x.dim(-1);
  require(w.rank() == 1 && w.dim(0) == h && b.rank() == 1 && b.dim(0) == h,
          "layer_norm: weight " + shape_string(w.shape()) + " / bias " + shape_string(b.shape()) + " do not match x" +
              shape_string(x.shape()));
  const int64_t m = rows_of(x);
  Tensor y = Tensor::empty(DType::F32, x.shape());
  const float* xs = x.f32();
  const float* ws = w.f32();
  const float* bs = b.f32();
  float* ys = y.f32();
  for (int64_t i = 0; i < m; ++i) {
    const float* row = xs + i * h;
    double sum = 0;
    for (int64_t j = 0; j < h; ++j) sum += row[j];
    const double mean = sum / static_cast<double>(h);
    double var = 0;
    for (int64_t j = 0; j < h; ++j) {
      const double d = row[j] - mean;
      var += d * d;
    }
    var /= static_cast<double>(h);
    const double inv = 1.0 / std::sqrt(var + eps);
    float* out = ys + i * h;
    for (int64_t j = 0; j < h; ++j) {
      out[j] = static_cast<float>((row[j] - mean) * inv) * ws[j] + bs[j];
    }
  }
  return y;
}

Activation activation_from_name(std::string_view name) {
  if (name == "relu") return Activation::relu;
  if (name == "silu" || name == "swish") return Activation::silu;
  if (name == "gelu") return Activation::gelu_erf;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") {
    return Activation::gelu_tanh;
  }
  fail(ErrorCode::unsupported, "unsupported activation '" + std::string(name) +
                                   "' (supported: relu, silu, swish, gelu, gelu_new, gelu_pytorch_tanh)");
}

void activate(Tensor& x, Activation act) {
  float* p = x.f32();
  const int64_t n = x.numel();
  switch (act) {
    case Activation::relu:
      for (int64_t i = 0; i < n; ++i) p[i] = p[i] > 0.0f ? p[i] : 0.0f;
      break;
    case Activation::silu:
      for (int64_t i = 0; i < n; ++i) p[i] = p[i] / (1.0f + std::exp(-p[i]));
      break;
    case Activation::gelu_erf:
      for (int64_t i = 0; i < n; ++i) p[i] = 0.5f * p[i] * (1.0f + std::erf(p[i] * 0.70710678118654752f));
      break;
    case Activation::gelu_tanh: {
      const float c = 0.79788456080286536f;  // sqrt(2/pi)
      for (int64_t i = 0; i < n; ++i) {
        const float v = p[i];
        p[i] = 0.5f * v * (1.0f + std::tanh(c * (v + 0.044715f * v * v * v)));
      }
      break;
    }
  }
}

void add(Tensor& x, const Tensor& y) {
  require(x.numel() == y.numel(),
          "add: shapes " + shape_string(x.shape()) + " and " + shape_string(y.shape()) + " differ");
  float* a = x.f32();
  const float* b = y.f32();
  for (int64_t i = 0, n = x.numel(); i < n; ++i) a[i] += b[i];
}

void multiply(Tensor& x, const Tensor& y) {
  require(x.numel() == y.numel(),
          "multiply: shapes " + shape_string(x.shape()) + " and " + shape_string(y.shape()) + " differ");
  float* a = x.f32();
  const float* b = y.f32();
  for (int64_t i = 0, n = x.numel(); i < n; ++i) a[i] *= b[i];
}

void scale(Tensor& x, float factor) {
  float* a = x.f32();
  for (int64_t i = 0, n = x.numel(); i < n; ++i) a[i] *= factor;
}

void softmax_rows(float* data, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) {
    float* row = data + i * cols;
    float mx = -INFINITY;
    for (int64_t j = 0; j < cols; ++j) mx = std::max(mx, row[j]);
    if (mx == -INFINITY) {  // nothing visible: defined as all zeros
      std::fill(row, row + cols, 0.0f);
      continue;
    }
    float sum = 0;
    for (int64_t j = 0; j < cols; ++j) {
      row[j] = std::exp(row[j] - mx);
      sum += row[j];
    }
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < cols; ++j) row[j] *= inv;
  }
}

Tensor embedding(const Tensor& table, const Tensor& ids) {
  require(table.rank() == 2, "embedding: table must be 2-D, got " + shape_string(table.shape()));
  expect_dtype(ids, DType::I64, "token ids");
  const int64_t v = table.dim(0), h = table.dim(1), n = ids.numel();
  if (!is_float(table.dtype()))
    fail(ErrorCode::invalid_argument, "embedding: table has dtype " + std::string(dtype_name(table.dtype())));
  Tensor out = Tensor::empty(DType::F32, {n, h});
  const int64_t* id = ids.i64();
  for (int64_t i = 0; i < n; ++i) {
    if (id[i] < 0 || id[i] >= v) {
      fail(ErrorCode::invalid_argument, "token id " + std::to_string(id[i]) + " at position " + std::to_string(i) +
                                            " is out of range [0, " + std::to_string(v) + ")");
    }
    convert_to_f32(table.dtype(), row_at(table, id[i], h), out.f32() + i * h, static_cast<size_t>(h));
  }
  return out;
}

RotaryEmbedding::RotaryEmbedding(int64_t rotary_dims, double theta) {
  require(rotary_dims > 0 && rotary_dims % 2 == 0,
          "rope: rotary dims must be even and positive, got " + std::to_string(rotary_dims));
  for (int64_t i = 0; i < rotary_dims / 2; ++i) {
    inv_freq_.push_back(1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(rotary_dims)));
  }
}

RotaryEmbedding::RotaryEmbedding(std::vector<double> inv_freq) : inv_freq_(std::move(inv_freq)) {
  require(!inv_freq_.empty(), "rope: no frequencies");
}

void RotaryEmbedding::apply(Tensor& x, int64_t heads, int64_t head_dim, const int64_t* positions) const {
  const int64_t half = static_cast<int64_t>(inv_freq_.size());
  require(2 * half <= head_dim,
          "rope: " + std::to_string(2 * half) + " rotary dims exceed head_dim " + std::to_string(head_dim));
  require(x.dim(-1) == heads * head_dim, "rope: x" + shape_string(x.shape()) + " is not " + std::to_string(heads) +
                                             " heads of " + std::to_string(head_dim));
  const int64_t tokens = rows_of(x);
  std::vector<float> cos_v(half), sin_v(half);
  float* data = x.f32();
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const double a = static_cast<double>(positions[t]) * inv_freq_[i];
      cos_v[i] = static_cast<float>(std::cos(a));
      sin_v[i] = static_cast<float>(std::sin(a));
    }
    for (int64_t hd = 0; hd < heads; ++hd) {
      float* p = data + t * heads * head_dim + hd * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float a = p[i], b = p[i + half];
        p[i] = a * cos_v[i] - b * sin_v[i];
        p[i + half] = b * cos_v[i] + a * sin_v[i];
      }
    }
  }
}

void rope(Tensor& x, int64_t heads, int64_t head_dim, const int64_t* positions, double theta) {
  require(head_dim % 2 == 0, "rope: head_dim must be even, got " + std::to_string(head_dim));
  RotaryEmbedding(head_dim, theta).apply(x, heads, head_dim, positions);
}

Tensor columns(const Tensor& x, int64_t offset, int64_t width) {
  require(x.rank() >= 1 && offset >= 0 && width >= 0 && offset + width <= x.dim(-1),
          "columns: [" + std::to_string(offset) + ", " + std::to_string(offset + width) + ") outside x" +
              shape_string(x.shape()));
  const int64_t rows = rows_of(x), cols = x.dim(-1);
  Tensor out = Tensor::empty(DType::F32, {rows, width});
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(out.f32() + r * width, x.f32() + r * cols + offset, static_cast<size_t>(width) * 4);
  }
  return out;
}

std::vector<int64_t> argmax_rows(const float* x, int64_t rows, int64_t cols) {
  std::vector<int64_t> out(rows);
  for (int64_t i = 0; i < rows; ++i) {
    const float* row = x + i * cols;
    out[i] = std::max_element(row, row + cols) - row;
  }
  return out;
}

}  // namespace surf::ops
