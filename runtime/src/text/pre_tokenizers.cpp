// Pre-tokenizers of tokenizer.json: ByteLevel, Split, Metaspace, Whitespace, WhitespaceSplit,
// BertPreTokenizer, Punctuation, Digits, CharDelimiterSplit, Sequence. Splitting follows HF's
// NormalizedString::split: delimiters found by a regex or a character class, then removed,
// isolated, merged with the previous or next piece, or merged when contiguous.
#include <array>
#include <functional>
#include <nlohmann/json.hpp>

#include "surf/error.h"
#include "text/pipeline.h"
#include "text/unicode.h"

namespace surf::text {

const std::string& byte_to_symbol(unsigned char b) {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    int n = 0;
    for (int c = 0; c < 256; ++c) {
      const bool printable = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF);
      std::string s;
      append_utf8(s, printable ? static_cast<char32_t>(c) : static_cast<char32_t>(256 + n++));
      t[static_cast<size_t>(c)] = s;
    }
    return t;
  }();
  return table[b];
}

int symbol_to_byte(char32_t c) {
  static const std::array<int, 512> table = [] {
    std::array<int, 512> t;
    t.fill(-1);
    for (int b = 0; b < 256; ++b) {
      const std::string& s = byte_to_symbol(static_cast<unsigned char>(b));
      size_t i = 0;
      t[next_code_point(s, i)] = b;
    }
    return t;
  }();
  return c < 512 ? table[c] : -1;
}

namespace {

enum class Behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

Behavior parse_behavior(const Json& j, const std::string& path, Behavior fallback) {
  if (j.is_null()) return fallback;
  const std::string b = j.get<std::string>();
  if (b == "Removed") return Behavior::removed;
  if (b == "Isolated") return Behavior::isolated;
  if (b == "MergedWithPrevious") return Behavior::merged_with_previous;
  if (b == "MergedWithNext") return Behavior::merged_with_next;
  if (b == "Contiguous") return Behavior::contiguous;
  json_fail(path, "unsupported behavior '" + b + "'");
}

struct Span {
  size_t begin, end;
  bool match;
};

// Splits piece `p` at `delims` (sorted, non-overlapping) as NormalizedString::split does.
void split_piece(Piece& p, const std::vector<std::pair<size_t, size_t>>& delims, Behavior behavior, bool invert,
                 std::vector<Piece>& out) {
  std::vector<Span> spans;
  spans.reserve(delims.size() * 2 + 1);
  size_t prev = 0;
  for (auto [b, e] : delims) {
    if (prev < b) spans.push_back({prev, b, false});
    spans.push_back({b, e, true});
    prev = e;
  }
  if (prev < p.text.size()) spans.push_back({prev, p.text.size(), false});
  if (invert) {
    for (auto& s : spans) s.match = !s.match;
  }
  std::vector<Span> res;  // match == true here means "remove"
  switch (behavior) {
    case Behavior::removed:
      res = spans;
      break;
    case Behavior::isolated:
      for (auto s : spans) res.push_back({s.begin, s.end, false});
      break;
    case Behavior::contiguous: {
      bool previous = false;
      for (auto s : spans) {
        if (s.match == previous && !res.empty()) {
          res.back().end = s.end;
        } else {
          res.push_back({s.begin, s.end, false});
        }
        previous = s.match;
      }
      break;
    }
    case Behavior::merged_with_previous: {
      bool previous = false;
      for (auto s : spans) {
        if (s.match && !previous && !res.empty()) {
          res.back().end = s.end;
        } else {
          res.push_back({s.begin, s.end, false});
        }
        previous = s.match;
      }
      break;
    }
    case Behavior::merged_with_next: {
      bool previous = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->match && !previous && !res.empty()) {
          res.back().begin = it->begin;
        } else {
          res.push_back({it->begin, it->end, false});
        }
        previous = it->match;
      }
      std::reverse(res.begin(), res.end());
      break;
    }
  }
  if (res.size() == 1 && !res[0].match && res[0].begin == 0 && res[0].end == p.text.size()) {
    out.push_back(std::move(p));
    return;
  }
  for (const auto& s : res) {
    if (s.match || s.end <= s.begin) continue;
    out.push_back({p.text.substr(s.begin, s.end - s.begin), p.first && s.begin == 0});
  }
}

