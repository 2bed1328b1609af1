// TLS on both ends, with a CA and certificates made by the `openssl` CLI at run time: goldens
// through a wss:// weight server, https:// /healthz and /metrics on the same port, certificates
// refused for a named reason (wrong CA, expired, host name mismatch, the system store), plaintext
// and TLS peers told apart quickly, and a certificate reloaded on SIGHUP without dropping the
// connections already open. Also SURF_TOKEN / --token-file for the commands that open a source.
#include <utility>

#include <gtest/gtest.h>
#include <signal.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <chrono>
#include <fstream>
#include <thread>

#include "../server_process.h"
#include "../test_util.h"
#include "../tls_fixtures.h"
#include "cache/buffer_pool.h"
#include "surf/runtime.h"
#include "surf/storage/safetensors.h"
#include "transport/wire.h"
#include "transport/ws_connection.h"

using namespace surf;
namespace fs = std::filesystem;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

// Two CAs, and leaf certificates signed by the first.
struct Pki : test::TestPki {
  Pki() {
    ca("ca");
    ca("other-ca");
    leaf("server", "DNS:localhost,IP:127.0.0.1", 1);
    leaf("renewed", "DNS:localhost,IP:127.0.0.1", 1);
    leaf("expired", "DNS:localhost,IP:127.0.0.1", -1);
    leaf("elsewhere", "DNS:other.example", 1);
  }
};
Pki& pki() {
  static Pki p;
  return p;
}

struct Stores {
  test::TempDir dir;
  std::string llama;
  Stores() {
    ChunkOptions o;
    o.plugin_dirs = {test::plugin_dir()};
    llama = dir.str("llama");
    chunk_checkpoint((test::fixtures_dir() / "llama-tiny-random").string(), llama, o);
  }
};
Stores& stores() {
  static Stores s;
  return s;
}

std::vector<std::string> tls_args(const std::string& leaf) {
  return {"--store", stores().llama, "--tls-cert", pki().path(leaf + ".pem"), "--tls-key", pki().path(leaf + ".key")};
}

OpenOptions options(const std::string& ca_file) {
  OpenOptions o;
  o.plugin_dirs = {test::plugin_dir()};
  o.cache_size = 1;
  o.prefetch = 1;
  o.ca_file = ca_file;
  o.retry_attempts = 2;
  o.retry_backoff_ms = 50;
  return o;
}

TensorMap llama_inputs() {
  const TensorMap g = read_safetensors(test::fixtures_dir() / "llama-tiny-random" / "golden.safetensors");
  return {{"input_ids", g.at("input_ids")},
          {"attention_mask", g.at("attention_mask")},
          {"position_ids", g.at("position_ids")}};
}

// Opening `url` fails with `code`, one line naming `reason`, within 5 s (no hang, no long retry).
void expect_refused(const std::string& url, const std::string& ca_file, ErrorCode code, const std::string& reason) {
  const auto t0 = Clock::now();
  const std::string msg = test::expect_error([&] { Session::open(url, options(ca_file)); }, code, reason);
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 5.0) << msg;
}

// The subject CN of the certificate a fresh TLS connection to 127.0.0.1:port is shown.
std::string served_common_name(int port) {
  net::io_context ioc;
  net::ssl::context ctx(net::ssl::context::tls_client);
  ctx.load_verify_file(pki().path("ca.pem"));
  ctx.set_verify_mode(net::ssl::verify_peer);
  net::ssl::stream<tcp::socket> s(ioc, ctx);
  tcp::resolver resolver(ioc);
  net::connect(s.next_layer(), resolver.resolve("127.0.0.1", std::to_string(port)));
  s.handshake(net::ssl::stream_base::client);
  X509* cert = SSL_get1_peer_certificate(s.native_handle());
  char cn[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn - 1);
  X509_free(cert);
  boost::system::error_code ignored;
  s.shutdown(ignored);
  return cn;
}

}  // namespace

