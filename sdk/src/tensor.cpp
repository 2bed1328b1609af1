#include "surf/tensor.h"

#include "cpu.h"

#include <immintrin.h>

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace surf {

size_t dtype_size(DType dtype) noexcept {
  switch (dtype) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I64: return 8;
  }
  return 0;
}

const char* dtype_name(DType dtype) noexcept {
  switch (dtype) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
  }
  return "?";
}

DType dtype_from_name(std::string_view name) {
  std::string upper(name);
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (DType d : {DType::F32, DType::F16, DType::BF16, DType::I64}) {
    if (upper == dtype_name(d)) return d;
  }
  fail(ErrorCode::unsupported, "unsupported dtype '" + std::string(name) + "' (supported: F32, F16, BF16, I64)");
}

bool is_float(DType dtype) noexcept { return dtype != DType::I64; }

std::string shape_string(const Shape& shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (auto d : shape) {
    if (d < 0) fail(ErrorCode::invalid_argument, "negative dimension in shape " + shape_string(shape));
    if (__builtin_mul_overflow(n, d, &n)) {
      fail(ErrorCode::invalid_argument, "shape " + shape_string(shape) + " has more than 2^63 elements");
    }
  }
  return n;
}

size_t shape_bytes(const Shape& shape, DType dtype) {
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(shape_numel(shape)), dtype_size(dtype), &bytes) ||
      bytes > (uint64_t{1} << 62)) {
    fail(ErrorCode::invalid_argument, std::string(dtype_name(dtype)) + shape_string(shape) + " is too large");
  }
  return static_cast<size_t>(bytes);
}

namespace {

float f16_to_f32_scalar(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do { ++e; mant <<= 1; } while ((mant & 0x400) == 0);
      bits = sign | ((127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

__attribute__((target("avx,f16c"))) void f16_to_f32_f16c(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) dst[i] = f16_to_f32_scalar(src[i]);
}

// Large conversions are bound by memory bandwidth: streaming (non-temporal) stores skip the
// read-for-ownership of the destination, ~1.7x faster here for layer-sized tensors.
constexpr size_t kStreamingThreshold = 1u << 18;

__attribute__((target("avx2"))) void bf16_to_f32_avx2_stream(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  const __m256i zero = _mm256_setzero_si256();
  for (; i + 16 <= n; i += 16) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    const __m256i lo = _mm256_unpacklo_epi16(zero, v);  // elements 0-3 | 8-11
    const __m256i hi = _mm256_unpackhi_epi16(zero, v);  // elements 4-7 | 12-15
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_permute2x128_si256(lo, hi, 0x20));
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
  }
  _mm_sfence();
  uint32_t* d = reinterpret_cast<uint32_t*>(dst);
  for (; i < n; ++i) d[i] = static_cast<uint32_t>(src[i]) << 16;
}

__attribute__((target("avx2,f16c"))) void f16_to_f32_stream(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_stream_ps(dst + i, _mm256_cvtph_ps(h));
  }
  _mm_sfence();
  for (; i < n; ++i) dst[i] = f16_to_f32_scalar(src[i]);
}

bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
}

bool streamable(const float* dst, size_t count) {
  return count >= kStreamingThreshold && reinterpret_cast<uintptr_t>(dst) % 32 == 0 && has_avx2();
}

bool has_f16c() {
  static const bool yes = __builtin_cpu_supports("avx") && cpu_has_f16c();
  return yes;
}

uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t absx = x & 0x7fffffffu;
  if (absx > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (absx >= 0x47800000u) {  // >= 65536 before rounding; exact overflow handled below
    // values in [65520, 65536) round to inf as well
    return static_cast<uint16_t>(sign | 0x7c00u);
  }
  if (absx < 0x38800000u) {  // subnormal or zero in f16
    if (absx < 0x33000000u) return static_cast<uint16_t>(sign);  // < 2^-25 rounds to 0
    uint32_t exp = absx >> 23;
    uint32_t mant = (absx & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - exp;  // 113 - exp + 13
    uint32_t half = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t h = ((absx >> 13) - ((127 - 15) << 10));
  uint32_t rem = absx & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  if (h >= 0x7c00u) h = 0x7c00u;
  return static_cast<uint16_t>(sign | h);
}

void* aligned_bytes(size_t n) {
  size_t rounded = ((n + 63) / 64) * 64;
  if (rounded == 0) rounded = 64;
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

}  // namespace

void convert_to_f32(DType from, const void* src, float* dst, size_t count) {
  switch (from) {
    case DType::F32:
      std::memcpy(dst, src, count * 4);
      return;
    case DType::BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      if (streamable(dst, count)) {
        bf16_to_f32_avx2_stream(s, dst, count);
        return;
      }
      uint32_t* d = reinterpret_cast<uint32_t*>(dst);
      for (size_t i = 0; i < count; ++i) d[i] = static_cast<uint32_t>(s[i]) << 16;
      return;
    }
    case DType::F16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      if (streamable(dst, count) && has_f16c()) {
        f16_to_f32_stream(s, dst, count);
      } else if (has_f16c()) {
        f16_to_f32_f16c(s, dst, count);
      } else {
        for (size_t i = 0; i < count; ++i) dst[i] = f16_to_f32_scalar(s[i]);
      }
      return;
    }
    case DType::I64:
      break;
  }
  fail(ErrorCode::invalid_argument, std::string("cannot convert ") + dtype_name(from) + " to F32");
}

