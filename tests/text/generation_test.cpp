// The generation loop through the Session API on the golden fixtures: greedy ids unchanged, EOS
// and stop strings stop each sequence on its own, a seed makes sampling reproducible, on_token
// streams text pieces and cancels. Text runs pair the 512-token llama fixture with the 512-id cut
// of llama3's tokenizer (tests/data/tokenizers/tiny-bpe-512).
#include <gtest/gtest.h>

#include <fstream>

#include "surf/runtime.h"
#include "surf/storage/safetensors.h"
#include "test_util.h"
#include "text/text_test_util.h"

using namespace surf;
namespace fs = std::filesystem;

namespace {

std::unique_ptr<Session> open(const std::string& source) {
  OpenOptions o;
  o.plugin_dirs = {test::plugin_dir()};
  o.cache_size = 1;
  return Session::open(source, o);
}

TensorMap golden(const std::string& fixture) {
  return read_safetensors(test::fixtures_dir() / fixture / "golden.safetensors");
}

std::vector<int64_t> row(const Tensor& t, int64_t r) {
  const int64_t w = t.dim(1);
  return std::vector<int64_t>(t.i64() + r * w, t.i64() + (r + 1) * w);
}

// The llama fixture plus the tiny tokenizer (and, optionally, a generation_config.json).
fs::path text_model(const test::TempDir& dir, const std::string& generation_config = "") {
  const fs::path d = dir.path() / "model";
  fs::create_directories(d);
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(test::fixtures_dir() / "llama-tiny-random" / f, d / f);
  std::ofstream(d / "tokenizer.json") << test::tokenizer_json("tiny-bpe-512");
  if (!generation_config.empty()) std::ofstream(d / "generation_config.json") << generation_config;
  return d;
}

TEST(Generation, GreedyIdsEqualTheGoldensWithTheNewOptionsToo) {
  for (const char* fixture : {"llama-tiny-random", "gpt2-tiny-random", "t5-tiny-random"}) {
    const TensorMap g = golden(fixture);
    auto s = open((test::fixtures_dir() / fixture).string());
    const Tensor& want = g.at("generated_ids");
    const int64_t steps = g.at("generation_logits").dim(1);
    TensorMap in = {{"input_ids", g.count("gen_input_ids") ? g.at("gen_input_ids") : g.at("input_ids")}};
    if (!g.count("gen_input_ids") && g.count("attention_mask")) in["attention_mask"] = g.at("attention_mask");
    GenerateOptions o;
    o.max_new_tokens = steps;
    const TensorMap out = s->generate(in, o);  // EOS on: the goldens never reach it
    EXPECT_TRUE(test::bitwise_equal(out.at("generated_ids"), want)) << fixture;
    EXPECT_TRUE(test::bitwise_equal(s->generate(in, steps).at("generated_ids"), want)) << fixture;
  }
}

TEST(Generation, EosStopsEachSequenceOnItsOwn) {
  const TensorMap g = golden("llama-tiny-random");
  auto s = open((test::fixtures_dir() / "llama-tiny-random").string());
  // Two prompts: the golden generation prompt and the first row of the forward inputs.
  const Tensor p0 = g.at("gen_input_ids");
  const int64_t len = p0.dim(1);
  Tensor batch = Tensor::empty(DType::I64, {2, len});
  std::copy_n(p0.i64(), len, batch.i64());
  std::copy_n(g.at("input_ids").i64(), len, batch.i64() + len);
  GenerateOptions o;
  o.max_new_tokens = 8;
  o.stop_at_eos = false;
  const TensorMap free = s->generate({{"input_ids", batch}}, o);
  const auto r0 = row(free.at("generated_ids"), 0), r1 = row(free.at("generated_ids"), 1);
  // An EOS id that row 0 produces early and row 1 never does.
  int64_t eos = -1, at = -1;
  for (int64_t k = 0; k < 8 && eos < 0; ++k) {
    const int64_t id = r0[static_cast<size_t>(len + k)];
    if (std::find(r1.begin() + len, r1.end(), id) == r1.end() &&
        std::find(r0.begin() + len, r0.begin() + len + k, id) == r0.begin() + len + k) {
      eos = id;
      at = k;
    }
  }
  ASSERT_GE(eos, 0) << "no token separates the rows";
  o.stop_at_eos = true;
  o.eos_token_ids = {eos};
  std::vector<std::string> reasons;
  const TensorMap stopped = s->generate({{"input_ids", batch}}, o);
  EXPECT_EQ(stopped.at("generated_lengths").i64()[0], at + 1);
  EXPECT_EQ(stopped.at("generated_lengths").i64()[1], 8);
  const auto s0 = row(stopped.at("generated_ids"), 0), s1 = row(stopped.at("generated_ids"), 1);
  EXPECT_EQ(s1, r1) << "the other row runs on unchanged";
  EXPECT_TRUE(std::equal(s0.begin(), s0.begin() + len + at + 1, r0.begin()));
  const int64_t pad = 2;  // config.json has no pad_token_id: the EOS of config.json (2) pads
  for (size_t k = static_cast<size_t>(len + at + 1); k < s0.size(); ++k) EXPECT_EQ(s0[k], pad);

  // One row alone stops the whole run: the output is as wide as what was generated.
  o.max_new_tokens = 8;
  const TensorMap one = s->generate({{"input_ids", p0}}, o);
  EXPECT_EQ(one.at("generated_ids").dim(1), len + at + 1);
  EXPECT_EQ(one.at("generation_logits").dim(1), at + 1);
}

TEST(Generation, SamplingIsReproducibleWithASeed) {
  const TensorMap g = golden("llama-tiny-random");
  auto s = open((test::fixtures_dir() / "llama-tiny-random").string());
  const TensorMap in = {{"input_ids", g.at("gen_input_ids")}};
  GenerateOptions o;
  o.max_new_tokens = 12;
  o.stop_at_eos = false;
  o.do_sample = true;
  o.temperature = 1.5f;
  o.top_p = 0.95f;
  o.seed = 7;
  const Tensor a = s->generate(in, o).at("generated_ids");
  const Tensor b = s->generate(in, o).at("generated_ids");
  EXPECT_TRUE(test::bitwise_equal(a, b));
  o.seed = 8;
  EXPECT_FALSE(test::bitwise_equal(a, s->generate(in, o).at("generated_ids")));
  // top-k 1 is greedy whatever the temperature; so is min-p 1.
  o.top_p = 1.0f;
  o.top_k = 1;
  EXPECT_TRUE(test::bitwise_equal(s->generate(in, o).at("generated_ids"), s->generate(in, 12).at("generated_ids")));
  o.top_k = 0;
  o.min_p = 1.0f;
  EXPECT_TRUE(test::bitwise_equal(s->generate(in, o).at("generated_ids"), s->generate(in, 12).at("generated_ids")));
  // A repetition penalty changes greedy choices only through the tokens seen.
  GenerateOptions rp;
  rp.max_new_tokens = 12;
  rp.stop_at_eos = false;
  rp.repetition_penalty = 1.0f;
  EXPECT_TRUE(test::bitwise_equal(s->generate(in, rp).at("generated_ids"), s->generate(in, 12).at("generated_ids")));
  o.temperature = 0.0f;
  EXPECT_THROW(s->generate(in, o), Error);
}

TEST(Generation, TextStreamsPiecesAndStopStrings) {
  test::TempDir dir;
  auto s = open(text_model(dir).string());
  ASSERT_TRUE(s->has_tokenizer());
  GenerateOptions o;
  o.max_new_tokens = 24;
  o.stop_at_eos = false;
  std::string streamed;
  int64_t calls = 0;
  o.on_token = [&](int64_t seq, int64_t, std::string_view piece) {
    EXPECT_EQ(seq, 0);
    streamed += piece;
    ++calls;
    return true;
  };
  const TextGeneration g = s->generate_text({"The quick brown fox"}, o);
  ASSERT_EQ(g.texts.size(), 1u);
  EXPECT_EQ(calls, 24);
  EXPECT_EQ(streamed, g.texts[0]);
  // The text is the decode of the new ids.
  const auto ids = row(g.tensors.at("generated_ids"), 0);
  const int64_t prompt = static_cast<int64_t>(s->tokenizer().encode("The quick brown fox").size());
  EXPECT_EQ(g.texts[0], s->tokenizer().decode(std::vector<int64_t>(ids.begin() + prompt, ids.end()), true));
  EXPECT_EQ(g.finish_reasons[0], "length");
  ASSERT_GT(g.texts[0].size(), 6u);

  // A stop string from the middle of that text: the new text ends right before it.
  const std::string stop = g.texts[0].substr(g.texts[0].size() / 2, 3);
  const size_t cut = g.texts[0].find(stop);
  o.stop_strings = {stop};
  streamed.clear();
  const TextGeneration h = s->generate_text({"The quick brown fox"}, o);
  EXPECT_EQ(h.texts[0], g.texts[0].substr(0, cut));
  EXPECT_EQ(streamed, h.texts[0]);
  EXPECT_EQ(h.finish_reasons[0], "stop_string");

  // Cancel from the callback after three tokens.
  o.stop_strings.clear();
  o.on_token = [n = 0](int64_t, int64_t, std::string_view) mutable { return ++n < 3; };
  const TextGeneration c = s->generate_text({"The quick brown fox"}, o);
  EXPECT_EQ(c.finish_reasons[0], "cancelled");
  EXPECT_EQ(c.tensors.at("generated_lengths").i64()[0], 3);
}

TEST(Generation, BatchedPromptsStopIndependentlyOnGenerationConfigEos) {
  test::TempDir probe_dir;
  auto probe = open(text_model(probe_dir).string());
  GenerateOptions o;
  o.max_new_tokens = 10;
  o.stop_at_eos = false;
  const std::vector<std::string> prompts = {"Hello", "Once upon a time there"};
  const TextGeneration free = probe->generate_text(prompts, o);
  const Tensor& ids = free.tensors.at("generated_ids");
  const int64_t w = ids.dim(1), prefix = w - 10;
  // EOS: the third new token of row 0, if row 1 never makes it.
  const int64_t eos = ids.i64()[prefix + 2];
  bool in_row1 = false;
  for (int64_t k = prefix; k < w; ++k) in_row1 = in_row1 || ids.i64()[w + k] == eos;
  int64_t first = 0;
  while (ids.i64()[prefix + first] != eos) ++first;
  if (in_row1) GTEST_SKIP() << "the rows share the candidate EOS";
  test::TempDir dir;
  auto s = open(text_model(dir, "{\"eos_token_id\": [" + std::to_string(eos) + ", 511]}").string());
  EXPECT_EQ(s->eos_token_ids(), (std::vector<int64_t>{eos, 511}));
  o.stop_at_eos = true;
  const TextGeneration g = s->generate_text(prompts, o);
  EXPECT_EQ(g.finish_reasons[0], "eos");
  EXPECT_EQ(g.tensors.at("generated_lengths").i64()[0], first + 1);
  EXPECT_EQ(g.finish_reasons[1], "length");
  EXPECT_EQ(g.texts[1], free.texts[1]);
}

TEST(Generation, NoTokenizerFilesIsOneLine) {
  auto s = open((test::fixtures_dir() / "llama-tiny-random").string());
  EXPECT_FALSE(s->has_tokenizer());
  try {
    s->tokenizer();
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::not_found);
    EXPECT_NE(std::string(e.what()).find("has no tokenizer files"), std::string::npos);
  }
  GenerateOptions o;
  o.stop_strings = {"x"};
  EXPECT_THROW(s->generate({{"input_ids", golden("llama-tiny-random").at("gen_input_ids")}}, o), Error);
}

}  // namespace
