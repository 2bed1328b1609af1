// Fuzz targets: each parses untrusted bytes the way the runtime does. A surf::Error is a clean
// refusal (its message is returned); a crash, a sanitizer report or any other exception is a
// finding. The same functions run under libFuzzer (fuzz_main.cpp, clang builds with -Dfuzz=true)
// and replay the committed reproducers in the unit tests (tests/unit/fuzz_regressions_test.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace surf::fuzz {

struct Target {
  const char* name;  // also the folder under tests/fuzz/regressions and the corpus
  // nullopt: accepted; else the refusal's message.
  std::optional<std::string> (*run)(const uint8_t* data, size_t size);
};

const std::vector<Target>& targets();
const Target& target(const std::string& name);

}  // namespace surf::fuzz
