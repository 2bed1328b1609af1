// S3 against a real local S3 server (moto, signatures checked): the backend's operations,
// every fixture's store in a bucket (plain and zstd) matched against the goldens directly and
// through a weight server, clear errors for wrong secrets, missing buckets and keys, corrupt
// objects, and retries through a fault-injecting proxy.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#include "../fault_proxy.h"
#include "../moto_process.h"
#include "../server_process.h"
#include "../test_util.h"
#include "surf/runtime.h"
#include "surf/storage/s3.h"

using namespace surf;

namespace {

test::MotoProcess& moto() {
  static test::MotoProcess m({"surf-test"});
  return m;
}

#define REQUIRE_MOTO()                                                                   \
  if (!moto().available()) GTEST_SKIP() << "local S3 server unavailable: " << moto().why_unavailable()

S3Config config(int port = 0) {
  S3Config c;
  c.endpoint = "http://127.0.0.1:" + std::to_string(port ? port : moto().port());
  c.access_key_id = moto().access_key();
  c.secret_access_key = moto().secret_key();
  c.max_attempts = 4;
  c.backoff_ms = 20;
  c.timeout_ms = 10000;
  return c;
}

// The CLI and Session read the AWS_* variables; point them at moto.
void export_credentials(const std::string& secret = "") {
  ::setenv("AWS_ENDPOINT_URL", moto().endpoint().c_str(), 1);
  ::setenv("AWS_ACCESS_KEY_ID", moto().access_key().c_str(), 1);
  ::setenv("AWS_SECRET_ACCESS_KEY", (secret.empty() ? moto().secret_key() : secret).c_str(), 1);
  ::setenv("AWS_REGION", "us-east-1", 1);
}

void expect_golden(const std::string& fixture, const std::string& source) {
  CheckOptions o;
  o.source = source;
  o.plugin_dirs = {test::plugin_dir()};
  o.cache_size = 1;
  o.prefetch = 1;
  const CheckReport r = check_fixture((test::fixtures_dir() / fixture).string(), o);
  ASSERT_FALSE(r.lines.empty()) << source;
  for (const auto& l : r.lines) EXPECT_TRUE(l.passed) << source << " " << l.tensor << " " << l.note;
}

}  // namespace

TEST(S3Backend, PutGetRangeHeadListDeleteAndMultipart) {
  REQUIRE_MOTO();
  S3Config c = config();
  c.multipart_threshold = 6u << 20;
  c.part_bytes = 5u << 20;
  c.list_page_size = 2;  // three keys: two pages
  auto b = open_s3_backend("s3://surf-test/unit", c);
  const std::string text = "hello S3 object";
  b->put("a.txt", text.data(), text.size());
  b->put("dir/b.txt", text.data(), 5);
  std::vector<char> big((11u << 20) + 123);  // multipart: 5 + 5 + 1 MiB parts
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7919 % 251);
  b->put("big.bin", big.data(), big.size());
  ByteBuffer got;
  b->get("a.txt", got);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(got.data()), got.size()), text);
  b->get("big.bin", got);
  ASSERT_EQ(got.size(), big.size());
  EXPECT_EQ(std::memcmp(got.data(), big.data(), big.size()), 0);
  char part[6] = {};
  b->get_range("a.txt", 6, 5, part);
  EXPECT_EQ(std::string(part, 5), "S3 ob");
  EXPECT_THROW(b->get_range("a.txt", 100, 5, part), Error);
  EXPECT_TRUE(b->exists("a.txt"));
  EXPECT_FALSE(b->exists("nope.txt"));
  EXPECT_EQ(b->size("big.bin"), big.size());
  EXPECT_EQ(b->list(""), (std::vector<std::string>{"a.txt", "big.bin", "dir/b.txt"}));
  EXPECT_EQ(b->list("dir/"), (std::vector<std::string>{"dir/b.txt"}));
  b->remove("a.txt");
  EXPECT_FALSE(b->exists("a.txt"));
  test::expect_error([&] { b->get("a.txt", got); }, ErrorCode::not_found, "no object s3://surf-test/unit/a.txt (NoSuchKey)");
}

TEST(S3Backend, WrongSecretIsASignatureErrorNamingTheKeyIdOnly) {
  REQUIRE_MOTO();
  S3Config c = config();
  c.secret_access_key = "not-the-secret";
  auto b = open_s3_backend("s3://surf-test/unit", c);
  ByteBuffer got;
  const std::string m = test::expect_error([&] { b->get("anything", got); }, ErrorCode::unauthorized, "SignatureDoesNotMatch");
  EXPECT_NE(m.find(moto().access_key()), std::string::npos) << m;
  EXPECT_EQ(m.find("not-the-secret"), std::string::npos) << m;
}

TEST(S3Backend, MissingBucketIsClear) {
  REQUIRE_MOTO();
  auto b = open_s3_backend("s3://no-such-bucket/x", config());
  ByteBuffer got;
  test::expect_error([&] { b->get("manifest.json", got); }, ErrorCode::not_found,
                     "bucket 'no-such-bucket' does not exist (NoSuchBucket)");
}

