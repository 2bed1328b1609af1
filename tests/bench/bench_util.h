// Small helpers for benchmark binaries: timing, memory, cached synthetic checkpoints.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace surf::bench {

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
// Median wall time of `runs` calls of fn (after `warmup` untimed calls).
// Seconds one call of fn takes.
double seconds(const std::function<void()>& fn);
double median_seconds(int runs, int warmup, const std::function<void()>& fn);
// Resident set size now and its peak (VmRSS / VmHWM), bytes.
uint64_t rss_bytes();
uint64_t peak_rss_bytes();
// Resets the peak (Linux clear_refs 5); returns false if not supported.
bool reset_peak_rss();
// Work directory for benchmark data (SURF_BENCH_DIR, default /tmp/surf-bench).
std::string work_dir();

// Memory read bandwidth, bytes/s: `threads` threads each sum their share of a warm buffer of
// `bytes` (far larger than the caches), the median of `runs` passes.
double read_bandwidth(size_t bytes, int threads, int runs);

// Median and range of a sample.
struct Spread {
  double median = 0, min = 0, max = 0;
};
Spread spread(std::vector<double> v);

// A store (filesystem backend, manifest.json and chunks) for transport benchmarks: one
// single-tensor F32 component per (id, bytes), uncompressed.
void write_f32_store(const std::string& dir, const std::vector<std::pair<std::string, size_t>>& components);

}  // namespace surf::bench
