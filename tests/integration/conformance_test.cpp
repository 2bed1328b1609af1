// Every fixture through the plugin serving its model_type, from the HF directory, from a chunk
// store and through a weight server, with small and large caches and prefetch depths. A new architecture is covered by
// dropping its plugin into plugins/ and its fixture into tests/fixtures/.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "surf/runtime.h"
#include "synth.h"
#include "surf/storage/safetensors.h"

using namespace surf;
namespace fs = std::filesystem;

namespace {

struct Case {
  std::string fixture;
  std::string source;
  int cache;
  int prefetch;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.fixture << " source=" << c.source << " cache=" << c.cache << " prefetch=" << c.prefetch;
}

std::vector<Case> all_cases() {
  std::vector<Case> out;
  for (const auto& dir : test::fixture_dirs()) {
    for (const char* source : {"hf", "store"}) {
      for (auto [cache, prefetch] : {std::pair<int, int>{1, 0}, {1, 2}, {4, 1}}) {
        out.push_back({dir.string(), source, cache, prefetch});
      }
    }
    out.push_back({dir.string(), "ws", 1, 1});  // the store behind an in-process weight server
  }
  return out;
}

std::string case_name(const testing::TestParamInfo<Case>& info) {
  std::string name = fs::path(info.param.fixture).filename().string() + "_" + info.param.source + "_cache" +
                     std::to_string(info.param.cache) + "_prefetch" + std::to_string(info.param.prefetch);
  for (auto& ch : name) {
    if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

class Conformance : public testing::TestWithParam<Case> {};

}  // namespace

TEST_P(Conformance, MatchesGolden) {
  const Case& c = GetParam();
  CheckOptions o;
  o.source = c.source;
  o.plugin_dirs = {test::plugin_dir()};
  o.cache_size = c.cache;
  o.prefetch = c.prefetch;
  const CheckReport r = check_fixture(c.fixture, o);
  ASSERT_FALSE(r.lines.empty());
  for (const auto& l : r.lines) {
    EXPECT_TRUE(l.passed) << r.fixture << " " << l.tensor << ": max_abs_err " << l.max_abs_error << ", worst/tol "
                          << l.worst_ratio << " " << l.note;
  }
  // Every fixture must compare its main outputs, not just whatever happened to be produced.
  std::set<std::string> compared;
  for (const auto& l : r.lines) compared.insert(l.tensor);
  const auto golden = nlohmann::json::parse(read_text_file(fs::path(c.fixture) / "golden.json"));
  for (const auto& [name, spec] : golden["tensors"].items()) {
    if (spec.value("role", "").rfind("expected", 0) == 0) {
      EXPECT_TRUE(compared.count(name)) << "golden tensor '" << name << "' was not compared";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Conformance, testing::ValuesIn(all_cases()), case_name);

TEST(ConformanceFixtures, EveryFixtureHasAPluginInTheBuildTree) {
  const auto results = scan_plugins({test::plugin_dir()});
  std::set<std::string> served;
  for (const auto& r : results) {
    if (r.status == PluginLoadStatus::loaded) served.insert(r.model_types.begin(), r.model_types.end());
  }
  for (const auto& dir : test::fixture_dirs()) {
    const auto cfg = ModelConfig::parse(read_text_file(dir / "config.json"));
    EXPECT_TRUE(served.count(cfg.model_type())) << dir << " (" << cfg.model_type() << ") has no plugin";
  }
}

// Streaming must not change a single bit: same outputs whatever the source, cache and prefetch.
TEST(Streaming, IdenticalResultsEveryWay) {
  const fs::path fixture = test::fixtures_dir() / "llama-tiny-random";
  const TensorMap golden = read_safetensors(fixture / "golden.safetensors");
  TensorMap in{{"input_ids", golden.at("input_ids")}, {"attention_mask", golden.at("attention_mask")},
               {"position_ids", golden.at("position_ids")}};
  test::TempDir store;
  ChunkOptions co;
  co.plugin_dirs = {test::plugin_dir()};
  chunk_checkpoint(fixture.string(), store.str("s"), co);
  test::TempDir zstore;
  co.compression = "zstd";
  chunk_checkpoint(fixture.string(), zstore.str("s"), co);

  TensorMap reference, reference_gen;
  for (const std::string& source : {fixture.string(), store.str("s"), zstore.str("s")}) {
    for (auto [cache, prefetch] : {std::pair<int, int>{1, 0}, {1, 1}, {1, 2}, {2, 1}, {8, 0}}) {
      OpenOptions o;
      o.plugin_dirs = {test::plugin_dir()};
      o.cache_size = cache;
      o.prefetch = prefetch;
      auto s = Session::open(source, o);
      TensorMap out = s->forward(in);
      TensorMap gen = s->generate({{"input_ids", golden.at("gen_input_ids")}}, 8);
      if (reference.empty()) {
        reference = out;
        reference_gen = gen;
        continue;
      }
      EXPECT_TRUE(test::bitwise_equal(out.at("logits"), reference.at("logits"))) << source << " " << cache << "/" << prefetch;
      EXPECT_TRUE(test::bitwise_equal(gen.at("generated_ids"), reference_gen.at("generated_ids")));
      EXPECT_TRUE(test::bitwise_equal(gen.at("generation_logits"), reference_gen.at("generation_logits")));
    }
  }
}

TEST(Streaming, CacheHoldsAtMostCachePlusPrefetchLayers) {
  const fs::path fixture = test::fixtures_dir() / "llama-tiny-random";
  const TensorMap golden = read_safetensors(fixture / "golden.safetensors");
  for (auto [cache, prefetch] : {std::pair<int, int>{1, 0}, {1, 1}, {2, 1}}) {
    OpenOptions o;
    o.plugin_dirs = {test::plugin_dir()};
    o.cache_size = cache;
    o.prefetch = prefetch;
    auto s = Session::open(fixture.string(), o);
    uint64_t largest = 0;
    for (const auto& c : s->info().components) {
      if (!c.resident) largest = std::max(largest, c.raw_bytes);
    }
    s->generate({{"input_ids", golden.at("gen_input_ids")}}, 4);
    const CacheStats st = s->cache_stats();
    EXPECT_LE(st.peak_cached_bytes, static_cast<uint64_t>(cache + prefetch + 1) * largest)
        << "cache " << cache << " prefetch " << prefetch;
    EXPECT_GT(st.evictions, 0u);  // the cache is smaller than the model
    if (prefetch > 0) {
      EXPECT_GT(st.prefetch_used, 0u);
    } else {
      EXPECT_GT(st.misses, 0u);
    }
  }
}

TEST(Session, AsyncForwardMatchesBlocking) {
  const fs::path fixture = test::fixtures_dir() / "llama-tiny-random";
  const TensorMap golden = read_safetensors(fixture / "golden.safetensors");
  OpenOptions o;
  o.plugin_dirs = {test::plugin_dir()};
  auto s = Session::open(fixture.string(), o);
  TensorMap in{{"input_ids", golden.at("gen_input_ids")}};
  auto f1 = s->forward_async(in);
  auto f2 = s->generate_async(in, 3);
  TensorMap blocking = s->forward(in);
  EXPECT_TRUE(test::bitwise_equal(f1.get().at("logits"), blocking.at("logits")));
  EXPECT_EQ(f2.get().at("generated_ids").dim(1), in.at("input_ids").dim(1) + 3);
}

// Big bf16 matrices stay 16-bit in the cache (the fixtures' are too small to): a bf16 store must
// give what the same weights upcast to f32 at chunking time give.
TEST(Streaming, SixteenBitWeightsInTheCacheMatchTheirF32Store) {
  test::TempDir d;
  SynthOptions so;
  so.preset = "small";  // 512-wide layers: every projection is 16-bit in the cache
  synth_checkpoint(d.str("hf"), so);
  ChunkOptions co;
  co.plugin_dirs = {test::plugin_dir()};
  chunk_checkpoint(d.str("hf"), d.str("bf16"), co);
  co.dtype = "f32";
  chunk_checkpoint(d.str("hf"), d.str("f32"), co);
  const Tensor ids = read_safetensors(d.path() / "hf" / "inputs.safetensors").at("input_ids");
  OpenOptions o;
  o.plugin_dirs = {test::plugin_dir()};
  auto a = Session::open(d.str("bf16"), o), b = Session::open(d.str("f32"), o);
  const TensorMap fa = a->forward({{"input_ids", ids}}), fb = b->forward({{"input_ids", ids}});
  const Tensor& la = fa.at("logits");
  const Tensor& lb = fb.at("logits");
  ASSERT_EQ(la.shape(), lb.shape());
  for (int64_t i = 0; i < la.numel(); ++i) ASSERT_NEAR(la.f32()[i], lb.f32()[i], 5e-5 + 5e-5 * std::fabs(lb.f32()[i])) << i;
  const TensorMap ga = a->generate({{"input_ids", ids}}, 4), gb = b->generate({{"input_ids", ids}}, 4);
  EXPECT_TRUE(test::bitwise_equal(ga.at("generated_ids"), gb.at("generated_ids")));
  EXPECT_LT(a->cache_stats().peak_cached_bytes, b->cache_stats().peak_cached_bytes * 6 / 10);  // half the memory
}

// Config variants no fixture covers, checked against fixtures they must agree with.
namespace {

// A copy of a single-file fixture's checkpoint with config.json (and the weights) edited.
std::string variant(const test::TempDir& d, const std::string& fixture,
                    const std::function<void(nlohmann::json&)>& edit_config,
                    const std::function<void(TensorMap&)>& edit_weights = nullptr) {
  const fs::path from = test::fixtures_dir() / fixture, to = d.path() / (fixture + "-variant");
  fs::create_directories(to);
  auto config = nlohmann::json::parse(read_text_file(from / "config.json"));
  edit_config(config);
  std::ofstream(to / "config.json") << config.dump(2);
  TensorMap weights = read_safetensors(from / "model.safetensors");
  if (edit_weights) edit_weights(weights);
  write_safetensors(to / "model.safetensors", weights);
  return to.string();
}

struct Outputs {
  TensorMap forward, generate;
};

Outputs run_fixture_inputs(const std::string& source, const std::string& fixture) {
  const TensorMap golden = read_safetensors(test::fixtures_dir() / fixture / "golden.safetensors");
  OpenOptions o;
  o.plugin_dirs = {test::plugin_dir()};
  auto s = Session::open(source, o);
  RunOptions ro;
  ro.hidden_states = true;
  return {s->forward({{"input_ids", golden.at("input_ids")}, {"attention_mask", golden.at("attention_mask")}}, ro),
          s->generate({{"input_ids", golden.at("gen_input_ids")}}, 8)};
}

std::string open_error(const std::string& source) {
  OpenOptions o;
  o.plugin_dirs = {test::plugin_dir()};
  try {
    Session::open(source, o);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool values_equal(const Tensor& a, const Tensor& b) {  // == per element (+0 == -0)
  if (a.shape() != b.shape()) return false;
  for (int64_t i = 0; i < a.numel(); ++i) {
    if (a.f32()[i] != b.f32()[i]) return false;
  }
  return true;
}

}  // namespace

// The reference cannot make an mlp_bias golden (its llama_forward leaves MLP biases out), so:
// zero biases change nothing, and a down_proj bias on the last layer adds itself to its output.
TEST(LlamaVariants, MlpBiasesAreAddedWhereHfAddsThem) {
  test::TempDir d;
  const std::string fixture = "llama-tiny-random";
  const int64_t layers = 3, hidden = 64, inter = 172;
  auto mlp_bias = [](nlohmann::json& c) { c["mlp_bias"] = true; };
  auto biases = [&](float down_last, float gate) {
    return [=](TensorMap& w) {
      for (int64_t l = 0; l < layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".mlp.";
        std::vector<float> down(hidden), g(inter, gate), u(inter, 0.0f);
        for (int64_t i = 0; i < hidden; ++i) down[i] = l == layers - 1 ? down_last * static_cast<float>(i % 7 - 3) : 0.0f;
        w[p + "down_proj.bias"] = Tensor::from_f32({hidden}, down);
        w[p + "gate_proj.bias"] = Tensor::from_f32({inter}, g);
        w[p + "up_proj.bias"] = Tensor::from_f32({inter}, u);
      }
    };
  };
  const Outputs plain = run_fixture_inputs((test::fixtures_dir() / fixture).string(), fixture);
  const Outputs zero = run_fixture_inputs(variant(d, fixture, mlp_bias, biases(0.0f, 0.0f)), fixture);
  EXPECT_TRUE(values_equal(zero.forward.at("logits"), plain.forward.at("logits")));
  EXPECT_TRUE(test::bitwise_equal(zero.generate.at("generated_ids"), plain.generate.at("generated_ids")));

  test::TempDir d2;
  const Outputs down = run_fixture_inputs(variant(d2, fixture, mlp_bias, biases(0.01f, 0.0f)), fixture);
  const Tensor& a = down.forward.at("hidden_states");
  const Tensor& b = plain.forward.at("hidden_states");
  const int64_t plane = a.numel() / (layers + 1);
  for (int64_t i = 0; i < layers * plane; ++i) ASSERT_EQ(a.f32()[i], b.f32()[i]) << i;  // earlier layers untouched
  for (int64_t i = layers * plane; i < a.numel(); ++i) {
    const float want = 0.01f * static_cast<float>(i % hidden % 7 - 3);
    ASSERT_NEAR(a.f32()[i] - b.f32()[i], want, 1e-5) << i;
  }
  test::TempDir d3;
  const Outputs gate = run_fixture_inputs(variant(d3, fixture, mlp_bias, biases(0.0f, 0.5f)), fixture);
  EXPECT_FALSE(values_equal(gate.forward.at("logits"), plain.forward.at("logits")));
}

TEST(LlamaVariants, MistralNullWindowIsNoWindowAndAWideOneChangesNothing) {
  test::TempDir d;
  const std::string fixture = "mistral-tiny-random";  // window 5 over 12 + 8 positions
  const Outputs none = run_fixture_inputs(variant(d, fixture, [](nlohmann::json& c) { c["sliding_window"] = nullptr; }), fixture);
  test::TempDir d2;
  const Outputs wide = run_fixture_inputs(variant(d2, fixture, [](nlohmann::json& c) { c["sliding_window"] = 64; }), fixture);
  const Outputs five = run_fixture_inputs((test::fixtures_dir() / fixture).string(), fixture);
  EXPECT_TRUE(test::bitwise_equal(none.forward.at("logits"), wide.forward.at("logits")));
  EXPECT_TRUE(test::bitwise_equal(none.generate.at("generation_logits"), wide.generate.at("generation_logits")));
  EXPECT_FALSE(values_equal(none.forward.at("logits"), five.forward.at("logits")));
}

TEST(LlamaVariants, UnsupportedSettingsAreRefusedByName) {
  test::TempDir d;
  EXPECT_NE(open_error(variant(d, "qwen2-tiny-random", [](nlohmann::json& c) { c["use_sliding_window"] = true; }))
                .find("qwen2 config: use_sliding_window true is not supported yet"),
            std::string::npos);
  for (const char* type : {"yarn", "dynamic", "longrope"}) {
    test::TempDir t;
    const std::string err = open_error(variant(t, "llama3-ropescaled-tiny-random", [&](nlohmann::json& c) {
      c["rope_scaling"] = {{"type", type}, {"factor", 4.0}};
    }));
    EXPECT_NE(err.find(std::string("rope_scaling type '") + type + "' is not supported"), std::string::npos) << err;
  }
}
