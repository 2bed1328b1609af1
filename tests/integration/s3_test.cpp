// S3 against a real local S3 server (moto, signatures checked): the backend's operations,
// every fixture's store in a bucket (plain and zstd) matched against the goldens directly and
// through a weight server, clear errors for wrong secrets, missing buckets and keys, corrupt
// objects, and retries through a fault-injecting proxy.
#include <gtest/gtest.h>

#include <cstdlib>
#include <chrono>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "../fault_proxy.h"
#include "../moto_process.h"
#include "../server_process.h"
#include "../test_util.h"
#include "../tls_fixtures.h"
#include "surf/runtime.h"
#include "surf/storage/credentials.h"
#include "surf/storage/s3.h"

using namespace surf;

namespace {

test::MotoProcess& moto() {
  static test::MotoProcess m({"surf-test"});
  return m;
}

#define REQUIRE_MOTO() \
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
  test::expect_error([&] { b->get("a.txt", got); }, ErrorCode::not_found,
                     "no object s3://surf-test/unit/a.txt (NoSuchKey)");
}

TEST(S3Backend, WrongSecretIsASignatureErrorNamingTheKeyIdOnly) {
  REQUIRE_MOTO();
  S3Config c = config();
  c.secret_access_key = "not-the-secret";
  auto b = open_s3_backend("s3://surf-test/unit", c);
  ByteBuffer got;
  const std::string m =
      test::expect_error([&] { b->get("anything", got); }, ErrorCode::unauthorized, "SignatureDoesNotMatch");
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
  test::expect_error(
      [&] {
        s->forward({{"input_ids", Tensor::from_i64({1, 3}, {1, 2, 3})}});
      },
      ErrorCode::corrupt, "component 'layers.0': checksum mismatch");
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
  auto r = test::run_command(
      {test::surf_exe(), "inspect", "s3://surf-test/llama-tiny-random-none", "--plugin-dir", test::plugin_dir()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("SignatureDoesNotMatch"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("wrong-secret"), std::string::npos) << r.err;
  export_credentials();
  r = test::run_command(
      {test::surf_exe(), "inspect", "s3://surf-test/never-chunked", "--plugin-dir", test::plugin_dir()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is not a chunk store"), std::string::npos) << r.err;
}

// --- https:// S3: moto behind stunnel4, with a CA made by the test ---

namespace {

// A CA; a certificate for the local endpoint (localhost, 127.0.0.1) and one for AWS's virtual-hosted
// names in us-east-1 (served through a host-name mapping to the same local endpoint).
struct S3Pki : test::TestPki {
  S3Pki() {
    ca("ca");
    ca("other-ca");
    leaf("local", "DNS:localhost,IP:127.0.0.1", 1);
    leaf("aws", "DNS:*.s3.us-east-1.amazonaws.com,DNS:s3.us-east-1.amazonaws.com", 1);
  }
};
S3Pki& s3_pki() {
  static S3Pki p;
  return p;
}

// Sets environment variables for a scope and restores them after.
class ScopedEnv {
 public:
  // A value of nullopt unsets the variable.
  ScopedEnv(std::initializer_list<std::pair<std::string, std::optional<std::string>>> vars) {
    for (const auto& [k, v] : vars) {
      const char* old = std::getenv(k.c_str());
      saved_.emplace_back(k, old ? std::optional<std::string>(old) : std::nullopt);
      if (v)
        ::setenv(k.c_str(), v->c_str(), 1);
      else
        ::unsetenv(k.c_str());
    }
  }
  ~ScopedEnv() {
    for (const auto& [k, v] : saved_) {
      if (v)
        ::setenv(k.c_str(), v->c_str(), 1);
      else
        ::unsetenv(k.c_str());
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

S3Config https_config(int port, const std::string& ca) {
  S3Config c = config();
  c.endpoint = "https://localhost:" + std::to_string(port);
  c.ca_file = ca;
  return c;
}

}  // namespace

TEST(S3Https, BackendAndGoldensThroughATlsTerminator) {
  REQUIRE_MOTO();
  test::StunnelProcess tls(moto().port(), s3_pki().path("local.pem"), s3_pki().path("local.key"));
  auto b = open_s3_backend("s3://surf-test/https", https_config(tls.port(), s3_pki().path("ca.pem")));
  std::vector<char> big((3u << 20) + 17);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 31 % 253);
  b->put("big.bin", big.data(), big.size());
  ByteBuffer got;
  b->get("big.bin", got);
  ASSERT_EQ(got.size(), big.size());
  EXPECT_EQ(std::memcmp(got.data(), big.data(), big.size()), 0);
  EXPECT_EQ(b->list(""), std::vector<std::string>{"big.bin"});

  // Chunk into the bucket and stream from it, the endpoint and CA from the environment as a user
  // would give them (AWS_CA_BUNDLE as in the AWS SDKs).
  export_credentials();
  ScopedEnv env({{"AWS_ENDPOINT_URL", "https://127.0.0.1:" + std::to_string(tls.port())},
                 {"AWS_CA_BUNDLE", s3_pki().path("ca.pem")}});
  ChunkOptions co;
  co.plugin_dirs = {test::plugin_dir()};
  chunk_checkpoint((test::fixtures_dir() / "llama-tiny-random").string(), "s3://surf-test/https-llama", co);
  expect_golden("llama-tiny-random", "s3://surf-test/https-llama");
  // The CLI too, its CA from --ca-file.
  ::unsetenv("AWS_CA_BUNDLE");
  auto r = test::run_command({"/usr/bin/env", "-u", "SURF_CA_BUNDLE", test::surf_exe(), "inspect",
                              "s3://surf-test/https-llama", "--ca-file", s3_pki().path("ca.pem"), "--plugin-dir",
                              test::plugin_dir()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("llama"), std::string::npos) << r.out;
}

TEST(S3Https, RefusedCertificatesAndPlaintextAreClearAndNotRetried) {
  REQUIRE_MOTO();
  test::StunnelProcess tls(moto().port(), s3_pki().path("local.pem"), s3_pki().path("local.key"));
  ByteBuffer got;
  for (const std::string& ca : {s3_pki().path("other-ca.pem"), std::string()}) {  // wrong CA; the system store
    auto b = open_s3_backend("s3://surf-test/https", https_config(tls.port(), ca));
    const auto t0 = std::chrono::steady_clock::now();
    const std::string m = test::expect_error([&] { b->get("x", got); }, ErrorCode::unauthorized,
                                             "certificate verify failed: unable to get local issuer certificate");
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0) << m;
  }
  // https:// to the plain endpoint: no TLS there, said at once.
  S3Config c = https_config(moto().port(), s3_pki().path("ca.pem"));
  auto plain = open_s3_backend("s3://surf-test/https", c);
  test::expect_error([&] { plain->get("x", got); }, ErrorCode::unsupported, "does not speak TLS");
}

// AWS addressing for real: no endpoint configured (so https://s3.us-east-1.amazonaws.com,
// virtual-hosted), the connection mapped to the local TLS terminator; the Host header, SNI and
// certificate check stay surf-test.s3.us-east-1.amazonaws.com, and moto finds the bucket in the
// Host header. A path-style client then reads what the virtual-hosted one wrote.
TEST(S3Https, VirtualHostedRequestsThroughAHostNameMapping) {
  REQUIRE_MOTO();
  test::StunnelProcess tls(moto().port(), s3_pki().path("aws.pem"), s3_pki().path("aws.key"));
  S3Config vh = config();
  vh.endpoint = "";
  vh.region = "us-east-1";
  vh.ca_file = s3_pki().path("ca.pem");
  vh.connect_to = "127.0.0.1:" + std::to_string(tls.port());
  const S3Address a = s3_address(vh, "surf-test", "virtual/x.txt");
  EXPECT_TRUE(a.virtual_hosted);
  EXPECT_EQ(a.host_header, "surf-test.s3.us-east-1.amazonaws.com");
  EXPECT_EQ(a.path, "/virtual/x.txt");
  auto b = open_s3_backend("s3://surf-test/virtual", vh);
  b->put("x.txt", "hosted", 6);
  EXPECT_EQ(b->list(""), std::vector<std::string>{"x.txt"});
  auto path_style = open_s3_backend("s3://surf-test/virtual", config());
  ByteBuffer got;
  path_style->get("x.txt", got);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(got.data()), got.size()), "hosted");
  // Forced path style through the same mapping: s3.us-east-1.amazonaws.com/surf-test/...
  S3Config ps = vh;
  ps.addressing = "path";
  EXPECT_EQ(s3_address(ps, "surf-test", "k").host_header, "s3.us-east-1.amazonaws.com");
  open_s3_backend("s3://surf-test/virtual", ps)->get("x.txt", got);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(got.data()), got.size()), "hosted");
}

// --- the credential chain: fake IMDSv2 and ECS endpoints on loopback, moto checking signatures ---

namespace {

std::string fake_metadata_script() { return (test::fixtures_dir().parent_path() / "s3" / "fake_metadata.py").string(); }

nlohmann::json stats(const test::PythonServer& fake) {
  auto r = test::run_command({"/usr/bin/curl", "-sS", "--max-time", "5", fake.url("/stats")});
  return nlohmann::json::parse(r.out);
}

// Nothing in the environment or the profile files: the chain must reach the endpoints.
ScopedEnv only_metadata(const test::PythonServer& fake, const test::TempDir& d) {
  return ScopedEnv({{"AWS_ACCESS_KEY_ID", std::nullopt},
                    {"AWS_SECRET_ACCESS_KEY", std::nullopt},
                    {"AWS_SESSION_TOKEN", std::nullopt},
                    {"AWS_PROFILE", std::nullopt},
                    {"AWS_SHARED_CREDENTIALS_FILE", d.str("no-credentials")},
                    {"AWS_CONFIG_FILE", d.str("no-config")},
                    {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", std::nullopt},
                    {"AWS_CONTAINER_CREDENTIALS_FULL_URI", std::nullopt},
                    {"AWS_CONTAINER_AUTHORIZATION_TOKEN", std::nullopt},
                    {"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", std::nullopt},
                    {"SURF_ECS_CREDENTIALS_ENDPOINT", std::nullopt},
                    {"AWS_EC2_METADATA_DISABLED", std::nullopt},
                    {"AWS_EC2_METADATA_SERVICE_ENDPOINT", fake.url()}});
}

// With credentials from `chain` only (none in the config): puts `text` at `url`/x, then reads it
// back every 100 ms for `ms` (moto checks every signature, so each refreshed credential is used).
// Returns how many reads matched; stops at the first that does not (a test failure).
int put_then_read_for(const std::shared_ptr<CredentialSource>& chain, const std::string& url, const std::string& text,
                      int ms) {
  S3Config c = config();
  c.access_key_id.clear();
  c.secret_access_key.clear();
  c.credentials = chain;
  auto b = open_s3_backend(url, c);
  b->put("x", text.data(), text.size());
  ByteBuffer got;
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  int reads = 0;
  while (std::chrono::steady_clock::now() < end) {
    b->get("x", got);
    const std::string read(reinterpret_cast<const char*>(got.data()), got.size());
    EXPECT_EQ(read, text);
    if (read != text) break;
    ++reads;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return reads;
}

}  // namespace

TEST(S3Credentials, ImdsV2CredentialsAreRefreshedBeforeTheyLapse) {
  REQUIRE_MOTO();
  test::TempDir d;
  test::PythonServer fake(fake_metadata_script(), {moto().access_key(), moto().secret_key(), "3"});
  ScopedEnv env = only_metadata(fake, d);
  CredentialChainOptions co;
  co.refresh_margin = std::chrono::seconds(2);  // 3 s credentials: fetched again about every second
  auto chain = default_credential_chain(co);
  EXPECT_EQ(chain->describe(), "EC2 instance metadata");
  const int reads = put_then_read_for(chain, "s3://surf-test/imds", "payload", 3500);
  const auto s = stats(fake);
  EXPECT_GE(s["imds"].get<int>(), 3) << s.dump() << " after " << reads << " reads";
  EXPECT_LT(s["imds"].get<int>(), reads) << s.dump();                       // cached between refreshes, not per request
  EXPECT_EQ(s["imds_token"].get<int>(), s["imds"].get<int>()) << s.dump();  // IMDSv2: a token first, every time
  EXPECT_EQ(s["imds_refused"].get<int>(), 0) << s.dump();
  EXPECT_EQ(chain->get().access_key_id, moto().access_key());
}

TEST(S3Credentials, ChainOrderEnvironmentProfileEcsImds) {
  REQUIRE_MOTO();
  test::TempDir d;
  test::PythonServer fake(fake_metadata_script(),
                          {moto().access_key(), moto().secret_key(), "900", "Bearer container-auth"});
  ScopedEnv env = only_metadata(fake, d);
  ByteBuffer got;
  {
    // ECS before IMDS (both available), with its authorization header.
    ScopedEnv ecs({{"AWS_CONTAINER_CREDENTIALS_FULL_URI", fake.url("/ecs")},
                   {"AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer container-auth"}});
    auto chain = default_credential_chain();
    EXPECT_EQ(chain->describe(), "the ECS container endpoint");
    S3Config c = config();
    c.credentials = chain;
    open_s3_backend("s3://surf-test/ecs", c)->put("y", "ecs", 3);
    const auto s = stats(fake);
    EXPECT_EQ(s["ecs"].get<int>(), 1) << s.dump();
    EXPECT_EQ(s["imds"].get<int>(), 0) << s.dump();
  }
  {
    // A refused ECS endpoint and IMDS turned off: one line naming every place looked in.
    ScopedEnv ecs({{"AWS_CONTAINER_CREDENTIALS_FULL_URI", fake.url("/ecs")},
                   {"AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer wrong"},
                   {"AWS_EC2_METADATA_DISABLED", "true"}});
    const std::string m =
        test::expect_error([] { default_credential_chain(); }, ErrorCode::unauthorized, "no S3 credentials found");
    EXPECT_NE(m.find("ECS container endpoint (ECS credentials endpoint answered HTTP 403)"), std::string::npos) << m;
    EXPECT_NE(m.find("AWS_EC2_METADATA_DISABLED=true"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
  {
    // A profile in the shared credentials file wins over the endpoints.
    std::ofstream(d.path() / "credentials") << "[default]\naws_access_key_id = nope\naws_secret_access_key = nope\n"
                                            << "[surf]\naws_access_key_id = " << moto().access_key()
                                            << "\naws_secret_access_key = " << moto().secret_key() << "\n";
    ScopedEnv profile({{"AWS_SHARED_CREDENTIALS_FILE", d.str("credentials")},
                       {"AWS_PROFILE", "surf"},
                       {"AWS_CONTAINER_CREDENTIALS_FULL_URI", fake.url("/ecs")}});
    auto chain = default_credential_chain();
    EXPECT_EQ(chain->describe(), "profile surf in " + d.str("credentials"));
    S3Config c = config();
    c.credentials = chain;
    open_s3_backend("s3://surf-test/ecs", c)->get("y", got);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(got.data()), got.size()), "ecs");
  }
  {
    // The environment wins over all of them.
    ScopedEnv vars({{"AWS_ACCESS_KEY_ID", "AKIDENV"},
                    {"AWS_SECRET_ACCESS_KEY", "env-secret"},
                    {"AWS_SHARED_CREDENTIALS_FILE", d.str("credentials")},
                    {"AWS_CONTAINER_CREDENTIALS_FULL_URI", fake.url("/ecs")}});
    auto chain = default_credential_chain();
    EXPECT_EQ(chain->describe(), "environment");
    EXPECT_EQ(chain->get().access_key_id, "AKIDENV");
  }
  const auto s = stats(fake);
  EXPECT_EQ(s["ecs"].get<int>(), 1) << s.dump();  // the 403 is not counted; nothing after the profile
  EXPECT_EQ(s["imds"].get<int>(), 0) << s.dump();
}

// What ECS itself sets: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, joined to the agent's fixed address
// (moved to the fake endpoint on loopback by SURF_ECS_CREDENTIALS_ENDPOINT), winning over
// _FULL_URI as in the AWS SDKs, with the authorization read from AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE
// (which wins over AWS_CONTAINER_AUTHORIZATION_TOKEN); the expiring credentials are fetched again.
TEST(S3Credentials, EcsRelativeUriAndAuthorizationTokenFile) {
  REQUIRE_MOTO();
  test::TempDir d;
  test::PythonServer fake(fake_metadata_script(),
                          {moto().access_key(), moto().secret_key(), "3", "Bearer from-the-file"});
  ScopedEnv env = only_metadata(fake, d);
  std::ofstream(d.path() / "ecs-token") << "Bearer from-the-file\n";
  std::ofstream(d.path() / "wrong-token") << "Bearer wrong\n";
  {
    ScopedEnv ecs({{"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/ecs"},
                   {"SURF_ECS_CREDENTIALS_ENDPOINT", fake.url()},
                   {"AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1/not-this-one"},
                   {"AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer not-this-one"},
                   {"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", d.str("ecs-token")},
                   {"AWS_EC2_METADATA_DISABLED", "true"}});
    CredentialChainOptions co;
    co.refresh_margin = std::chrono::seconds(2);  // 3 s credentials: fetched again about every second
    auto chain = default_credential_chain(co);
    EXPECT_EQ(chain->describe(), "the ECS container endpoint");
    EXPECT_GE(put_then_read_for(chain, "s3://surf-test/ecs-relative", "relative", 2500), 3);
    const auto s = stats(fake);
    EXPECT_GE(s["ecs"].get<int>(), 2) << s.dump();  // refreshed, through the relative URI
    EXPECT_EQ(s["imds"].get<int>(), 0) << s.dump();
  }
  {
    // The token file's token is the one sent: a wrong one is refused, and the error says so.
    ScopedEnv ecs({{"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "ecs"},  // no leading slash: still /ecs
                   {"SURF_ECS_CREDENTIALS_ENDPOINT", fake.url() + "/"},
                   {"AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer from-the-file"},
                   {"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", d.str("wrong-token")},
                   {"AWS_EC2_METADATA_DISABLED", "true"}});
    const std::string m =
        test::expect_error([] { default_credential_chain(); }, ErrorCode::unauthorized, "no S3 credentials found");
    EXPECT_NE(m.find("ECS container endpoint (ECS credentials endpoint answered HTTP 403)"), std::string::npos) << m;
  }
  {
    // A token file that cannot be read is named, not silently replaced by no authorization.
    ScopedEnv ecs({{"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/ecs"},
                   {"SURF_ECS_CREDENTIALS_ENDPOINT", fake.url()},
                   {"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", d.str("no-such-token")},
                   {"AWS_EC2_METADATA_DISABLED", "true"}});
    const std::string m =
        test::expect_error([] { default_credential_chain(); }, ErrorCode::unauthorized, "no S3 credentials found");
    EXPECT_NE(m.find("cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE '" + d.str("no-such-token") + "'"),
              std::string::npos)
        << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}
