// Bytes per token over a link: TinyLlama-1.1B's shape (synthetic bf16 checkpoint, `surf synth
// --preset tinyllama-1.1b`) chunked as bf16, q8_0 and q4_0, streamed from `surf serve` with
// cache 2 / prefetch 1, greedy decode at batch 1 and batch 8 (left-padded prompts, one generate
// call), on unlimited loopback and on links paced by `surf serve --max-mbps` (1000, 100).
// Per configuration: bytes fetched per generated token (network bytes during the decode steps /
// steps), decode tokens/s (aggregate over the batch), and the physical limit beside it:
// link bytes/s / bytes per token (times the batch: one fetch serves every sequence), as a ratio.
// The loopback "link" rate is measured in the same round: one layer chunk fetched from the server
// (median of 3). Rounds interleave links, formats and batches; medians (min-max) over rounds.
//
//   build/tests/bench/link_bench [--formats bf16,q8_0,q4_0] [--links 0,1000,100] [--batches 1,8]
//        [--decode 3] [--decode-limited 1] [--rounds 3] [--rounds-limited 1] [--prompt 8]
//        [--skip bf16@100,q8_0@100] [--paced-cache-mb 0] [--read-ahead 2]
// Link 0 = unlimited. A decode step on a limited link moves the whole streamed model (~2.1 GB in
// bf16: ~17 s at 1000 Mbit/s, ~170 s at 100), hence fewer steps and rounds there and the default
// skips. Data: SURF_BENCH_DIR (default /tmp/surf-bench): the checkpoint and one store per format.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <sstream>

#include "../server_process.h"
#include "bench_util.h"
#include "surf/runtime.h"
#include "surf/storage/manifest.h"
#include "surf/storage/safetensors.h"
#include "synth.h"
#include "transport/wire.h"
#include "transport/ws_connection.h"

using namespace surf;
namespace fs = std::filesystem;

namespace {

std::string arg(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == "--" + name) return argv[i + 1];
  }
  return fallback;
}

std::vector<std::string> list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  for (std::string f; std::getline(ss, f, ',');) {
    if (!f.empty()) out.push_back(f);
  }
  return out;
}

// `batch` left-padded prompts of lengths prompt, prompt-1, ... (pad id 0, mask 0 on the pad).
TensorMap prompts(int64_t batch, int64_t prompt, int64_t vocab) {
  std::mt19937 rng(11);
  Tensor ids = Tensor::empty(DType::I64, {batch, prompt});
  Tensor mask = Tensor::empty(DType::I64, {batch, prompt});
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t pad = std::min<int64_t>(b % 4, prompt - 1);
    for (int64_t i = 0; i < prompt; ++i) {
      ids.i64()[b * prompt + i] = i < pad ? 0 : 1 + static_cast<int64_t>(rng() % static_cast<uint32_t>(vocab - 1));
      mask.i64()[b * prompt + i] = i < pad ? 0 : 1;
    }
  }
  return {{"input_ids", ids}, {"attention_mask", mask}};
}

// The loopback link: bytes/s of one chunk from the server to a client (median of 3, after one).
double loopback_rate(const std::string& url, const std::string& model, const ManifestComponent& c) {
  auto pool = std::make_shared<BufferPool>(2);
  WsConnection conn(parse_ws_url(url), "", pool);
  conn.connect(10000);
  std::vector<double> rates;
  for (int i = 0; i < 4; ++i) {
    const double t0 = bench::now_s();
    const ReplyPtr r = conn.request(wire::GetChunk{model, c.id}, c.bytes).get();
    const double secs = bench::now_s() - t0;
    if (!std::holds_alternative<wire::ChunkAnswer>(r->answer.body)) throw std::runtime_error("no chunk from " + url);
    if (i > 0) rates.push_back(static_cast<double>(c.bytes) / secs);
  }
  return bench::spread(rates).median;
}

struct Sample {
  double bytes_per_token, tokens_per_s;
};

