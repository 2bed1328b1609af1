// Bytes on the link: `surf serve --max-mbps` paces answers (one token bucket for the server), and
// the client's disk tier (--disk-cache) keeps fetched chunks across runs and processes. Real
// `surf serve` processes on 127.0.0.1, stopped by pid.
#include <utility>

#include <gtest/gtest.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <algorithm>
#include <chrono>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
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
using test::http_get;
using test::metric;
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
  return {{"input_ids", g.at("input_ids")},
          {"attention_mask", g.at("attention_mask")},
          {"position_ids", g.at("position_ids")}};
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
  const auto r =
      test::run_command({test::surf_exe(), "serve", "--store", store().llama, "--port", "0", "--max-mbps", "-5"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--max-mbps must be in 0..1000000, got -5"), std::string::npos) << r.err;
}

namespace {

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(read_text_file(path)); }

struct DirScan {
  size_t chunks = 0, others = 0;
  uint64_t bytes = 0;
};
DirScan scan(const fs::path& dir) {
  DirScan s;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".chunk") {
      s.chunks++;
      s.bytes += e.file_size();
    } else {
      s.others++;
    }
  }
  return s;
}

// `surf run` as its own process against SOURCE with the disk tier in `cache`.
test::CommandResult run_process(const std::string& source, const std::string& inputs, const std::string& cache,
                                const std::string& out, const std::string& stats) {
  return test::run_command({test::surf_exe(), "run", source, "--inputs", inputs, "--output", out, "--cache-size", "1",
                            "--prefetch", "1", "--plugin-dir", test::plugin_dir(), "--disk-cache", cache,
                            "--stats-json", stats});
}

std::string inputs_file(const test::TempDir& d) {
  const std::string p = d.str("in.safetensors");
  write_safetensors(p, llama_inputs());
  return p;
}

}  // namespace

TEST(DiskTier, ASecondProcessFetchesNothingFromTheNetwork) {
  test::TempDir d;
  test::ServerProcess server({"--store", store().llama});
  const std::string in = inputs_file(d), cache = d.str("tier");
  auto first = run_process(server.url("llama"), in, cache, d.str("out1.safetensors"), d.str("s1.json"));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const uint64_t served1 = metric(http_get(server.port(), "/metrics"), "surf_bytes_served_total");
  const auto s1 = read_json(d.str("s1.json"));
  EXPECT_GT(s1["bytes_fetched"].get<uint64_t>(), 0u);
  EXPECT_EQ(s1["bytes_fetched"].get<uint64_t>(), served1);  // client and server agree
  EXPECT_EQ(s1["disk_hits"].get<uint64_t>(), 0u);
  const DirScan after1 = scan(cache);
  EXPECT_EQ(after1.chunks, s1["fetches"].get<size_t>());  // every chunk kept, one file each
  EXPECT_EQ(after1.bytes, served1);
  EXPECT_EQ(after1.others, 0u);  // no temporary files left

  auto second = run_process(server.url("llama"), in, cache, d.str("out2.safetensors"), d.str("s2.json"));
  ASSERT_EQ(second.exit_code, 0) << second.err;
  const auto s2 = read_json(d.str("s2.json"));
  EXPECT_EQ(s2["bytes_fetched"].get<uint64_t>(), 0u);
  EXPECT_EQ(s2["disk_hits"].get<uint64_t>(), s1["fetches"].get<uint64_t>());
  EXPECT_EQ(s2["disk_bytes"].get<uint64_t>(), served1);
  EXPECT_NE(second.err.find("disk cache"), std::string::npos) << second.err;
  const std::string m = http_get(server.port(), "/metrics");
  EXPECT_EQ(metric(m, "surf_bytes_served_total"), served1);  // the server saw no chunk request
  EXPECT_NE(m.find("surf_requests_total{op=\"get_chunk\"} " + std::to_string(s1["fetches"].get<uint64_t>()) + "\n"),
            std::string::npos)
      << m;
  const TensorMap a = read_safetensors(d.str("out1.safetensors")), b = read_safetensors(d.str("out2.safetensors"));
  for (const auto& [name, t] : a) EXPECT_TRUE(test::bitwise_equal(t, b.at(name))) << name;
}

