// The public Tokenizer: tokenizer.json pipelines (JsonTokenizer) and SentencePiece models read
// with libsentencepiece (SentencePieceTokenizer), plus the streaming decoder.
#include "surf/tokenizer.h"

#include <sentencepiece_processor.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "surf/error.h"
#include "text/added_tokens.h"
#include "text/pipeline.h"
#include "text/unicode.h"

namespace fs = std::filesystem;

namespace surf {

using text::Json;

const std::vector<std::string>& tokenizer_file_names() {
  static const std::vector<std::string> names = {"tokenizer.json",          "tokenizer_config.json",
                                                 "special_tokens_map.json", "generation_config.json",
                                                 "tokenizer.model",         "spiece.model"};
  return names;
}

bool Tokenizer::is_special(int64_t id) const {
  const auto& all = special_tokens().all;
  return std::find(all.begin(), all.end(), id) != all.end();
}

namespace {

Json parse_json(std::string_view s, const std::string& what) {
  if (s.empty()) return Json::object();
  try {
    return Json::parse(s.begin(), s.end());
  } catch (const Json::exception& e) {
    fail(ErrorCode::invalid_argument, what + " is not valid JSON: " + e.what());
  }
}

// bos_token etc. of tokenizer_config.json / special_tokens_map.json: a string or {"content": ...}.
std::optional<std::string> token_name(const Json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content")) return (*it)["content"].get<std::string>();
  return std::nullopt;
}

// Fills the named special tokens from the configs, then from common names.
void name_special_tokens(SpecialTokens& st, const Json& config, const Json& map,
                         const std::function<std::optional<int64_t>(std::string_view)>& lookup) {
  struct Slot {
    const char* key;
    std::optional<int64_t>* slot;
    std::vector<const char*> common;
  };
  const std::vector<Slot> slots = {
      {"bos_token", &st.bos, {"<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"}},
      {"eos_token", &st.eos, {"</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>"}},
      {"pad_token", &st.pad, {"<pad>", "[PAD]", "<|pad|>"}},
      {"unk_token", &st.unk, {"<unk>", "[UNK]"}},
      {"cls_token", &st.cls, {"[CLS]"}},
      {"sep_token", &st.sep, {"[SEP]"}},
      {"mask_token", &st.mask, {"[MASK]", "<mask>"}},
  };
  for (const auto& s : slots) {
    std::optional<std::string> name = token_name(config, s.key);
    if (!name) name = token_name(map, s.key);
    if (name) {
      *s.slot = lookup(*name);
      continue;
    }
    if (config.contains(s.key)) continue;  // explicitly null
    for (const char* c : s.common) {
      if (auto id = lookup(c)) {
        *s.slot = id;
        break;
      }
    }
  }
}

class JsonTokenizer final : public Tokenizer {
 public:
  JsonTokenizer(std::string_view json_text, std::string_view config_text, std::string_view map_text) {
    const Json j = parse_json(json_text, "tokenizer.json");
    const Json config = parse_json(config_text, "tokenizer_config.json");
    const Json map = parse_json(map_text, "special_tokens_map.json");
    if (!j.is_object() || !j.contains("model")) fail(ErrorCode::invalid_argument, "tokenizer.json: model: missing");
    try {
      model_ = text::make_model(j["model"], "model");
      normalizer_ = text::make_normalizer(j.value("normalizer", Json()), "normalizer");
      pre_tokenizer_ = text::make_pre_tokenizer(j.value("pre_tokenizer", Json()), "pre_tokenizer");
      decoder_ = text::make_decoder(j.value("decoder", Json()), "decoder");
      load_added(j.value("added_tokens", Json::array()));
      post_ = text::make_post_processor(j.value("post_processor", Json()), "post_processor",
                                        [this](std::string_view t) { return token_to_id(t); });
    } catch (const Json::exception& e) {
      fail(ErrorCode::invalid_argument, std::string("tokenizer.json: ") + e.what());
    }
    name_special_tokens(special_, config, map, [this](std::string_view t) { return token_to_id(t); });
    if (config.contains("added_tokens_decoder") && config["added_tokens_decoder"].is_object()) {
      for (auto it = config["added_tokens_decoder"].begin(); it != config["added_tokens_decoder"].end(); ++it) {
        if (it.value().value("special", false)) special_.all.push_back(std::stoll(it.key()));
      }
    }
    std::sort(special_.all.begin(), special_.all.end());
    special_.all.erase(std::unique(special_.all.begin(), special_.all.end()), special_.all.end());
  }

