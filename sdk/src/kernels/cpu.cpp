#include "kernels/cpu.h"

#include <cpuid.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace surf::kernels {

namespace {

// cpuid and xgetbv directly: __builtin_cpu_supports does not name every feature in every compiler
// (clang 14 lacks "f16c" and "avxvnni"), and the OS must also save the vector registers.
struct Features {
  bool avx2 = false, fma = false, f16c = false, avx512 = false, avx512vnni = false, avx512bf16 = false, avxvnni = false;
};

uint64_t xgetbv0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

Features features() {
  Features f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c & bit_OSXSAVE) != 0, avx = (c & bit_AVX) != 0;
  f.fma = (c & bit_FMA) != 0;
  f.f16c = (c & bit_F16C) != 0;
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = xgetbv0();
  const bool ymm = (xcr0 & 0x6) == 0x6, zmm = (xcr0 & 0xe6) == 0xe6;
  if (!ymm) return f;
  unsigned max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  f.avx2 = (b & (1u << 5)) != 0;
  const bool avx512f = (b & (1u << 16)) != 0, avx512dq = (b & (1u << 17)) != 0, avx512bw = (b & (1u << 30)) != 0,
             avx512vl = (b & (1u << 31)) != 0;
  f.avx512 = zmm && avx512f && avx512dq && avx512bw && avx512vl;
  f.avx512vnni = f.avx512 && (c & (1u << 11)) != 0;
  const unsigned sub = a;  // highest subleaf of leaf 7
  if (sub >= 1) {
    __cpuid_count(7, 1, a, b, c, d);
    f.avxvnni = (a & (1u << 4)) != 0;
    f.avx512bf16 = f.avx512 && (a & (1u << 5)) != 0;
  }
  return f;
}

Isa detect() {
  static const Features f = features();
  Isa best;
  const bool avx2 = f.avx2 && f.fma && f.f16c;
  const bool avx512 = avx2 && f.avx512;
  best.level = avx512 ? IsaLevel::avx512 : avx2 ? IsaLevel::avx2 : IsaLevel::scalar;
  if (avx512) {
    best.vnni = f.avx512vnni;
    best.bf16 = f.avx512bf16;
  } else if (avx2) {
    best.vnni = f.avxvnni;
  }
  if (const char* cap = std::getenv("SURF_ISA")) {
    if (std::strcmp(cap, "scalar") == 0) {
      best = Isa{};
    } else if (std::strcmp(cap, "avx2") == 0 && best.level == IsaLevel::avx512) {
      best.level = IsaLevel::avx2;
      best.vnni = f.avxvnni;
      best.bf16 = false;
    }
  }
  return best;
}

Isa& current() {
  static Isa isa = detect();
  return isa;
}

bool cpu_avxvnni() {
  static const bool yes = features().avxvnni;
  return yes;
}

}  // namespace

const Isa& isa() { return current(); }

const char* isa_name(const Isa& i) {
  switch (i.level) {
    case IsaLevel::scalar:
      return "scalar";
    case IsaLevel::avx2:
      return i.vnni ? "avx2+avx-vnni" : "avx2";
    case IsaLevel::avx512:
      return i.vnni ? (i.bf16 ? "avx512+vnni+bf16" : "avx512+vnni") : (i.bf16 ? "avx512+bf16" : "avx512");
  }
  return "?";
}

void set_isa_for_testing(IsaLevel level, bool vnni, bool bf16) {
  const Isa cpu = detect();
  Isa want;
  want.level = level > cpu.level ? cpu.level : level;
  want.vnni = vnni && (want.level == IsaLevel::avx512 ? cpu.vnni && cpu.level == IsaLevel::avx512
                                                      : want.level == IsaLevel::avx2 && cpu_avxvnni());
  want.bf16 = bf16 && want.level == IsaLevel::avx512 && cpu.bf16;
  current() = want;
}

void reset_isa_for_testing() { current() = detect(); }

}  // namespace surf::kernels
