#include "surf/tensor.h"

#include "cpu.h"

#include <immintrin.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <sstream>

#include "kernels/quant.h"

namespace surf {

size_t dtype_size(DType dtype) noexcept {
  switch (dtype) {
    case DType::F32:
      return 4;
    case DType::F16:
      return 2;
    case DType::BF16:
      return 2;
    case DType::I64:
      return 8;
    case DType::Q8_0:
    case DType::Q4_0:
      return 0;
  }
  return 0;
}

const char* dtype_name(DType dtype) noexcept {
  switch (dtype) {
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    case DType::I64:
      return "I64";
    case DType::Q8_0:
      return "Q8_0";
    case DType::Q4_0:
      return "Q4_0";
  }
  return "?";
}

DType dtype_from_name(std::string_view name) {
  std::string upper(name);
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (DType d : {DType::F32, DType::F16, DType::BF16, DType::I64, DType::Q8_0, DType::Q4_0}) {
    if (upper == dtype_name(d)) return d;
  }
  fail(ErrorCode::unsupported,
       "unsupported dtype '" + std::string(name) + "' (supported: F32, F16, BF16, I64, Q8_0, Q4_0)");
}

bool is_float(DType dtype) noexcept { return dtype != DType::I64; }

bool is_quantized(DType dtype) noexcept { return dtype == DType::Q8_0 || dtype == DType::Q4_0; }

int64_t dtype_block_elements(DType dtype) noexcept { return is_quantized(dtype) ? kernels::kBlock : 1; }

size_t dtype_block_bytes(DType dtype) noexcept {
  switch (dtype) {
    case DType::Q8_0:
      return sizeof(kernels::BlockQ8_0);
    case DType::Q4_0:
      return sizeof(kernels::BlockQ4_0);
    default:
      return dtype_size(dtype);
  }
}

size_t row_bytes(DType dtype, int64_t elements) {
  const int64_t block = dtype_block_elements(dtype);
  if (elements < 0 || elements % block != 0) {
    fail(ErrorCode::invalid_argument, std::string(dtype_name(dtype)) + " stores blocks of " + std::to_string(block) +
                                          " elements; " + std::to_string(elements) + " is not a multiple");
  }
  return static_cast<size_t>(elements / block) * dtype_block_bytes(dtype);
}

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
  const int64_t numel = shape_numel(shape);
  if (is_quantized(dtype)) {
    const int64_t last = shape.empty() ? 1 : shape.back();
    if (last % kernels::kBlock != 0) {
      fail(ErrorCode::invalid_argument, std::string(dtype_name(dtype)) + " tensor " + shape_string(shape) +
                                            ": the last dimension must be a multiple of " +
                                            std::to_string(kernels::kBlock));
    }
  }
  uint64_t bytes = 0;
  const uint64_t unit = is_quantized(dtype) ? dtype_block_bytes(dtype) : dtype_size(dtype);
  const uint64_t units = static_cast<uint64_t>(numel / dtype_block_elements(dtype));
  if (__builtin_mul_overflow(units, unit, &bytes) || bytes > (uint64_t{1} << 62)) {
    fail(ErrorCode::invalid_argument, std::string(dtype_name(dtype)) + shape_string(shape) + " is too large");
  }
  return static_cast<size_t>(bytes);
}

