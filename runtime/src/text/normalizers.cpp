// Normalizers of tokenizer.json: Unicode forms (ICU), Lowercase, Strip, StripAccents, Replace,
// Prepend, BertNormalizer, Nmt, Precompiled (SentencePiece's charsmap, read as HF reads it) and
// Sequence.
#include <nlohmann/json.hpp>

#include "surf/error.h"
#include "text/pipeline.h"
#include "text/unicode.h"

namespace surf::text {

void json_fail(const std::string& path, const std::string& what, bool unsupported) {
  fail(unsupported ? ErrorCode::unsupported : ErrorCode::invalid_argument, "tokenizer.json: " + path + ": " + what);
}

int64_t json_int(const Json& v, const std::string& path) {
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    json_fail(path, "integer out of range", false);
  }
  if (!v.is_number_integer()) json_fail(path, "expected an integer, got " + std::string(v.type_name()), false);
  return v.get<int64_t>();
}

std::vector<int64_t> json_ints(const Json& v, const std::string& path) {
  if (!v.is_array()) json_fail(path, "expected an array of integers", false);
  std::vector<int64_t> out;
  for (size_t i = 0; i < v.size(); ++i) out.push_back(json_int(v[i], path + "[" + std::to_string(i) + "]"));
  return out;
}

namespace {

template <class Fn>
std::string map_chars(std::string_view s, Fn&& fn) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const size_t start = i;
    const char32_t c = next_code_point(s, i);
    fn(c, s.substr(start, i - start), out);
  }
  return out;
}

class SequenceNormalizer final : public Normalizer {
 public:
  std::vector<std::unique_ptr<Normalizer>> parts;
  void apply(std::string& s) const override {
    for (const auto& p : parts) p->apply(s);
  }
};

class FormNormalizer final : public Normalizer {
 public:
  explicit FormNormalizer(NormalForm f) : form_(f) {}
  void apply(std::string& s) const override { s = normalize(s, form_); }

 private:
  NormalForm form_;
};

class LowercaseNormalizer final : public Normalizer {
 public:
  void apply(std::string& s) const override { s = lowercase(s); }
};

class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void apply(std::string& s) const override {
    size_t b = 0, e = s.size();
    if (left_) {
      while (b < e) {
        size_t i = b;
        if (!is_whitespace(next_code_point(s, i))) break;
        b = i;
      }
    }
    if (right_) {
      while (e > b) {
        size_t k = e - 1;
        while (k > b && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
        size_t i = k;
        if (!is_whitespace(next_code_point(s, i))) break;
        e = k;
      }
    }
    s = s.substr(b, e - b);
  }

 private:
  bool left_, right_;
};

class StripAccentsNormalizer final : public Normalizer {
 public:
  void apply(std::string& s) const override {
    s = map_chars(s, [](char32_t c, std::string_view raw, std::string& out) {
      if (!is_mark(c)) out.append(raw);
    });
  }
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(const Json& pattern, std::string content, const std::string& path) : content_(std::move(content)) {
    if (pattern.contains("String")) {
      literal_ = pattern["String"].get<std::string>();
      if (literal_.empty()) json_fail(path + ".pattern.String", "empty pattern", false);
    } else if (pattern.contains("Regex")) {
      regex_ = std::make_unique<Regex>(pattern["Regex"].get<std::string>());
    } else {
      json_fail(path + ".pattern", "expected String or Regex");
    }
  }
  void apply(std::string& s) const override {
    if (regex_) {
      std::vector<std::pair<size_t, size_t>> m;
      regex_->find_all(s, m);
      if (m.empty()) return;
      std::string out;
      size_t prev = 0;
      for (auto [b, e] : m) {
        out.append(s, prev, b - prev);
        out += content_;
        prev = e;
      }
      out.append(s, prev, std::string::npos);
      s = std::move(out);
      return;
    }
    size_t pos = s.find(literal_);
    if (pos == std::string::npos) return;
    std::string out;
    size_t prev = 0;
    while (pos != std::string::npos) {
      out.append(s, prev, pos - prev);
      out += content_;
      prev = pos + literal_.size();
      pos = s.find(literal_, prev);
    }
    out.append(s, prev, std::string::npos);
    s = std::move(out);
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
  std::string content_;
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string p) : prepend_(std::move(p)) {}
  void apply(std::string& s) const override {
    if (!s.empty()) s = prepend_ + s;
  }

