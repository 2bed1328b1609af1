// Streamed forward of a TinyLlama-shaped bf16 checkpoint from a filesystem chunk store.
// Prints forward times (seq 1 and seq N), transfer alone, compute alone, the overlap ratio
// streamed / max(transfer, compute) (goal <= 1.15), peak RSS against the memory budget, and
// prefill matmul GFLOP/s through the SDK against raw OpenBLAS sgemm on the same shapes (goal >= 70%).
//
//   build/tests/bench/stream_bench [--preset tinyllama-1.1b] [--cache 2] [--prefetch 1] [--seq 128] [--runs 3]
//                                  [--spare-buffers 2] [--matmuls 1]
// --matmuls 0 skips the prefill matmul comparison (section 4), e.g. for interleaved overlap runs.
#include <cblas.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>

#include "bench_util.h"
#include "sources/component_provider.h"
#include "surf/ops.h"
#include "surf/runtime.h"
#include "synth.h"
#include "surf/storage/backend.h"
#include "surf/storage/safetensors.h"

using namespace surf;
namespace fs = std::filesystem;

namespace {

Tensor random_ids(int64_t len, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  Tensor t = Tensor::empty(DType::I64, {1, len});
  for (int64_t i = 0; i < len; ++i) t.i64()[i] = static_cast<int64_t>(rng() % static_cast<uint32_t>(vocab));
  return t;
}

Tensor random_f32(Shape shape, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-0.05f, 0.05f);
  Tensor t = Tensor::empty(DType::F32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = d(rng);
  return t;
}

std::string arg(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == "--" + name) return argv[i + 1];
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string preset = arg(argc, argv, "preset", "tinyllama-1.1b");
  const int cache = std::stoi(arg(argc, argv, "cache", "2"));
  const int prefetch = std::stoi(arg(argc, argv, "prefetch", "1"));
  const int64_t seq = std::stoll(arg(argc, argv, "seq", "128"));
  const int runs = std::stoi(arg(argc, argv, "runs", "3"));
  const int spares = std::stoi(arg(argc, argv, "spare-buffers", "2"));
  const bool matmuls = arg(argc, argv, "matmuls", "1") != "0";
  const fs::path hf = fs::path(bench::work_dir()) / (preset + "-bf16");
  const fs::path store = fs::path(bench::work_dir()) / (preset + "-bf16-store");
  if (!fs::exists(hf / "config.json")) {
    std::printf("synthesising %s (bf16) into %s ...\n", preset.c_str(), hf.c_str());
    SynthOptions so;
    so.preset = preset;
    synth_checkpoint(hf.string(), so);
  }
  if (!fs::exists(store / "manifest.json")) {
    std::printf("chunking into %s ...\n", store.c_str());
    chunk_checkpoint(hf.string(), store.string(), {});
  }
  const ModelConfig cfg = ModelConfig::parse(read_text_file(hf / "config.json"));
  const int64_t vocab = cfg.get_int("vocab_size");
  const int64_t hidden = cfg.get_int("hidden_size");
  const int64_t inter = cfg.get_int("intermediate_size");
  const int64_t heads = cfg.get_int("num_attention_heads");
  const int64_t kv_heads = cfg.get_int("num_key_value_heads", heads);
  const int64_t kv_width = kv_heads * (hidden / heads);
  const Tensor ids1 = random_ids(1, vocab, 1), ids_n = random_ids(seq, vocab, 2);
  std::printf("model %s (bf16 store), cache %d layers, prefetch %d, seq 1 and %lld, median of %d runs\n",
              preset.c_str(), cache, prefetch, static_cast<long long>(seq), runs);

  // 1. Streamed: the cache is smaller than the model. One pass of each length alone first, for
  // the peak RSS of streaming (before any other session exists).
  const uint64_t rss_before = bench::rss_bytes();
  const bool peak_ok = bench::reset_peak_rss();
  uint64_t resident_bytes = 0, largest_stored = 0, streamed_count = 0, peak = 0;
  OpenOptions so;
  so.cache_size = cache;
  so.prefetch = prefetch;
  so.spare_buffers = spares;
  auto streamed = Session::open(store.string(), so);
  for (const auto& c : streamed->info().components) {
    if (!c.resident) {
      largest_stored = std::max(largest_stored, c.raw_bytes);
      streamed_count++;
    }
  }
  streamed->forward({{"input_ids", ids1}});
  streamed->forward({{"input_ids", ids_n}});
  resident_bytes = streamed->cache_stats().resident_bytes;
  peak = bench::peak_rss_bytes();
  // bf16 matrices stay bf16 in memory: a component occupies about its stored size.
  const uint64_t layer_bytes = largest_stored;

