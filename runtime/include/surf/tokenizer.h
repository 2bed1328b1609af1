// Tokenizers for the models people download: HuggingFace's tokenizer.json (BPE byte-level and
// with byte fallback, WordPiece, Unigram; normalizers, pre-tokenizers, added tokens, the
// post-processor and decoders) and SentencePiece models (spiece.model / tokenizer.model, read
// with libsentencepiece) where a checkpoint ships no tokenizer.json.
//
//   auto tok = surf::Tokenizer::from_directory("models/TinyLlama-1.1B-Chat");
//   std::vector<int64_t> ids = tok->encode("Hello world");     // with BOS, as HF does
//   std::string text = tok->decode(ids, /*skip_special_tokens=*/true);
//
// Errors are surf::Error: invalid_argument for text that is not UTF-8 or an id out of range,
// unsupported for a tokenizer.json part we do not handle (naming its JSON path, e.g.
// "normalizer.normalizers[1].type: unsupported 'Foo'"), not_found for a directory without
// tokenizer files.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "surf/runtime_export.h"

SURF_RUNTIME_PUBLIC_BEGIN

namespace surf {

// The files that describe a model's text side, as bytes (empty: absent). tokenizer.json wins over
// a SentencePiece model; tokenizer_config.json and special_tokens_map.json name the special
// tokens (and add_bos_token / add_eos_token for SentencePiece models).
struct TokenizerFiles {
  std::string tokenizer_json;
  std::string tokenizer_config_json;
  std::string special_tokens_map_json;
  std::string sentencepiece_model;  // spiece.model or tokenizer.model
  bool empty() const { return tokenizer_json.empty() && sentencepiece_model.empty(); }
};

// File names that travel with a model (the chunker copies them, servers serve them).
const std::vector<std::string>& tokenizer_file_names();

struct SpecialTokens {
  std::optional<int64_t> bos, eos, pad, unk, cls, sep, mask;
  std::vector<int64_t> all;  // every id marked special (skipped by decode(..., true))
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  static std::unique_ptr<Tokenizer> from_files(const TokenizerFiles& files);
  // tokenizer.json (+ tokenizer_config.json, special_tokens_map.json) or a SentencePiece model.
  static std::unique_ptr<Tokenizer> from_directory(const std::string& dir);
  static std::unique_ptr<Tokenizer> from_json(std::string_view tokenizer_json,
                                              std::string_view tokenizer_config_json = {});

  // Text to ids. add_special_tokens applies the post-processor (BOS, [CLS] ... [SEP], T5's </s>);
  // special-token text inside `text` is always recognised, never split.
  virtual std::vector<int64_t> encode(std::string_view text, bool add_special_tokens = true) const = 0;
  // The token strings of encode(text, add_special_tokens).
  virtual std::vector<std::string> tokenize(std::string_view text, bool add_special_tokens = false) const = 0;
  // Ids to text through the decoders; invalid UTF-8 that byte-level tokens make becomes U+FFFD.
  virtual std::string decode(std::span<const int64_t> ids, bool skip_special_tokens = false) const = 0;

  virtual std::optional<int64_t> token_to_id(std::string_view token) const = 0;
  virtual std::optional<std::string> id_to_token(int64_t id) const = 0;
  // Ids 0 .. vocab_size()-1, added tokens included.
  virtual int64_t vocab_size() const = 0;
  virtual const SpecialTokens& special_tokens() const = 0;
  bool is_special(int64_t id) const;
  // "bpe", "wordpiece", "unigram", "wordlevel" (tokenizer.json) or "sentencepiece".
  virtual std::string kind() const = 0;
};

// Turns ids generated one at a time into text pieces whose concatenation is decode(all ids):
// a piece is held back while it ends in an incomplete UTF-8 sequence (byte-level and byte-fallback
// tokens split characters) and decoders that look at neighbours (leading-space strip, WordPiece
// "##") see the tokens before it.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = true);
  std::string push(int64_t id);  // the new text ("" while held back)
  std::string finish();          // what is still held back
  const std::vector<int64_t>& ids() const { return ids_; }

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::vector<int64_t> ids_;
  size_t prefix_ = 0;  // first id of the decode window
  size_t read_ = 0;    // ids before this have been emitted
  std::string prefix_text_;
};

}  // namespace surf

SURF_RUNTIME_PUBLIC_END
