// Decoders (token strings back to text: ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace,
// WordPiece, BPEDecoder, Sequence) and post-processors (TemplateProcessing, BertProcessing,
// RobertaProcessing, ByteLevel, Sequence) of tokenizer.json.
#include <nlohmann/json.hpp>
#include <variant>

#include "surf/error.h"
#include "text/pipeline.h"
#include "text/unicode.h"

namespace surf::text {

namespace {

// Bytes to text as Rust's String::from_utf8_lossy: each maximal invalid subpart becomes U+FFFD.
std::string utf8_lossy(std::string_view b) {
  if (find_invalid_utf8(b) == std::string_view::npos) return std::string(b);
  std::string out;
  size_t i = 0;
  while (i < b.size()) {
    const auto c = static_cast<unsigned char>(b[i]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      need = 2;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      need = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    if (need == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
      continue;
    }
    size_t k = 1;
    bool ok = true;
    for (; k <= need; ++k) {
      if (i + k >= b.size()) {
        ok = false;
        break;
      }
      const auto cc = static_cast<unsigned char>(b[i + k]);
      const unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
      if (cc < l || cc > h) {
        ok = false;
        break;
      }
    }
    if (ok) {
      out.append(b.substr(i, need + 1));
      i += need + 1;
    } else {
      out += "\xEF\xBF\xBD";
      i += k;  // the lead byte and the continuation bytes that fitted
    }
  }
  return out;
}

std::string replace_all(std::string s, std::string_view from, std::string_view to) {
  if (from.empty()) return s;
  size_t pos = s.find(from);
  while (pos != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos = s.find(from, pos + to.size());
  }
  return s;
}

class SequenceDecoder final : public Decoder {
 public:
  std::vector<std::unique_ptr<Decoder>> parts;
  void apply(std::vector<std::string>& t) const override {
    for (const auto& p : parts) p->apply(t);
  }
};

class ByteLevelDecoder final : public Decoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const auto& t : tokens) {
      std::string mine;
      bool all = true;
      size_t i = 0;
      while (i < t.size()) {
        const int b = symbol_to_byte(next_code_point(t, i));
        if (b < 0) {
          all = false;
          break;
        }
        mine.push_back(static_cast<char>(b));
      }
      bytes += all ? mine : t;
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

class ByteFallbackDecoder final : public Decoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (find_invalid_utf8(pending) == std::string_view::npos) {
        out.push_back(pending);
      } else {
        for (size_t k = 0; k < pending.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    for (auto& t : tokens) {
      const int b = parse_byte_token(t);
      if (b >= 0) {
        pending.push_back(static_cast<char>(b));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }
};

class FuseDecoder final : public Decoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, all);
  }
};

class StripDecoder final : public Decoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop) : content_(content), start_(start), stop_(stop) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::vector<std::pair<size_t, char32_t>> chars;
      size_t i = 0;
      while (i < t.size()) {
        const size_t at = i;
        chars.emplace_back(at, next_code_point(t, i));
      }
      size_t cut_start = 0;
      for (size_t k = 0; k < start_ && k < chars.size(); ++k) {
        if (chars[k].second != content_) break;
        cut_start = k + 1;
      }
      size_t cut_stop = chars.size();
      for (size_t k = 0; k < stop_ && k < chars.size(); ++k) {
        const size_t index = chars.size() - k - 1;
        if (chars[index].second != content_) break;
        cut_stop = index;
      }
      if (cut_stop < cut_start) cut_stop = cut_start;
      const size_t b = cut_start < chars.size() ? chars[cut_start].first : t.size();
      const size_t e = cut_stop < chars.size() ? chars[cut_stop].first : t.size();
      t = t.substr(b, e - b);
    }
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(const Json& pattern, std::string content, const std::string& path) : content_(std::move(content)) {
    if (pattern.contains("String")) {
      literal_ = pattern["String"].get<std::string>();
    } else if (pattern.contains("Regex")) {
      regex_ = std::make_unique<Regex>(pattern["Regex"].get<std::string>());
    } else {
      json_fail(path + ".pattern", "expected String or Regex");
    }
  }
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      if (!regex_) {
        t = replace_all(std::move(t), literal_, content_);
        continue;
      }
      std::vector<std::pair<size_t, size_t>> m;
      regex_->find_all(t, m);
      std::string out;
      size_t prev = 0;
      for (auto [b, e] : m) {
        out.append(t, prev, b - prev);
        out += content_;
        prev = e;
      }
      out.append(t, prev, std::string::npos);
      t = std::move(out);
    }
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
  std::string content_;
};

class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      // As HF: in the first token every replacement character goes (not only a leading one).
      tokens[i] = replace_all(std::move(tokens[i]), replacement_, i == 0 && strip_first_ ? "" : " ");
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

std::string wordpiece_cleanup(std::string s) {
  static const std::pair<const char*, const char*> rules[] = {
      {" .", "."},   {" ?", "?"},           {" !", "!"},   {" ,", ","},     {" ' ", "'"},   {" n't", "n't"},
      {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : rules) s = replace_all(std::move(s), from, to);
  return s;
}

class WordPieceDecoder final : public Decoder {
 public:
  WordPieceDecoder(std::string prefix, bool cleanup) : prefix_(std::move(prefix)), cleanup_(cleanup) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string& t = tokens[i];
      if (i != 0) {
        if (t.rfind(prefix_, 0) == 0) {
          t.erase(0, prefix_.size());
        } else {
          t.insert(t.begin(), ' ');
        }
      }
      if (cleanup_) t = wordpiece_cleanup(std::move(t));
    }
  }

 private:
  std::string prefix_;
  bool cleanup_;
};

