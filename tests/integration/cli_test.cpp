// The surf executable as a user meets it: outputs, statistics, and one clear error line for bad input.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "surf/storage/safetensors.h"
#include "surf/version.h"

using namespace surf;
namespace fs = std::filesystem;

namespace {

fs::path llama() { return test::fixtures_dir() / "llama-tiny-random"; }

test::CommandResult surf_cmd(std::vector<std::string> args) {
  args.insert(args.begin(), test::surf_exe());
  args.push_back("--plugin-dir");
  args.push_back(test::plugin_dir());
  return test::run_command(args);
}

// A failed command prints exactly one line on stderr, containing `text`.
void expect_one_line_error(const test::CommandResult& r, const std::string& text) {
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(text), std::string::npos) << r.err;
}

std::string write_inputs(const test::TempDir& d, const std::string& name, TensorMap t) {
  const std::string p = d.str(name);
  write_safetensors(p, t);
  return p;
}

// A copy of a fixture with config.json edited.
fs::path copy_with_config(const test::TempDir& d, const fs::path& src, const std::string& key,
                          const nlohmann::json& v) {
  const fs::path dst = d.path() / "model";
  fs::create_directories(dst);
  for (const auto& f : {"model.safetensors", "golden.safetensors", "golden.json"}) fs::copy_file(src / f, dst / f);
  auto cfg = nlohmann::json::parse(read_text_file(src / "config.json"));
  cfg[key] = v;
  std::ofstream(dst / "config.json") << cfg.dump();
  return dst;
}

}  // namespace

