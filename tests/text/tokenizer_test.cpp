// The tokenizer API beyond conformance: errors, special tokens, streaming decode.
#include <gtest/gtest.h>

#include "surf/error.h"
#include "surf/tokenizer.h"
#include "text/text_test_util.h"

#include <fstream>
#include <iterator>
#include <random>

using namespace surf;

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace {

// Runs fn and returns the surf::Error it throws (fails the test if none).
template <class Fn>
Error error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no surf::Error thrown";
  return Error(ErrorCode::ok, "");
}

nlohmann::json tiny() { return nlohmann::json::parse(test::tokenizer_json("tiny-bpe-512")); }

TEST(Tokenizer, UnsupportedPartsNameTheirJsonPath) {
  auto j = tiny();
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}, {{"type", "Foo"}}}}};
  Error e = error_of([&] { Tokenizer::from_json(j.dump()); });
  EXPECT_EQ(e.code(), ErrorCode::unsupported);
  EXPECT_NE(std::string(e.what()).find("normalizer.normalizers[1].type: unsupported 'Foo'"), std::string::npos)
      << e.what();

  j = tiny();
  j["pre_tokenizer"]["pretokenizers"][1]["type"] = "UnicodeScripts";
  e = error_of([&] { Tokenizer::from_json(j.dump()); });
  EXPECT_NE(std::string(e.what()).find("pre_tokenizer.pretokenizers[1].type: unsupported 'UnicodeScripts'"),
            std::string::npos)
      << e.what();

  j = tiny();
  j["model"]["type"] = "Bar";
  e = error_of([&] { Tokenizer::from_json(j.dump()); });
  EXPECT_NE(std::string(e.what()).find("model.type: unsupported 'Bar'"), std::string::npos) << e.what();

  j = tiny();
  j["decoder"] = {{"type", "CTC"}};
  e = error_of([&] { Tokenizer::from_json(j.dump()); });
  EXPECT_NE(std::string(e.what()).find("decoder.type: unsupported 'CTC'"), std::string::npos) << e.what();

  e = error_of([] { Tokenizer::from_json("{not json"); });
  EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
  EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "one line";
}

TEST(Tokenizer, InvalidUtf8IsAnErrorNotACrash) {
  for (const char* name : {"llama3", "llama2", "bert-base-uncased", "t5-unigram"}) {
    const auto tok = Tokenizer::from_json(test::tokenizer_json(name));
    for (const std::string& bad : {std::string("abc\xff"), std::string("\xc3"), std::string("\xed\xa0\x80"),
                                   std::string("ok \xe2\x82"), std::string("\xf8\x88\x80\x80\x80")}) {
      const Error e = error_of([&] { tok->encode(bad); });
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << name;
      EXPECT_NE(std::string(e.what()).find("not valid UTF-8"), std::string::npos) << e.what();
    }
  }
}

TEST(Tokenizer, DirectoryWithoutTokenizerFilesSaysSoInOneLine) {
  test::TempDir dir;
  const Error e = error_of([&] { Tokenizer::from_directory(dir.str()); });
  EXPECT_EQ(e.code(), ErrorCode::not_found);
  EXPECT_NE(std::string(e.what()).find("has no tokenizer files"), std::string::npos) << e.what();
}

TEST(Tokenizer, SpecialTokensAndVocabulary) {
  const auto llama3 = Tokenizer::from_json(test::tokenizer_json("llama3"));
  EXPECT_EQ(llama3->vocab_size(), 128256);
  EXPECT_EQ(llama3->special_tokens().bos, 128000);
  EXPECT_EQ(llama3->special_tokens().eos, 128001);
  EXPECT_EQ(llama3->token_to_id("<|end_of_text|>"), 128001);
  EXPECT_EQ(llama3->id_to_token(128000), "<|begin_of_text|>");
  EXPECT_TRUE(llama3->is_special(128009));
  EXPECT_EQ(llama3->kind(), "bpe");
  // Special-token text is recognised even without adding special tokens, and skipped on request.
  const auto ids = llama3->encode("<|begin_of_text|>Hi", false);
  EXPECT_EQ(ids.front(), 128000);
  EXPECT_EQ(llama3->decode(ids, true), "Hi");
  EXPECT_EQ(llama3->decode(ids, false), "<|begin_of_text|>Hi");

  const auto bert = Tokenizer::from_json(test::tokenizer_json("bert-base-uncased"));
  EXPECT_EQ(bert->special_tokens().cls, 101);
  EXPECT_EQ(bert->special_tokens().sep, 102);
  EXPECT_EQ(bert->special_tokens().pad, 0);
  EXPECT_EQ(bert->kind(), "wordpiece");
  const auto b = bert->encode("Hello, World!");
  EXPECT_EQ(b.front(), 101);
  EXPECT_EQ(b.back(), 102);
  EXPECT_EQ(bert->decode(b, true), "hello, world!");
  EXPECT_EQ(bert->tokenize("unaffable")[0], "una");

  const auto llama2 = Tokenizer::from_json(test::tokenizer_json("llama2"));
  EXPECT_EQ(llama2->special_tokens().bos, 1);
  EXPECT_EQ(llama2->special_tokens().eos, 2);
  EXPECT_EQ(llama2->encode("Hi").front(), 1);  // BOS from the template
}

