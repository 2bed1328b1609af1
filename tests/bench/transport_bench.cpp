// One 200 MB, one 20 MB and one 5 MB chunk (a q4_0 layer of a small model) from `surf serve` to the client, checksummed, decoded and ready
// for compute, against a plain TCP transfer of the same bytes on loopback in the same run
// (goal: ratio >= 0.8), and the aggregate rate of 8 clients.
//
//   build/tests/bench/transport_bench [--runs 5]
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <thread>

#include "../server_process.h"
#include "../test_util.h"
#include "bench_util.h"
#include "sources/component_provider.h"
#include "surf/runtime.h"
#include "surf/storage/backend.h"
#include "surf/storage/chunk.h"

using namespace surf;

namespace {

// Plain TCP on loopback: a sender thread writes `bytes` in 1 MiB writes whenever the receiver
// asks; the receiver reads into a warm buffer.
class RawTcp {
 public:
  explicit RawTcp(size_t bytes) : src_(bytes, 1), dst_(bytes, 0) {
    int port = 0;
    listener_ = test::listen_loopback(&port, 1);
    sender_ = std::thread([this] {
      int s = ::accept(listener_, nullptr, nullptr);
      char go;
      while (::read(s, &go, 1) == 1) {
        for (size_t at = 0; at < src_.size();) {
          const ssize_t n = ::write(s, src_.data() + at, std::min<size_t>(1 << 20, src_.size() - at));
          if (n <= 0) break;
          at += static_cast<size_t>(n);
        }
      }
      ::close(s);
    });
    client_ = test::connect_loopback(port);
  }
  ~RawTcp() {
    ::shutdown(client_, SHUT_RDWR);
    ::close(client_);
    sender_.join();
    ::close(listener_);
  }
  void transfer() {
    const char go = 1;
    if (::write(client_, &go, 1) != 1) return;
    for (size_t at = 0; at < dst_.size();) {
      const ssize_t n = ::read(client_, dst_.data() + at, dst_.size() - at);
      if (n <= 0) break;
      at += static_cast<size_t>(n);
    }
  }

 private:
  std::vector<char> src_, dst_;
  int listener_ = -1, client_ = -1;
  std::thread sender_;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 7;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--runs") runs = std::stoi(argv[i + 1]);
  }
  ::setenv("SURF_EXE", SURF_EXE_PATH, 0);
  test::TempDir dir;
  const size_t big = 200u * 1000 * 1000, small = 20u * 1000 * 1000, tiny = 5u * 1000 * 1000;
  bench::write_f32_store(dir.str("store"), {{"big", big}, {"small", small}, {"tiny", tiny}});
  test::ServerProcess server({"--store", dir.str("store"), "--cache-mb", "1000", "--threads", "2"});
  OpenOptions o;
  std::printf("surf serve on 127.0.0.1:%d; medians of %d interleaved runs after one warm-up\n\n", server.port(), runs);
  std::printf("%-11s %14s %14s %8s\n", "chunk", "surf MB/s", "raw TCP MB/s", "ratio");
  for (const auto& [id, bytes] : {std::pair<std::string, size_t>{"big", big}, {"small", small}, {"tiny", tiny}}) {
    auto pool = std::make_shared<BufferPool>(8);
    auto provider = make_ws_provider(server.url("store"), o, pool);
    const uint64_t chunk_bytes = provider->manifest().find(id)->bytes;
    RawTcp raw(chunk_bytes);
    // Interleaved, so that the machine's ups and downs hit both alike.
    std::vector<double> t_surf, t_raw;
    for (int r = 0; r < runs + 1; ++r) {
      double t0 = bench::now_s();
      FetchResult res = provider->fetch(id);
      if (res.component->get("weight").numel() != static_cast<int64_t>(bytes / 4)) std::abort();
      const double a = bench::now_s() - t0;
      res = {};
      t0 = bench::now_s();
      raw.transfer();
      const double b = bench::now_s() - t0;
      if (r > 0) {  // one warm-up round
        t_surf.push_back(a);
        t_raw.push_back(b);
      }
    }
    const double t = median(t_surf), tr = median(t_raw);
    std::printf("%-11s %14.0f %14.0f %8.2f   (goal >= 0.80)\n",
                (id + " " + std::to_string(bytes / 1000000) + "MB").c_str(), chunk_bytes / t / 1e6,
                chunk_bytes / tr / 1e6, tr / t);
  }
  // 8 clients, each its own connection, each fetching the 20 MB chunk `runs` times.
  std::atomic<uint64_t> total{0};
  const double t0 = bench::now_s();
  std::vector<std::thread> clients;
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&] {
      auto pool = std::make_shared<BufferPool>(4);
      auto provider = make_ws_provider(server.url("store"), o, pool);
      for (int r = 0; r < runs; ++r) total += provider->fetch("small").bytes_fetched;
    });
  }
  for (auto& t : clients) t.join();
  const double el = bench::now_s() - t0;
  std::printf("\n8 clients x %d x 20 MB: aggregate %.0f MB/s (%.0f MB in %.2f s)\n", runs, total / el / 1e6,
              total / 1e6, el);
  return 0;
}
