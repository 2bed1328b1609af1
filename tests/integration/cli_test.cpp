// The surf executable as a user meets it: outputs, statistics, and one clear error line for bad input.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "../server_process.h"
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

// A TCP listener on 127.0.0.1 that accepts every connection and never says a word: no TLS
// handshake, no WebSocket upgrade answer, no hello.
class SilentServer {
 public:
  SilentServer() : fd_(test::listen_loopback(&port_)) {
    thread_ = std::thread([this] {
      while (!stop_) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, 50) == 1) {
          const int c = ::accept(fd_, nullptr, nullptr);
          if (c >= 0) held_.push_back(c);
        }
      }
    });
  }
  ~SilentServer() {
    stop_ = true;
    thread_.join();
    for (int c : held_) ::close(c);
    ::close(fd_);
  }
  int port() const { return port_; }

 private:
  int port_ = 0;
  int fd_;
  std::atomic<bool> stop_{false};
  std::vector<int> held_;  // touched by the thread only until it is joined
  std::thread thread_;
};

TEST(CliPolish, ConnectTimeoutBoundsASilentWeightServer) {
  SilentServer silent;
  const std::string ws = "ws://127.0.0.1:" + std::to_string(silent.port()) + "/m";
  const std::string wss = "wss://127.0.0.1:" + std::to_string(silent.port()) + "/m";
  test::TempDir d;
  const auto in = (llama() / "golden.safetensors").string();
  const std::vector<std::vector<std::string>> commands = {
      {"run", ws, "--inputs", in, "--output", d.str("o")},
      {"run", wss, "--inputs", in, "--output", d.str("o")},
      {"generate", ws, "--inputs", in, "--prompt-key", "gen_input_ids", "--max-new-tokens", "2", "--output",
       d.str("o")},
      {"inspect", ws},
      {"tokenize", ws, "--text", "hi"},
      {"verify", ws},
  };
  for (auto args : commands) {
    args.insert(args.end(), {"--connect-timeout", "1.5"});
    const auto t0 = std::chrono::steady_clock::now();
    // tokenize and verify load no plugin.
    args.insert(args.begin(), test::surf_exe());
    auto r = test::run_command(args);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    expect_one_line_error(r, "within the connect timeout (1.5 s, --connect-timeout)");
    EXPECT_GE(s, 1.4) << args[1] << " " << args[2];
    EXPECT_LT(s, 6.0) << args[1] << " " << args[2] << ": the deadline covers every attempt";
  }
  // check reports it as the fixture's failure.
  auto c = surf_cmd({"check", llama().string(), "--source", ws, "--connect-timeout", "1"});
  EXPECT_EQ(c.exit_code, 1);
  EXPECT_NE(c.out.find("within the connect timeout (1 s, --connect-timeout)"), std::string::npos) << c.out;
  EXPECT_FALSE(fs::exists(d.path() / "o"));
}

TEST(CliPolish, ConnectTimeoutMustBeAPositiveNumber) {
  const auto in = (llama() / "golden.safetensors").string();
  for (const std::string v : {"0", "-1", "-0.5"}) {
    auto r = surf_cmd({"run", "ws://127.0.0.1:9/m", "--inputs", in, "--output", "/tmp/never", "--connect-timeout", v});
    expect_one_line_error(r, "--connect-timeout must be more than 0 and at most 86400 seconds, got " + v);
  }
  for (const std::string v : {"abc", "5s", "", "nan", "inf"}) {
    auto r = surf_cmd({"inspect", "ws://127.0.0.1:9/m", "--connect-timeout", v});
    expect_one_line_error(r, "--connect-timeout expects a number of seconds, got '" + v + "'");
  }
  auto h = test::run_command({test::surf_exe(), "run", "--help"});
  EXPECT_NE(h.out.find("--connect-timeout VALUE"), std::string::npos) << h.out;
  EXPECT_NE(h.out.find("(default 30)"), std::string::npos) << h.out;
}