// Pieces streamed one token at a time concatenate to the full decode: byte-level tokens that
// split a character, byte-fallback tokens, WordPiece "##", Metaspace's first-token strip.
TEST(Tokenizer, StreamedPiecesConcatenateToTheDecode) {
  const std::string text =
      "Grüße 😀 👩‍👩‍👧‍👦 你好世界, naïve café -- 𠜎 ok. Ünïcödé ﬁne";
  for (const char* name :
       {"llama3", "llama2", "llama2-nonlegacy", "qwen3", "bert-base-uncased", "t5-unigram", "tiny-bpe-512"}) {
    const auto tok = Tokenizer::from_json(test::tokenizer_json(name));
    const auto ids = tok->encode(text, true);
    StreamDecoder stream(*tok);
    std::string streamed;
    size_t held_back = 0;
    for (int64_t id : ids) {
      const std::string piece = stream.push(id);
      held_back += piece.empty();
      streamed += piece;
    }
    streamed += stream.finish();
    EXPECT_EQ(streamed, tok->decode(ids, true)) << name;
    if (std::string(name) == "llama3" || std::string(name) == "llama2") {
      EXPECT_GT(held_back, 0u) << name;
    }
  }
}

TEST(Tokenizer, SentencePiecePathFromADirectory) {
  test::TempDir dir;
  {
    std::ofstream(dir.path() / "spiece.model", std::ios::binary)
        << test::read_file(test::tokenizer_data_dir() / "t5-unigram.model");
  }
  const auto tok = Tokenizer::from_directory(dir.str());
  EXPECT_EQ(tok->kind(), "sentencepiece");
  const auto ids = tok->encode("This License applies to any program.");
  EXPECT_EQ(ids.back(), 1);  // </s>
  EXPECT_EQ(tok->decode(ids, true), "This License applies to any program.");
  EXPECT_EQ(tok->decode(ids, false), "This License applies to any program.</s>");
}

}  // namespace

namespace {

// Seeded random inputs: arbitrary bytes are refused cleanly when not UTF-8 and never crash;
// random valid text (all planes, combining marks, whitespace, special-token fragments) encodes,
// and byte-level BPE gives it back exactly.
TEST(Tokenizer, RandomInputsNeverCrashAndByteLevelRoundTrips) {
  std::mt19937_64 rng(20261129);
  auto random_text = [&](size_t n) {
    static const char32_t pool[] = {U' ',      U'\t',         U'\n',         U'\r',     U'a',      U'Z',
                                    U'0',      U'\'',         U'<',          U'|',      U'>',      U'#',
                                    U'\u00e9', U'\u0301',     U'\u200d',     U'\u2581', U'\u3000', U'\u4e2d',
                                    U'\uac00', U'\U0001F600', U'\U00020000', U'\uFFFD'};
    std::string s;
    for (size_t i = 0; i < n; ++i) {
      char32_t c = rng() % 3 == 0 ? static_cast<char32_t>(rng() % 0x30000) : pool[rng() % std::size(pool)];
      if (c >= 0xD800 && c <= 0xDFFF) c = U'x';
      if (c == 0) c = U'y';
      std::string u;
      if (c < 0x80) {
        u.push_back(static_cast<char>(c));
      } else if (c < 0x800) {
        u = {static_cast<char>(0xC0 | (c >> 6)), static_cast<char>(0x80 | (c & 0x3F))};
      } else if (c < 0x10000) {
        u = {static_cast<char>(0xE0 | (c >> 12)), static_cast<char>(0x80 | ((c >> 6) & 0x3F)),
             static_cast<char>(0x80 | (c & 0x3F))};
      } else {
        u = {static_cast<char>(0xF0 | (c >> 18)), static_cast<char>(0x80 | ((c >> 12) & 0x3F)),
             static_cast<char>(0x80 | ((c >> 6) & 0x3F)), static_cast<char>(0x80 | (c & 0x3F))};
      }
      s += u;
    }
    return s;
  };
  for (const char* name : {"tiny-bpe-512", "llama2", "bert-tiny-512", "t5-unigram"}) {
    const auto tok = Tokenizer::from_json(test::tokenizer_json(name));
    const bool byte_level = std::string(name) == "tiny-bpe-512";
    for (int k = 0; k < 300; ++k) {
      std::string bytes(rng() % 40, '\0');
      for (char& b : bytes) b = static_cast<char>(rng());
      try {
        const auto ids = tok->encode(bytes);
        (void)tok->decode(ids);
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << name << ": " << e.what();
      }
      const std::string text = random_text(rng() % 60);
      const auto ids = tok->encode(text, false);
      const std::string back = tok->decode(ids);
      if (byte_level) {
        EXPECT_EQ(back, text) << name;
      }
      StreamDecoder stream(*tok, false);
      std::string streamed;
      for (int64_t id : ids) streamed += stream.push(id);
      streamed += stream.finish();
      EXPECT_EQ(streamed, back) << name;
    }
  }
}

}  // namespace