  // 2. Transfer alone: read + verify + decode + convert every streamed component in order.
  auto pool = std::make_shared<BufferPool>(8);
  auto provider = make_store_provider(std::shared_ptr<StorageBackend>(open_filesystem_backend(store)), pool);
  std::vector<std::string> streamed_ids;
  for (const auto& c : provider->manifest().components) {
    if (c.role == ComponentRole::streamed) streamed_ids.push_back(c.id);
  }
  uint64_t bytes = 0;
  auto transfer_once = [&] {
    bytes = 0;
    for (const auto& id : streamed_ids) bytes += provider->fetch(id).bytes_fetched;
  };
  transfer_once();

  // 3. Compute alone: every component cached before timing.
  OpenOptions co;
  co.cache_size = static_cast<int>(streamed_count);
  co.prefetch = 0;
  co.warmup = {"all"};
  auto resident = Session::open(store.string(), co);
  resident->forward({{"input_ids", ids1}});
  resident->forward({{"input_ids", ids_n}});

  // The three are timed in interleaved rounds, and each round's ratio is taken within the round:
  // this machine's CPU share and memory bandwidth swing from second to second, and phases timed
  // tens of seconds apart made the ratio swing between 0.4 and 3 on one binary.
  streamed->reset_cache_stats();
  std::vector<double> s1v, snv, tv, c1v, cnv, r1v, rnv;
  for (int r = 0; r < runs; ++r) {
    s1v.push_back(bench::seconds([&] { streamed->forward({{"input_ids", ids1}}); }));
    snv.push_back(bench::seconds([&] { streamed->forward({{"input_ids", ids_n}}); }));
    tv.push_back(bench::seconds(transfer_once));
    c1v.push_back(bench::seconds([&] { resident->forward({{"input_ids", ids1}}); }));
    cnv.push_back(bench::seconds([&] { resident->forward({{"input_ids", ids_n}}); }));
    r1v.push_back(s1v.back() / std::max(tv.back(), c1v.back()));
    rnv.push_back(snv.back() / std::max(tv.back(), cnv.back()));
  }
  const std::string stats_text = streamed->cache_stats().to_text();
  streamed.reset();
  resident.reset();
  provider.reset();
  pool.reset();
  const auto s1 = bench::spread(s1v), sn = bench::spread(snv), tr = bench::spread(tv), c1 = bench::spread(c1v),
             cn = bench::spread(cnv), r1 = bench::spread(r1v), rn = bench::spread(rnv);
  const double transfer = tr.median, compute_n = cn.median;

