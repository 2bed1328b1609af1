// CPU features the kernels dispatch on, for what __builtin_cpu_supports does not name in every
// compiler (clang 14 lacks "f16c").
#pragma once

#include <cpuid.h>

namespace surf {

inline bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}

}  // namespace surf
