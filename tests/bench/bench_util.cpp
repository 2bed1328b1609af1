#include "bench_util.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "surf/storage/backend.h"
#include "surf/storage/chunk.h"
#include "surf/storage/manifest.h"

namespace surf::bench {

namespace {

// Sums a range with 256-bit loads, 4 independent accumulators (as a matmul streams weights).
__attribute__((target("avx2"))) uint64_t sum_avx2(const uint64_t* p, size_t words) {
  __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i + 16 <= words; i += 16) {
    s0 = _mm256_add_epi64(s0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    s1 = _mm256_add_epi64(s1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
    s2 = _mm256_add_epi64(s2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 8)));
    s3 = _mm256_add_epi64(s3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 12)));
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
  return static_cast<uint64_t>(_mm256_extract_epi64(s, 0) + _mm256_extract_epi64(s, 3));
}

uint64_t sum_plain(const uint64_t* p, size_t words) {
  uint64_t s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (size_t i = 0; i + 8 <= words; i += 8) {
    for (int u = 0; u < 8; ++u) s[u] += p[i + u];
  }
  return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

}  // namespace

double read_bandwidth(size_t bytes, int threads, int runs) {
  const size_t per = bytes / 8 / static_cast<size_t>(threads) / 16 * 16;
  static std::vector<uint64_t> storage;  // kept: fresh pages are slow to touch on VMs, warm ones are not
  if (storage.size() < per * static_cast<size_t>(threads) + 8)
    storage.assign(per * static_cast<size_t>(threads) + 8, 1);
  uint64_t* buf = reinterpret_cast<uint64_t*>((reinterpret_cast<uintptr_t>(storage.data()) + 63) & ~uintptr_t{63});
  const bool avx2 = __builtin_cpu_supports("avx2");
  std::vector<double> rates;
  std::vector<uint64_t> sink(static_cast<size_t>(threads));
  for (int r = 0; r < runs; ++r) {
    const double t0 = now_s();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        const uint64_t* p = buf + per * static_cast<size_t>(t);
        sink[static_cast<size_t>(t)] = avx2 ? sum_avx2(p, per) : sum_plain(p, per);
      });
    }
    for (auto& th : pool) th.join();
    rates.push_back(static_cast<double>(per * static_cast<size_t>(threads) * 8) / (now_s() - t0));
  }
  return spread(rates).median;
}

Spread spread(std::vector<double> v) {
  Spread s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.max = v.back();
  s.median = v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  return s;
}

double seconds(const std::function<void()>& fn) {
  const double t0 = now_s();
  fn();
  return now_s() - t0;
}

double median_seconds(int runs, int warmup, const std::function<void()>& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) t.push_back(seconds(fn));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

namespace {
uint64_t status_kb(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) {
      std::istringstream s(line.substr(key.size() + 1));
      uint64_t kb = 0;
      s >> kb;
      return kb;
    }
  }
  return 0;
}
}  // namespace

uint64_t rss_bytes() { return status_kb("VmRSS") * 1024; }
uint64_t peak_rss_bytes() { return status_kb("VmHWM") * 1024; }

bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  if (!out) return false;
  out << "5";
  return static_cast<bool>(out);
}

std::string work_dir() {
  const char* d = std::getenv("SURF_BENCH_DIR");
  return d && *d ? d : "/tmp/surf-bench";
}

void write_f32_store(const std::string& dir, const std::vector<std::pair<std::string, size_t>>& components) {
  auto backend = open_filesystem_backend(dir, true);
  Manifest m;
  m.architecture = "bench";
  m.model_type = "bench";
  m.config_json = "{}";
  ByteBuffer chunk;
  for (const auto& [id, bytes] : components) {
    std::vector<float> values(bytes / 4);
    for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i % 1000) * 0.001f;
    encode_chunk(id, {{"weight", DType::F32, {static_cast<int64_t>(values.size())}, values.data(), bytes}},
                 Compression::none, 0, chunk);
    backend->put(chunk_key(id), chunk.data(), chunk.size());
    ManifestComponent c;
    c.id = id;
    c.key = chunk_key(id);
    c.bytes = chunk.size();
    c.raw_bytes = bytes;
    c.checksum = checksum_of(chunk.data(), chunk.size());
    c.tensors.push_back({"weight", id, DType::F32, {static_cast<int64_t>(values.size())}});
    m.components.push_back(c);
    m.execution_order.push_back(id);
  }
  const std::string text = m.to_json();
  backend->put("manifest.json", text.data(), text.size());
}

}  // namespace surf::bench