  // "median (min-max)", scaled; ms() for times, ratio() for ratios.
  auto text = [](const bench::Spread& x, double scale, int digits) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f (%.*f-%.*f)", digits, x.median * scale, digits, x.min * scale, digits,
                  x.max * scale);
    return std::string(buf);
  };
  auto ms = [&](const bench::Spread& x) { return text(x, 1e3, 1); };
  auto ratio = [&](const bench::Spread& x) { return text(x, 1, 3); };
  std::printf("\nmedians (ranges) of %d interleaved rounds, ms\n", runs);
  std::printf("%-34s %24s %24s\n", "", "seq 1", ("seq " + std::to_string(seq)).c_str());
  std::printf("%-34s %24s %24s\n", "streamed forward", ms(s1).c_str(), ms(sn).c_str());
  std::printf("%-34s %24s %24s   (%.0f MB, %.2f GB/s)\n", "transfer alone (all streamed)", ms(tr).c_str(),
              ms(tr).c_str(), bytes / 1e6, bytes / transfer / 1e9);
  std::printf("%-34s %24s %24s\n", "compute alone (all cached)", ms(c1).c_str(), ms(cn).c_str());
  std::printf("%-34s %24s %24s   goal <= 1.15 (each round's own ratio)\n", "streamed / max(transfer, compute)",
              ratio(r1).c_str(), ratio(rn).c_str());
  std::printf("cache: %s\n", stats_text.c_str());

  // Memory: peak RSS growth of the streamed phase against its budget. The buffer pool also keeps
  // two spare buffers so fetches land in warm pages (a constant, independent of depth); buffers
  // drift to the size of the largest component (lm_head) as they are reused.
  const uint64_t activations = static_cast<uint64_t>(seq) * (4 * hidden + 2 * kv_width + 3 * inter + 2 * vocab) * 4;
  const uint64_t budget = resident_bytes + static_cast<uint64_t>(cache + prefetch) * layer_bytes + activations;
  if (peak_ok) {
    const uint64_t grew = peak - rss_before;
    std::printf(
        "\npeak RSS growth %.0f MB; budget: resident %.0f + (cache %d + prefetch %d) x largest component %.0f MB"
        " + activations %.0f MB = %.0f MB; ratio %.3f (goal <= 1.10); counting the pool's %d spare"
        " buffer(s) (x %.0f MB): %.3f\n",
        grew / 1e6, resident_bytes / 1e6, cache, prefetch, layer_bytes / 1e6, activations / 1e6, budget / 1e6,
        static_cast<double>(grew) / static_cast<double>(budget), spares, layer_bytes / 1e6,
        static_cast<double>(grew) / static_cast<double>(budget + spares * layer_bytes));
  }

  if (!matmuls) return 0;
  // 4. Prefill matmuls: SDK linear (f32 weights, and bf16 weights as the cache holds them) vs raw
  // sgemm on the same shapes, measured interleaved so machine noise hits all three alike.
  std::printf("\nprefill matmuls, M=%lld (2 OpenBLAS threads), medians of 7 interleaved runs:\n",
              static_cast<long long>(seq));
  struct Shape2 {
    int64_t n, k;
    const char* what;
  };
  const Shape2 shapes[] = {{hidden, hidden, "q/o_proj"},
                           {kv_width, hidden, "k/v_proj"},
                           {inter, hidden, "gate/up_proj"},
                           {hidden, inter, "down_proj"}};
  double total_sdk = 0, total_bf16 = 0, total_raw = 0, total_flop = 0;
  for (const auto& sh : shapes) {
    const Tensor x = random_f32({seq, sh.k}, 3), w = random_f32({sh.n, sh.k}, 4);
    Tensor w16 = Tensor::empty(DType::BF16, {sh.n, sh.k});
    convert_from_f32(DType::BF16, w.f32(), w16.raw_mutable(), static_cast<size_t>(w.numel()));
    Tensor y = Tensor::empty(DType::F32, {seq, sh.n});
    const double flop = 2.0 * static_cast<double>(seq) * static_cast<double>(sh.n) * static_cast<double>(sh.k);
    std::vector<double> t_sdk, t_bf16, t_raw;
    for (int r = 0; r < 9; ++r) {
      double t0 = bench::now_s();
      ops::linear(x, w);
      const double a = bench::now_s() - t0;
      t0 = bench::now_s();
      ops::linear(x, w16);
      const double b = bench::now_s() - t0;
      ops::set_blas_threads(2);  // the SDK's pool runs OpenBLAS single-threaded; the reference gets both cores
      t0 = bench::now_s();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, seq, sh.n, sh.k, 1.0f, x.f32(), sh.k, w.f32(), sh.k, 0.0f,
                  y.f32(), sh.n);
      const double c = bench::now_s() - t0;
      ops::set_blas_threads(1);
      if (r >= 2) {  // two warm-up rounds
        t_sdk.push_back(a);
        t_bf16.push_back(b);
        t_raw.push_back(c);
      }
    }
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    const double ts = median(t_sdk), tb = median(t_bf16), tr = median(t_raw);
    std::printf("  %-13s N=%-5lld K=%-5lld sgemm %5.1f | sdk f32 %5.1f (%.2f) | sdk bf16 %5.1f (%.2f) GFLOP/s\n",
                sh.what, static_cast<long long>(sh.n), static_cast<long long>(sh.k), flop / tr / 1e9, flop / ts / 1e9,
                tr / ts, flop / tb / 1e9, tr / tb);
    total_sdk += ts;
    total_bf16 += tb;
    total_raw += tr;
    total_flop += flop;
  }
  std::printf("  all shapes: sgemm %.1f GFLOP/s; sdk f32 weights %.2f of it, bf16 weights %.2f of it (goal >= 0.70)\n",
              total_flop / total_raw / 1e9, total_raw / total_sdk, total_raw / total_bf16);
  // The whole forward: matmul FLOPs of all layers + head against the compute-alone time.
  const double fwd_flop = 2.0 * static_cast<double>(seq) * static_cast<double>(bytes / 2);
  std::printf("  whole forward (compute alone, seq %lld): %.1f GFLOP/s of weight matmuls = %.2f of sgemm\n",
              static_cast<long long>(seq), fwd_flop / compute_n / 1e9,
              (fwd_flop / compute_n) / (total_flop / total_raw));
  return 0;
}
