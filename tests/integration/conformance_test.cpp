// Every fixture through the plugin serving its model_type, from the HF directory, from a chunk
// store and through a weight server, with small and large caches and prefetch depths. A new architecture is covered by
// dropping its plugin into plugins/ and its fixture into tests/fixtures/.
#include <gtest/gtest.h>

#include <algorithm>
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
  std::string dtype = "keep";
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.fixture << " source=" << c.source << " cache=" << c.cache << " prefetch=" << c.prefetch
      << " dtype=" << c.dtype;
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
    // Quantized stores against the float64 reference on the dequantized weights (fixtures whose
    // plugin quantizes something have golden-<dtype>.* from tests/reference/quantized_goldens.py).
    for (const char* dtype : {"q8_0", "q4_0"}) {
      if (!fs::exists(dir / ("golden-" + std::string(dtype) + ".json"))) continue;
      out.push_back({dir.string(), "store", 1, 1, dtype});
      out.push_back({dir.string(), "ws", 2, 1, dtype});
    }
  }
  return out;
}

std::string case_name(const testing::TestParamInfo<Case>& info) {
  std::string name = fs::path(info.param.fixture).filename().string() + "_" + info.param.source + "_cache" +
                     std::to_string(info.param.cache) + "_prefetch" + std::to_string(info.param.prefetch);
  if (info.param.dtype != "keep") name += "_" + info.param.dtype;
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
  o.dtype = c.dtype;
  const CheckReport r = check_fixture(c.fixture, o);
  ASSERT_FALSE(r.lines.empty());
  for (const auto& l : r.lines) {
    EXPECT_TRUE(l.passed) << r.fixture << " " << l.tensor << ": max_abs_err " << l.max_abs_error << ", worst/tol "
                          << l.worst_ratio << " " << l.note;
  }
  // Every fixture must compare its main outputs, not just whatever happened to be produced.
  std::set<std::string> compared;
  for (const auto& l : r.lines) compared.insert(l.tensor);
  const std::string golden_json = c.dtype == "keep" ? "golden.json" : "golden-" + c.dtype + ".json";
  const auto golden = nlohmann::json::parse(read_text_file(fs::path(c.fixture) / golden_json));
  if (c.dtype != "keep") {
    EXPECT_TRUE(compared.count("quantized blocks")) << "the stored blocks were not checked";
  }
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
  TensorMap in{{"input_ids", golden.at("input_ids")},
               {"attention_mask", golden.at("attention_mask")},
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
      EXPECT_TRUE(test::bitwise_equal(out.at("logits"), reference.at("logits")))
          << source << " " << cache << "/" << prefetch;
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
  for (int64_t i = 0; i < la.numel(); ++i)
    ASSERT_NEAR(la.f32()[i], lb.f32()[i], 5e-5 + 5e-5 * std::fabs(lb.f32()[i])) << i;
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
        for (int64_t i = 0; i < hidden; ++i)
          down[i] = l == layers - 1 ? down_last * static_cast<float>(i % 7 - 3) : 0.0f;
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
  const Outputs none =
      run_fixture_inputs(variant(d, fixture, [](nlohmann::json& c) { c["sliding_window"] = nullptr; }), fixture);
  test::TempDir d2;
  const Outputs wide =
      run_fixture_inputs(variant(d2, fixture, [](nlohmann::json& c) { c["sliding_window"] = 64; }), fixture);
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

namespace {

struct Deviation {
  double max_abs = 0;
  int64_t top1_same = 0, rows = 0;
};

// a against e over rows of the last axis; rows where `mask` (if any, [B, L] over the leading axes) is 0 are skipped.
Deviation deviation(const Tensor& a, const Tensor& e, const Tensor* mask) {
  Deviation d;
  const int64_t width = e.dim(-1), rows = e.numel() / width;
  for (int64_t r = 0; r < rows; ++r) {
    if (mask != nullptr && mask->i64()[r] == 0) continue;
    const float* x = a.f32() + r * width;
    const float* y = e.f32() + r * width;
    for (int64_t j = 0; j < width; ++j) d.max_abs = std::max(d.max_abs, static_cast<double>(std::fabs(x[j] - y[j])));
    d.top1_same += std::max_element(x, x + width) - x == std::max_element(y, y + width) - y;
    ++d.rows;
  }
  return d;
}

}  // namespace

// What quantization costs on the fixtures, as the runtime computes by default (activations rounded
// to int8 blocks in decode steps, f32 prefill): logits against the unquantized goldens (max abs
// error, top-1 agreement) and against the quantized model's own reference. Printed for the record;
// the assertions are sanity bounds (prefill exact, decode within a few percent), the fp32-tier
// checks are the Conformance cases above.
TEST(QuantizedStores, DeviationFromTheUnquantizedModel) {
  for (const auto& dir : test::fixture_dirs()) {
    for (const std::string dtype : {"q8_0", "q4_0"}) {
      if (!fs::exists(dir / ("golden-" + dtype + ".json"))) continue;
      const TensorMap plain = read_safetensors(dir / "golden.safetensors");
      const TensorMap quant = read_safetensors(dir / ("golden-" + dtype + ".safetensors"));
      test::TempDir store;
      ChunkOptions co;
      co.plugin_dirs = {test::plugin_dir()};
      co.dtype = dtype;
      chunk_checkpoint(dir.string(), store.str("s"), co);
      OpenOptions o;
      o.plugin_dirs = {test::plugin_dir()};
      auto s = Session::open(store.str("s"), o);
      TensorMap in;
      for (const char* k : {"input_ids", "attention_mask", "token_type_ids", "position_ids", "decoder_input_ids"}) {
        if (plain.count(k)) in[k] = plain.at(k);
      }
      const TensorMap out = s->forward(in);
      const bool decoder_only = plain.count("gen_input_ids") > 0;
      const Tensor* mask = decoder_only ? &plain.at("attention_mask") : nullptr;
      std::string line = dir.filename().string() + " " + dtype + ":";
      for (const char* k : {"logits", "prediction_logits", "last_hidden_state"}) {
        const std::string golden_name = std::string(k) == "prediction_logits" ? "mlm_logits" : k;
        if (!out.count(k) || !plain.count(golden_name)) continue;
        const Deviation vs_plain = deviation(out.at(k), plain.at(golden_name), mask);
        const Deviation vs_quant = deviation(out.at(k), quant.at(golden_name), mask);
        char buf[256];
        std::snprintf(buf, sizeof buf, " %s max_abs_err %.3g (vs own reference %.2g), top-1 %lld/%lld;",
                      golden_name.c_str(), vs_plain.max_abs, vs_quant.max_abs,
                      static_cast<long long>(vs_plain.top1_same), static_cast<long long>(vs_plain.rows));
        line += buf;
        EXPECT_LT(vs_quant.max_abs, 5e-5 * 10) << line;  // prefill stays exact by default
      }
      if (plain.count("generated_ids")) {
        TensorMap gin;
        if (decoder_only) {
          gin["input_ids"] = plain.at("gen_input_ids");
        } else {
          gin = in;
          gin.erase("decoder_input_ids");
        }
        const int64_t steps = plain.at("generation_logits").dim(1);
        const TensorMap gen = s->generate(gin, steps);
        const Tensor& ids = gen.at("generated_ids");
        // Logits of step t depend on the tokens before it: compare steps up to (and including) the
        // first token where this run and the reference part ways.
        auto steps_mask = [&](const Tensor& ref_ids) {
          const int64_t batch = ids.dim(0), prefix = ids.dim(1) - steps;
          Tensor m = Tensor::zeros(DType::I64, {batch, steps});
          for (int64_t b = 0; b < batch; ++b) {
            for (int64_t t = 0; t < steps; ++t) {
              m.i64()[b * steps + t] = 1;
              if (ids.i64()[b * ids.dim(1) + prefix + t] != ref_ids.i64()[b * ids.dim(1) + prefix + t]) break;
            }
          }
          return m;
        };
        const Tensor mp = steps_mask(plain.at("generated_ids")), mq = steps_mask(quant.at("generated_ids"));
        const Deviation vs_plain = deviation(gen.at("generation_logits"), plain.at("generation_logits"), &mp);
        const Deviation vs_quant = deviation(gen.at("generation_logits"), quant.at("generation_logits"), &mq);
        int64_t same = 0, same_q = 0;
        for (int64_t i = 0; i < ids.numel(); ++i) {
          same += ids.i64()[i] == plain.at("generated_ids").i64()[i];
          same_q += ids.i64()[i] == quant.at("generated_ids").i64()[i];
        }
        double range = 0;
        const Tensor& ql = quant.at("generation_logits");
        for (int64_t i = 0; i < ql.numel(); ++i) range = std::max(range, static_cast<double>(std::fabs(ql.f32()[i])));
        char buf[400];
        std::snprintf(
            buf, sizeof buf,
            " decode steps (int8 activations): generation_logits max_abs_err %.3g over %lld steps (vs own "
            "reference %.2g), top-1 %lld/%lld; generated ids %lld/%lld as unquantized, %lld/%lld as own reference",
            vs_plain.max_abs, static_cast<long long>(vs_plain.rows), vs_quant.max_abs,
            static_cast<long long>(vs_plain.top1_same), static_cast<long long>(vs_plain.rows),
            static_cast<long long>(same), static_cast<long long>(ids.numel()), static_cast<long long>(same_q),
            static_cast<long long>(ids.numel()));
        line += buf;
        // Sanity bound: rounding activations to 8 bits moves decode logits by a few percent of their range at most.
        EXPECT_LT(vs_quant.max_abs, 0.05 * range) << line;
      }
      std::printf("fidelity %s\n", line.c_str());
    }
  }
}

// Streaming a quantized store changes nothing either: same bits whatever the cache and prefetch.
TEST(QuantizedStores, IdenticalResultsEveryWay) {
  const fs::path fixture = test::fixtures_dir() / "llama-tiny-random";
  const TensorMap golden = read_safetensors(fixture / "golden.safetensors");
  TensorMap in{{"input_ids", golden.at("input_ids")}, {"attention_mask", golden.at("attention_mask")}};
  test::TempDir store;
  ChunkOptions co;
  co.plugin_dirs = {test::plugin_dir()};
  co.dtype = "q4_0";
  co.compression = "zstd";
  chunk_checkpoint(fixture.string(), store.str("s"), co);
  TensorMap reference, reference_gen;
  for (auto [cache, prefetch] : {std::pair<int, int>{1, 0}, {1, 2}, {8, 0}}) {
    OpenOptions o;
    o.plugin_dirs = {test::plugin_dir()};
    o.cache_size = cache;
    o.prefetch = prefetch;
    auto s = Session::open(store.str("s"), o);
    TensorMap out = s->forward(in);
    TensorMap gen = s->generate({{"input_ids", golden.at("gen_input_ids")}}, 6);
    if (reference.empty()) {
      reference = out;
      reference_gen = gen;
      continue;
    }
    EXPECT_TRUE(test::bitwise_equal(out.at("logits"), reference.at("logits")));
    EXPECT_TRUE(test::bitwise_equal(gen.at("generation_logits"), reference_gen.at("generation_logits")));
  }
}
