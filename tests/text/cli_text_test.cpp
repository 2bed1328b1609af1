// The text commands of the CLI end to end: tokenize / detokenize, generate --prompt streaming to
// stdout, run --text for encoders, I32 input ids, and the one-line errors.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "surf/runtime.h"
#include "surf/storage/safetensors.h"
#include "test_util.h"
#include "text/text_test_util.h"

using namespace surf;
namespace fs = std::filesystem;

namespace {

test::CommandResult surf_cmd(std::vector<std::string> args) {
  args.insert(args.begin(), test::surf_exe());
  args.push_back("--plugin-dir");
  args.push_back(test::plugin_dir());
  return test::run_command(args);
}
// Commands that take no --plugin-dir.
test::CommandResult surf_text_cmd(std::vector<std::string> args) {
  args.insert(args.begin(), test::surf_exe());
  return test::run_command(args);
}

fs::path model_dir(const test::TempDir& d, const std::string& fixture, const std::string& tokenizer,
                   const std::string& name = "model") {
  const fs::path dir = d.path() / name;
  fs::create_directories(dir);
  for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(test::fixtures_dir() / fixture / f, dir / f);
  if (!tokenizer.empty()) std::ofstream(dir / "tokenizer.json") << test::tokenizer_json(tokenizer);
  return dir;
}

std::string join_ids(const std::vector<int64_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s.push_back(',');
    s += std::to_string(ids[i]);
  }
  return s;
}

bool one_line_error(const test::CommandResult& r, const std::string& text) {
  return r.exit_code != 0 && r.err.find(text) != std::string::npos && std::count(r.err.begin(), r.err.end(), '\n') == 1;
}

// A safetensors file with one I32 tensor, written by hand (the SDK has no I32 dtype).
void write_i32(const fs::path& path, const std::string& name, const std::vector<int32_t>& v, int64_t rows) {
  const int64_t cols = static_cast<int64_t>(v.size()) / rows;
  const std::string header =
      nlohmann::json({{name, {{"dtype", "I32"}, {"shape", {rows, cols}}, {"data_offsets", {0, v.size() * 4}}}}}).dump();
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header.size();
  for (int k = 0; k < 8; ++k) out.put(static_cast<char>((n >> (8 * k)) & 0xFF));
  out << header;
  out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
}

TEST(CliText, TokenizeAndDetokenizeGiveTheReferenceIds) {
  test::TempDir d;
  const fs::path m = model_dir(d, "llama-tiny-random", "tiny-bpe-512");
  const auto expected =
      nlohmann::json::parse(test::read_file(test::tokenizer_data_dir() / "expected" / "tiny-bpe-512.json"));
  int checked = 0;
  for (const auto& c : expected["cases"]) {
    const std::string text = c["text"].get<std::string>();
    if (c["kind"] != "fixed" || text.empty()) continue;
    auto r = surf_text_cmd({"tokenize", m.string(), "--text", text});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, join_ids(c["ids"].get<std::vector<int64_t>>()) + "\n") << text;
    r = surf_text_cmd({"tokenize", m.string(), "--text", text, "--no-special", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["ids"], c["plain"]) << text;
    EXPECT_EQ(j["tokens"], c["tokens"]) << text;
    r = surf_text_cmd({"detokenize", m.string(), "--ids", join_ids(c["plain"].get<std::vector<int64_t>>())});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    if (c["roundtrip"].get<bool>()) {
      EXPECT_EQ(r.out, text + "\n");
    }
    ++checked;
  }
  EXPECT_GT(checked, 40);
  EXPECT_TRUE(one_line_error(surf_text_cmd({"detokenize", m.string(), "--ids", "1,99999"}), "out of range"));
  EXPECT_TRUE(one_line_error(surf_text_cmd({"detokenize", m.string(), "--ids", "1,x"}), "comma-separated integers"));
  EXPECT_TRUE(one_line_error(surf_text_cmd({"tokenize", m.string(), "--text", "bad \xff byte"}), "not valid UTF-8"));
}

TEST(CliText, SourcesWithoutTokenizerFilesOrWithUnsupportedPartsSaySoInOneLine) {
  test::TempDir d;
  const fs::path bare = model_dir(d, "llama-tiny-random", "", "bare");
  EXPECT_TRUE(one_line_error(surf_text_cmd({"tokenize", bare.string(), "--text", "hi"}), "has no tokenizer files"));
  EXPECT_TRUE(one_line_error(surf_cmd({"generate", bare.string(), "--prompt", "hi", "--max-new-tokens", "2"}),
                             "has no tokenizer files"));
  const fs::path bad = model_dir(d, "llama-tiny-random", "", "bad");
  auto j = nlohmann::json::parse(test::tokenizer_json("tiny-bpe-512"));
  j["normalizer"] = {{"type", "Foo"}};
  std::ofstream(bad / "tokenizer.json") << j.dump();
  EXPECT_TRUE(
      one_line_error(surf_text_cmd({"tokenize", bad.string(), "--text", "hi"}), "normalizer.type: unsupported 'Foo'"));
}

