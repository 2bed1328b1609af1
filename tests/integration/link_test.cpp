// Bytes on the link: `surf serve --max-mbps` paces answers (one token bucket for the server), and
// the client's disk tier (--disk-cache) keeps fetched chunks across runs and processes. Real
// `surf serve` processes on 127.0.0.1, stopped by pid.
#include <utility>

#include <gtest/gtest.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <fstream>
#include <future>
#include <thread>

#include "../server_process.h"
#include "../test_util.h"
#include "surf/runtime.h"
#include "surf/storage/chunk.h"
#include "surf/storage/manifest.h"
#include "surf/storage/safetensors.h"
#include "transport/wire.h"
#include "transport/ws_connection.h"

using namespace surf;
namespace fs = std::filesystem;
namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

struct Store {
  test::TempDir dir;
  std::string llama;
  Manifest manifest;
  Store() {
    ChunkOptions o;
    o.plugin_dirs = {test::plugin_dir()};
    llama = dir.str("llama");
    chunk_checkpoint((test::fixtures_dir() / "llama-tiny-random").string(), llama, o);
    manifest = Manifest::from_json(read_text_file(fs::path(llama) / "manifest.json"));
  }
};
Store& store() {
  static Store s;
  return s;
}

std::string http_get(int port, const std::string& target) {
  net::io_context ioc;
  tcp::resolver resolver(ioc);
  beast::tcp_stream stream(ioc);
  stream.connect(resolver.resolve("127.0.0.1", std::to_string(port)));
  beast::http::request<beast::http::empty_body> req(beast::http::verb::get, target, 11);
  req.set(beast::http::field::host, "127.0.0.1");
  beast::http::write(stream, req);
  beast::flat_buffer buf;
  beast::http::response<beast::http::string_body> res;
  beast::http::read(stream, buf, res);
  return res.body();
}

uint64_t metric(const std::string& text, const std::string& name) {
  const size_t at = text.find("\n" + name + " ");
  if (at == std::string::npos) return 0;
  return std::stoull(text.substr(at + name.size() + 2));
}

// The largest streamed component of the store, for timing.
const ManifestComponent& largest() {
  const ManifestComponent* best = nullptr;
  for (const auto& c : store().manifest.components) {
    if (best == nullptr || c.bytes > best->bytes) best = &c;
  }
  return *best;
}

// Fetches one chunk over its own connection; returns the seconds it took. Checks the data.
double timed_fetch(int port, const ManifestComponent& c) {
  auto pool = std::make_shared<BufferPool>(1);
  WsConnection conn(parse_ws_url("ws://127.0.0.1:" + std::to_string(port) + "/llama"), "", pool);
  conn.connect(5000);
  const auto t0 = Clock::now();
  const ReplyPtr r = conn.request(wire::GetChunk{"llama", c.id}, c.bytes).get();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const auto& chunk = std::get<wire::ChunkAnswer>(r->answer.body);
  EXPECT_EQ(chunk.size, c.bytes);
  EXPECT_EQ(checksum_of(chunk.data, chunk.size), c.checksum);
  EXPECT_EQ(r->data_checksum, c.checksum);  // checksummed while the frames arrived
  return secs;
}

OpenOptions options(int cache = 1, int prefetch = 1) {
  OpenOptions o;
  o.plugin_dirs = {test::plugin_dir()};
  o.cache_size = cache;
  o.prefetch = prefetch;
  return o;
}

TensorMap llama_inputs() {
  const TensorMap g = read_safetensors(test::fixtures_dir() / "llama-tiny-random" / "golden.safetensors");
  return {{"input_ids", g.at("input_ids")}, {"attention_mask", g.at("attention_mask")}, {"position_ids", g.at("position_ids")}};
}

}  // namespace

TEST(RateLimit, AChunkTakesAtLeastItsSizeOverTheRate) {
  const ManifestComponent& c = largest();
  ASSERT_GT(c.bytes, 64u << 10) << "fixture chunk too small to time";
  const int mbps = 1;  // 125000 bytes/s
  test::ServerProcess server({"--store", store().llama, "--max-mbps", std::to_string(mbps)});
  const double rate = mbps * 1e6 / 8;
  const double burst = 16 << 10;  // the bucket's capacity at this rate
  const double secs = timed_fetch(server.port(), c);
  EXPECT_GE(secs, 0.9 * (static_cast<double>(c.bytes) - burst) / rate) << c.bytes << " bytes";
  // Metrics as without a limit.
  const std::string m = http_get(server.port(), "/metrics");
  EXPECT_EQ(metric(m, "surf_bytes_served_total"), c.bytes);
  EXPECT_EQ(metric(m, "surf_cache_misses_total"), 1u);
}

TEST(RateLimit, TheBucketIsSharedByAllConnections) {
  const ManifestComponent& c = largest();
  const int mbps = 2;
  test::ServerProcess server({"--store", store().llama, "--max-mbps", std::to_string(mbps)});
  const double rate = mbps * 1e6 / 8;
  const auto t0 = Clock::now();
  auto a = std::async(std::launch::async, [&] { return timed_fetch(server.port(), c); });
  auto b = std::async(std::launch::async, [&] { return timed_fetch(server.port(), c); });
  a.get();
  b.get();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_GE(secs, 0.9 * (2.0 * static_cast<double>(c.bytes) - (16 << 10)) / rate);
  EXPECT_EQ(metric(http_get(server.port(), "/metrics"), "surf_bytes_served_total"), 2 * c.bytes);
}

TEST(RateLimit, AForwardPassThroughALimitedServerEqualsAnUnlimitedOne) {
  test::ServerProcess limited({"--store", store().llama, "--max-mbps", "50"});
  test::ServerProcess unlimited({"--store", store().llama});
  const TensorMap a = Session::open(limited.url("llama"), options())->forward(llama_inputs());
  const TensorMap b = Session::open(unlimited.url("llama"), options())->forward(llama_inputs());
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) EXPECT_TRUE(test::bitwise_equal(t, b.at(name))) << name;
  EXPECT_EQ(metric(http_get(limited.port(), "/metrics"), "surf_bytes_served_total"),
            metric(http_get(unlimited.port(), "/metrics"), "surf_bytes_served_total"));
}

TEST(RateLimit, NegativeRateIsAClearError) {
  const auto r = test::run_command({test::surf_exe(), "serve", "--store", store().llama, "--port", "0", "--max-mbps", "-5"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--max-mbps must not be negative"), std::string::npos) << r.err;
}
