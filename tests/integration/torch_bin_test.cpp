// pytorch_model.bin checkpoints as a SOURCE and as `surf chunk` input: the same outputs, bit for
// bit, as the safetensors fixture they were written from (tests/data/make_torch_bins.py), and a
// malicious .bin refused by the CLI with nothing run.
#include <gtest/gtest.h>

#include "../test_util.h"
#include "surf/runtime.h"
#include "surf/storage/safetensors.h"

using namespace surf;
namespace fs = std::filesystem;

namespace {

const char* kMarker = "/tmp/surf-malicious-pickle-ran";
const char* kPairs[] = {"llama-tiny-attnbias-linear-rope", "qwen2-tiny-untied-bf16-sharded",
                        "gpt-neox-tiny-sequential-buffers"};

fs::path bin_dir(const std::string& fixture) { return test::data_dir() / "torch" / (fixture + "-bin"); }

struct Outputs {
  TensorMap forward, generate;
};

Outputs run(const std::string& source, const TensorMap& golden, int cache, int prefetch) {
  OpenOptions o;
  o.plugin_dirs = {test::plugin_dir()};
  o.cache_size = cache;
  o.prefetch = prefetch;
  auto s = Session::open(source, o);
  RunOptions ro;
  ro.hidden_states = true;
  Outputs out;
  out.forward = s->forward({{"input_ids", golden.at("input_ids")},
                            {"attention_mask", golden.at("attention_mask")},
                            {"position_ids", golden.at("position_ids")}},
                           ro);
  out.generate = s->generate({{"input_ids", golden.at("gen_input_ids")}}, 8);
  return out;
}

void expect_identical(const Outputs& a, const Outputs& b, const std::string& what) {
  for (const char* name : {"logits", "last_hidden_state", "hidden_states"}) {
    EXPECT_TRUE(test::bitwise_equal(a.forward.at(name), b.forward.at(name))) << what << " " << name;
  }
  for (const char* name : {"generated_ids", "generation_logits"}) {
    EXPECT_TRUE(test::bitwise_equal(a.generate.at(name), b.generate.at(name))) << what << " " << name;
  }
}

}  // namespace

TEST(TorchBin, SameOutputsAsTheSafetensorsFixtureBitForBit) {
  for (const std::string fixture : kPairs) {
    const fs::path st = test::fixtures_dir() / fixture;
    const TensorMap golden = read_safetensors(st / "golden.safetensors");
    const Outputs want = run(st.string(), golden, 8, 1);
    for (auto [cache, prefetch] : {std::pair<uint64_t, int>{1, 0}, {1, 2}, {8, 1}}) {
      expect_identical(run(bin_dir(fixture).string(), golden, cache, prefetch), want,
                       fixture + " cache " + std::to_string(cache) + " prefetch " + std::to_string(prefetch));
    }
  }
}

TEST(TorchBin, ChunkedFromBinMatchesChunkedFromSafetensors) {
  for (const std::string fixture : kPairs) {
    const fs::path st = test::fixtures_dir() / fixture;
    const TensorMap golden = read_safetensors(st / "golden.safetensors");
    test::TempDir d;
    ChunkOptions co;
    co.plugin_dirs = {test::plugin_dir()};
    chunk_checkpoint(bin_dir(fixture).string(), d.str("from-bin"), co);
    chunk_checkpoint(st.string(), d.str("from-st"), co);
    expect_identical(run(d.str("from-bin"), golden, 1, 1), run(d.str("from-st"), golden, 1, 1), fixture);
    expect_identical(run(d.str("from-bin"), golden, 1, 1), run(st.string(), golden, 1, 1), fixture + " vs hf");
  }
}

TEST(TorchBin, CliRunsBinCheckpointsAndRefusesAMaliciousOne) {
  test::TempDir d;
  const fs::path fixture = test::fixtures_dir() / "llama-tiny-attnbias-linear-rope";
  auto ok = test::run_command({test::surf_exe(), "chunk", bin_dir("llama-tiny-attnbias-linear-rope").string(), "--out",
                               d.str("store"), "--plugin-dir", test::plugin_dir()});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;

  fs::create_directories(d.path() / "evil");
  fs::copy_file(fixture / "config.json", d.path() / "evil" / "config.json");
  fs::copy_file(test::data_dir() / "torch" / "malicious.bin", d.path() / "evil" / "pytorch_model.bin");
  fs::remove(kMarker);
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"run", d.str("evil"), "--inputs", (fixture / "golden.safetensors").string(),
                                 "--output", d.str("out.safetensors")},
        std::vector<std::string>{"chunk", d.str("evil"), "--out", d.str("evil-store")},
        std::vector<std::string>{"inspect", d.str("evil")}}) {
    std::vector<std::string> argv{test::surf_exe()};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--plugin-dir", test::plugin_dir()});
    const auto r = test::run_command(argv);
    EXPECT_NE(r.exit_code, 0) << args[0];
    EXPECT_NE(r.err.find("refused global 'posix.system'"), std::string::npos) << args[0] << ": " << r.err;
    EXPECT_FALSE(fs::exists(kMarker)) << args[0];
  }
  EXPECT_FALSE(fs::exists(d.path() / "evil-store" / "manifest.json"));
}