TEST(CliText, GeneratePromptPrintsTheNewTextAndStopsOnEos) {
  test::TempDir d;
  const fs::path m = model_dir(d, "llama-tiny-random", "tiny-bpe-512");
  auto r = surf_cmd({"generate", m.string(), "--prompt", "Once upon a time", "--max-new-tokens", "16", "--ignore-eos",
                     "--output", d.str("gen.safetensors")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("generated 16 tokens"), std::string::npos) << r.err;
  // stdout is the decode of the new ids (plus a newline).
  const TensorMap out = read_safetensors(d.str("gen.safetensors"));
  const Tensor& ids = out.at("generated_ids");
  const auto tok = Tokenizer::from_directory(m.string());
  const size_t prompt = tok->encode("Once upon a time").size();
  const std::vector<int64_t> fresh(ids.i64() + prompt, ids.i64() + ids.numel());
  EXPECT_EQ(r.out, tok->decode(fresh, true) + "\n");
  // Greedy from the CLI equals the API's greedy ids.
  auto s = Session::open(m.string(), [] {
    OpenOptions o;
    o.plugin_dirs = {test::plugin_dir()};
    return o;
  }());
  GenerateOptions go;
  go.max_new_tokens = 16;
  go.stop_at_eos = false;
  EXPECT_TRUE(test::bitwise_equal(s->generate_text({"Once upon a time"}, go).tensors.at("generated_ids"), ids));
  // EOS given as the fifth new token: generation stops there.
  const int64_t eos = fresh[4];
  size_t first = 0;
  while (fresh[first] != eos) ++first;
  r = surf_cmd({"generate", m.string(), "--prompt", "Once upon a time", "--max-new-tokens", "16", "--eos-id",
                std::to_string(eos), "--output", d.str("eos.safetensors")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("finished: eos"), std::string::npos) << r.err;
  EXPECT_EQ(read_safetensors(d.str("eos.safetensors")).at("generated_lengths").i64()[0],
            static_cast<int64_t>(first + 1));
}

TEST(CliText, SamplingWithASeedIsReproducibleRunToRun) {
  test::TempDir d;
  const fs::path m = model_dir(d, "llama-tiny-random", "tiny-bpe-512");
  auto run = [&](const std::string& seed) {
    auto r = surf_cmd({"generate", m.string(), "--prompt", "The sea", "--max-new-tokens", "24", "--ignore-eos",
                       "--temperature", "0.9", "--top-k", "50", "--top-p", "0.95", "--repetition-penalty", "1.1",
                       "--seed", seed, "--output", d.str("s" + seed + ".safetensors")});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return read_safetensors(d.str("s" + seed + ".safetensors")).at("generated_ids");
  };
  const Tensor a = run("11"), b = run("11");
  EXPECT_TRUE(test::bitwise_equal(a, b));
  const Tensor c = run("12");
  EXPECT_FALSE(test::bitwise_equal(a, c));
}

TEST(CliText, GenerateAcceptsI32InputIds) {
  test::TempDir d;
  const fs::path llama = test::fixtures_dir() / "llama-tiny-random";
  const TensorMap g = read_safetensors(llama / "golden.safetensors");
  const Tensor& p = g.at("gen_input_ids");
  std::vector<int32_t> v(static_cast<size_t>(p.numel()));
  for (int64_t i = 0; i < p.numel(); ++i) v[static_cast<size_t>(i)] = static_cast<int32_t>(p.i64()[i]);
  write_i32(d.path() / "in.safetensors", "input_ids", v, 1);
  auto r = surf_cmd({"generate", llama.string(), "--inputs", d.str("in.safetensors"), "--max-new-tokens", "8",
                     "--output", d.str("out.safetensors")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(
      test::bitwise_equal(read_safetensors(d.str("out.safetensors")).at("generated_ids"), g.at("generated_ids")));
}

TEST(CliText, RunTextWritesEncoderOutputs) {
  test::TempDir d;
  const fs::path m = model_dir(d, "bert-tiny-random", "bert-tiny-512");
  auto r = surf_cmd({"run", m.string(), "--text", "Hello, world!", "--text", "A longer second sentence here.",
                     "--output", d.str("out.safetensors")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const TensorMap out = read_safetensors(d.str("out.safetensors"));
  ASSERT_TRUE(out.count("last_hidden_state"));
  ASSERT_TRUE(out.count("pooler_output"));
  // The same as run --inputs with the ids the tokenizer gives (right-padded with attention_mask).
  auto s = Session::open(m.string(), [] {
    OpenOptions o;
    o.plugin_dirs = {test::plugin_dir()};
    return o;
  }());
  const TensorMap in = s->encode_texts({"Hello, world!", "A longer second sentence here."}, false);
  EXPECT_EQ(in.at("input_ids").i64()[0], 2);  // [CLS] of the cut vocabulary
  write_safetensors(d.str("in.safetensors"), in);
  r = surf_cmd({"run", m.string(), "--inputs", d.str("in.safetensors"), "--output", d.str("ref.safetensors")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const TensorMap ref = read_safetensors(d.str("ref.safetensors"));
  EXPECT_TRUE(test::bitwise_equal(out.at("last_hidden_state"), ref.at("last_hidden_state")));
  EXPECT_TRUE(test::bitwise_equal(out.at("pooler_output"), ref.at("pooler_output")));
}

}  // namespace
