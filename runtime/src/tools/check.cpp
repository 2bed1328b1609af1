// `surf check`: run a golden fixture through its plugin and compare with golden.json's rules.
#include <cmath>
#include <set>
#include <filesystem>
#include <nlohmann/json.hpp>

#include <openssl/evp.h>

#include "surf/ops.h"
#include "surf/runtime.h"
#include "surf/storage/backend.h"
#include "surf/storage/chunk.h"
#include "surf/storage/manifest.h"
#include "surf/storage/safetensors.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace surf {

bool CheckReport::passed() const {
  if (lines.empty()) return false;
  for (const auto& l : lines) {
    if (!l.passed) return false;
  }
  return true;
}

namespace {

// Finds the axes of `t` that match mask [B, L]; elements whose mask entry is 0 are skipped.
CheckLine compare(const std::string& name, const Tensor& actual, const Tensor& expected, const std::string& rule,
                  const Tensor* mask, double atol, double rtol) {
  CheckLine line{name, false, 0, 0, 0, ""};
  if (actual.shape() != expected.shape()) {
    line.note = "shape " + shape_string(actual.shape()) + ", expected " + shape_string(expected.shape());
    return line;
  }
  if (rule == "exact") {
    if (actual.dtype() != DType::I64 || expected.dtype() != DType::I64) {
      line.note = "exact comparison needs I64 tensors";
      return line;
    }
    int64_t mismatches = 0, first = -1;
    for (int64_t i = 0; i < actual.numel(); ++i) {
      if (actual.i64()[i] != expected.i64()[i]) {
        if (first < 0) first = i;
        ++mismatches;
      }
    }
    line.compared = actual.numel();
    line.passed = mismatches == 0;
    if (!line.passed) {
      line.note = std::to_string(mismatches) + " ids differ, first at flat index " + std::to_string(first) + " (got " +
                  std::to_string(actual.i64()[first]) + ", expected " + std::to_string(expected.i64()[first]) + ")";
    }
    return line;
  }
  const Tensor a = actual.to_f32(), e = expected.to_f32();
  int axis = -1;
  int64_t inner = 1, b_dim = 1, l_dim = 1;
  if (rule.find("attention_mask") != std::string::npos) {
    if (mask == nullptr) {
      line.note = "rule needs attention_mask";
      return line;
    }
    b_dim = mask->dim(0);
    l_dim = mask->dim(1);
    for (int k = 0; k + 1 < e.rank(); ++k) {
      if (e.dim(k) == b_dim && e.dim(k + 1) == l_dim) {
        axis = k;
        break;
      }
    }
    if (axis < 0) {
      line.note = "cannot align attention_mask " + shape_string(mask->shape()) + " with " + shape_string(e.shape());
      return line;
    }
    for (int k = axis + 2; k < e.rank(); ++k) inner *= e.dim(k);
  }
  double worst = 0, max_err = 0;
  int64_t worst_at = -1;
  for (int64_t i = 0; i < e.numel(); ++i) {
    if (axis >= 0) {
      const int64_t bl = (i / inner) % (b_dim * l_dim);
      if (mask->i64()[bl] == 0) continue;
    }
    const double x = a.f32()[i], y = e.f32()[i];
    const double err = std::fabs(x - y);
    const double ratio = std::isfinite(err) ? err / (atol + rtol * std::fabs(y)) : INFINITY;
    max_err = std::max(max_err, std::isfinite(err) ? err : INFINITY);
    if (ratio > worst || worst_at < 0) {
      worst = ratio;
      worst_at = i;
    }
    ++line.compared;
  }
  line.max_abs_error = max_err;
  line.worst_ratio = worst;
  line.passed = line.compared > 0 && worst <= 1.0;
  if (!line.passed && worst_at >= 0) {
    line.note = "worst at flat index " + std::to_string(worst_at) + ": got " + std::to_string(a.f32()[worst_at]) +
                ", expected " + std::to_string(e.f32()[worst_at]);
  }
  return line;
}

std::string sha256_hex(const void* data, size_t size) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data, size, md, &len, EVP_sha256(), nullptr) != 1) fail(ErrorCode::internal, "sha256 failed");
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 15];
  }
  return out;
}