namespace {

float f16_to_f32_scalar(uint16_t h) { return kernels::half_to_float(h); }

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

uint16_t f32_to_f16(float f) { return kernels::float_to_half(f); }

void* aligned_bytes(size_t n) {
  size_t rounded = ((n + 63) / 64) * 64;
  if (rounded == 0) rounded = 64;
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

// Large tensor buffers (activations of a prefill: MBs each, made and dropped every layer) are kept
// for reuse when freed: touching fresh pages is slow on VMs (~0.3 GB/s here, against 15 GB/s for
// warm ones), and glibc returns big blocks to the OS. Up to SURF_TENSOR_CACHE_MB (default 32) MB
// are kept, in size classes of a quarter octave; the oldest go first.
class BlockCache {
 public:
  static BlockCache& get() {
    static BlockCache* cache = new BlockCache();  // never destroyed: tensors may outlive statics
    return *cache;
  }
  static size_t size_class(size_t n) {
    size_t top = size_t{1} << (63 - __builtin_clzll(n));  // highest power of two <= n
    const size_t step = std::max<size_t>(top / 4, 64);
    return (n + step - 1) / step * step;
  }
  bool caches(size_t n) const { return n >= kMin && n <= limit_; }
  void* take(size_t cls) {
    {
      std::lock_guard lock(mutex_);
      for (auto it = free_.begin(); it != free_.end(); ++it) {
        if (it->first == cls) {
          void* p = it->second;
          free_.erase(it);
          held_ -= cls;
          return p;
        }
      }
    }
    return aligned_bytes(cls);
  }
  void give(void* p, size_t cls) {
    std::lock_guard lock(mutex_);
    while (held_ + cls > limit_ && !free_.empty()) {
      std::free(free_.front().second);
      held_ -= free_.front().first;
      free_.pop_front();
    }
    free_.emplace_back(cls, p);
    held_ += cls;
  }

 private:
  BlockCache() {
    const char* env = std::getenv("SURF_TENSOR_CACHE_MB");
    if (env != nullptr) limit_ = static_cast<size_t>(std::max(0L, std::atol(env))) << 20;
  }
  static constexpr size_t kMin = 256 << 10;
  size_t limit_ = size_t{32} << 20;
  std::mutex mutex_;
  std::deque<std::pair<size_t, void*>> free_;  // oldest first
  size_t held_ = 0;
};

std::shared_ptr<void> tensor_storage(size_t n) {
  BlockCache& cache = BlockCache::get();
  if (!cache.caches(n)) return std::shared_ptr<void>(aligned_bytes(n), [](void* q) { std::free(q); });
  const size_t cls = BlockCache::size_class(n);
  return std::shared_ptr<void>(cache.take(cls), [cls](void* q) { BlockCache::get().give(q, cls); });
}

int64_t whole_blocks(DType dtype, size_t count) {
  (void)row_bytes(dtype, static_cast<int64_t>(count));  // throws unless whole blocks
  return static_cast<int64_t>(count);
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
    case DType::Q8_0:
      kernels::dequantize_q8_0(static_cast<const kernels::BlockQ8_0*>(src), dst, whole_blocks(from, count));
      return;
    case DType::Q4_0:
      kernels::dequantize_q4_0(static_cast<const kernels::BlockQ4_0*>(src), dst, whole_blocks(from, count));
      return;
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
    case DType::Q8_0:
      kernels::quantize_q8_0(src, static_cast<kernels::BlockQ8_0*>(dst), whole_blocks(to, count));
      return;
    case DType::Q4_0:
      kernels::quantize_q4_0(src, static_cast<kernels::BlockQ4_0*>(dst), whole_blocks(to, count));
      return;
    case DType::I64:
      break;
  }
  fail(ErrorCode::invalid_argument, std::string("cannot convert F32 to ") + dtype_name(to));
}

Tensor Tensor::empty(DType dtype, Shape shape) {
  shape_bytes(shape, dtype);  // negative, overflowing or absurd shapes, rows of partial blocks fail here
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  auto storage = tensor_storage(t.nbytes());
  t.data_ = storage.get();
  t.owner_ = std::move(storage);
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
    fail(ErrorCode::invalid_argument,
         "from_f32: " + std::to_string(values.size()) + " values for shape " + shape_string(t.shape_));
  }
  std::memcpy(t.data_, values.data(), t.nbytes());
  return t;
}

Tensor Tensor::from_i64(Shape shape, const std::vector<int64_t>& values) {
  Tensor t = empty(DType::I64, std::move(shape));
  if (static_cast<int64_t>(values.size()) != t.numel()) {
    fail(ErrorCode::invalid_argument,
         "from_i64: " + std::to_string(values.size()) + " values for shape " + shape_string(t.shape_));
  }
  std::memcpy(t.data_, values.data(), t.nbytes());
  return t;
}

int64_t Tensor::dim(int i) const {
  int r = rank();
  if (i < 0) i += r;
  if (i < 0 || i >= r) {
    fail(ErrorCode::invalid_argument,
         "dimension " + std::to_string(i) + " out of range for shape " + shape_string(shape_));
  }
  return shape_[i];
}

Tensor Tensor::reshape(Shape shape) const {
  if (shape_numel(shape) != numel()) {
    fail(ErrorCode::invalid_argument, "cannot reshape " + shape_string(shape_) + " to " + shape_string(shape));
  }
  if (is_quantized(dtype_)) (void)shape_bytes(shape, dtype_);  // blocks must not straddle rows
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

size_t Tensor::nbytes() const noexcept {
  if (!is_quantized(dtype_)) return static_cast<size_t>(numel()) * dtype_size(dtype_);
  return static_cast<size_t>(numel() / kernels::kBlock) * dtype_block_bytes(dtype_);
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
    fail(ErrorCode::invalid_argument,
         std::string("tensor has dtype ") + dtype_name(dtype_) + ", expected " + dtype_name(want));
  }
}

void expect_shape(const Tensor& t, const Shape& shape, std::string_view name) {
  if (t.shape() != shape) {
    fail(ErrorCode::invalid_argument,
         std::string(name) + ": expected shape " + shape_string(shape) + ", got " + shape_string(t.shape()));
  }
}

void expect_dtype(const Tensor& t, DType dtype, std::string_view name) {
  if (t.dtype() != dtype) {
    fail(ErrorCode::invalid_argument,
         std::string(name) + ": expected dtype " + dtype_name(dtype) + ", got " + dtype_name(t.dtype()));
  }
}

}  // namespace surf
