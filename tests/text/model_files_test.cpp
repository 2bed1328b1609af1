// Tokenizer files travel with the model: the chunker copies them into the store (listed in the
// manifest with size and checksum), and a store directory or an s3:// store tokenizes and
// generates text with nothing else local.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "moto_process.h"
#include "surf/runtime.h"
#include "surf/storage/manifest.h"
#include "test_util.h"
#include "text/text_test_util.h"

using namespace surf;
namespace fs = std::filesystem;

namespace {

const char* kGenerationConfig = R"({"bos_token_id": 510, "eos_token_id": [511, 7]})";

// The llama fixture with the tiny tokenizer and a generation_config.json.
fs::path text_checkpoint(const test::TempDir& d) {
  const fs::path dir = d.path() / "hf";
  fs::create_directories(dir);
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(test::fixtures_dir() / "llama-tiny-random" / f, dir / f);
  std::ofstream(dir / "tokenizer.json") << test::tokenizer_json("tiny-bpe-512");
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"})";
  std::ofstream(dir / "generation_config.json") << kGenerationConfig;
  return dir;
}

std::unique_ptr<Session> open(const std::string& source) {
  OpenOptions o;
  o.plugin_dirs = {test::plugin_dir()};
  return Session::open(source, o);
}

GenerateOptions greedy(int64_t n) {
  GenerateOptions g;
  g.max_new_tokens = n;
  g.stop_at_eos = false;
  return g;
}

TEST(ModelFiles, ChunkerCopiesThemAndTheStoreServesThem) {
  test::TempDir d;
  const fs::path hf = text_checkpoint(d);
  ChunkOptions co;
  co.plugin_dirs = {test::plugin_dir()};
  const std::string summary = chunk_checkpoint(hf.string(), d.str("store"), co);
  EXPECT_NE(summary.find("files: tokenizer.json tokenizer_config.json generation_config.json"), std::string::npos)
      << summary;
  const Manifest m = Manifest::from_json(test::read_file(d.path() / "store" / "manifest.json"));
  ASSERT_EQ(m.files.size(), 3u);
  const ManifestFile* tj = m.find_file("tokenizer.json");
  ASSERT_NE(tj, nullptr);
  EXPECT_EQ(tj->bytes, fs::file_size(hf / "tokenizer.json"));
  EXPECT_FALSE(tj->checksum.empty());
  EXPECT_EQ(test::read_file(d.path() / "store" / "files" / "tokenizer.json"), test::read_file(hf / "tokenizer.json"));

  const std::string text = "Streaming weights, one layer at a time.";
  EXPECT_EQ(load_tokenizer(d.str("store"))->encode(text), load_tokenizer(hf.string())->encode(text));
  auto from_store = open(d.str("store"));
  auto from_hf = open(hf.string());
  EXPECT_EQ(from_store->eos_token_ids(), (std::vector<int64_t>{511, 7}));
  EXPECT_EQ(from_store->generate_text({"Once upon"}, greedy(12)).texts,
            from_hf->generate_text({"Once upon"}, greedy(12)).texts);

  // A store file that no longer matches its manifest entry is an error, not silently used.
  std::ofstream(d.path() / "store" / "files" / "tokenizer.json", std::ios::app) << " ";
  try {
    load_tokenizer(d.str("store"));
    FAIL() << "a changed tokenizer.json was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::corrupt);
    EXPECT_NE(std::string(e.what()).find("does not match its manifest entry"), std::string::npos) << e.what();
  }
}

TEST(ModelFiles, StoresWithoutFilesSaySoInOneLine) {
  test::TempDir d;
  ChunkOptions co;
  co.plugin_dirs = {test::plugin_dir()};
  chunk_checkpoint((test::fixtures_dir() / "llama-tiny-random").string(), d.str("store"), co);
  EXPECT_TRUE(Manifest::from_json(test::read_file(d.path() / "store" / "manifest.json")).files.empty());
  auto r = test::run_command({test::surf_exe(), "tokenize", d.str("store"), "--text", "hi"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("has no tokenizer files"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1);
}

test::MotoProcess& moto() {
  static test::MotoProcess m({"surf-text"});
  return m;
}

TEST(ModelFiles, S3StoreTokenizesAndGeneratesWithNothingLocal) {
  if (!moto().available()) GTEST_SKIP() << "local S3 server unavailable: " << moto().why_unavailable();
  ::setenv("AWS_ENDPOINT_URL", moto().endpoint().c_str(), 1);
  ::setenv("AWS_ACCESS_KEY_ID", moto().access_key().c_str(), 1);
  ::setenv("AWS_SECRET_ACCESS_KEY", moto().secret_key().c_str(), 1);
  ::setenv("AWS_REGION", "us-east-1", 1);
  test::TempDir d;
  const fs::path hf = text_checkpoint(d);
  ChunkOptions co;
  co.plugin_dirs = {test::plugin_dir()};
  const std::string url = "s3://surf-text/tiny-llama";
  chunk_checkpoint(hf.string(), url, co);
  const std::string text = "Weights come from a bucket; so does the tokenizer.";
  EXPECT_EQ(load_tokenizer(url)->encode(text), load_tokenizer(hf.string())->encode(text));
  auto r = test::run_command({test::surf_exe(), "tokenize", url, "--text", text});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto local = test::run_command({test::surf_exe(), "tokenize", hf.string(), "--text", text});
  EXPECT_EQ(r.out, local.out);
  auto s3 = open(url);
  EXPECT_EQ(s3->eos_token_ids(), (std::vector<int64_t>{511, 7}));
  EXPECT_EQ(s3->generate_text({"Once upon"}, greedy(10)).texts,
            open(hf.string())->generate_text({"Once upon"}, greedy(10)).texts);
}

}  // namespace