TEST(Cli, RunWritesOutputsAndStatistics) {
  test::TempDir d;
  const TensorMap g = read_safetensors(llama() / "golden.safetensors");
  const auto in =
      write_inputs(d, "in.safetensors", {{"input_ids", g.at("input_ids")}, {"attention_mask", g.at("attention_mask")}});
  auto chunk = surf_cmd({"chunk", llama().string(), "--out", d.str("store"), "--dtype", "bf16"});
  ASSERT_EQ(chunk.exit_code, 0) << chunk.err;
  auto r = surf_cmd({"run", d.str("store"), "--inputs", in, "--output", d.str("out.safetensors"), "--cache-size", "1",
                     "--prefetch", "1", "--stats-json", d.str("stats.json")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("cache: hits"), std::string::npos) << r.err;
  const TensorMap out = read_safetensors(d.str("out.safetensors"));
  EXPECT_EQ(out.at("logits").shape(), (Shape{2, 12, 512}));
  EXPECT_EQ(out.at("last_hidden_state").shape(), (Shape{2, 12, 64}));
  const auto stats = nlohmann::json::parse(read_text_file(d.str("stats.json")));
  EXPECT_EQ(stats["misses"].get<int>() + stats["hits"].get<int>(), 4);  // 3 layers + lm_head
  EXPECT_GT(stats["bytes_fetched"].get<int64_t>(), 0);
}

TEST(Cli, GenerateWithPromptKeyMatchesGoldenIds) {
  test::TempDir d;
  auto r = surf_cmd({"generate", llama().string(), "--inputs", (llama() / "golden.safetensors").string(),
                     "--prompt-key", "gen_input_ids", "--max-new-tokens", "8", "--output", d.str("gen.safetensors"),
                     "--cache-size", "1", "--prefetch", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const TensorMap out = read_safetensors(d.str("gen.safetensors"));
  const TensorMap g = read_safetensors(llama() / "golden.safetensors");
  EXPECT_TRUE(test::bitwise_equal(out.at("generated_ids"), g.at("generated_ids")));
}

TEST(Cli, PluginsInspectAndHelp) {
  auto p = surf_cmd({"plugins"});
  ASSERT_EQ(p.exit_code, 0) << p.err;
  EXPECT_NE(p.out.find("loaded"), std::string::npos);
  EXPECT_NE(p.out.find("[llama, qwen2, mistral]"), std::string::npos) << p.out;
  EXPECT_NE(p.out.find("[gpt_neox]"), std::string::npos) << p.out;
  auto i = surf_cmd({"inspect", llama().string()});
  ASSERT_EQ(i.exit_code, 0) << i.err;
  EXPECT_NE(i.out.find("layers.2  streamed"), std::string::npos) << i.out;
  EXPECT_NE(i.out.find("embed  resident"), std::string::npos) << i.out;
  for (const char* cmd : {"chunk", "run", "generate", "plugins", "inspect", "check", "synth"}) {
    auto h = test::run_command({test::surf_exe(), cmd, "--help"});
    EXPECT_EQ(h.exit_code, 0) << cmd;
    EXPECT_NE(h.out.find("usage: surf"), std::string::npos) << cmd;
  }
}

TEST(Cli, CheckPassesOnGoldenAndFailsOnATamperedOne) {
  auto ok = surf_cmd({"check", llama().string()});
  EXPECT_EQ(ok.exit_code, 0) << ok.out;
  EXPECT_NE(ok.out.find("0 failed"), std::string::npos) << ok.out;
  // Nudge one compared logit by 10x the tolerance: check must notice.
  test::TempDir d;
  const fs::path copy = copy_with_config(d, llama(), "model_type", "llama");
  TensorMap g = read_safetensors(copy / "golden.safetensors");
  g["logits"] = g["logits"].clone();
  g["logits"].f32()[100] += 1e-3f;
  write_safetensors(copy / "golden.safetensors", g);
  auto bad = surf_cmd({"check", copy.string()});
  EXPECT_EQ(bad.exit_code, 1) << bad.out;
  EXPECT_NE(bad.out.find("FAIL"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("1 failed"), std::string::npos) << bad.out;
}

TEST(CliErrors, UnknownModelType) {
  test::TempDir d;
  const fs::path m = copy_with_config(d, llama(), "model_type", "mamba");
  auto r = surf_cmd({"run", m.string(), "--inputs", (m / "golden.safetensors").string(), "--output", d.str("o")});
  expect_one_line_error(r, "no plugin serves model_type 'mamba'");
}

TEST(CliErrors, ConfigKeyOfTheWrongType) {
  test::TempDir d;
  const fs::path m = copy_with_config(d, llama(), "num_hidden_layers", "three");
  auto r = surf_cmd({"run", m.string(), "--inputs", (m / "golden.safetensors").string(), "--output", d.str("o")});
  expect_one_line_error(r, "'num_hidden_layers' must be an integer");
}

TEST(CliErrors, T5CheckpointUnderTheLlamaModelType) {
  test::TempDir d;
  const fs::path m = copy_with_config(d, test::fixtures_dir() / "t5-tiny-random", "model_type", "llama");
  auto r = surf_cmd({"run", m.string(), "--inputs", (m / "golden.safetensors").string(), "--output", d.str("o")});
  expect_one_line_error(r, "config.json: missing key 'hidden_size'");
}

TEST(CliErrors, MissingTensorIsNamed) {
  test::TempDir d;
  const fs::path m = copy_with_config(d, llama(), "model_type", "llama");
  TensorMap w = read_safetensors(m / "model.safetensors");
  w.erase("model.layers.1.mlp.up_proj.weight");
  write_safetensors(m / "model.safetensors", w);
  auto r = surf_cmd({"run", m.string(), "--inputs", (m / "golden.safetensors").string(), "--output", d.str("o")});
  expect_one_line_error(r, "model.layers.1.mlp.up_proj.weight");
}

TEST(CliErrors, MissingAndCorruptChunks) {
  test::TempDir d;
  ASSERT_EQ(surf_cmd({"chunk", llama().string(), "--out", d.str("store")}).exit_code, 0);
  const std::string in = (llama() / "golden.safetensors").string();
  // Corrupt one byte in the middle of layers.2's chunk.
  {
    std::fstream f(d.path() / "store/chunks/layers.2.msgpack", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(2000);
    f.put('\x7f');
  }
  auto r = surf_cmd({"run", d.str("store"), "--inputs", in, "--output", d.str("o")});
  expect_one_line_error(r, "component 'layers.2': checksum mismatch");
  fs::remove(d.path() / "store/chunks/layers.1.msgpack");
  r = surf_cmd({"run", d.str("store"), "--inputs", in, "--output", d.str("o"), "--prefetch", "2"});
  expect_one_line_error(r, "component 'layers.1': chunk missing");
  EXPECT_FALSE(fs::exists(d.path() / "o"));
}

TEST(CliErrors, BadTokensLengthsAndEmptyInput) {
  test::TempDir d;
  const std::string src = llama().string();
  auto run = [&](TensorMap in) {
    return surf_cmd({"run", src, "--inputs", write_inputs(d, "in.safetensors", in), "--output", d.str("o")});
  };
  expect_one_line_error(run({{"input_ids", Tensor::from_i64({1, 3}, {1, 99999, 2})}}), "token id 99999");
  expect_one_line_error(run({{"input_ids", Tensor::from_i64({1, 2}, {-1, 2})}}), "token id -1");
  expect_one_line_error(run({{"input_ids", Tensor::zeros(DType::I64, {1, 65})}}),
                        "65 tokens exceeds max_position_embeddings 64");
  expect_one_line_error(run({{"input_ids", Tensor::zeros(DType::I64, {1, 0})}}), "input_ids is empty");
  expect_one_line_error(run({{"input_ids", Tensor::from_f32({1, 2}, {1, 2})}}), "input_ids: expected dtype I64");
  expect_one_line_error(run({{"attention_mask", Tensor::from_i64({1, 1}, {1})}}), "no 'input_ids'");
  expect_one_line_error(
      run({{"input_ids", Tensor::from_i64({1, 2}, {1, 2})}, {"attention_mask", Tensor::from_i64({1, 3}, {1, 1, 1})}}),
      "attention_mask: expected shape [1, 2]");
  auto r = surf_cmd({"run", src, "--inputs", d.str("nope.safetensors"), "--output", d.str("o")});
  expect_one_line_error(r, "nope.safetensors");
  r = surf_cmd(
      {"run", d.str("not-a-model"), "--inputs", (llama() / "golden.safetensors").string(), "--output", d.str("o")});
  expect_one_line_error(r, "does not exist");
  r = surf_cmd(
      {"run", src, "--inputs", (llama() / "golden.safetensors").string(), "--output", d.str("o"), "--cache-size", "0"});
  expect_one_line_error(r, "cache_size (--cache-size) must be at least 1, got 0");
  r = surf_cmd(
      {"run", src, "--inputs", (llama() / "golden.safetensors").string(), "--output", d.str("o"), "--prefetch", "-1"});
  expect_one_line_error(r, "prefetch (--prefetch) must be 0 (none) or more, got -1");
  // check follows the same rule, once, before running any fixture.
  r = surf_cmd({"check", src, "--cache-size", "-3"});
  expect_one_line_error(r, "cache_size (--cache-size) must be at least 1, got -3");
  EXPECT_EQ(r.out, "");
  r = surf_cmd({"frobnicate"});
  expect_one_line_error(r, "unknown command");
}

// --- CLI polish (issue 12) ---

TEST(CliPolish, VersionAndVersionCommand) {
  auto v = test::run_command({test::surf_exe(), "--version"});
  ASSERT_EQ(v.exit_code, 0) << v.err;
  EXPECT_EQ(v.out, "surf " SURF_SDK_VERSION "\n");
  auto full = test::run_command({test::surf_exe(), "version"});
  ASSERT_EQ(full.exit_code, 0) << full.err;
  EXPECT_EQ(full.out.rfind("surf " SURF_SDK_VERSION "\n", 0), 0u) << full.out;
  EXPECT_NE(full.out.find("plugin ABI " + std::to_string(SURF_ABI_MAJOR) + "." + std::to_string(SURF_ABI_MINOR)),
            std::string::npos)
      << full.out;
  EXPECT_NE(full.out.find(std::string("build tag ") + SURF_BUILD_TAG), std::string::npos) << full.out;
  EXPECT_NE(full.out.find("plugin search path:"), std::string::npos) << full.out;
}

TEST(CliPolish, NumericFlagsOutOfRangeAreRefusedBeforeAnyWork) {
  test::TempDir d;
  auto z = surf_cmd({"chunk", llama().string(), "--out", d.str("store"), "--compress", "zstd", "--zstd-level", "99"});
  expect_one_line_error(z, "--zstd-level must be in 1..22, got 99");
  EXPECT_FALSE(fs::exists(d.path() / "store"));
  auto z0 = surf_cmd({"chunk", llama().string(), "--out", d.str("store"), "--compress", "zstd", "--zstd-level", "0"});
  expect_one_line_error(z0, "--zstd-level must be in 1..22, got 0");
  const auto in = (llama() / "golden.safetensors").string();
  auto sb = surf_cmd({"run", llama().string(), "--inputs", in, "--output", d.str("o"), "--spare-buffers", "-3"});
  expect_one_line_error(sb, "--spare-buffers must be in 0..1024, got -3");
  EXPECT_FALSE(fs::exists(d.path() / "o"));
  auto tk = surf_cmd({"generate", llama().string(), "--inputs", in, "--prompt-key", "gen_input_ids", "--max-new-tokens",
                      "2", "--output", d.str("o"), "--top-k", "-1"});
  expect_one_line_error(tk, "--top-k must be in 0..");
  // In range: accepted.
  auto ok = surf_cmd({"chunk", llama().string(), "--out", d.str("store"), "--compress", "zstd", "--zstd-level", "22"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

TEST(CliPolish, MisspelledInputNameIsAnError) {
  test::TempDir d;
  const TensorMap g = read_safetensors(llama() / "golden.safetensors");
  const auto in = write_inputs(d, "in.safetensors",
                               {{"input_ids", g.at("input_ids")}, {"attention_masks", g.at("attention_mask")}});
  auto r = surf_cmd({"run", llama().string(), "--inputs", in, "--output", d.str("o")});
  expect_one_line_error(r, "unknown input 'attention_masks' (did you mean 'attention_mask'?)");
  EXPECT_FALSE(fs::exists(d.path() / "o"));
  // Spelled right, the same file runs.
  const auto good = write_inputs(d, "good.safetensors",
                                 {{"input_ids", g.at("input_ids")}, {"attention_mask", g.at("attention_mask")}});
  EXPECT_EQ(surf_cmd({"run", llama().string(), "--inputs", good, "--output", d.str("o")}).exit_code, 0);
}

static size_t regular_files(const fs::path& dir) {
  size_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) n += e.is_regular_file() ? 1 : 0;
  return n;
}

TEST(CliPolish, ChunkRefusesANonEmptyOutputUnlessForced) {
  test::TempDir d;
  const fs::path out = d.path() / "store";
  fs::create_directories(out / "chunks");
  std::ofstream(out / "chunks" / "stale.msgpack") << "from another model";
  auto r = surf_cmd({"chunk", llama().string(), "--out", out.string()});
  expect_one_line_error(r, "is not empty (1 files); give --force to replace it");
  EXPECT_EQ(read_text_file(out / "chunks" / "stale.msgpack"), "from another model");
  EXPECT_FALSE(fs::exists(out / "manifest.json"));
  // --force replaces it: the stale chunk goes, the new store is complete and runs.
  auto f = surf_cmd({"chunk", llama().string(), "--out", out.string(), "--force"});
  ASSERT_EQ(f.exit_code, 0) << f.err;
  EXPECT_FALSE(fs::exists(out / "chunks" / "stale.msgpack"));
  EXPECT_TRUE(fs::exists(out / "manifest.json"));
  const TensorMap g = read_safetensors(llama() / "golden.safetensors");
  const auto in =
      write_inputs(d, "in.safetensors", {{"input_ids", g.at("input_ids")}, {"attention_mask", g.at("attention_mask")}});
  EXPECT_EQ(surf_cmd({"run", out.string(), "--inputs", in, "--output", d.str("o")}).exit_code, 0);
}

TEST(CliPolish, ChunkFailingMidwayLeavesNoPartialStore) {
  test::TempDir d;
  // A directory where the third chunk must go: the first chunks are written, then the rename fails.
  const fs::path out = d.path() / "store";
  fs::create_directories(out / "chunks" / "layers.1.msgpack");
  auto r = surf_cmd({"chunk", llama().string(), "--out", out.string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(regular_files(out), 0u) << "partial chunks or a manifest left behind";
  // One line naming what failed, and the partial store is gone.
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("layers.1.msgpack"), std::string::npos) << r.err;
}

TEST(CliPolish, VerifyRechecksEveryChunk) {
  auto verify_cmd = [](std::vector<std::string> args) {
    args.insert(args.begin(), {test::surf_exe(), "verify"});
    return test::run_command(args);
  };
  test::TempDir d;
  const fs::path out = d.path() / "store";
  ASSERT_EQ(surf_cmd({"chunk", llama().string(), "--out", out.string()}).exit_code, 0);
  auto ok = verify_cmd({out.string()});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("ok  layers.1 ("), std::string::npos) << ok.out;
  EXPECT_NE(ok.out.find(": 6 items, 0 bad"), std::string::npos) << ok.out;
  // One flipped byte in one chunk, another chunk cut short: both named, exit 1.
  {
    std::fstream f(out / "chunks" / "layers.1.msgpack", std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(100);
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x20);
    f.seekp(100);
    f.write(&c, 1);
  }
  fs::resize_file(out / "chunks" / "embed.msgpack", fs::file_size(out / "chunks" / "embed.msgpack") - 10);
  auto bad = verify_cmd({out.string(), "--quiet"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.out.find("BAD layers.1: checksum mismatch"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("BAD embed: size"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find(": 6 items, 2 bad"), std::string::npos) << bad.out;
  EXPECT_EQ(bad.out.find("ok  "), std::string::npos) << "--quiet prints only problems";
  // Not a store: one line.
  expect_one_line_error(verify_cmd({d.str("nothing")}), "no chunk store directory");
  expect_one_line_error(verify_cmd({llama().string()}), "has no manifest.json");
}

TEST(CliPolish, OutputAndStatsPathsAreCheckedBeforeTheRun) {
  test::TempDir d;
  const auto in = (llama() / "golden.safetensors").string();
  auto s = surf_cmd(
      {"run", llama().string(), "--inputs", in, "--output", d.str("o"), "--stats-json", d.str("missing/stats.json")});
  expect_one_line_error(s, "--stats-json '" + d.str("missing/stats.json") + "': no directory");
  EXPECT_EQ(s.err.find("time:"), std::string::npos) << "the run must not have happened";
  EXPECT_FALSE(fs::exists(d.path() / "o"));
  auto o = surf_cmd({"run", llama().string(), "--inputs", in, "--output", d.str("missing/o.safetensors")});
  expect_one_line_error(o, "--output '" + d.str("missing/o.safetensors") + "': no directory");
}

TEST(CliPolish, InspectShowsDtypeAndCompression) {
  test::TempDir d;
  auto hf = surf_cmd({"inspect", llama().string()});
  ASSERT_EQ(hf.exit_code, 0) << hf.err;
  EXPECT_NE(hf.out.find("compression: none\ndtype: keep\n"), std::string::npos) << hf.out;
  EXPECT_NE(hf.out.find("layers.0  streamed  9 tensors (F32 x9)  "), std::string::npos) << hf.out;
  ASSERT_EQ(
      surf_cmd({"chunk", llama().string(), "--out", d.str("s"), "--dtype", "bf16", "--compress", "zstd"}).exit_code, 0);
  auto st = surf_cmd({"inspect", d.str("s")});
  ASSERT_EQ(st.exit_code, 0) << st.err;
  EXPECT_NE(st.out.find("compression: zstd\ndtype: bf16\n"), std::string::npos) << st.out;
  EXPECT_NE(st.out.find("layers.0  streamed  9 tensors (BF16 x9)  "), std::string::npos) << st.out;
  auto j = surf_cmd({"inspect", d.str("s"), "--json"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  const auto js = nlohmann::json::parse(j.out);
  EXPECT_EQ(js["compression"], "zstd");
  EXPECT_EQ(js["dtype"], "bf16");
  EXPECT_EQ(js["components"][1]["dtypes"], "BF16 x9");
}