 private:
  std::string prepend_;
};

bool is_chinese_char(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

class BertNormalizer final : public Normalizer {
 public:
  BertNormalizer(bool clean, bool chinese, bool strip_accents, bool lower)
      : clean_(clean), chinese_(chinese), strip_accents_(strip_accents), lower_(lower) {}
  void apply(std::string& s) const override {
    if (clean_) {
      s = map_chars(s, [](char32_t c, std::string_view raw, std::string& out) {
        const bool control = c != '\t' && c != '\n' && c != '\r' && is_control_other(c);
        if (c == 0 || c == 0xFFFD || control) return;
        if (is_whitespace(c)) {
          out.push_back(' ');
        } else {
          out.append(raw);
        }
      });
    }
    if (chinese_) {
      s = map_chars(s, [](char32_t c, std::string_view raw, std::string& out) {
        if (is_chinese_char(c)) {
          out.push_back(' ');
          out.append(raw);
          out.push_back(' ');
        } else {
          out.append(raw);
        }
      });
    }
    if (strip_accents_) {
      s = map_chars(normalize(s, NormalForm::nfd), [](char32_t c, std::string_view raw, std::string& out) {
        if (!is_nonspacing_mark(c)) out.append(raw);
      });
    }
    if (lower_) s = lowercase(s);
  }

 private:
  bool clean_, chinese_, strip_accents_, lower_;
};

// SentencePiece's NMT normalizer: drops control characters, maps some spaces to ' '.
class NmtNormalizer final : public Normalizer {
 public:
  void apply(std::string& s) const override {
    s = map_chars(s, [](char32_t c, std::string_view raw, std::string& out) {
      if ((c >= 0x0001 && c <= 0x0008) || c == 0x000B || (c >= 0x000E && c <= 0x001F) || c == 0x007F || c == 0x008F ||
          c == 0x009F) {
        return;
      }
      if (c == 0x0009 || c == 0x000A || c == 0x000C || c == 0x000D || c == 0x1680 || (c >= 0x200B && c <= 0x200F) ||
          c == 0x2028 || c == 0x2029 || c == 0x2581 || c == 0xFEFF || c == 0xFFFD) {
        out.push_back(' ');
        return;
      }
      out.append(raw);
    });
  }
};

std::string base64_decode(std::string_view in, const std::string& path) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=' || c == '\n' || c == '\r') continue;
    const int v = val(c);
    if (v < 0) json_fail(path, "not base64", false);
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return out;
}

// The precompiled charsmap: a Darts double-array trie over UTF-8 keys whose values index
// NUL-terminated replacement strings. Applied per grapheme as HF's spm_precompiled does: a
// grapheme under 6 bytes is replaced whole when a prefix of it is in the trie; otherwise each
// character is looked up on its own.
class PrecompiledNormalizer final : public Normalizer {
 public:
  PrecompiledNormalizer(std::string_view b64, const std::string& path) {
    const std::string blob = base64_decode(b64, path);
    if (blob.size() < 4) json_fail(path, "precompiled_charsmap too short", false);
    uint32_t trie_bytes = 0;
    for (int k = 3; k >= 0; --k) trie_bytes = (trie_bytes << 8) | static_cast<unsigned char>(blob[k]);
    if (trie_bytes % 4 != 0 || 4 + static_cast<size_t>(trie_bytes) > blob.size()) {
      json_fail(path, "precompiled_charsmap is malformed", false);
    }
    array_.resize(trie_bytes / 4);
    for (size_t i = 0; i < array_.size(); ++i) {
      uint32_t u = 0;
      for (int k = 3; k >= 0; --k) u = (u << 8) | static_cast<unsigned char>(blob[4 + i * 4 + k]);
      array_[i] = u;
    }
    normalized_ = blob.substr(4 + trie_bytes);
    path_ = path;
  }

  void apply(std::string& s) const override {
    if (array_.empty()) return;
    std::string out;
    out.reserve(s.size());
    for (auto [b, e] : graphemes(s)) {
      const std::string_view g(s.data() + b, e - b);
      if (g.size() < 6) {
        if (auto norm = transform(g)) {
          out.append(*norm);
          continue;
        }
      }
      size_t i = 0;
      while (i < g.size()) {
        const size_t n = utf8_length(static_cast<unsigned char>(g[i]));
        const std::string_view part = g.substr(i, n);
        if (auto norm = transform(part)) {
          out.append(*norm);
        } else {
          out.append(part);
        }
        i += n;
      }
    }
    s = std::move(out);
  }

