// libFuzzer entry point for one target, chosen at build time (-DSURF_FUZZ_TARGET="chunk").
#include "targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const surf::fuzz::Target& t = surf::fuzz::target(SURF_FUZZ_TARGET);
  t.run(data, size);
  return 0;
}