  std::vector<int64_t> encode(std::string_view s, bool add_special_tokens) const override {
    text::require_utf8(s, "text");
    std::vector<int64_t> ids;
    std::vector<text::Segment> segments;
    if (raw_matcher_.empty()) {
      segments.push_back({0, s.size(), -1});
    } else {
      raw_matcher_.split(s, segments);
    }
    std::vector<text::Piece> pieces;
    std::vector<text::Segment> subs;
    for (const auto& seg : segments) {
      if (seg.token >= 0) {
        ids.push_back(seg.token);
        continue;
      }
      std::string norm(s.substr(seg.begin, seg.end - seg.begin));
      if (normalizer_) normalizer_->apply(norm);
      subs.clear();
      if (normalized_matcher_.empty()) {
        subs.push_back({0, norm.size(), -1});
      } else {
        normalized_matcher_.split(norm, subs);
      }
      for (const auto& sub : subs) {
        if (sub.token >= 0) {
          ids.push_back(sub.token);
          continue;
        }
        if (sub.end <= sub.begin) continue;
        pieces.clear();
        pieces.push_back({norm.substr(sub.begin, sub.end - sub.begin), seg.begin == 0 && sub.begin == 0});
        if (pre_tokenizer_) pre_tokenizer_->apply(pieces);
        for (const auto& p : pieces) model_->tokenize(p.text, ids);
      }
    }
    if (add_special_tokens && post_) post_->apply(ids);
    return ids;
  }

  std::vector<std::string> tokenize(std::string_view s, bool add_special_tokens) const override {
    std::vector<std::string> out;
    for (int64_t id : encode(s, add_special_tokens)) out.push_back(id_to_token(id).value_or(""));
    return out;
  }

  std::string decode(std::span<const int64_t> ids, bool skip_special_tokens) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int64_t id : ids) {
      if (skip_special_tokens && special_set_.count(id)) continue;
      if (const std::string* t = token_ptr(id)) tokens.push_back(*t);
    }
    if (!decoder_) {
      std::string out;
      for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
      return out;
    }
    decoder_->apply(tokens);
    std::string out;
    for (const auto& t : tokens) out += t;
    return out;
  }

  std::optional<int64_t> token_to_id(std::string_view t) const override {
    auto it = added_by_content_.find(std::string(t));
    if (it != added_by_content_.end()) return it->second;
    return model_->token_to_id(t);
  }
  std::optional<std::string> id_to_token(int64_t id) const override {
    const std::string* t = token_ptr(id);
    return t ? std::optional<std::string>(*t) : std::nullopt;
  }
  int64_t vocab_size() const override { return vocab_size_; }
  const SpecialTokens& special_tokens() const override { return special_; }
  std::string kind() const override { return model_->kind(); }

 private:
  const std::string* token_ptr(int64_t id) const {
    auto it = added_by_id_.find(id);
    if (it != added_by_id_.end()) return &it->second;
    return model_->id_to_token(id);
  }

  void load_added(const Json& list) {
    std::vector<text::AddedToken> raw, normalized;
    std::vector<std::string> raw_patterns, normalized_patterns;
    vocab_size_ = model_->size();
    for (size_t i = 0; i < list.size(); ++i) {
      const Json& a = list[i];
      text::AddedToken t;
      t.id = text::json_int(a.at("id"), "added_tokens.id");
      t.content = a.at("content").get<std::string>();
      t.single_word = a.value("single_word", false);
      t.lstrip = a.value("lstrip", false);
      t.rstrip = a.value("rstrip", false);
      t.special = a.value("special", false);
      t.normalized = a.value("normalized", !t.special);
      if (t.id < 0) text::json_fail("added_tokens[" + std::to_string(i) + "].id", "negative", false);
      added_by_id_[t.id] = t.content;
      added_by_content_[t.content] = t.id;
      vocab_size_ = std::max(vocab_size_, t.id + 1);
      if (t.special) {
        special_.all.push_back(t.id);
        special_set_.insert(t.id);
      }
      if (t.normalized && normalizer_) {
        std::string p = t.content;
        normalizer_->apply(p);
        normalized_patterns.push_back(p);
        normalized.push_back(std::move(t));
      } else {
        raw_patterns.push_back(t.content);
        raw.push_back(std::move(t));
      }
    }
    raw_matcher_.build(std::move(raw), std::move(raw_patterns));
    normalized_matcher_.build(std::move(normalized), std::move(normalized_patterns));
  }