void char_matches(std::string_view s, const std::function<bool(char32_t)>& pred,
                  std::vector<std::pair<size_t, size_t>>& out) {
  size_t i = 0;
  while (i < s.size()) {
    const size_t start = i;
    if (pred(next_code_point(s, i))) out.emplace_back(start, i);
  }
}

template <class Find>
void split_all(std::vector<Piece>& pieces, Behavior behavior, bool invert, Find&& find) {
  std::vector<Piece> out;
  out.reserve(pieces.size());
  std::vector<std::pair<size_t, size_t>> m;
  for (auto& p : pieces) {
    m.clear();
    find(p.text, m);
    split_piece(p, m, behavior, invert, out);
  }
  pieces = std::move(out);
}

const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPre final : public PreTokenizer {
 public:
  ByteLevelPre(bool add_prefix_space, bool use_regex) : add_prefix_space_(add_prefix_space) {
    if (use_regex) regex_ = std::make_unique<Regex>(kGpt2Pattern);
  }
  void apply(std::vector<Piece>& pieces) const override {
    if (add_prefix_space_) {
      for (auto& p : pieces) {
        if (p.text.empty() || p.text[0] != ' ') p.text.insert(p.text.begin(), ' ');
      }
    }
    if (regex_)
      split_all(pieces, Behavior::isolated, false, [&](std::string_view s, auto& m) { regex_->find_all(s, m); });
    for (auto& p : pieces) {
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (char c : p.text) mapped += byte_to_symbol(static_cast<unsigned char>(c));
      p.text = std::move(mapped);
    }
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

class SplitPre final : public PreTokenizer {
 public:
  SplitPre(const Json& pattern, Behavior behavior, bool invert, const std::string& path)
      : behavior_(behavior), invert_(invert) {
    if (pattern.contains("String")) {
      regex_ = std::make_unique<Regex>(Regex::escape(pattern["String"].get<std::string>()));
    } else if (pattern.contains("Regex")) {
      regex_ = std::make_unique<Regex>(pattern["Regex"].get<std::string>());
    } else {
      json_fail(path + ".pattern", "expected String or Regex");
    }
  }
  void apply(std::vector<Piece>& pieces) const override {
    split_all(pieces, behavior_, invert_, [&](std::string_view s, auto& m) { regex_->find_all(s, m); });
  }

 private:
  std::unique_ptr<Regex> regex_;
  Behavior behavior_;
  bool invert_;
};

class MetaspacePre final : public PreTokenizer {
 public:
  enum class Scheme { always, first, never };
  MetaspacePre(std::string replacement, Scheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {
    size_t i = 0;
    replacement_char_ = next_code_point(replacement_, i);
  }
  void apply(std::vector<Piece>& pieces) const override {
    for (auto& p : pieces) {
      if (p.text.find(' ') != std::string::npos) {
        std::string r;
        r.reserve(p.text.size() + 8);
        for (char c : p.text) {
          if (c == ' ') {
            r += replacement_;
          } else {
            r.push_back(c);
          }
        }
        p.text = std::move(r);
      }
      const bool starts = p.text.rfind(replacement_, 0) == 0;
      if (!starts && (scheme_ == Scheme::always || (scheme_ == Scheme::first && p.first)))
        p.text = replacement_ + p.text;
    }
    if (split_) {
      split_all(pieces, Behavior::merged_with_next, false, [&](std::string_view s, auto& m) {
        size_t pos = s.find(replacement_);
        while (pos != std::string_view::npos) {
          m.emplace_back(pos, pos + replacement_.size());
          pos = s.find(replacement_, pos + replacement_.size());
        }
      });
    }
  }

 private:
  std::string replacement_;
  char32_t replacement_char_;
  Scheme scheme_;
  bool split_;
};

class PredicatePre final : public PreTokenizer {
 public:
  PredicatePre(std::function<bool(char32_t)> pred, Behavior behavior) : pred_(std::move(pred)), behavior_(behavior) {}
  void apply(std::vector<Piece>& pieces) const override {
    split_all(pieces, behavior_, false, [&](std::string_view s, auto& m) { char_matches(s, pred_, m); });
  }

 private:
  std::function<bool(char32_t)> pred_;
  Behavior behavior_;
};

class WhitespacePre final : public PreTokenizer {
 public:
  WhitespacePre() : regex_(R"(\w+|[^\w\s]+)") {}
  void apply(std::vector<Piece>& pieces) const override {
    split_all(pieces, Behavior::removed, true, [&](std::string_view s, auto& m) { regex_.find_all(s, m); });
  }

 private:
  Regex regex_;
};

class SequencePre final : public PreTokenizer {
 public:
  std::vector<std::unique_ptr<PreTokenizer>> parts;
  void apply(std::vector<Piece>& pieces) const override {
    for (const auto& p : parts) p->apply(pieces);
  }
};

bool get_bool(const Json& j, const char* key, bool fallback) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? fallback : it->get<bool>();
}

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& j, const std::string& path) {
  if (j.is_null()) return nullptr;
  if (!j.is_object() || !j.contains("type")) json_fail(path, "expected an object with a type", false);
  const std::string type = j["type"].get<std::string>();
  if (type == "Sequence") {
    auto seq = std::make_unique<SequencePre>();
    const Json& list = j.at("pretokenizers");
    for (size_t i = 0; i < list.size(); ++i) {
      if (auto p = make_pre_tokenizer(list[i], path + ".pretokenizers[" + std::to_string(i) + "]"))
        seq->parts.push_back(std::move(p));
    }
    return seq;
  }
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelPre>(get_bool(j, "add_prefix_space", true), get_bool(j, "use_regex", true));
  if (type == "Split") {
    return std::make_unique<SplitPre>(
        j.at("pattern"), parse_behavior(j.value("behavior", Json()), path + ".behavior", Behavior::isolated),
        get_bool(j, "invert", false), path);
  }
  if (type == "Metaspace") {
    MetaspacePre::Scheme scheme =
        get_bool(j, "add_prefix_space", true) ? MetaspacePre::Scheme::always : MetaspacePre::Scheme::never;
    if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null()) {
      const std::string s = j["prepend_scheme"].get<std::string>();
      if (s == "always") {
        scheme = MetaspacePre::Scheme::always;
      } else if (s == "first") {
        scheme = MetaspacePre::Scheme::first;
      } else if (s == "never") {
        scheme = MetaspacePre::Scheme::never;
      } else {
        json_fail(path + ".prepend_scheme", "unsupported '" + s + "'");
      }
    }
    return std::make_unique<MetaspacePre>(j.value("replacement", std::string("\xE2\x96\x81")), scheme,
                                          get_bool(j, "split", true));
  }
  if (type == "Whitespace") return std::make_unique<WhitespacePre>();
  if (type == "WhitespaceSplit") return std::make_unique<PredicatePre>(is_whitespace, Behavior::removed);
  if (type == "BertPreTokenizer") {
    auto seq = std::make_unique<SequencePre>();
    seq->parts.push_back(std::make_unique<PredicatePre>(is_whitespace, Behavior::removed));
    seq->parts.push_back(std::make_unique<PredicatePre>(is_punctuation, Behavior::isolated));
    return seq;
  }
  if (type == "Punctuation") {
    return std::make_unique<PredicatePre>(
        is_punctuation, parse_behavior(j.value("behavior", Json()), path + ".behavior", Behavior::isolated));
  }
  if (type == "Digits") {
    return std::make_unique<PredicatePre>(
        is_numeric, get_bool(j, "individual_digits", false) ? Behavior::isolated : Behavior::contiguous);
  }
  if (type == "CharDelimiterSplit") {
    const std::string d = j.at("delimiter").get<std::string>();
    size_t i = 0;
    const char32_t dc = next_code_point(d, i);
    return std::make_unique<PredicatePre>([dc](char32_t c) { return c == dc; }, Behavior::removed);
  }
  json_fail(path + ".type", "unsupported '" + type + "'");
}

}  // namespace surf::text