TEST(DiskTier, ACorruptFileIsDetectedRefetchedAndReported) {
  test::TempDir d;
  test::ServerProcess server({"--store", store().llama});
  const std::string in = inputs_file(d), cache = d.str("tier");
  ASSERT_EQ(run_process(server.url("llama"), in, cache, d.str("out1.safetensors"), d.str("s1.json")).exit_code, 0);
  const uint64_t served1 = metric(http_get(server.port(), "/metrics"), "surf_bytes_served_total");
  // One byte flipped in one file, another file cut short.
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(cache)) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  ASSERT_GE(files.size(), 2u);
  const uint64_t flipped = fs::file_size(files[0]), cut = fs::file_size(files[1]);
  {
    std::fstream f(files[0], std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(flipped / 2));
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x20);
    f.seekp(static_cast<std::streamoff>(flipped / 2));
    f.write(&c, 1);
  }
  fs::resize_file(files[1], cut / 2);
  auto r = run_process(server.url("llama"), in, cache, d.str("out2.safetensors"), d.str("s2.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("checksum mismatch"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("wrong size"), std::string::npos) << r.err;
  const auto s2 = read_json(d.str("s2.json"));
  EXPECT_EQ(s2["disk_corrupt"].get<uint64_t>(), 2u);
  EXPECT_EQ(s2["bytes_fetched"].get<uint64_t>(), flipped + cut);  // only the two bad ones refetched
  EXPECT_EQ(metric(http_get(server.port(), "/metrics"), "surf_bytes_served_total"), served1 + flipped + cut);
  const TensorMap a = read_safetensors(d.str("out1.safetensors")), b = read_safetensors(d.str("out2.safetensors"));
  for (const auto& [name, t] : a) EXPECT_TRUE(test::bitwise_equal(t, b.at(name))) << name;
  // Rewritten good: a third run reads everything from disk.
  ASSERT_EQ(run_process(server.url("llama"), in, cache, d.str("out3.safetensors"), d.str("s3.json")).exit_code, 0);
  const auto s3 = read_json(d.str("s3.json"));
  EXPECT_EQ(s3["disk_corrupt"].get<uint64_t>(), 0u);
  EXPECT_EQ(s3["bytes_fetched"].get<uint64_t>(), 0u);
}

TEST(DiskTier, EvictionKeepsTheDirectoryUnderItsBound) {
  test::TempDir d;
  test::ServerProcess server({"--store", store().llama});
  uint64_t total = 0;
  for (const auto& c : store().manifest.components) total += c.bytes;
  OpenOptions o = options();
  o.disk_cache_dir = d.str("tier");
  o.disk_cache_bytes = total / 2;
  uint64_t first = 0;
  for (int pass = 0; pass < 2; ++pass) {
    auto s = Session::open(server.url("llama"), o);
    s->forward(llama_inputs());
    const DirScan now = scan(o.disk_cache_dir);
    EXPECT_LE(now.bytes, o.disk_cache_bytes);
    EXPECT_GT(now.chunks, 0u);
    EXPECT_EQ(now.others, 0u);
    // Every chunk came from the disk or the network, each verified; what was evicted came again.
    const CacheStats st = s->cache_stats();
    if (pass == 0) first = st.bytes_fetched;
    EXPECT_EQ(st.bytes_fetched + st.disk_bytes, first);
    EXPECT_EQ(st.disk_corrupt, 0u);
    if (pass == 1) {
      EXPECT_GT(st.bytes_fetched, 0u);  // the tier could not hold them all
    }
  }
}

TEST(DiskTier, ProcessesSharingTheDirectoryAgree) {
  test::TempDir d;
  test::ServerProcess server({"--store", store().llama});
  const std::string in = inputs_file(d), cache = d.str("tier");
  std::vector<std::future<test::CommandResult>> runs;
  for (int i = 0; i < 3; ++i) {
    runs.push_back(std::async(std::launch::async, [&, i] {
      return run_process(server.url("llama"), in, cache, d.str("out" + std::to_string(i)),
                         d.str("s" + std::to_string(i)));
    }));
  }
  for (auto& r : runs) {
    const auto res = r.get();
    EXPECT_EQ(res.exit_code, 0) << res.err;
  }
  const TensorMap a = read_safetensors(d.str("out0"));
  for (int i = 1; i < 3; ++i) {
    const TensorMap b = read_safetensors(d.str("out" + std::to_string(i)));
    for (const auto& [name, t] : a) EXPECT_TRUE(test::bitwise_equal(t, b.at(name))) << name;
  }
  // Every file whole and verified: a fourth run reads them all without a corrupt one.
  const DirScan s = scan(cache);
  EXPECT_EQ(s.others, 0u);
  ASSERT_EQ(run_process(server.url("llama"), in, cache, d.str("out3"), d.str("s3")).exit_code, 0);
  const auto s3 = read_json(d.str("s3"));
  EXPECT_EQ(s3["disk_corrupt"].get<uint64_t>(), 0u);
  EXPECT_EQ(s3["bytes_fetched"].get<uint64_t>(), 0u);
  EXPECT_EQ(s3["disk_hits"].get<uint64_t>(), s.chunks);
}

TEST(DiskTier, BadFlagsAreClearErrors) {
  test::TempDir d;
  const auto r = test::run_command({test::surf_exe(), "run", store().llama, "--inputs", inputs_file(d), "--output",
                                    d.str("y"), "--plugin-dir", test::plugin_dir(), "--disk-cache-mb", "5"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--disk-cache-mb needs --disk-cache DIR"), std::string::npos) << r.err;
}

namespace {

Tensor first_row(const Tensor& t) {
  const int64_t w = t.dim(1);
  Tensor out = Tensor::empty(t.dtype(), {1, w});
  std::copy_n(t.i64(), w, out.i64());
  return out;
}

}  // namespace

// Concurrent generate_async calls share each step: the same ids as each request alone, and the
// model streamed once per step for all of them, not once per request.
TEST(MergedRequests, ConcurrentRequestsEqualTheSameRequestsOneByOne) {
  for (const char* fixture : {"llama-tiny-random", "gpt2-tiny-random", "t5-tiny-random"}) {
    SCOPED_TRACE(fixture);
    const TensorMap g = read_safetensors(test::fixtures_dir() / fixture / "golden.safetensors");
    TensorMap all = {{"input_ids", g.count("gen_input_ids") ? g.at("gen_input_ids") : g.at("input_ids")}};
    if (!g.count("gen_input_ids") && g.count("attention_mask")) all["attention_mask"] = g.at("attention_mask");
    TensorMap one;
    for (const auto& [name, t] : all) one[name] = first_row(t);
    struct Request {
      TensorMap inputs;
      int64_t max_new;
    };
    const std::vector<Request> requests = {{all, 3}, {one, 6}, {all, 5}, {one, 2}};
    const std::string source = (test::fixtures_dir() / fixture).string();
    OpenOptions o = options(1, 0);

    auto alone = Session::open(source, o);
    std::vector<TensorMap> want;
    for (const auto& r : requests) {
      GenerateOptions go;
      go.max_new_tokens = r.max_new;
      want.push_back(alone->generate(r.inputs, go));
    }
    const uint64_t alone_bytes = alone->cache_stats().bytes_fetched;

    auto merged = Session::open(source, o);
    std::vector<std::future<TensorMap>> futures;
    for (const auto& r : requests) {
      GenerateOptions go;
      go.max_new_tokens = r.max_new;
      futures.push_back(merged->generate_async(r.inputs, go));
    }
    for (size_t i = 0; i < requests.size(); ++i) {
      const TensorMap got = futures[i].get();
      EXPECT_TRUE(test::bitwise_equal(got.at("generated_ids"), want[i].at("generated_ids"))) << "request " << i;
      EXPECT_TRUE(test::bitwise_equal(got.at("generated_lengths"), want[i].at("generated_lengths"))) << "request " << i;
    }
    // Alone: 3 + 6 + 5 + 2 = 16 steps; merged: about 6 (a request may join a step late).
    EXPECT_LT(merged->cache_stats().bytes_fetched * 4, alone_bytes * 3)
        << merged->cache_stats().bytes_fetched << " vs " << alone_bytes;
    // The max_new_tokens overload merges too and matches generate(inputs, n).
    auto a = merged->generate_async(all, 3), b = merged->generate_async(one, 4);
    EXPECT_TRUE(test::bitwise_equal(a.get().at("generated_ids"), alone->generate(all, 3).at("generated_ids")));
    EXPECT_TRUE(test::bitwise_equal(b.get().at("generated_ids"), alone->generate(one, 4).at("generated_ids")));
  }
}

TEST(MergedRequests, ABadRequestFailsAloneAndTheOthersFinish) {
  const std::string source = (test::fixtures_dir() / "llama-tiny-random").string();
  auto s = Session::open(source, options(1, 0));
  const TensorMap g = read_safetensors(test::fixtures_dir() / "llama-tiny-random" / "golden.safetensors");
  const TensorMap in = {{"input_ids", g.at("input_ids")}, {"attention_mask", g.at("attention_mask")}};
  GenerateOptions good, bad, throwing;
  good.max_new_tokens = 4;
  bad.max_new_tokens = 0;
  throwing.max_new_tokens = 4;
  throwing.on_token = [](int64_t, int64_t, std::string_view) -> bool { throw std::runtime_error("callback failed"); };
  auto f1 = s->generate_async(in, good), f2 = s->generate_async(in, bad), f3 = s->generate_async(in, throwing);
  EXPECT_TRUE(test::bitwise_equal(f1.get().at("generated_ids"), s->generate(in, good).at("generated_ids")));
  test::expect_error([&] { f2.get(); }, ErrorCode::invalid_argument, "max_new_tokens");
  EXPECT_THROW(f3.get(), std::runtime_error);
}