  std::unique_ptr<text::Model> model_;
  std::unique_ptr<text::Normalizer> normalizer_;
  std::unique_ptr<text::PreTokenizer> pre_tokenizer_;
  std::unique_ptr<text::PostProcessor> post_;
  std::unique_ptr<text::Decoder> decoder_;
  text::AddedTokenMatcher raw_matcher_, normalized_matcher_;
  std::map<int64_t, std::string> added_by_id_;
  std::map<std::string, int64_t> added_by_content_;
  std::set<int64_t> special_set_;
  SpecialTokens special_;
  int64_t vocab_size_ = 0;
};

// A SentencePiece model read by libsentencepiece (the path for checkpoints that ship only
// spiece.model / tokenizer.model). Control pieces (<s>, </s>, ...) in the text are recognised
// first, as transformers' slow tokenizers do; BOS/EOS follow add_bos_token / add_eos_token of
// tokenizer_config.json, else BOS when the model has one, else EOS (T5).
class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& model, std::string_view config_text, std::string_view map_text) {
    const auto status = spm_.LoadFromSerializedProto(model);
    if (!status.ok()) fail(ErrorCode::invalid_argument, "SentencePiece model: " + status.ToString());
    const Json config = parse_json(config_text, "tokenizer_config.json");
    const Json map = parse_json(map_text, "special_tokens_map.json");
    std::vector<text::AddedToken> controls;
    std::vector<std::string> patterns;
    for (int id = 0; id < spm_.GetPieceSize(); ++id) {
      if (!spm_.IsControl(id) && !spm_.IsUnknown(id)) continue;
      special_.all.push_back(id);
      const std::string piece = spm_.IdToPiece(id);
      if (spm_.IsControl(id) && !piece.empty()) {
        controls.push_back({id, piece, false, false, false, false, true});
        patterns.push_back(piece);
      }
    }
    matcher_.build(std::move(controls), std::move(patterns));
    name_special_tokens(special_, config, map, [this](std::string_view t) { return token_to_id(t); });
    if (spm_.bos_id() >= 0) special_.bos = spm_.bos_id();
    if (spm_.eos_id() >= 0) special_.eos = spm_.eos_id();
    if (spm_.pad_id() >= 0) special_.pad = spm_.pad_id();
    if (spm_.unk_id() >= 0) special_.unk = spm_.unk_id();
    add_bos_ = config.contains("add_bos_token") && config["add_bos_token"].is_boolean()
                   ? config["add_bos_token"].get<bool>()
                   : spm_.bos_id() >= 0;
    add_eos_ = config.contains("add_eos_token") && config["add_eos_token"].is_boolean()
                   ? config["add_eos_token"].get<bool>()
                   : spm_.bos_id() < 0 && spm_.eos_id() >= 0;
  }

  std::vector<int64_t> encode(std::string_view s, bool add_special_tokens) const override {
    text::require_utf8(s, "text");
    std::vector<int64_t> ids;
    if (add_special_tokens && add_bos_ && spm_.bos_id() >= 0) ids.push_back(spm_.bos_id());
    std::vector<text::Segment> segs;
    matcher_.split(s, segs);
    if (segs.empty() && !s.empty()) segs.push_back({0, s.size(), -1});
    std::vector<int> part;
    for (const auto& seg : segs) {
      if (seg.token >= 0) {
        ids.push_back(seg.token);
        continue;
      }
      part.clear();
      const auto status = spm_.Encode(std::string(s.substr(seg.begin, seg.end - seg.begin)), &part);
      if (!status.ok()) fail(ErrorCode::internal, "SentencePiece encode: " + status.ToString());
      ids.insert(ids.end(), part.begin(), part.end());
    }
    if (add_special_tokens && add_eos_ && spm_.eos_id() >= 0) ids.push_back(spm_.eos_id());
    return ids;
  }

  std::vector<std::string> tokenize(std::string_view s, bool add_special_tokens) const override {
    std::vector<std::string> out;
    for (int64_t id : encode(s, add_special_tokens)) out.push_back(spm_.IdToPiece(static_cast<int>(id)));
    return out;
  }

  std::string decode(std::span<const int64_t> ids, bool skip_special_tokens) const override {
    std::string out;
    std::vector<int> run;
    auto flush = [&] {
      if (run.empty()) return;
      std::string piece;
      const auto status = spm_.Decode(run, &piece);
      if (!status.ok()) fail(ErrorCode::internal, "SentencePiece decode: " + status.ToString());
      out += piece;
      run.clear();
    };
    for (int64_t id : ids) {
      if (id < 0 || id >= spm_.GetPieceSize()) continue;
      const int i = static_cast<int>(id);
      if (spm_.IsControl(i)) {
        flush();
        if (!skip_special_tokens) out += spm_.IdToPiece(i);
        continue;
      }
      run.push_back(i);
    }
    flush();
    return out;
  }

  std::optional<int64_t> token_to_id(std::string_view t) const override {
    const int id = spm_.PieceToId(std::string(t));
    if (id < 0 || spm_.IdToPiece(id) != t) return std::nullopt;
    return id;
  }
  std::optional<std::string> id_to_token(int64_t id) const override {
    if (id < 0 || id >= spm_.GetPieceSize()) return std::nullopt;
    return spm_.IdToPiece(static_cast<int>(id));
  }
  int64_t vocab_size() const override { return spm_.GetPieceSize(); }
  const SpecialTokens& special_tokens() const override { return special_; }
  std::string kind() const override { return "sentencepiece"; }

 private:
  sentencepiece::SentencePieceProcessor spm_;
  text::AddedTokenMatcher matcher_;
  SpecialTokens special_;
  bool add_bos_ = false, add_eos_ = false;
};

