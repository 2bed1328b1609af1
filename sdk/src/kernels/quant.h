// GGML's Q8_0 / Q4_0 block layouts and their reference (scalar) quantizers and dequantizers.
// Stored weights use exactly these layouts so a GGUF importer can copy blocks unchanged.
#pragma once

#include <cstddef>
#include <cstdint>

namespace surf::kernels {

inline constexpr int kBlock = 32;

struct BlockQ8_0 {
  uint16_t d;  // f16 scale
  int8_t qs[kBlock];
};
struct BlockQ4_0 {
  uint16_t d;              // f16 scale
  uint8_t qs[kBlock / 2];  // element j: low nibble of qs[j]; element j + 16: high nibble
};
static_assert(sizeof(BlockQ8_0) == 34 && alignof(BlockQ8_0) == 2, "GGML block_q8_0 layout");
static_assert(sizeof(BlockQ4_0) == 18 && alignof(BlockQ4_0) == 2, "GGML block_q4_0 layout");

// IEEE half <-> float, round to nearest even (what GGML_FP32_TO_FP16 does with F16C).
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);

// GGML's quantize_row_q8_0_ref / quantize_row_q4_0_ref, bit for bit; n % 32 == 0.
void quantize_q8_0(const float* x, BlockQ8_0* y, int64_t n);
void quantize_q4_0(const float* x, BlockQ4_0* y, int64_t n);
// Exact dequantization (value = code * d in f32, as GGML's dequantize_row_*); n % 32 == 0.
void dequantize_q8_0(const BlockQ8_0* x, float* y, int64_t n);
void dequantize_q4_0(const BlockQ4_0* x, float* y, int64_t n);

}  // namespace surf::kernels