// The store's quantized tensors against golden-<dtype>.json's list: the same tensors, the same
// bytes (the numpy port of GGML's quantizers made that list).
CheckLine check_blocks(const fs::path& store, const json& golden) {
  CheckLine line{"quantized blocks", false, 0, 0, 0, ""};
  const json& want = golden.at("quantization").at("tensors");
  auto backend = open_filesystem_backend(store);
  ByteBuffer text;
  backend->get("manifest.json", text);
  const Manifest m = Manifest::from_json(std::string(reinterpret_cast<const char*>(text.data()), text.size()));
  std::set<std::string> seen;
  for (const auto& c : m.components) {
    bool quantized = false;
    for (const auto& t : c.tensors) quantized = quantized || is_quantized(t.dtype);
    if (!quantized) continue;
    ByteBuffer chunk, scratch;
    backend->get(c.key, chunk);
    const DecodedChunk d = decode_chunk(chunk.data(), chunk.size(), c.id, scratch);
    for (const auto& t : c.tensors) {
      if (!is_quantized(t.dtype)) continue;
      seen.insert(t.hf_name);
      ++line.compared;
      if (!want.contains(t.hf_name)) {
        line.note = t.hf_name + " is quantized but the golden lists it as kept";
        return line;
      }
      for (const auto& dt : d.tensors) {
        if (dt.name == t.name && sha256_hex(dt.data, dt.length) != want[t.hf_name].at("sha256").get<std::string>()) {
          line.note = t.hf_name + ": blocks differ from the reference quantizer's";
          return line;
        }
      }
    }
  }
  for (const auto& [name, info] : want.items()) {
    if (!seen.count(name)) {
      line.note = name + " should be quantized but the store keeps it";
      return line;
    }
  }
  line.passed = line.compared > 0;
  if (!line.passed) line.note = "no quantized tensor in the store";
  return line;
}

}  // namespace