std::string read_optional(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return {};
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_json(std::string_view tokenizer_json,
                                                std::string_view tokenizer_config_json) {
  return std::make_unique<JsonTokenizer>(tokenizer_json, tokenizer_config_json, std::string_view());
}

std::unique_ptr<Tokenizer> Tokenizer::from_files(const TokenizerFiles& f) {
  if (!f.tokenizer_json.empty())
    return std::make_unique<JsonTokenizer>(f.tokenizer_json, f.tokenizer_config_json, f.special_tokens_map_json);
  if (!f.sentencepiece_model.empty()) {
    return std::make_unique<SentencePieceTokenizer>(f.sentencepiece_model, f.tokenizer_config_json,
                                                    f.special_tokens_map_json);
  }
  fail(ErrorCode::not_found, "no tokenizer files (tokenizer.json, tokenizer.model or spiece.model)");
}

std::unique_ptr<Tokenizer> Tokenizer::from_directory(const std::string& dir) {
  const fs::path d(dir);
  TokenizerFiles f;
  f.tokenizer_json = read_optional(d / "tokenizer.json");
  f.tokenizer_config_json = read_optional(d / "tokenizer_config.json");
  f.special_tokens_map_json = read_optional(d / "special_tokens_map.json");
  f.sentencepiece_model = read_optional(d / "tokenizer.model");
  if (f.sentencepiece_model.empty()) f.sentencepiece_model = read_optional(d / "spiece.model");
  if (f.empty()) {
    fail(ErrorCode::not_found,
         "'" + dir + "' has no tokenizer files (tokenizer.json, tokenizer.model or spiece.model)");
  }
  return from_files(f);
}

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_(skip_special_tokens) {}

// HF's DecodeStream: decode a window that starts at the tokens of the previous piece, so that
// decoders which look at the first token (strip a leading space) or at neighbours see the same
// context as the full decode; emit what the new token added once it is complete UTF-8.
std::string StreamDecoder::push(int64_t id) {
  ids_.push_back(id);
  const std::span<const int64_t> window(ids_.data() + prefix_, ids_.size() - prefix_);
  std::string text = tokenizer_.decode(window, skip_special_);
  if (text.size() <= prefix_text_.size() || text::ends_incomplete(text)) return {};
  std::string piece;
  if (text.compare(0, prefix_text_.size(), prefix_text_) == 0) {
    piece = text.substr(prefix_text_.size());
  } else {
    piece = text;  // a decoder rewrote earlier text; emit the window anew rather than lose it
  }
  prefix_ = read_;
  read_ = ids_.size();
  prefix_text_ = tokenizer_.decode(std::span<const int64_t>(ids_.data() + prefix_, read_ - prefix_), skip_special_);
  return piece;
}

std::string StreamDecoder::finish() {
  const std::span<const int64_t> window(ids_.data() + prefix_, ids_.size() - prefix_);
  const std::string text = tokenizer_.decode(window, skip_special_);
  std::string piece = text.size() > prefix_text_.size() && text.compare(0, prefix_text_.size(), prefix_text_) == 0
                          ? text.substr(prefix_text_.size())
                          : std::string();
  prefix_ = read_ = ids_.size();
  prefix_text_.clear();
  return piece;
}

}  // namespace surf