void convert_from_f32(DType to, const float* src, void* dst, size_t count) {
  switch (to) {
    case DType::F32:
      std::memcpy(dst, src, count * 4);
      return;
    case DType::BF16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < count; ++i) d[i] = f32_to_bf16(src[i]);
      return;
    }
    case DType::F16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < count; ++i) d[i] = f32_to_f16(src[i]);
      return;
    }
    case DType::I64:
      break;
  }
  fail(ErrorCode::invalid_argument, std::string("cannot convert F32 to ") + dtype_name(to));
}

Tensor Tensor::empty(DType dtype, Shape shape) {
  shape_bytes(shape, dtype);  // negative, overflowing or absurd shapes fail here
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  void* p = aligned_bytes(t.nbytes());
  t.owner_ = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  t.data_ = p;
  return t;
}

Tensor Tensor::zeros(DType dtype, Shape shape) {
  Tensor t = empty(dtype, std::move(shape));
  std::memset(t.data_, 0, t.nbytes());
  return t;
}

Tensor Tensor::view(DType dtype, Shape shape, const void* data, std::shared_ptr<const void> owner) {
  shape_bytes(shape, dtype);
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.data_ = const_cast<void*>(data);
  t.owner_ = std::move(owner);
  return t;
}

Tensor Tensor::from_f32(Shape shape, const std::vector<float>& values) {
  Tensor t = empty(DType::F32, std::move(shape));
  if (static_cast<int64_t>(values.size()) != t.numel()) {
    fail(ErrorCode::invalid_argument, "from_f32: " + std::to_string(values.size()) +
                                          " values for shape " + shape_string(t.shape_));
  }
  std::memcpy(t.data_, values.data(), t.nbytes());
  return t;
}

Tensor Tensor::from_i64(Shape shape, const std::vector<int64_t>& values) {
  Tensor t = empty(DType::I64, std::move(shape));
  if (static_cast<int64_t>(values.size()) != t.numel()) {
    fail(ErrorCode::invalid_argument, "from_i64: " + std::to_string(values.size()) +
                                          " values for shape " + shape_string(t.shape_));
  }
  std::memcpy(t.data_, values.data(), t.nbytes());
  return t;
}

int64_t Tensor::dim(int i) const {
  int r = rank();
  if (i < 0) i += r;
  if (i < 0 || i >= r) {
    fail(ErrorCode::invalid_argument, "dimension " + std::to_string(i) + " out of range for shape " +
                                          shape_string(shape_));
  }
  return shape_[i];
}

Tensor Tensor::reshape(Shape shape) const {
  if (shape_numel(shape) != numel()) {
    fail(ErrorCode::invalid_argument,
         "cannot reshape " + shape_string(shape_) + " to " + shape_string(shape));
  }
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(dtype_, shape_);
  std::memcpy(t.data_, data_, nbytes());
  return t;
}

Tensor Tensor::to_f32() const {
  if (dtype_ == DType::F32) return *this;
  Tensor t = empty(DType::F32, shape_);
  convert_to_f32(dtype_, data_, static_cast<float*>(t.data_), static_cast<size_t>(numel()));
  return t;
}

void Tensor::check(DType want) const {
  if (dtype_ != want) {
    fail(ErrorCode::invalid_argument, std::string("tensor has dtype ") + dtype_name(dtype_) +
                                          ", expected " + dtype_name(want));
  }
}

void expect_shape(const Tensor& t, const Shape& shape, std::string_view name) {
  if (t.shape() != shape) {
    fail(ErrorCode::invalid_argument, std::string(name) + ": expected shape " + shape_string(shape) +
                                          ", got " + shape_string(t.shape()));
  }
}

void expect_dtype(const Tensor& t, DType dtype, std::string_view name) {
  if (t.dtype() != dtype) {
    fail(ErrorCode::invalid_argument, std::string(name) + ": expected dtype " + dtype_name(dtype) +
                                          ", got " + dtype_name(t.dtype()));
  }
}

}  // namespace surf