TEST(Tls, GoldensMatchThroughATlsWeightServer) {
  test::ServerProcess server(tls_args("server"));
  for (const std::string host : {"127.0.0.1", "localhost"}) {  // an IP SAN and a DNS SAN
    CheckOptions o;
    o.source = server.wss_url("llama", host);
    o.ca_file = pki().path("ca.pem");
    o.plugin_dirs = {test::plugin_dir()};
    o.cache_size = 1;
    o.prefetch = 2;
    const CheckReport r = check_fixture((test::fixtures_dir() / "llama-tiny-random").string(), o);
    ASSERT_FALSE(r.lines.empty());
    for (const auto& l : r.lines) EXPECT_TRUE(l.passed) << host << ": " << l.tensor << " " << l.note;
  }
}

TEST(Tls, CaBundleFromTheEnvironmentAndTheCommandLine) {
  test::ServerProcess server(tls_args("server"));
  const std::string url = server.wss_url("llama");
  auto r = test::run_command({"/usr/bin/env", "SURF_CA_BUNDLE=" + pki().path("ca.pem"), test::surf_exe(), "inspect",
                              url, "--plugin-dir", test::plugin_dir()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("llama"), std::string::npos) << r.out;
  r = test::run_command(
      {test::surf_exe(), "inspect", url, "--ca-file", pki().path("ca.pem"), "--plugin-dir", test::plugin_dir()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // Neither: the system store does not know the test CA, and there is no insecure fallback.
  r = test::run_command(
      {"/usr/bin/env", "-u", "SURF_CA_BUNDLE", test::surf_exe(), "inspect", url, "--plugin-dir", test::plugin_dir()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("certificate verify failed: unable to get local issuer certificate"), std::string::npos)
      << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  r = test::run_command(
      {test::surf_exe(), "inspect", url, "--ca-file", pki().path("missing.pem"), "--plugin-dir", test::plugin_dir()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("cannot read CA bundle"), std::string::npos) << r.err;
}

TEST(Tls, CertificatesRefusedForANamedReason) {
  {
    test::ServerProcess server(tls_args("server"));
    expect_refused(server.wss_url("llama"), pki().path("other-ca.pem"), ErrorCode::unauthorized,
                   "certificate verify failed: unable to get local issuer certificate");
  }
  {
    test::ServerProcess server(tls_args("expired"));
    expect_refused(server.wss_url("llama"), pki().path("ca.pem"), ErrorCode::unauthorized,
                   "certificate verify failed: certificate has expired");
  }
  {
    test::ServerProcess server(tls_args("elsewhere"));
    expect_refused(server.wss_url("llama", "localhost"), pki().path("ca.pem"), ErrorCode::unauthorized,
                   "certificate verify failed: hostname mismatch (the certificate is not for localhost)");
    expect_refused(server.wss_url("llama", "127.0.0.1"), pki().path("ca.pem"), ErrorCode::unauthorized,
                   "certificate verify failed: hostname mismatch");
  }
}

TEST(Tls, PlaintextAndTlsPeersFailFastAndClearly) {
  {
    test::ServerProcess server(tls_args("server"));
    expect_refused(server.url("llama"), "", ErrorCode::unsupported, "this port speaks TLS: use wss://");
  }
  {
    test::ServerProcess server({"--store", stores().llama});
    expect_refused(server.wss_url("llama"), pki().path("ca.pem"), ErrorCode::unsupported,
                   "the server does not speak TLS");
  }
}

TEST(Tls, HttpsHealthzAndMetricsOnTheSamePort) {
  test::ServerProcess server(tls_args("server"));
  const std::string base = "https://localhost:" + std::to_string(server.port());
  auto r = test::run_command(
      {"/usr/bin/curl", "-sS", "--max-time", "10", "--cacert", pki().path("ca.pem"), base + "/healthz"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("ok"), std::string::npos) << r.out;
  r = test::run_command(
      {"/usr/bin/curl", "-sS", "--max-time", "10", "--cacert", pki().path("ca.pem"), base + "/metrics"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("surf_"), std::string::npos) << r.out;
  // Plain http to the TLS port: a 400 that says why.
  r = test::run_command({"/usr/bin/curl", "-sS", "--max-time", "10", "-w", "%{http_code}",
                         "http://127.0.0.1:" + std::to_string(server.port()) + "/healthz"});
  EXPECT_NE(r.out.find("this port speaks TLS"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("400"), std::string::npos) << r.out;
}

TEST(Tls, SighupReloadsTheCertificateAndKeepsOpenConnections) {
  test::TempDir d;
  fs::copy_file(pki().path("server.pem"), d.str("cert.pem"));
  fs::copy_file(pki().path("server.key"), d.str("key.pem"));
  test::ServerProcess server(
      {"--store", stores().llama, "--tls-cert", d.str("cert.pem"), "--tls-key", d.str("key.pem")});
  EXPECT_EQ(served_common_name(server.port()), "server");

  // A connection opened before the reload.
  WsConnection conn(parse_ws_url(server.wss_url("llama")), "", std::make_shared<BufferPool>(1), pki().path("ca.pem"));
  conn.connect(5000);
  ASSERT_TRUE(std::holds_alternative<wire::HelloAnswer>(conn.request(wire::Hello{}, 0).get()->answer.body));
  auto session = Session::open(server.wss_url("llama"), options(pki().path("ca.pem")));
  const TensorMap before = session->forward(llama_inputs());

  fs::copy_file(pki().path("renewed.pem"), d.str("cert.pem"), fs::copy_options::overwrite_existing);
  fs::copy_file(pki().path("renewed.key"), d.str("key.pem"), fs::copy_options::overwrite_existing);
  server.send_signal(SIGHUP);
  std::string cn;
  for (int i = 0; i < 100 && (cn = served_common_name(server.port())) != "renewed"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(cn, "renewed");

  // The old connection still answers, on the same socket (WsConnection never reconnects).
  EXPECT_TRUE(conn.alive());
  ASSERT_TRUE(
      std::holds_alternative<wire::ManifestAnswer>(conn.request(wire::GetManifest{"llama"}, 0).get()->answer.body));
  // The session streams every layer again (cache of one) and gets the same numbers.
  const TensorMap after = session->forward(llama_inputs());
  EXPECT_TRUE(test::bitwise_equal(before.at("logits"), after.at("logits")));

  // An unusable new pair is refused and the current certificate stays.
  std::ofstream(d.str("key.pem"), std::ios::trunc) << "not a key\n";
  server.send_signal(SIGHUP);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(served_common_name(server.port()), "renewed");
  EXPECT_TRUE(server.running());
}

// SURF_TOKEN and --token-file reach the server from every command that opens a source.
TEST(Tokens, EnvironmentAndTokenFileForEveryCommand) {
  test::TempDir d;
  std::ofstream(d.path() / "token") << "s3cret\n";
  std::ofstream(d.path() / "wrong") << "guess\n";
  test::ServerProcess server({"--store", stores().llama, "--token-file", d.str("token")});
  const std::string url = server.url("llama"),
                    golden = (test::fixtures_dir() / "llama-tiny-random" / "golden.safetensors").string();
  const std::string fixture = (test::fixtures_dir() / "llama-tiny-random").string();
  const std::vector<std::vector<std::string>> commands = {
      {"inspect", url},
      {"run", url, "--inputs", golden, "--output", d.str("run.safetensors")},
      {"generate", url, "--inputs", golden, "--max-new-tokens", "2", "--output", d.str("gen.safetensors")},
      {"check", fixture, "--source", url},
  };
  for (const auto& cmd : commands) {
    auto with = [&](std::vector<std::string> pre, std::vector<std::string> post) {
      std::vector<std::string> argv = std::move(pre);
      argv.push_back(test::surf_exe());
      argv.insert(argv.end(), cmd.begin(), cmd.end());
      argv.insert(argv.end(), post.begin(), post.end());
      argv.push_back("--plugin-dir");
      argv.push_back(test::plugin_dir());
      return test::run_command(argv);
    };
    auto r = with({"/usr/bin/env", "SURF_TOKEN=s3cret"}, {});
    EXPECT_EQ(r.exit_code, 0) << cmd[0] << " with SURF_TOKEN: " << r.err;
    r = with({"/usr/bin/env", "-u", "SURF_TOKEN"}, {"--token-file", d.str("token")});
    EXPECT_EQ(r.exit_code, 0) << cmd[0] << " with --token-file: " << r.err;
    // --token-file wins over the environment.
    r = with({"/usr/bin/env", "SURF_TOKEN=s3cret"}, {"--token-file", d.str("wrong")});
    EXPECT_NE(r.exit_code, 0) << cmd[0];
    EXPECT_NE((r.err + r.out).find("wrong or missing token"), std::string::npos) << cmd[0] << ": " << r.err << r.out;
    r = with({"/usr/bin/env", "-u", "SURF_TOKEN"}, {});
    EXPECT_NE(r.exit_code, 0) << cmd[0] << " without a token";
    if (cmd[0] != "check") {
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << cmd[0] << ": " << r.err;
    }
  }
  auto r = test::run_command(
      {test::surf_exe(), "inspect", url, "--token-file", d.str("missing"), "--plugin-dir", test::plugin_dir()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("cannot read token file"), std::string::npos) << r.err;
}

// --- a fleet: several weight servers of one model in one SOURCE ---

namespace {

uint64_t get_chunk_requests(const std::string& base_url) {
  const auto r = test::run_command(
      {"/usr/bin/curl", "-sS", "--max-time", "5", "--cacert", pki().path("ca.pem"), base_url + "/metrics"});
  const std::string key = "surf_requests_total{op=\"get_chunk\"} ";
  const size_t at = r.out.find(key);
  return at == std::string::npos ? 0 : std::stoull(r.out.substr(at + key.size()));
}

}  // namespace

// Three servers (two ws://, one wss://); prefetches go round-robin over the healthy ones; one is
// killed (SIGKILL) while a generation is streaming every layer for every token: the generation
// completes with the same ids as from the store directly.
TEST(Fleet, PrefetchesSpreadAndGenerationSurvivesAServerKilledMidway) {
  test::ServerProcess a({"--store", stores().llama}), b({"--store", stores().llama}), c(tls_args("server"));
  const std::string fleet = a.url("llama") + "," + b.url("llama") + "," + c.wss_url("llama");
  const TensorMap g = read_safetensors(test::fixtures_dir() / "llama-tiny-random" / "golden.safetensors");
  const TensorMap prompt = {{"input_ids", g.at("input_ids")}, {"attention_mask", g.at("attention_mask")}};
  OpenOptions o = options(pki().path("ca.pem"));
  o.prefetch = 2;
  o.retry_attempts = 6;
  GenerateOptions go;
  go.max_new_tokens = 24;  // cache of one: every step streams every layer again
  go.stop_at_eos = false;
  go.return_logits = false;
  const TensorMap expected = Session::open(stores().llama, o)->generate(prompt, go);

  // Server b dies (SIGKILL) from inside the generation, after the third token, once it has
  // served chunks: deterministic, whatever the machine's speed.
  auto session = Session::open(fleet, o);
  int tokens = 0;
  uint64_t b_served_before_kill = 0;
  go.on_token = [&](int64_t, int64_t, std::string_view) {
    if (++tokens == 3) {
      b_served_before_kill = get_chunk_requests("http://127.0.0.1:" + std::to_string(b.port()));
      b.kill_hard();
    }
    return true;
  };
  const TensorMap got = session->generate(prompt, go);
  ASSERT_GE(tokens, 4) << "the generation must go on after the kill";
  EXPECT_GT(b_served_before_kill, 0u) << "prefetches did not reach the third server";
  EXPECT_FALSE(b.running());
  EXPECT_TRUE(test::bitwise_equal(got.at("generated_ids"), expected.at("generated_ids")));
  // The survivors both served chunks (prefetches spread, then failover between the two).
  EXPECT_GT(get_chunk_requests("http://127.0.0.1:" + std::to_string(a.port())), 0u);
  EXPECT_GT(get_chunk_requests("https://localhost:" + std::to_string(c.port())), 0u);
  // A fleet naming two different models is refused in one line.
  test::expect_error([&] { Session::open(a.url("llama") + "," + c.wss_url("other"), o); }, ErrorCode::invalid_argument,
                     "names two models");
}
