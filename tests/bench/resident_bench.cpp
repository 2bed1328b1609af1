// Resident throughput on TinyLlama-1.1B's shape (hidden 2048, 22 layers, 32 heads / 4 kv heads,
// intermediate 5632, vocab 32000), one store per format (f32, bf16, q8_0, q4_0) chunked from the
// same synthetic bf16 checkpoint, each opened with the cache holding every layer. Per format:
// prefill of a 128-token prompt (tokens/s, GFLOP/s of the weight matmuls) and greedy decode
// (tokens/s), beside the memory-bandwidth roofline (model bytes read per token / the 2-thread read
// bandwidth this benchmark measures in the same rounds) and beside llama.cpp's figures on this
// machine kind (quoted, not measured here). Rounds interleave the formats so that noise from other
// processes hits each alike; medians (min-max) over the rounds after one warm-up round.
//
//   build/tests/bench/resident_bench [--rounds 6] [--decode 64] [--prompt 128]
//                                    [--formats f32,bf16,q8_0,q4_0,bf16:all] [--rounding quantized|none|all]
// A format may name its activation rounding after a colon (bf16:all: bf16 activations in prefill,
// the numerics of llama.cpp's BF16 path); otherwise --rounding applies (default quantized).
// Data goes to SURF_BENCH_DIR (default /tmp/surf-bench): ~2.2 GB checkpoint + 8.4 GB of stores.
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <sstream>

#include "bench_util.h"
#include "surf/ops.h"
#include "surf/runtime.h"
#include "surf/storage/safetensors.h"
#include "synth.h"

using namespace surf;
namespace fs = std::filesystem;

namespace {

std::string arg(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == "--" + name) return argv[i + 1];
  }
  return fallback;
}

Tensor random_ids(int64_t len, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  Tensor t = Tensor::empty(DType::I64, {1, len});
  for (int64_t i = 0; i < len; ++i) t.i64()[i] = 1 + static_cast<int64_t>(rng() % static_cast<uint32_t>(vocab - 1));
  return t;
}

// llama.cpp on this machine kind, 2 threads, same shape: medians over 6 interleaved rounds.
struct Peer {
  double decode, decode_min, decode_max, prefill;
  const char* format;
};
const std::map<std::string, Peer> kLlamaCpp = {{"f32", {9.1, 6.8, 11.4, 76, "F32"}},
                                               {"bf16", {16.1, 13.7, 22.5, 160, "BF16"}},
                                               {"f16", {22.0, 13.7, 24.3, 87, "F16"}},
                                               {"q8_0", {27.6, 22.9, 32.2, 98, "Q8_0"}},
                                               {"q4_0", {49.1, 23.1, 52.7, 116, "Q4_0"}}};

}  // namespace