class BpeDecoder final : public Decoder {
 public:
  explicit BpeDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = replace_all(std::move(tokens[i]), suffix_, i + 1 == tokens.size() ? "" : " ");
    }
  }

 private:
  std::string suffix_;
};

bool get_bool(const Json& j, const char* key, bool fallback) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? fallback : it->get<bool>();
}

// --- post-processors ---

class TemplateProcessor final : public PostProcessor {
 public:
  std::vector<std::variant<std::vector<int64_t>, int>> items;  // ids of a special token, or the sequence
  void apply(std::vector<int64_t>& ids) const override {
    std::vector<int64_t> out;
    out.reserve(ids.size() + 4);
    for (const auto& item : items) {
      if (const auto* special = std::get_if<std::vector<int64_t>>(&item)) {
        out.insert(out.end(), special->begin(), special->end());
      } else {
        out.insert(out.end(), ids.begin(), ids.end());
      }
    }
    ids = std::move(out);
  }
};

class SequenceProcessor final : public PostProcessor {
 public:
  std::vector<std::unique_ptr<PostProcessor>> parts;
  void apply(std::vector<int64_t>& ids) const override {
    for (const auto& p : parts) p->apply(ids);
  }
};

class NoopProcessor final : public PostProcessor {
 public:
  void apply(std::vector<int64_t>&) const override {}
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(const Json& j, const std::string& path) {
  if (j.is_null()) return nullptr;
  if (!j.is_object() || !j.contains("type")) json_fail(path, "expected an object with a type", false);
  const std::string type = j["type"].get<std::string>();
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceDecoder>();
    const Json& list = j.at("decoders");
    for (size_t i = 0; i < list.size(); ++i) {
      if (auto d = make_decoder(list[i], path + ".decoders[" + std::to_string(i) + "]"))
        seq->parts.push_back(std::move(d));
    }
    return seq;
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    const std::string content = j.at("content").get<std::string>();
    size_t i = 0;
    const char32_t c = content.empty() ? U' ' : next_code_point(content, i);
    return std::make_unique<StripDecoder>(c, j.value("start", static_cast<size_t>(0)),
                                          j.value("stop", static_cast<size_t>(0)));
  }
  if (type == "Replace")
    return std::make_unique<ReplaceDecoder>(j.at("pattern"), j.at("content").get<std::string>(), path);
  if (type == "Metaspace") {
    bool strip_first = get_bool(j, "add_prefix_space", true);
    if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null())
      strip_first = j["prepend_scheme"].get<std::string>() != "never";
    return std::make_unique<MetaspaceDecoder>(j.value("replacement", std::string("\xE2\x96\x81")), strip_first);
  }
  if (type == "WordPiece")
    return std::make_unique<WordPieceDecoder>(j.value("prefix", std::string("##")), get_bool(j, "cleanup", true));
  if (type == "BPEDecoder") return std::make_unique<BpeDecoder>(j.value("suffix", std::string("</w>")));
  json_fail(path + ".type", "unsupported '" + type + "'");
}

std::unique_ptr<PostProcessor> make_post_processor(
    const Json& j, const std::string& path, const std::function<std::optional<int64_t>(std::string_view)>& lookup) {
  if (j.is_null()) return nullptr;
  if (!j.is_object() || !j.contains("type")) json_fail(path, "expected an object with a type", false);
  const std::string type = j["type"].get<std::string>();
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceProcessor>();
    const Json& list = j.at("processors");
    for (size_t i = 0; i < list.size(); ++i) {
      if (auto p = make_post_processor(list[i], path + ".processors[" + std::to_string(i) + "]", lookup))
        seq->parts.push_back(std::move(p));
    }
    return seq;
  }
  if (type == "ByteLevel") return std::make_unique<NoopProcessor>();
  if (type == "TemplateProcessing") {
    auto t = std::make_unique<TemplateProcessor>();
    const Json& single = j.at("single");
    const Json& specials = j.value("special_tokens", Json::object());
    for (size_t i = 0; i < single.size(); ++i) {
      const Json& item = single[i];
      const std::string ipath = path + ".single[" + std::to_string(i) + "]";
      if (item.contains("Sequence")) {
        t->items.emplace_back(0);
      } else if (item.contains("SpecialToken")) {
        const std::string name = item["SpecialToken"].at("id").get<std::string>();
        std::vector<int64_t> ids;
        if (specials.contains(name)) {
          ids = json_ints(specials[name].at("ids"), path + ".special_tokens." + name + ".ids");
        } else if (auto id = lookup(name)) {
          ids = {*id};
        } else {
          json_fail(ipath, "special token '" + name + "' is not defined", false);
        }
        t->items.emplace_back(std::move(ids));
      } else {
        json_fail(ipath, "expected Sequence or SpecialToken");
      }
    }
    return t;
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    auto t = std::make_unique<TemplateProcessor>();
    t->items.emplace_back(std::vector<int64_t>{json_int(j.at("cls").at(1), path + ".cls[1]")});
    t->items.emplace_back(0);
    t->items.emplace_back(std::vector<int64_t>{json_int(j.at("sep").at(1), path + ".sep[1]")});
    return t;
  }
  json_fail(path + ".type", "unsupported '" + type + "'");
}

}  // namespace surf::text
