// UTF-8 and Unicode helpers of the tokenizers: code point iteration, character classes as Rust's
// char methods define them (HF tokenizers is Rust), ICU normalisation and case mapping, grapheme
// clusters, and PCRE2 regular expressions (JIT-compiled, UTF + Unicode properties).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace surf::text {

// Length of the UTF-8 sequence that starts with byte `b` (1 for a stray continuation byte).
inline size_t utf8_length(unsigned char b) {
  if (b < 0x80) return 1;
  if ((b & 0xE0) == 0xC0) return 2;
  if ((b & 0xF0) == 0xE0) return 3;
  if ((b & 0xF8) == 0xF0) return 4;
  return 1;
}

// Decodes the code point at s[i] (s should be valid UTF-8) and advances i. A sequence cut short
// by the end of `s` is consumed whole and decodes as U+FFFD: never a read past the end.
inline char32_t next_code_point(std::string_view s, size_t& i) {
  const auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) {
    ++i;
    return b;
  }
  const size_t n = utf8_length(b);
  if (n > s.size() - i) {
    i = s.size();
    return 0xFFFD;
  }
  char32_t c = b & (0xFF >> (n + 1));
  for (size_t k = 1; k < n; ++k) c = (c << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += n;
  return c;
}

void append_utf8(std::string& out, char32_t c);

// Position of the first byte that makes `s` invalid UTF-8, or npos.
size_t find_invalid_utf8(std::string_view s);
// Throws Error(invalid_argument) naming the byte offset when `s` is not valid UTF-8.
void require_utf8(std::string_view s, std::string_view what);
// True when `s` ends inside a multi-byte sequence or with U+FFFD (a decode still waiting for bytes).
bool ends_incomplete(std::string_view s);

// Character classes as Rust's char methods and HF tokenizers use them.
bool is_whitespace(char32_t c);       // White_Space property (char::is_whitespace)
bool is_alphanumeric(char32_t c);     // Alphabetic or numeric (char::is_alphanumeric)
bool is_numeric(char32_t c);          // general category N*
bool is_punctuation(char32_t c);      // ASCII punctuation or general category P*
bool is_control_other(char32_t c);    // general category C* (Cc, Cf, Cn, Co, Cs)
bool is_nonspacing_mark(char32_t c);  // Mn
bool is_mark(char32_t c);             // Mn, Mc, Me

enum class NormalForm { nfc, nfd, nfkc, nfkd };
std::string normalize(std::string_view s, NormalForm form);
// Full lowercase mapping per code point, no context (as Rust's char::to_lowercase).
std::string lowercase(std::string_view s);
// Byte ranges of the extended grapheme clusters of s (ICU's character break iterator).
std::vector<std::pair<size_t, size_t>> graphemes(std::string_view s);

// A compiled regular expression (PCRE2, UTF + UCP, JIT when available). Thread-safe.
class Regex {
 public:
  // `pattern` in the syntax of HF tokenizer.json (Oniguruma's, which PCRE2 reads for these).
  explicit Regex(const std::string& pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Non-overlapping matches, left to right, as byte ranges (empty matches are skipped).
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;
  static std::string escape(std::string_view literal);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace surf::text