int main(int argc, char** argv) {
  const int rounds = std::stoi(arg(argc, argv, "rounds", "6"));
  const int64_t decode = std::stoll(arg(argc, argv, "decode", "64"));
  const int64_t prompt = std::stoll(arg(argc, argv, "prompt", "128"));
  const std::string rounding = arg(argc, argv, "rounding", "quantized");
  ops::set_activation_rounding(ops::activation_rounding_from_name(rounding));
  std::vector<std::string> formats;
  {
    std::stringstream ss(arg(argc, argv, "formats", "f32,bf16,q8_0,q4_0,bf16:all"));
    for (std::string f; std::getline(ss, f, ',');) formats.push_back(f);
  }
  const std::string preset = "tinyllama-1.1b";
  const fs::path hf = fs::path(bench::work_dir()) / (preset + "-bf16");
  if (!fs::exists(hf / "config.json")) {
    std::printf("synthesising %s (bf16) into %s ...\n", preset.c_str(), hf.c_str());
    SynthOptions so;
    so.preset = preset;
    synth_checkpoint(hf.string(), so);
  }
  struct Run {
    std::string format, label;
    ops::ActivationRounding rounding;
    std::unique_ptr<Session> session;  // owned by the first run of a store
    Session* view = nullptr;
    uint64_t bytes_per_token = 0, resident = 0;
    std::vector<double> prefill, decode;
  };
  std::vector<Run> runs;
  std::map<std::string, Session*> opened;  // one session per store, shared by its roundings
  for (const auto& spec : formats) {
    const std::string f = spec.substr(0, spec.find(':'));
    const std::string how = spec.find(':') == std::string::npos ? rounding : spec.substr(spec.find(':') + 1);
    // The bf16 store keeps the checkpoint's dtype (the same store stream_bench uses).
    const fs::path store = fs::path(bench::work_dir()) / (preset + "-" + f + "-store");
    if (!fs::exists(store / "manifest.json")) {
      std::printf("chunking %s into %s ...\n", f.c_str(), store.c_str());
      ChunkOptions co;
      co.dtype = f == "bf16" ? "keep" : f;
      chunk_checkpoint(hf.string(), store.string(), co);
    }
    Run r;
    r.format = f;
    r.label = spec.find(':') == std::string::npos ? f : spec;
    r.rounding = ops::activation_rounding_from_name(how);
    if (!opened.count(f)) {
      OpenOptions o;
      o.prefetch = 0;
      o.cache_size = 1000;  // every layer stays
      o.warmup = {"all"};
      r.session = Session::open(store.string(), o);
      opened[f] = r.session.get();
    }
    Session* session = opened[f];
    r.view = session;
    for (const auto& c : session->info().components) {
      r.resident += c.raw_bytes;
      if (c.id != "embed") r.bytes_per_token += c.raw_bytes;  // decode gathers one embedding row
    }
    runs.push_back(std::move(r));
  }
  const ModelConfig cfg = ModelConfig::parse(read_text_file(hf / "config.json"));
  const int64_t vocab = cfg.get_int("vocab_size");
  const Tensor prompt_ids = random_ids(prompt, vocab, 7), one = random_ids(1, vocab, 9);
  std::printf(
      "kernels %s, %d threads, activation rounding %s (unless a format names its own); RSS %.2f GB with every "
      "format resident\n",
      ops::kernel_isa(), ops::kernel_threads(), rounding.c_str(), bench::rss_bytes() / 1e9);
  std::printf(
      "prefill: %lld-token prompt -> first token; decode: 1-token prompt + %lld greedy tokens, rate of the %lld\n",
      static_cast<long long>(prompt), static_cast<long long>(decode), static_cast<long long>(decode));
  std::vector<double> bandwidth;
  for (int round = 0; round <= rounds; ++round) {
    const double bw = bench::read_bandwidth(size_t{1} << 30, 2, 3);
    if (round > 0) bandwidth.push_back(bw);
    for (auto& r : runs) {
      ops::set_activation_rounding(r.rounding);
      double t0 = bench::now_s();
      r.view->generate({{"input_ids", prompt_ids}}, 1);
      const double pre = bench::now_s() - t0;
      t0 = bench::now_s();
      r.view->generate({{"input_ids", one}}, 1);
      const double first = bench::now_s() - t0;
      t0 = bench::now_s();
      r.view->generate({{"input_ids", one}}, 1 + decode);
      const double all = bench::now_s() - t0;
      if (round > 0) {
        r.prefill.push_back(static_cast<double>(prompt) / pre);
        r.decode.push_back(static_cast<double>(decode) / std::max(all - first, 1e-9));
      }
    }
    std::fflush(stdout);
  }
  const auto bw = bench::spread(bandwidth);
  std::printf("\n2-thread read bandwidth: %.1f GB/s median (%.1f-%.1f) over the same %d rounds\n", bw.median / 1e9,
              bw.min / 1e9, bw.max / 1e9, rounds);
  // Weight-matmul FLOPs of a prefill: 2 * prompt * every layer's weights + the head on the last row.
  const double layer_params = 2048.0 * (2048 * 2 + 256 * 2) + 3.0 * 2048 * 5632;
  const double prefill_flop = 2.0 * static_cast<double>(prompt) * 22 * layer_params + 2.0 * 2048 * 32000;
  std::printf("\n%-8s %9s | %-24s %9s %6s %-22s %6s | %-24s %8s %9s %6s\n", "", "MB/token", "decode tok/s", "roofline",
              "ratio", "llama.cpp", "ours/", "prefill-128 tok/s", "GFLOP/s", "llama.cpp", "ours/");
  for (const auto& r : runs) {
    const auto d = bench::spread(r.decode), p = bench::spread(r.prefill);
    const double roof = bw.median / static_cast<double>(r.bytes_per_token);
    const auto peer = kLlamaCpp.find(r.format);
    char dec[64], pre[64], peer_dec[64] = "-", peer_pre[32] = "-", vs_dec[16] = "-", vs_pre[16] = "-";
    std::snprintf(dec, sizeof dec, "%6.1f (%5.1f-%5.1f)", d.median, d.min, d.max);
    std::snprintf(pre, sizeof pre, "%6.1f (%5.1f-%5.1f)", p.median, p.min, p.max);
    if (peer != kLlamaCpp.end()) {
      std::snprintf(peer_dec, sizeof peer_dec, "%s %4.1f (%.1f-%.1f)", peer->second.format, peer->second.decode,
                    peer->second.decode_min, peer->second.decode_max);
      std::snprintf(peer_pre, sizeof peer_pre, "%s %.0f", peer->second.format, peer->second.prefill);
      std::snprintf(vs_dec, sizeof vs_dec, "%.2f", d.median / peer->second.decode);
      std::snprintf(vs_pre, sizeof vs_pre, "%.2f", p.median / peer->second.prefill);
    }
    std::printf("%-8s %9.0f | %-24s %9.1f %6.2f %-22s %6s | %-24s %8.1f %9s %6s\n", r.label.c_str(),
                r.bytes_per_token / 1e6, dec, roof, d.median / roof, peer_dec, vs_dec, pre,
                prefill_flop * p.median / prompt / 1e9, peer_pre, vs_pre);
  }
  std::printf(
      "\nroofline = read bandwidth / model bytes per token (every weight but the embedding table, read once\n"
      "per token); llama.cpp figures are quoted medians (min-max) from 6 interleaved rounds on this machine\n"
      "kind (2 threads, same shape), not measured in this run. Rounding: f32/bf16 rows exact (fp32 tier);\n"
      "q8_0/q4_0 decode rounds activations to int8 blocks (GGML's numerics), their prefill is exact;\n"
      "bf16:all rounds prefill activations to bf16 (llama.cpp's BF16 numerics).\n");
  return 0;
}
