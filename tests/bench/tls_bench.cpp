// TLS costs, loopback, same run, interleaved: a 200 MB chunk from `surf serve` over wss:// against
// ws:// (goal >= 0.6), and an https:// S3 GET of 100 MB from moto behind stunnel4 through the S3
// backend against curl over https to the same TLS endpoint (goal >= 0.8). The CA and
// certificates are made with the openssl CLI at start.
//
//   build/tests/bench/tls_bench [--runs 7] [--no-s3]
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "../moto_process.h"
#include "../server_process.h"
#include "../test_util.h"
#include "../tls_fixtures.h"
#include "bench_util.h"
#include "sources/component_provider.h"
#include "surf/runtime.h"
#include "surf/storage/backend.h"
#include "surf/storage/chunk.h"
#include "surf/storage/s3.h"

using namespace surf;

namespace {

// CPU seconds (user + system) this process has used, and those of another process of ours
// (/proc/PID/stat): what a transfer costs whatever else the machine is doing, where wall time
// on a shared machine mostly measures the others.
double own_cpu_s() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}
double process_cpu_s(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream rest(text.substr(text.rfind(')') + 2));  // after "pid (comm) "
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(field);  // utime, stime
  }
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

struct Stats {
  std::vector<double> seconds;
  double median() const {
    auto v = seconds;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  }
  double min() const { return *std::min_element(seconds.begin(), seconds.end()); }
  double max() const { return *std::max_element(seconds.begin(), seconds.end()); }
};

void report(const char* what, double bytes, const Stats& s) {
  std::printf("  %-28s median %6.0f MB/s  (range %.0f-%.0f MB/s over %zu runs)\n", what, bytes / s.median() / 1e6,
              bytes / s.max() / 1e6, bytes / s.min() / 1e6, s.seconds.size());
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 7;
  bool s3_part = true;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--runs" && i + 1 < argc) runs = std::stoi(argv[i + 1]);
    if (std::string(argv[i]) == "--no-s3") s3_part = false;  // the wss:// half only
  }
  ::setenv("SURF_EXE", SURF_EXE_PATH, 0);
  ::setenv("SURF_TEST_FIXTURES", SURF_FIXTURES_PATH, 0);
  test::TestPki pki;
  pki.ca("ca");
  pki.leaf("local", "DNS:localhost,IP:127.0.0.1", 1);

  // --- wss:// vs ws:// ---
  test::TempDir dir;
  const size_t big = 200u * 1000 * 1000;
  bench::write_f32_store(dir.str("store"), {{"big", big}});
  test::ServerProcess plain({"--store", dir.str("store"), "--cache-mb", "1000", "--threads", "2"});
  test::ServerProcess tls({"--store", dir.str("store"), "--cache-mb", "1000", "--threads", "2", "--tls-cert",
                           pki.path("local.pem"), "--tls-key", pki.path("local.key")});
  OpenOptions o;
  o.ca_file = pki.path("ca.pem");
  auto pool = std::make_shared<BufferPool>(8);
  auto ws = make_ws_provider(plain.url("store"), o, pool);
  auto wss = make_ws_provider(tls.wss_url("store"), o, pool);
  const double chunk_bytes = static_cast<double>(ws->manifest().find("big")->bytes);
  Stats t_ws, t_wss, cpu_ws, cpu_wss;
  for (int r = 0; r < runs + 1; ++r) {  // interleaved; round 0 warms both up
    for (auto* p : {ws.get(), wss.get()}) {
      const int server = p == ws.get() ? plain.pid() : tls.pid();
      const double c0 = own_cpu_s() + process_cpu_s(server);
      const double t0 = bench::now_s();
      {
        FetchResult res = p->fetch("big");
        if (res.component->get("weight").numel() != static_cast<int64_t>(big / 4)) std::abort();
      }
      const double t = bench::now_s() - t0;
      const double cpu = own_cpu_s() + process_cpu_s(server) - c0;
      if (r > 0) {
        (p == ws.get() ? t_ws : t_wss).seconds.push_back(t);
        (p == ws.get() ? cpu_ws : cpu_wss).seconds.push_back(cpu);
      }
    }
  }
  std::printf("200 MB chunk, surf serve -> client (checksummed, decoded), loopback:\n");
  report("ws://", chunk_bytes, t_ws);
  report("wss:// (TLS)", chunk_bytes, t_wss);
  std::printf("  wss/ws ratio of medians: %.2f (goal >= 0.60)\n", t_ws.median() / t_wss.median());
  std::printf("  CPU seconds per chunk, client + server: ws:// median %.3f (%.3f-%.3f), wss:// median %.3f (%.3f-%.3f)\n\n",
              cpu_ws.median(), cpu_ws.min(), cpu_ws.max(), cpu_wss.median(), cpu_wss.min(), cpu_wss.max());

  if (!s3_part) return 0;

  // --- https:// S3 GET vs curl over https, same stunnel endpoint ---
  test::MotoProcess moto({"bench"});
  if (!moto.available()) {
    std::fprintf(stderr, "local S3 server unavailable: %s\n", moto.why_unavailable().c_str());
    return 1;
  }
  test::StunnelProcess terminator(moto.port(), pki.path("local.pem"), pki.path("local.key"));
  S3Config c;
  c.endpoint = "https://localhost:" + std::to_string(terminator.port());
  c.ca_file = pki.path("ca.pem");
  c.access_key_id = moto.access_key();
  c.secret_access_key = moto.secret_key();
  auto s3 = open_s3_backend("s3://bench", c);
  const size_t size = 100u * 1000 * 1000;
  std::vector<char> data(size);
  for (size_t i = 0; i < size; ++i) data[i] = static_cast<char>(i * 2654435761u >> 13);
  s3->put("object.bin", data.data(), size);
  const std::string curl = "curl -s -f -o /dev/null --cacert " + pki.path("ca.pem") +
                           " --aws-sigv4 aws:amz:us-east-1:s3 --user " + moto.access_key() + ":" + moto.secret_key() +
                           " -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' " + c.endpoint + "/bench/object.bin";
  ByteBuffer buf;
  Stats t_surf, t_curl;
  for (int r = 0; r < runs + 1; ++r) {
    double t0 = bench::now_s();
    s3->get("object.bin", buf);
    const double a = bench::now_s() - t0;
    if (buf.size() != size) std::abort();
    t0 = bench::now_s();
    if (std::system(curl.c_str()) != 0) {
      std::fprintf(stderr, "curl failed\n");
      return 1;
    }
    const double b = bench::now_s() - t0;
    if (r > 0) {
      t_surf.seconds.push_back(a);
      t_curl.seconds.push_back(b);
    }
  }
  std::printf("100 MB S3 GET over https (moto behind stunnel4), loopback:\n");
  report("surf S3 backend", size, t_surf);
  report("curl --aws-sigv4", size, t_curl);
  std::printf("  surf/curl ratio of medians: %.2f (goal >= 0.80)\n", t_curl.median() / t_surf.median());
  return 0;
}
