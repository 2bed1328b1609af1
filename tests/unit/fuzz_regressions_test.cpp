// Every committed reproducer of a past finding (tests/fuzz/regressions/<target>/) is refused with
// a clear surf::Error: no crash, no sanitizer report, no other exception.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include "../fuzz/targets.h"
#include "text/unicode.h"

namespace fs = std::filesystem;

namespace {

fs::path regressions_dir() {
  const char* fixtures = std::getenv("SURF_TEST_FIXTURES");  // set by meson test
  if (fixtures == nullptr) throw std::runtime_error("SURF_TEST_FIXTURES is not set (run through meson test)");
  return fs::path(fixtures).parent_path() / "fuzz" / "regressions";
}

std::vector<uint8_t> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST(FuzzRegressions, EveryReproducerIsRefusedCleanly) {
  size_t replayed = 0;
  for (const auto& t : surf::fuzz::targets()) {
    const fs::path dir = regressions_dir() / t.name;
    if (!fs::is_directory(dir)) continue;
    for (const auto& e : fs::directory_iterator(dir)) {
      const auto bytes = read_file(e.path());
      const auto refused = t.run(bytes.data(), bytes.size());
      ASSERT_TRUE(refused.has_value()) << t.name << "/" << e.path().filename() << " was accepted";
      EXPECT_LT(refused->size(), 400u) << "the message should quote a short excerpt at most: " << *refused;
      ++replayed;
    }
  }
  EXPECT_GE(replayed, 14u);
}

TEST(FuzzRegressions, NamedFindings) {
  auto refusal = [](const char* target, const char* file) {
    const auto bytes = read_file(regressions_dir() / target / file);
    return surf::fuzz::target(target).run(bytes.data(), bytes.size()).value_or("ACCEPTED");
  };
  EXPECT_NE(refusal("chunk", "zstd-unknown-content-size").find("frame size"), std::string::npos);
  EXPECT_NE(refusal("chunk", "array32-4g-elements").find("not a valid msgpack chunk"), std::string::npos);
  EXPECT_NE(refusal("chunk", "shape-numel-overflow").find("2^63"), std::string::npos);
  EXPECT_NE(refusal("safetensors_header", "dims-above-2-63").find("bad dimension"), std::string::npos);
  EXPECT_NE(refusal("safetensors_header", "overlapping-offsets").find("overlap"), std::string::npos);
  EXPECT_NE(refusal("safetensors_header", "deep-nesting").find("deeper than"), std::string::npos);
  EXPECT_NE(refusal("manifest", "deep-nesting").find("deeper than"), std::string::npos);
  EXPECT_NE(refusal("manifest", "float-bytes").find("not a non-negative integer"), std::string::npos);
  EXPECT_NE(refusal("manifest", "duplicate-ids").find("listed twice"), std::string::npos);
  EXPECT_NE(refusal("manifest", "negative-shape").find("non-negative integer"), std::string::npos);
  EXPECT_NE(refusal("config", "deep-nesting").find("deeper than"), std::string::npos);
  // Refused by the shape walk from its first 5 bytes, before msgpack-c sees it.
  EXPECT_EQ(refusal("wire_request", "array32-4g-elements"), "not a msgpack request: it holds more than 256 values");
  EXPECT_NE(refusal("wire_answer", "array32-4g-elements").find("malformed answer"), std::string::npos);
  EXPECT_NE(refusal("wire_answer", "data-header-only").find("malformed answer"), std::string::npos);
  // A SentencePiece charsmap whose replacement strings are not UTF-8: the pre-tokenizer after it
  // read past the end of a string cut inside a character (found by fuzz_tokenizer_json).
  // Floats where integers belong: converting 5.5e81 to an integer is undefined (UBSan, fuzz_tokenizer_json).
  EXPECT_NE(refusal("tokenizer_json", "float-id").find("expected an integer"), std::string::npos);
  EXPECT_NE(refusal("manifest", "float-format-version").find("not a non-negative integer"), std::string::npos);
  EXPECT_NE(refusal("tokenizer_json", "charsmap-invalid-utf8").find("is not valid UTF-8 (corrupt charsmap)"),
            std::string::npos);
}

TEST(FuzzRegressions, CodePointCutShortByTheEndDecodesAsReplacement) {
  const std::string s = "a\xe2\x82";  // '€' without its last byte
  size_t i = 0;
  EXPECT_EQ(surf::text::next_code_point(s, i), U'a');
  EXPECT_EQ(surf::text::next_code_point(s, i), char32_t{0xFFFD});
  EXPECT_EQ(i, s.size());
}
