#include "text/added_tokens.h"

#include <algorithm>

#include "text/unicode.h"

namespace surf::text {

int32_t AddedTokenMatcher::child(int32_t node, unsigned char c) const {
  const auto& next = nodes_[static_cast<size_t>(node)].next;
  auto it = std::lower_bound(next.begin(), next.end(), c, [](const auto& p, unsigned char v) { return p.first < v; });
  return it != next.end() && it->first == c ? it->second : -1;
}

void AddedTokenMatcher::build(std::vector<AddedToken> tokens, std::vector<std::string> patterns) {
  tokens_ = std::move(tokens);
  nodes_.assign(1, Node{});
  for (size_t t = 0; t < patterns.size(); ++t) {
    const std::string& p = patterns[t];
    if (p.empty()) continue;
    first_byte_[static_cast<unsigned char>(p[0])] = true;
    int32_t node = 0;
    for (char ch : p) {
      const auto c = static_cast<unsigned char>(ch);
      int32_t nx = child(node, c);
      if (nx < 0) {
        nx = static_cast<int32_t>(nodes_.size());
        auto& next = nodes_[static_cast<size_t>(node)].next;
        next.insert(
            std::lower_bound(next.begin(), next.end(), c, [](const auto& a, unsigned char v) { return a.first < v; }),
            {c, nx});
        nodes_.emplace_back();
      }
      node = nx;
    }
    if (nodes_[static_cast<size_t>(node)].token < 0) nodes_[static_cast<size_t>(node)].token = static_cast<int32_t>(t);
  }
}

namespace {

bool is_word_char(char32_t c) { return c == '_' || is_alphanumeric(c) || is_mark(c); }

char32_t last_char(std::string_view s) {
  size_t k = s.size() - 1;
  while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
  size_t i = k;
  return next_code_point(s, i);
}

}  // namespace

void AddedTokenMatcher::split(std::string_view s, std::vector<Segment>& out) const {
  size_t start_offset = 0;
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    if (!first_byte_[static_cast<unsigned char>(s[i])]) {
      ++i;
      continue;
    }
    // Longest token starting at i.
    int32_t node = 0, best = -1;
    size_t best_end = i;
    for (size_t k = i; k < n; ++k) {
      node = child(node, static_cast<unsigned char>(s[k]));
      if (node < 0) break;
      if (nodes_[static_cast<size_t>(node)].token >= 0) {
        best = nodes_[static_cast<size_t>(node)].token;
        best_end = k + 1;
      }
    }
    if (best < 0) {
      ++i;
      continue;
    }
    const AddedToken& tok = tokens_[static_cast<size_t>(best)];
    size_t start = i, stop = best_end;
    if (tok.single_word) {
      const bool start_space = start == 0 || !is_word_char(last_char(s.substr(0, start)));
      size_t k = stop;
      const bool stop_space = stop == n || !is_word_char(next_code_point(s, k));
      if (!start_space || !stop_space) {
        i = best_end;  // the search goes on after this match, as an automaton's would
        continue;
      }
    }
    if (tok.lstrip) {
      size_t b = start;
      while (b > 0) {
        size_t k = b - 1;
        while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
        size_t j = k;
        if (!is_whitespace(next_code_point(s, j))) break;
        b = k;
      }
      start = std::max(b, start_offset);
    }
    if (tok.rstrip) {
      while (stop < n) {
        size_t j = stop;
        if (!is_whitespace(next_code_point(s, j))) break;
        stop = j;
      }
    }
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, tok.id});
    start_offset = stop;
    i = std::max(best_end, stop);
  }
  if (start_offset < n) out.push_back({start_offset, n, -1});
}

}  // namespace surf::text
