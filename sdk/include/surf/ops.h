// Compute ops for plugins. Activations are f32, row-major, usually 2-D [tokens, features]
// with tokens = batch * sequence. Argument checks throw Error(invalid_argument).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "surf/tensor.h"
#include "surf/export.h"

SURF_SDK_PUBLIC_BEGIN

namespace surf {
class ModelConfig;
}

namespace surf::ops {

// Weights (w, embedding tables) may be F32, BF16 or F16, and for linear (and embedding) also Q8_0
// or Q4_0 (GGML blocks along K). Activations are f32. Kernels are chosen at run time for the CPU
// (AVX-512 with VNNI, AVX2 (+AVX-VNNI), or portable code) and run on the SDK's persistent thread
// pool (SURF_THREADS; OpenBLAS runs single-threaded inside it). Few rows (M <= 4, decoding) use
// fused kernels that read each weight once; more rows (prefill) widen or dequantize weight panels
// into f32 and multiply in f32. How activations meet low-precision weights: see ActivationRounding.
// y[M,N] = x[M,K] * w[N,K]^T (+ bias[N]): nn.Linear layout.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor* bias = nullptr);
// y[M,N] = x[M,K] * w[K,N] (+ bias[N]): GPT-2 Conv1D layout (F32, F16, BF16 weights).
Tensor linear_in_out(const Tensor& x, const Tensor& w, const Tensor* bias = nullptr);

// Whether matmuls round activations to meet low-precision weights, as GGML does, trading exactness
// for integer (or bf16) arithmetic. Process-wide; the initial value comes from
// SURF_ACTIVATION_ROUNDING=none|quantized|all (default quantized).
enum class ActivationRounding {
  // Activations stay f32 against every weight dtype: results are f32 arithmetic on the exact (or
  // dequantized) weights, within fp32 tolerance of a float64 reference that uses those weights.
  none,
  // Against Q8_0/Q4_0 weights, few-row matmuls (decoding) round each activation row to int8 blocks
  // of 32 (scale max|x|/127) and use integer dot products, as GGML's Q8_0/Q4_0 paths do (about
  // 0.3% relative error per activation); prefill stays f32. F32/F16/BF16 weights: as none.
  quantized,
  // Also against BF16 weights in prefill (more than 4 rows): activations rounded to bf16 (nearest
  // even) and AVX512_BF16 dot products with f32 accumulation, as llama.cpp's BF16 path does: about
  // twice the f32 kernel's throughput, ~0.2% relative error per activation. Without AVX512_BF16,
  // as quantized.
  all,
};
void set_activation_rounding(ActivationRounding rounding);
ActivationRounding activation_rounding();
// "none", "quantized", "all"; Error(invalid_argument) for anything else.
ActivationRounding activation_rounding_from_name(std::string_view name);

// The instruction-set path the kernels use, e.g. "avx512+vnni+bf16" (SURF_ISA=scalar|avx2 caps it
// at start-up), and the number of threads of the SDK's pool.
const char* kernel_isa();
int kernel_threads();
// A host that runs CPU-heavy work of its own beside the kernels (a streamed model's next layer
// being read and verified while this one computes) reserves a core for it: while reservations are
// held, kernels use that many fewer threads (at least the calling thread), and the pool's spare
// workers sleep instead of spinning. Three busy threads on two cores made each layer's fetch wait
// for its compute. `delta` +1 takes a reservation, -1 gives it back; returns the reservations now
// held; Error(invalid_argument) if more are given back than were taken. Thread-safe; results do
// not depend on the thread count.
int reserve_kernel_threads(int delta);
// Threads a kernel call made now would use: kernel_threads() less the reservations, at least 1.
int usable_kernel_threads();
// Caps the path at runtime, for tests and to rule one out: "native" (what the CPU has), "avx512",
// "avx512-novnni", "avx2" (with AVX-VNNI if present), "avx2-novnni", "scalar"; never above what
// the CPU has. Returns the path now in use. Not to be called while matmuls run.
const char* set_kernel_isa(std::string_view name);

// Over the last axis. RMSNorm: w * x / sqrt(mean(x^2) + eps). LayerNorm: w * (x-mean)/sqrt(var+eps) + b.
Tensor rms_norm(const Tensor& x, const Tensor& w, float eps);
Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps);

enum class Activation { relu, silu, gelu_erf, gelu_tanh };
// HF ACT2FN names: "relu", "silu"/"swish", "gelu", "gelu_new"/"gelu_pytorch_tanh"/"gelu_fast".
Activation activation_from_name(std::string_view name);
void activate(Tensor& x, Activation act);

void add(Tensor& x, const Tensor& y);       // x += y (same shape)
void multiply(Tensor& x, const Tensor& y);  // x *= y (same shape)
void scale(Tensor& x, float factor);        // x *= factor
void softmax_rows(float* data, int64_t rows, int64_t cols);

// table[V,H] gathered at ids (I64, any shape) -> [numel(ids), H]. An id outside [0,V) is
// an Error(invalid_argument) naming the id and V.
Tensor embedding(const Tensor& table, const Tensor& ids);