TEST(CliPolish, ServeNumericFlagsOutOfRangeAreRefused) {
  test::TempDir d;
  const std::string store = d.str("store");
  ASSERT_EQ(surf_cmd({"chunk", llama().string(), "--out", store}).exit_code, 0);
  const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      {"max-connections", "0", "1..1000000"},
      {"max-connections", "-1", "1..1000000"},
      {"max-connections-per-address", "-1", "0..1000000"},
      {"cache-mb", "-5", "0..1000000"},
      {"max-mbps", "-5", "0..1000000"},
      {"max-request-bytes", "100", "256..67108864"},
      {"max-request-bytes", "100000000", "256..67108864"},
      {"max-buffer-mb", "0", "1..1048576"},
      {"hello-timeout-ms", "0", "1..3600000"},
      {"hello-timeout-ms", "99999999", "1..3600000"},
      {"threads", "0", "1..256"},
      {"threads", "1000", "1..256"},
      {"port", "70000", "0..65535"},
  };
  for (const auto& [flag, value, range] : cases) {
    // Refused before listening: the command returns at once with one line (a server would not).
    auto r = test::run_command({test::surf_exe(), "serve", "--store", store, "--port", "0", "--" + flag, value});
    EXPECT_EQ(r.exit_code, 2) << flag << " " << value;
    expect_one_line_error(r, "--" + flag + " must be in " + range + ", got " + value);
    EXPECT_EQ(r.out.find("listening"), std::string::npos) << r.out;
  }
  auto nan = test::run_command({test::surf_exe(), "serve", "--store", store, "--threads", "two"});
  expect_one_line_error(nan, "--threads expects an integer, got 'two'");
}