// One generate call: a prefill and `steps` decode steps; times and network bytes between the
// first and the last token of sequence 0.
Sample measure(const std::string& url, int64_t batch, int64_t prompt, int64_t steps, int64_t vocab) {
  OpenOptions o;
  o.cache_size = 2;
  o.prefetch = 1;
  auto session = Session::open(url, o);
  std::vector<double> at;
  std::vector<uint64_t> bytes;
  GenerateOptions g;
  g.max_new_tokens = 1 + steps;
  g.stop_at_eos = false;
  g.return_logits = false;
  g.on_token = [&](int64_t sequence, int64_t, std::string_view) {
    if (sequence == 0) {
      at.push_back(bench::now_s());
      bytes.push_back(session->cache_stats().bytes_fetched);
    }
    return true;
  };
  session->generate(prompts(batch, prompt, vocab), g);
  if (at.size() != static_cast<size_t>(1 + steps)) throw std::runtime_error("sequence 0 stopped early");
  const double secs = at.back() - at.front();
  return {static_cast<double>(bytes.back() - bytes.front()) / static_cast<double>(steps),
          static_cast<double>(batch * steps) / secs};
}

}  // namespace

int main(int argc, char** argv) {
  const auto formats = list(arg(argc, argv, "formats", "bf16,q8_0,q4_0"));
  const auto links = list(arg(argc, argv, "links", "0,1000,100"));
  const auto batches = list(arg(argc, argv, "batches", "1,8"));
  const auto skips = list(arg(argc, argv, "skip", "bf16@100,q8_0@100"));
  const int64_t decode = std::stoll(arg(argc, argv, "decode", "3"));
  const int64_t decode_limited = std::stoll(arg(argc, argv, "decode-limited", "1"));
  const int rounds = std::stoi(arg(argc, argv, "rounds", "3"));
  const int rounds_limited = std::stoi(arg(argc, argv, "rounds-limited", "1"));
  const int64_t prompt = std::stoll(arg(argc, argv, "prompt", "8"));
  const std::string paced_cache = arg(argc, argv, "paced-cache-mb", "0");
  const std::string read_ahead = arg(argc, argv, "read-ahead", "2");  // the servers' --read-ahead
  ::setenv("SURF_EXE", SURF_EXE_PATH, 0);

  const std::string preset = "tinyllama-1.1b";
  const fs::path hf = fs::path(bench::work_dir()) / (preset + "-bf16");
  if (!fs::exists(hf / "config.json")) {
    std::printf("synthesising %s (bf16) into %s ...\n", preset.c_str(), hf.c_str());
    SynthOptions so;
    so.preset = preset;
    synth_checkpoint(hf.string(), so);
  }
  const int64_t vocab = ModelConfig::parse(read_text_file(hf / "config.json")).get_int("vocab_size");
  std::vector<std::string> stores;
  std::map<std::string, Manifest> manifests;
  for (const auto& f : formats) {
    const fs::path store = fs::path(bench::work_dir()) / (preset + "-" + f + "-store");
    if (!fs::exists(store / "manifest.json")) {
      std::printf("chunking %s into %s ...\n", f.c_str(), store.c_str());
      std::fflush(stdout);
      ChunkOptions co;
      co.dtype = f == "bf16" ? "keep" : f;
      chunk_checkpoint(hf.string(), store.string(), co);
    }
    stores.push_back(f + "=" + store.string());
    manifests[f] = Manifest::from_json(read_text_file(store / "manifest.json"));
  }
  // One server per link, each serving every format. The unlimited one caches every chunk in
  // memory (the loopback figure is surf's own speed); the paced ones read their store each time
  // unless --paced-cache-mb gives them a cache; they read ahead in execution order (--read-ahead,
  // 0: off), so the link need not idle while they read.
  std::map<std::string, std::unique_ptr<test::ServerProcess>> servers;
  for (const auto& l : links) {
    std::vector<std::string> args;
    for (const auto& s : stores) args.insert(args.end(), {"--store", s});
    args.insert(args.end(), {"--cache-mb", l == "0" ? "4500" : paced_cache});
    if (l != "0") args.insert(args.end(), {"--max-mbps", l});
    args.insert(args.end(), {"--read-ahead", read_ahead});
    servers[l] = std::make_unique<test::ServerProcess>(args);
  }
  std::printf(
      "TinyLlama-1.1B shape, cache 2 / prefetch 1, %lld-token prompts, greedy; decode steps: %lld on loopback, "
      "%lld on paced links; rounds: %d / %d\n\n",
      static_cast<long long>(prompt), static_cast<long long>(decode), static_cast<long long>(decode_limited), rounds,
      rounds_limited);
  struct Key {
    std::string link, format;
    int64_t batch;
    bool operator<(const Key& o) const { return std::tie(link, format, batch) < std::tie(o.link, o.format, o.batch); }
  };
  std::map<Key, std::vector<double>> bpt, tps, limit_ratio;
  std::map<std::string, std::vector<double>> loopback;  // format -> bytes/s
  const int max_rounds = std::max(rounds, rounds_limited);
  for (int round = 0; round < max_rounds; ++round) {
    for (const auto& l : links) {
      if (round >= (l == "0" ? rounds : rounds_limited)) continue;
      for (const auto& f : formats) {
        if (std::find(skips.begin(), skips.end(), f + "@" + l) != skips.end()) continue;
        const std::string url = servers[l]->url(f);
        double link_rate = std::stod(l) * 1e6 / 8;
        if (l == "0") {
          const ManifestComponent* layer = manifests[f].find("layers.0");
          link_rate = loopback_rate(url, f, *layer);
          loopback[f].push_back(link_rate);
        }
        for (const auto& b : batches) {
          const int64_t batch = std::stoll(b);
          const Sample s = measure(url, batch, prompt, l == "0" ? decode : decode_limited, vocab);
          const double limit = link_rate / s.bytes_per_token * static_cast<double>(batch);
          const Key k{l, f, batch};
          bpt[k].push_back(s.bytes_per_token);
          tps[k].push_back(s.tokens_per_s);
          limit_ratio[k].push_back(s.tokens_per_s / limit);
          std::printf("round %d  link %-5s %-5s batch %lld: %8.1f MB/token  %7.3f tok/s  limit %7.3f  ratio %.2f\n",
                      round + 1, l == "0" ? "loop" : l.c_str(), f.c_str(), static_cast<long long>(batch),
                      s.bytes_per_token / 1e6, s.tokens_per_s, limit, s.tokens_per_s / limit);
          std::fflush(stdout);
        }
      }
    }
  }
  for (auto& [l, s] : servers) s->stop();

  std::printf("\n%-10s %-5s %5s | %-22s | %-28s | %-26s | %s\n", "link", "fmt", "batch", "MB/token",
              "decode tok/s (aggregate)", "limit = link/(bytes/token)", "ratio");
  for (const auto& [k, v] : tps) {
    const auto b = bench::spread(bpt[k]), t = bench::spread(v), r = bench::spread(limit_ratio[k]);
    char link[32], mb[48], tok[48], lim[48], rat[48];
    if (k.link == "0") {
      const auto lr = bench::spread(loopback[k.format]);
      std::snprintf(link, sizeof link, "loop %.1fG", lr.median / 1e9);
    } else {
      std::snprintf(link, sizeof link, "%s Mbit", k.link.c_str());
    }
    std::snprintf(mb, sizeof mb, "%7.1f (%.1f-%.1f)", b.median / 1e6, b.min / 1e6, b.max / 1e6);
    std::snprintf(tok, sizeof tok, "%7.3f (%.3f-%.3f)", t.median, t.min, t.max);
    std::snprintf(lim, sizeof lim, "%7.3f", t.median / r.median);
    std::snprintf(rat, sizeof rat, "%.2f (%.2f-%.2f)", r.median, r.min, r.max);
    std::printf("%-10s %-5s %5lld | %-22s | %-28s | %-26s | %s\n", link, k.format.c_str(),
                static_cast<long long>(k.batch), mb, tok, lim, rat);
  }
  // Batch 8 against batch 1, same link and format: aggregate tokens/s.
  std::printf("\naggregate tokens/s, batch 8 / batch 1 (medians):\n");
  for (const auto& [k, v] : tps) {
    if (k.batch != 8) continue;
    const auto one = tps.find({k.link, k.format, 1});
    if (one == tps.end()) continue;
    std::printf("  link %-5s %-5s %.2fx\n", k.link == "0" ? "loop" : k.link.c_str(), k.format.c_str(),
                bench::spread(v).median / bench::spread(one->second).median);
  }
  std::printf(
      "\nloopback link = one layer chunk from the unlimited server's memory cache to the client (bytes/s);\n"
      "paced links at their nominal rate. MB/token = network bytes during the decode steps / steps.\n");
  return 0;
}