 private:
  static uint32_t offset(uint32_t unit) { return (unit >> 10) << ((unit & (1u << 9)) >> 6); }
  static uint32_t label(uint32_t unit) { return unit & ((1u << 31) | 0xFF); }
  static bool has_leaf(uint32_t unit) { return ((unit >> 8) & 1) == 1; }
  static uint32_t value(uint32_t unit) { return unit & ((1u << 31) - 1); }

  // The value of the shortest key that is a prefix of `key` (the first common-prefix result).
  std::optional<std::string_view> transform(std::string_view key) const {
    size_t node = 0;
    uint32_t unit = array_[node];
    node ^= offset(unit);
    for (char ch : key) {
      const auto c = static_cast<unsigned char>(ch);
      if (c == 0) break;
      node ^= c;
      if (node >= array_.size()) return std::nullopt;
      unit = array_[node];
      if (label(unit) != c) return std::nullopt;
      node ^= offset(unit);
      if (node >= array_.size()) return std::nullopt;
      if (has_leaf(unit)) {
        const size_t index = value(array_[node]);
        if (index >= normalized_.size()) return std::nullopt;
        const size_t end = normalized_.find('\0', index);
        const std::string_view out =
            std::string_view(normalized_).substr(index, (end == std::string::npos ? normalized_.size() : end) - index);
        // A replacement must be text: the pre-tokenizers and models after it read UTF-8.
        if (find_invalid_utf8(out) != std::string_view::npos) {
          json_fail(path_, "replacement at offset " + std::to_string(index) + " is not valid UTF-8 (corrupt charsmap)",
                    false);
        }
        return out;
      }
    }
    return std::nullopt;
  }

  std::vector<uint32_t> array_;
  std::string normalized_;
  std::string path_;  // the JSON path, for errors
};

bool get_bool(const Json& j, const char* key, bool fallback) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? fallback : it->get<bool>();
}

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const Json& j, const std::string& path) {
  if (j.is_null()) return nullptr;
  if (!j.is_object() || !j.contains("type")) json_fail(path, "expected an object with a type", false);
  const std::string type = j["type"].get<std::string>();
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceNormalizer>();
    const Json& list = j.at("normalizers");
    for (size_t i = 0; i < list.size(); ++i) {
      if (auto n = make_normalizer(list[i], path + ".normalizers[" + std::to_string(i) + "]"))
        seq->parts.push_back(std::move(n));
    }
    return seq;
  }
  if (type == "NFC") return std::make_unique<FormNormalizer>(NormalForm::nfc);
  if (type == "NFD") return std::make_unique<FormNormalizer>(NormalForm::nfd);
  if (type == "NFKC") return std::make_unique<FormNormalizer>(NormalForm::nfkc);
  if (type == "NFKD") return std::make_unique<FormNormalizer>(NormalForm::nfkd);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Strip")
    return std::make_unique<StripNormalizer>(get_bool(j, "strip_left", true), get_bool(j, "strip_right", true));
  if (type == "StripAccents") return std::make_unique<StripAccentsNormalizer>();
  if (type == "Replace")
    return std::make_unique<ReplaceNormalizer>(j.at("pattern"), j.at("content").get<std::string>(), path);
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(j.at("prepend").get<std::string>());
  if (type == "Nmt") return std::make_unique<NmtNormalizer>();
  if (type == "Precompiled") {
    const Json& cm = j.at("precompiled_charsmap");
    if (cm.is_null()) return nullptr;
    return std::make_unique<PrecompiledNormalizer>(cm.get<std::string>(), path + ".precompiled_charsmap");
  }
  if (type == "BertNormalizer") {
    const bool lower = get_bool(j, "lowercase", true);
    return std::make_unique<BertNormalizer>(get_bool(j, "clean_text", true), get_bool(j, "handle_chinese_chars", true),
                                            get_bool(j, "strip_accents", lower), lower);
  }
  json_fail(path + ".type", "unsupported '" + type + "'");
}

}  // namespace surf::text