// HF `rope_scaling` (transformers modeling_rope_utils), applied to the frequencies:
//   linear  every inv_freq is divided by `factor` (the same as dividing the positions);
//   llama3  with wavelength w = 2*pi / inv_freq and L = original_max_position_embeddings:
//           w < L / high_freq_factor keeps inv_freq, w > L / low_freq_factor takes inv_freq / factor,
//           in between (1 - s) * inv_freq / factor + s * inv_freq with
//           s = (L / w - low_freq_factor) / (high_freq_factor - low_freq_factor).
struct RopeScaling {
  enum class Type { none, linear, llama3 };
  Type type = Type::none;
  double factor = 1.0;
  double low_freq_factor = 1.0, high_freq_factor = 4.0;
  double original_max_position_embeddings = 0.0;

  // config.json's `rope_scaling` object (transformers v5: `rope_parameters`), its type under
  // `rope_type` or the older `type`. None when absent, null or "default". Any other type (yarn,
  // dynamic, longrope, ...) is Error(unsupported) naming it; a missing field names the key.
  static RopeScaling from_config(const ModelConfig& config);
  // The frequencies 1 / theta^(2i / rotary_dims), i < rotary_dims / 2, scaled.
  std::vector<double> inv_freq(int64_t rotary_dims, double theta) const;
};

// Rotary embedding, HF rotate-half convention, in place on x[tokens, heads*head_dim]:
// positions[tokens]; angles computed in double then rounded, like HF's f32 cos/sin up to 1e-7.
// The first `rotary_dims` of each head rotate (GPT-NeoX's rotary_pct); the rest pass through.
class RotaryEmbedding {
 public:
  RotaryEmbedding() = default;
  // inv_freq[i] = 1 / theta^(2i / rotary_dims), i < rotary_dims / 2.
  RotaryEmbedding(int64_t rotary_dims, double theta);
  // Frequencies given directly (rope scaling computes its own).
  explicit RotaryEmbedding(std::vector<double> inv_freq);
  // inv_freq as above, then scaled (RopeScaling::from_config(config) reads it).
  RotaryEmbedding(int64_t rotary_dims, double theta, const RopeScaling& scaling);
  int64_t rotary_dims() const { return static_cast<int64_t>(inv_freq_.size()) * 2; }
  const std::vector<double>& inv_freq() const { return inv_freq_; }
  void apply(Tensor& x, int64_t heads, int64_t head_dim, const int64_t* positions) const;

 private:
  std::vector<double> inv_freq_;
};
// The whole head rotates with base `theta`.
void rope(Tensor& x, int64_t heads, int64_t head_dim, const int64_t* positions, double theta);

// Multi-head attention over one batch.
//   q: [batch, q_len, heads*head_dim] (rows of q_stride floats, default heads*head_dim)
//   k, v: [batch, kv_capacity, kv_heads*head_dim], first kv_len rows used
//   out: [batch, q_len, heads*head_dim]
// Query i of a batch row sits at absolute position past + i; with `causal` it sees keys <= that
// (and, with a sliding `window`, only the last `window` of them).
// key_mask[batch, kv_len] (1 = real) hides padded keys. bias[heads, q_len, kv_len] (or per batch
// row when bias_per_batch) is added to the scores. Grouped-query: kv head j serves query heads
// j*r .. j*r+r-1 with r = heads/kv_heads. A query that can see no key gets zeros.
struct AttentionArgs {
  int64_t batch = 1, q_len = 0, kv_len = 0, kv_capacity = 0;
  int64_t heads = 1, kv_heads = 1, head_dim = 0;
  int64_t q_stride = 0, kv_stride = 0;  // 0 = dense (heads*head_dim / kv_heads*head_dim)
  int64_t past = 0;
  float scale = 1.0f;
  bool causal = false;
  const int64_t* key_mask = nullptr;
  const float* bias = nullptr;
  bool bias_per_batch = false;
  int64_t window = 0;  // sliding window: with causal, key j is visible to query i iff i - j < window (0: all)
};
void attention(const float* q, const float* k, const float* v, float* out, const AttentionArgs& args);

// Per-layer key/value cache for incremental decoding: k and v are [batch, capacity, width].
class KVCache {
 public:
  void reset(int64_t batch, int64_t capacity, int64_t width);
  // Appends n rows per batch element from src[batch, n, width] (row stride src_stride).
  void append(const float* k_src, const float* v_src, int64_t n, int64_t src_stride = 0);
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  int64_t width() const { return width_; }
  const float* k() const { return k_.f32(); }
  const float* v() const { return v_.f32(); }

 private:
  Tensor k_, v_;
  int64_t batch_ = 0, capacity_ = 0, width_ = 0, length_ = 0;
};

// Columns [offset, offset + width) of every row of x[rows, cols] as a dense [rows, width] tensor.
Tensor columns(const Tensor& x, int64_t offset, int64_t width);

// A fused projection laid out per head, x[rows, heads * parts * head_dim] viewed as
// [rows, heads, parts, head_dim] (GPT-NeoX's query_key_value: each head's q | k | v), split into
// `parts` dense [rows, heads * head_dim] tensors.
std::vector<Tensor> split_per_head(const Tensor& x, int64_t heads, int64_t parts, int64_t head_dim);

// Index of the largest value in each row of x[rows, cols] (first one on ties).
std::vector<int64_t> argmax_rows(const float* x, int64_t rows, int64_t cols);

// Sets OpenBLAS's own thread count. The SDK sets it to 1 when its pool starts (the pool provides
// the parallelism and calls OpenBLAS from its threads); raising it makes those calls oversubscribe.
void set_blas_threads(int threads);

}  // namespace surf::ops

SURF_SDK_PUBLIC_END
