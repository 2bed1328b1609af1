#include "bench_util.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

namespace surf::bench {

double median_seconds(int runs, int warmup, const std::function<void()>& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) {
    const double t0 = now_s();
    fn();
    t.push_back(now_s() - t0);
  }
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

}  // namespace surf::bench
