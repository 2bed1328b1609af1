// Added tokens of tokenizer.json: found in the text before anything else runs (so special tokens
// are never split), leftmost-longest, with HF's single_word / lstrip / rstrip rules.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace surf::text {

struct AddedToken {
  int64_t id = 0;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

// A run of the input: either text (token < 0) or an added token.
struct Segment {
  size_t begin, end;
  int64_t token;  // id, or -1 for text
};

class AddedTokenMatcher {
 public:
  // `patterns[i]` is what to look for (the content, normalised for normalized tokens).
  void build(std::vector<AddedToken> tokens, std::vector<std::string> patterns);
  bool empty() const { return tokens_.empty(); }
  // Splits s into text and token segments covering it.
  void split(std::string_view s, std::vector<Segment>& out) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> next;  // sorted by byte
    int32_t token = -1;
  };
  int32_t child(int32_t node, unsigned char c) const;
  std::vector<Node> nodes_;
  std::vector<AddedToken> tokens_;
  bool first_byte_[256] = {};
};

}  // namespace surf::text