CheckReport check_fixture(const std::string& fixture_dir, const CheckOptions& options) {
  validate_cache_options(options.cache_size, options.prefetch);
  CheckReport report;
  report.fixture = fixture_dir;
  const fs::path dir(fixture_dir);
  const bool quantized = options.dtype == "q8_0" || options.dtype == "q4_0";
  if (options.dtype != "keep" && options.source != "store" && options.source != "ws") {
    fail(ErrorCode::invalid_argument, "check --dtype " + options.dtype + " needs --source store or ws");
  }
  const std::string golden_name = quantized ? "golden-" + options.dtype : "golden";
  if (!fs::exists(dir)) fail(ErrorCode::not_found, "no fixture directory '" + fixture_dir + "'");
  // A path that is not a fixture (a parent directory, a README caught by a glob) is skipped, not
  // failed with whatever reading its absent golden file would say.
  for (const std::string& f : {golden_name + ".json", golden_name + ".safetensors"}) {
    if (!fs::is_regular_file(dir / f)) {
      report.skipped = true;
      report.notes.push_back("not a fixture (no " + f + "): skipped");
      return report;
    }
  }
  json golden;
  try {
    golden = json::parse(read_text_file(dir / (golden_name + ".json")));
  } catch (const json::exception& e) {
    fail(ErrorCode::corrupt, golden_name + ".json in '" + fixture_dir + "' is malformed: " + e.what());
  }
  const TensorMap g = read_safetensors(dir / (golden_name + ".safetensors"));
  // Quantized goldens are exact math on the dequantized weights: no activation rounding.
  struct Rounding {
    ops::ActivationRounding saved = ops::activation_rounding();
    ~Rounding() { ops::set_activation_rounding(saved); }
  } restore_rounding;
  if (quantized) ops::set_activation_rounding(ops::ActivationRounding::none);
  double atol = 5e-5, rtol = 5e-5;
  if (golden.contains("tolerance") && golden["tolerance"].contains("fp32_compute")) {
    atol = golden["tolerance"]["fp32_compute"].value("atol", atol);
    rtol = golden["tolerance"]["fp32_compute"].value("rtol", rtol);
  }

  std::string source = fixture_dir;
  fs::path tmp_store;
  std::unique_ptr<WeightServer> server;
  if (options.source == "store" || options.source == "ws") {
    tmp_store =
        fs::temp_directory_path() / ("surf-check-" + std::to_string(::getpid()) + "-" + dir.filename().string());
    fs::remove_all(tmp_store);
    ChunkOptions co;
    co.plugin_dirs = options.plugin_dirs;
    co.dtype = options.dtype;
    chunk_checkpoint(fixture_dir, tmp_store.string(), co);
    if (quantized) report.lines.push_back(check_blocks(tmp_store, golden));
    source = tmp_store.string();
    if (options.source == "ws") {
      ServeOptions so;
      so.stores = {{"fixture", source}};
      so.port = 0;
      server = std::make_unique<WeightServer>(so);
      source = "ws://127.0.0.1:" + std::to_string(server->port()) + "/fixture";
    }
  } else if (options.source != "hf") {
    source = options.source;  // a ready source (ws://..., a store path)
  }
  struct Cleanup {
    fs::path p;
    ~Cleanup() {
      std::error_code ec;
      if (!p.empty()) fs::remove_all(p, ec);
    }
  } cleanup{tmp_store};

  OpenOptions oo;
  oo.plugin_dirs = options.plugin_dirs;
  oo.cache_size = options.cache_size;
  oo.prefetch = options.prefetch;
  oo.token = options.token;
  oo.ca_file = options.ca_file;
  oo.connect_timeout_ms = options.connect_timeout_ms;
  oo.disk_cache_dir = options.disk_cache_dir;
  oo.disk_cache_bytes = options.disk_cache_bytes;
  auto session = Session::open(source, oo);
  report.model_type = session->info().model_type;
  // The fixture's own model_type (its config.json) against what the source serves: a store or a
  // server of another model compares against the wrong goldens, which the FAIL lines alone hide.
  if (options.source != "hf") {
    std::string fixture_type;
    try {
      fixture_type = json::parse(read_text_file(dir / "config.json")).value("model_type", "");
    } catch (const std::exception&) {
    }
    if (!fixture_type.empty() && fixture_type != report.model_type) {
      report.notes.push_back("the fixture's model_type is '" + fixture_type + "' but the source " + source +
                             " serves '" + report.model_type + "'");
    }
  }

  auto expected = [&](const std::string& name) -> const json* {
    if (!golden.contains("tensors") || !golden["tensors"].contains(name)) return nullptr;
    const json& t = golden["tensors"][name];
    if (t.value("role", "").rfind("expected", 0) != 0 || !g.count(name)) return nullptr;
    return &t;
  };
  const Tensor* mask = g.count("attention_mask") ? &g.at("attention_mask") : nullptr;
  auto add = [&](const std::string& golden_name, const TensorMap& out, const std::string& out_name) {
    const json* spec = expected(golden_name);
    if (spec == nullptr) return;
    auto it = out.find(out_name);
    if (it == out.end()) {
      report.lines.push_back({golden_name, false, 0, 0, 0, "the plugin did not produce '" + out_name + "'"});
      return;
    }
    report.lines.push_back(
        compare(golden_name, it->second, g.at(golden_name), spec->value("compare", "all"), mask, atol, rtol));
  };

  TensorMap inputs;
  for (const char* k : {"input_ids", "attention_mask", "token_type_ids", "position_ids", "decoder_input_ids"}) {
    if (g.count(k)) inputs[k] = g.at(k);
  }
  RunOptions ro;
  ro.hidden_states = true;
  const TensorMap out = session->forward(inputs, ro);
  for (const char* k : {"logits", "last_hidden_state", "hidden_states", "pooler_output", "encoder_last_hidden_state",
                        "encoder_hidden_states", "decoder_last_hidden_state", "decoder_hidden_states"}) {
    add(k, out, k);
  }
  // The reference names BERT's pre-training head outputs differently from HF.
  add("mlm_logits", out, "prediction_logits");
  add("nsp_logits", out, "seq_relationship_logits");
  if (expected("logits_default_positions") && inputs.count("position_ids")) {
    TensorMap no_pos = inputs;
    no_pos.erase("position_ids");
    add("logits_default_positions", session->forward(no_pos), "logits");
  }
  if (expected("generated_ids")) {
    TensorMap gin;
    if (g.count("gen_input_ids")) {
      gin["input_ids"] = g.at("gen_input_ids");
    } else {
      gin = inputs;
      gin.erase("decoder_input_ids");
    }
    const Tensor& ids = g.at("generated_ids");
    const int64_t steps =
        g.count("generation_logits") ? g.at("generation_logits").dim(1) : ids.dim(1) - gin.at("input_ids").dim(1);
    const TensorMap gen = session->generate(gin, steps);
    add("generated_ids", gen, "generated_ids");
    add("generation_logits", gen, "generation_logits");
  }
  return report;
}

}  // namespace surf