TEST(CliPolish, CheckSkipsNonFixturesWithANote) {
  const std::string parent = test::fixtures_dir().string();                  // a directory, no golden.json
  const std::string readme = (test::fixtures_dir() / "README.md").string();  // a file a glob catches
  auto r = surf_cmd({"check", llama().string(), parent, readme});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("SKIP  " + parent + "  not a fixture (no golden.json): skipped"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("SKIP  " + readme + "  not a fixture (no golden.json): skipped"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" 0 failed, 2 skipped (not fixtures)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("PASS  " + llama().string()), std::string::npos) << r.out;
  // Only non-fixtures: nothing was compared, which is not a pass.
  auto none = surf_cmd({"check", parent});
  EXPECT_EQ(none.exit_code, 1) << none.out;
  EXPECT_NE(none.out.find("0 passed, 0 failed, 1 skipped"), std::string::npos) << none.out;
  // A path that does not exist is a typo, not a skip.
  test::TempDir d;
  auto missing = surf_cmd({"check", d.str("nope")});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.out.find("FAIL  " + d.str("nope") + "  no fixture directory"), std::string::npos) << missing.out;
}

TEST(CliPolish, CheckNotesAModelTypeDifferentFromTheSources) {
  // The llama fixture's weights chunked as a "mistral" model: check llama against that store.
  test::TempDir d;
  const fs::path as_mistral = copy_with_config(d, llama(), "model_type", "mistral");
  ASSERT_EQ(surf_cmd({"chunk", as_mistral.string(), "--out", d.str("store")}).exit_code, 0);
  auto r = surf_cmd({"check", llama().string(), "--source", d.str("store")});
  EXPECT_NE(r.out.find("NOTE  " + llama().string() + "  the fixture's model_type is 'llama' but the source " +
                       d.str("store") + " serves 'mistral'"),
            std::string::npos)
      << r.out;
  // The same store under its own model_type: no note.
  auto same = surf_cmd({"check", as_mistral.string(), "--source", d.str("store")});
  EXPECT_EQ(same.exit_code, 0) << same.out;
  EXPECT_EQ(same.out.find("NOTE"), std::string::npos) << same.out;
}

TEST(CliPolish, VerifyThroughAWeightServer) {
  test::TempDir d;
  const fs::path out = d.path() / "store";
  ASSERT_EQ(surf_cmd({"chunk", llama().string(), "--out", out.string()}).exit_code, 0);
  auto verify_cmd = [](std::vector<std::string> args) {
    args.insert(args.begin(), {test::surf_exe(), "verify"});
    return test::run_command(args);
  };
  {
    test::ServerProcess server({"--store", "llama=" + out.string()});
    auto ok = verify_cmd({server.url("llama")});
    ASSERT_EQ(ok.exit_code, 0) << ok.out << ok.err;
    EXPECT_NE(ok.out.find("ok  layers.1 ("), std::string::npos) << ok.out;
    EXPECT_NE(ok.out.find(server.url("llama") + ": 6 items, 0 bad"), std::string::npos) << ok.out;
    EXPECT_EQ(server.stop(), 0);
  }
  // One byte flipped in a chunk on the server's disk (before the server has read it): the
  // chunk the server sends no longer matches the manifest's checksum.
  {
    std::fstream f(out / "chunks" / "layers.1.msgpack", std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(100);
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x20);
    f.seekp(100);
    f.write(&c, 1);
  }
  test::ServerProcess server({"--store", "llama=" + out.string()});
  auto bad = verify_cmd({server.url("llama"), "--quiet"});
  EXPECT_EQ(bad.exit_code, 1) << bad.out << bad.err;
  EXPECT_NE(bad.out.find("BAD layers.1: "), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("checksum mismatch"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find(": 6 items, 1 bad"), std::string::npos) << bad.out;
  EXPECT_EQ(bad.out.find("ok  "), std::string::npos) << "--quiet prints only problems";
  // The local store says the same.
  auto local = verify_cmd({out.string(), "--quiet"});
  EXPECT_NE(local.out.find("BAD layers.1: checksum mismatch"), std::string::npos) << local.out;
  // A server that is not there: one line, exit 1.
  server.stop();
  auto gone = verify_cmd({server.url("llama"), "--connect-timeout", "2"});
  EXPECT_EQ(gone.exit_code, 1);
  EXPECT_EQ(std::count(gone.err.begin(), gone.err.end(), '\n'), 1) << gone.err;
}

namespace {

// A started surf command (stdout and stderr to files), stopped by its pid.
struct Started {
  pid_t pid = -1;
  std::string out_path, err_path;
  // Waits (at most 120 s) for the exit status, 128 + signal if killed.
  int wait() {
    const int code = test::wait_command(pid, 120);
    pid = -1;
    return code;
  }
  ~Started() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

void start_surf(Started& s, std::vector<std::string> args, const test::TempDir& d) {
  args.insert(args.begin(), test::surf_exe());
  args.insert(args.end(), {"--plugin-dir", test::plugin_dir()});
  s.out_path = d.str("stdout");
  s.err_path = d.str("stderr");
  s.pid = test::spawn_command(args, s.out_path, s.err_path);
}

// A finished chunk (a temporary ends in .tmpPID, not .msgpack) written after `since`.
bool has_finished_chunk(const fs::path& store, fs::file_time_type since) {
  std::error_code ec;
  for (auto it = fs::directory_iterator(store / "chunks", ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    std::error_code tec;
    if (it->path().extension() == ".msgpack" && fs::last_write_time(it->path(), tec) > since && !tec) return true;
  }
  return false;
}

// A checkpoint big enough that zstd level 19 takes seconds per chunk on this machine.
const fs::path& slow_checkpoint() {
  static test::TempDir keep;
  static const fs::path dir = [] {
    const fs::path p = keep.path() / "small";
    auto r =
        test::run_command({test::surf_exe(), "synth", "--arch", "llama", "--preset", "small", "--out", p.string()});
    if (r.exit_code != 0) throw std::runtime_error("synth failed: " + r.err);
    return p;
  }();
  return dir;
}

// Chunks slow_checkpoint() into `out` with zstd -19, sends `sig` once the first chunk is there.
int interrupt_chunking(const test::TempDir& d, const fs::path& out, int sig, std::string& err,
                       std::vector<std::string> extra = {}) {
  Started s;
  std::vector<std::string> args = {
      "chunk", slow_checkpoint().string(), "--out", out.string(), "--compress", "zstd", "--zstd-level", "19"};
  args.insert(args.end(), extra.begin(), extra.end());
  const auto since = fs::file_time_type::clock::now();
  start_surf(s, args, d);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!has_finished_chunk(out, since) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(has_finished_chunk(out, since)) << "no chunk written within 60 s";
  ::kill(s.pid, sig);
  const int code = s.wait();
  err = read_text_file(s.err_path);
  EXPECT_EQ(read_text_file(s.out_path), "") << "no summary: the store was not made";
  return code;
}

}  // namespace

TEST(CliPolish, InterruptedChunkRemovesItsPartialOutput) {
  test::TempDir d;
  // The output directory did not exist: it goes entirely.
  const fs::path fresh = d.path() / "fresh";
  std::string err;
  EXPECT_EQ(interrupt_chunking(d, fresh, SIGINT, err), 130);
  EXPECT_FALSE(fs::exists(fresh)) << "the directory chunk made must go";
  EXPECT_EQ(err, "surf chunk: interrupted by SIGINT: the partial output in '" + fresh.string() + "' was removed\n");
  // An existing empty directory stays, empty: only what chunk wrote (chunks/ included) goes.
  const fs::path empty = d.path() / "empty";
  fs::create_directories(empty);
  EXPECT_EQ(interrupt_chunking(d, empty, SIGTERM, err), 143);
  EXPECT_TRUE(fs::is_directory(empty));
  EXPECT_TRUE(fs::is_empty(empty)) << "left: "
                                   << (fs::is_empty(empty) ? "" : fs::directory_iterator(empty)->path().string());
  EXPECT_NE(err.find("interrupted by SIGTERM"), std::string::npos) << err;
  // --force over another store: what this run wrote goes; the old store had no manifest once
  // the run began, so nothing half-new is mistaken for a store.
  const fs::path forced = d.path() / "forced";
  ASSERT_EQ(surf_cmd({"chunk", llama().string(), "--out", forced.string()}).exit_code, 0);
  const auto before = fs::file_time_type::clock::now();
  EXPECT_EQ(interrupt_chunking(d, forced, SIGINT, err, {"--force"}), 130);
  EXPECT_NE(err.find("interrupted by SIGINT"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(forced / "manifest.json"));
  // The old store's chunks the run had not yet replaced may remain (which ones depends on where
  // the interrupt fell); nothing the interrupted run wrote may.
  for (const auto& e : fs::recursive_directory_iterator(forced)) {
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << "temporary left: " << e.path();
    if (e.is_regular_file()) {
      EXPECT_LT(e.last_write_time(), before) << "written by the interrupted run: " << e.path();
    }
  }
}

namespace {

// Runs surf with stderr on a pseudo-terminal (stdout to a file); returns what the terminal showed.
std::string run_with_terminal_stderr(std::vector<std::string> args, int& exit_code) {
  args.insert(args.begin(), test::surf_exe());
  args.insert(args.end(), {"--plugin-dir", test::plugin_dir()});
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY);
  EXPECT_GE(master, 0);
  EXPECT_EQ(::grantpt(master), 0);
  EXPECT_EQ(::unlockpt(master), 0);
  const std::string slave = ::ptsname(master);
  test::TempDir d;
  const std::string out_path = d.str("stdout");
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setsid();
    const int s = ::open(slave.c_str(), O_RDWR);
    const int o = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(s, 2);
    ::dup2(o, 1);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    std::_Exit(127);
  }
  std::string seen;
  int status = 0;
  bool exited = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{master, POLLIN, 0};
    if (::poll(&p, 1, 50) == 1) {
      char buf[4096];
      const ssize_t n = ::read(master, buf, sizeof buf);
      if (n > 0) {
        seen.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (exited) break;  // EIO: the child's side is closed
    }
    if (!exited && ::waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
    } else if (exited) {
      break;
    }
  }
  if (!exited) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  ::close(master);
  exit_code = exited && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return seen;
}

}  // namespace

TEST(CliPolish, ProgressLineOnlyWhenStderrIsATerminal) {
  test::TempDir d;
  int code = -1;
  const std::string tty =
      run_with_terminal_stderr({"chunk", llama().string(), "--out", d.str("store"), "--dtype", "bf16"}, code);
  ASSERT_EQ(code, 0) << tty;
  // Redrawn in place, components and bytes, rate and time left, ended with a newline.
  size_t chunks = 0;
  for (const auto& e : fs::directory_iterator(d.path() / "store" / "chunks")) chunks += e.is_regular_file();
  ASSERT_GT(chunks, 2u);
  const std::string n = std::to_string(chunks);
  EXPECT_NE(tty.find("\rchunking: 0/" + n + " components, 0 B / "), std::string::npos) << tty;
  EXPECT_NE(tty.find("\rchunking: " + n + "/" + n + " components, "), std::string::npos) << tty;
  EXPECT_NE(tty.find("/s, 0 s left"), std::string::npos) << tty;
  EXPECT_EQ(tty.back(), '\n') << tty;
  // The same with stderr to a file: no progress at all.
  auto quiet = surf_cmd({"chunk", llama().string(), "--out", d.str("store2"), "--dtype", "bf16"});
  ASSERT_EQ(quiet.exit_code, 0) << quiet.err;
  EXPECT_EQ(quiet.err, "");
  // run: fetch progress on a terminal, none in a file (the statistics are printed either way).
  const TensorMap g = read_safetensors(llama() / "golden.safetensors");
  const auto in =
      write_inputs(d, "in.safetensors", {{"input_ids", g.at("input_ids")}, {"attention_mask", g.at("attention_mask")}});
  const std::string run_tty =
      run_with_terminal_stderr({"run", d.str("store"), "--inputs", in, "--output", d.str("o"), "--cache-size", "1",
                                "--prefetch", "0", "--stats-json", d.str("stats.json")},
                               code);
  ASSERT_EQ(code, 0) << run_tty;
  EXPECT_NE(run_tty.find("\rfetching: "), std::string::npos) << run_tty;
  // The last draw counts every fetch the statistics count.
  const auto fetches = nlohmann::json::parse(read_text_file(d.str("stats.json")))["fetches"].get<int>();
  EXPECT_NE(run_tty.find("\rfetching: " + std::to_string(fetches) + " components fetched, "), std::string::npos)
      << run_tty;
  auto run_file =
      surf_cmd({"run", d.str("store"), "--inputs", in, "--output", d.str("o"), "--cache-size", "1", "--prefetch", "0"});
  ASSERT_EQ(run_file.exit_code, 0) << run_file.err;
  EXPECT_EQ(run_file.err.find("fetching:"), std::string::npos) << run_file.err;
  EXPECT_EQ(run_file.err.find('\r'), std::string::npos) << run_file.err;
  // generate --inputs: the same.
  const std::string gen_tty =
      run_with_terminal_stderr({"generate", d.str("store"), "--inputs", (llama() / "golden.safetensors").string(),
                                "--prompt-key", "gen_input_ids", "--max-new-tokens", "3", "--output", d.str("g")},
                               code);
  ASSERT_EQ(code, 0) << gen_tty;
  EXPECT_NE(gen_tty.find("\rfetching: "), std::string::npos) << gen_tty;
}
