// The stages of a tokenizer.json pipeline, with the semantics of HF tokenizers (Rust):
// normalizer -> pre-tokenizer -> model -> post-processor, and decoders back. Each is built from its
// JSON object by a make_* function that names the JSON path of anything it does not support.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace surf::text {

using Json = nlohmann::json;

// Throws Error(unsupported / invalid_argument) naming `path`.
[[noreturn]] void json_fail(const std::string& path, const std::string& what, bool unsupported = true);
// An integer as tokenizer.json writes ids, refused (naming `path`) when it is not one: a float such
// as 5.5e81 read as an integer would be undefined behaviour.
int64_t json_int(const Json& v, const std::string& path);
std::vector<int64_t> json_ints(const Json& v, const std::string& path);

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void apply(std::string& s) const = 0;
};
std::unique_ptr<Normalizer> make_normalizer(const Json& j, const std::string& path);

// A pre-token: its text and whether it begins at the start of the input (Metaspace's "first").
struct Piece {
  std::string text;
  bool first = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void apply(std::vector<Piece>& pieces) const = 0;
};
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& j, const std::string& path);

class Model {
 public:
  virtual ~Model() = default;
  // Appends the ids of one pre-token.
  virtual void tokenize(std::string_view word, std::vector<int64_t>& out) const = 0;
  virtual std::optional<int64_t> token_to_id(std::string_view token) const = 0;
  virtual const std::string* id_to_token(int64_t id) const = 0;
  virtual int64_t size() const = 0;  // 1 + the largest id
  virtual std::string kind() const = 0;
};
std::unique_ptr<Model> make_model(const Json& j, const std::string& path);

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Adds the special tokens of a single sequence. `lookup` resolves token strings to ids.
  virtual void apply(std::vector<int64_t>& ids) const = 0;
};
std::unique_ptr<PostProcessor> make_post_processor(
    const Json& j, const std::string& path, const std::function<std::optional<int64_t>(std::string_view)>& lookup);

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void apply(std::vector<std::string>& tokens) const = 0;
};
std::unique_ptr<Decoder> make_decoder(const Json& j, const std::string& path);

// The GPT-2 byte <-> printable character table of byte-level BPE.
const std::string& byte_to_symbol(unsigned char b);
// -1 when c is not one of the 256 symbols.
int symbol_to_byte(char32_t c);

// "<0x0A>" -> 10, or -1.
int parse_byte_token(std::string_view token);

}  // namespace surf::text
