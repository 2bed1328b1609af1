// Which instruction-set paths the kernels take, chosen once at run time from the CPU (cpuid via
// __builtin_cpu_supports). SURF_ISA=scalar|avx2|avx512 caps the level (tests run every path on
// one machine; an operator can rule out a path).
#pragma once

namespace surf::kernels {

enum class IsaLevel { scalar, avx2, avx512 };

struct Isa {
  IsaLevel level = IsaLevel::scalar;  // avx2: AVX2+FMA+F16C; avx512: + AVX-512 F/BW/VL/DQ
  bool vnni = false;                  // int8 dot products: AVX512_VNNI (avx512) or AVX-VNNI (avx2)
  bool bf16 = false;                  // AVX512_BF16 (vdpbf16ps), avx512 level only
};

const Isa& isa();
const char* isa_name(const Isa& isa);  // e.g. "avx512+vnni+bf16"
// Overrides the detected paths (tests); capped at what the CPU has. Not thread-safe with running kernels.
void set_isa_for_testing(IsaLevel level, bool vnni, bool bf16);
// Back to what the CPU and SURF_ISA allow.
void reset_isa_for_testing();

}  // namespace surf::kernels