TEST(S3Backend, RetriesDroppedConnectionsAndSlowDownWithinTheBudget) {
  REQUIRE_MOTO();
  auto b = open_s3_backend("s3://surf-test/retry", config());
  b->put("x", "payload", 7);
  test::FaultProxy proxy(moto().port(), 2, 1);  // two drops, one 503 SlowDown, then fine
  auto through = open_s3_backend("s3://surf-test/retry", config(proxy.port()));
  ByteBuffer got;
  through->get("x", got);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(got.data()), got.size()), "payload");
  EXPECT_EQ(proxy.faults_injected(), 3);

  test::FaultProxy hopeless(moto().port(), 10, 10);
  S3Config c = config(hopeless.port());
  c.max_attempts = 3;
  auto failing = open_s3_backend("s3://surf-test/retry", c);
  test::expect_error([&] { failing->get("x", got); }, ErrorCode::network, "failed after 3 attempts");
  EXPECT_EQ(hopeless.faults_injected(), 3);
}

// Every fixture, whatever its plugin: chunked into the bucket (plain and zstd), checked from the
// bucket directly, then through one weight server serving all of those stores.
TEST(S3Stores, GoldensFromTheBucketDirectlyAndThroughAWeightServer) {
  REQUIRE_MOTO();
  export_credentials();
  std::vector<std::string> server_args;
  std::vector<std::pair<std::string, std::string>> served;  // fixture, model name
  for (const auto& dir : test::fixture_dirs()) {
    const std::string fixture = dir.filename().string();
    for (const std::string compression : {"none", "zstd"}) {
      const std::string name = fixture + "-" + compression, url = "s3://surf-test/" + name;
      ChunkOptions co;
      co.plugin_dirs = {test::plugin_dir()};
      co.compression = compression;
      chunk_checkpoint(dir.string(), url, co);
      expect_golden(fixture, url);
      server_args.insert(server_args.end(), {"--store", name + "=" + url});
      served.emplace_back(fixture, name);
    }
  }
  test::ServerProcess server(server_args);  // inherits AWS_* from this process
  for (const auto& [fixture, name] : served) expect_golden(fixture, server.url(name));
}

TEST(S3Stores, CorruptObjectIsAChecksumError) {
  REQUIRE_MOTO();
  export_credentials();
  ChunkOptions co;
  co.plugin_dirs = {test::plugin_dir()};
  const std::string url = "s3://surf-test/corrupt";
  chunk_checkpoint((test::fixtures_dir() / "llama-tiny-random").string(), url, co);
  auto b = open_s3_backend(url, config());
  ByteBuffer chunk;
  b->get("chunks/layers.0.msgpack", chunk);
  chunk.data()[chunk.size() / 2] ^= std::byte{0x10};
  b->put("chunks/layers.0.msgpack", chunk.data(), chunk.size());
  OpenOptions o;
  o.plugin_dirs = {test::plugin_dir()};
  o.prefetch = 0;
  auto s = Session::open(url, o);
  test::expect_error([&] { s->forward({{"input_ids", Tensor::from_i64({1, 3}, {1, 2, 3})}}); }, ErrorCode::corrupt,
                     "component 'layers.0': checksum mismatch");
}

TEST(S3Stores, TheDiskTierServesASecondSessionWithoutTheBucket) {
  REQUIRE_MOTO();
  export_credentials();
  ChunkOptions co;
  co.plugin_dirs = {test::plugin_dir()};
  const std::string url = "s3://surf-test/disk-tier";
  chunk_checkpoint((test::fixtures_dir() / "llama-tiny-random").string(), url, co);
  test::TempDir tier;
  OpenOptions o;
  o.plugin_dirs = {test::plugin_dir()};
  o.cache_size = 1;
  o.prefetch = 1;
  o.disk_cache_dir = tier.str("tier");
  const TensorMap in = {{"input_ids", Tensor::from_i64({1, 3}, {1, 2, 3})}};
  auto first = Session::open(url, o);
  const TensorMap a = first->forward(in);
  const CacheStats s1 = first->cache_stats();
  EXPECT_GT(s1.bytes_fetched, 0u);
  EXPECT_EQ(s1.disk_hits, 0u);
  // The chunks leave the bucket (the manifest stays): the second session reads them from disk.
  auto b = open_s3_backend(url, config());
  for (const auto& key : b->list("chunks/")) b->remove(key);
  auto second = Session::open(url, o);
  const TensorMap c = second->forward(in);
  const CacheStats s2 = second->cache_stats();
  EXPECT_EQ(s2.bytes_fetched, 0u);
  EXPECT_EQ(s2.disk_hits, s1.fetches);
  EXPECT_EQ(s2.disk_bytes, s1.bytes_fetched);
  for (const auto& [name, t] : a) EXPECT_TRUE(test::bitwise_equal(t, c.at(name))) << name;
}

TEST(S3Stores, CliErrorsForWrongSecretAndMissingStore) {
  REQUIRE_MOTO();
  export_credentials("wrong-secret");
  auto r = test::run_command({test::surf_exe(), "inspect", "s3://surf-test/llama-tiny-random-none", "--plugin-dir", test::plugin_dir()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("SignatureDoesNotMatch"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("wrong-secret"), std::string::npos) << r.err;
  export_credentials();
  r = test::run_command({test::surf_exe(), "inspect", "s3://surf-test/never-chunked", "--plugin-dir", test::plugin_dir()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is not a chunk store"), std::string::npos) << r.err;
}
