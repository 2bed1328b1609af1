// The real `surf serve` on 127.0.0.1: goldens through the server, several models, concurrent
// clients, a server killed mid-pass, corrupt chunks, protocol errors, /healthz and /metrics.
#include <utility>

#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <fstream>
#include <thread>

#include "../server_process.h"
#include "../test_util.h"
#include "surf/runtime.h"
#include "synth.h"
#include "surf/storage/chunk.h"
#include "surf/storage/manifest.h"
#include "surf/storage/msgpack_util.h"
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

namespace {

// Stores of the fixtures, chunked once for the whole suite.
struct Stores {
  test::TempDir dir;
  std::string llama, t5;
  Stores() {
    ChunkOptions o;
    o.plugin_dirs = {test::plugin_dir()};
    llama = dir.str("llama");
    t5 = dir.str("t5");
    chunk_checkpoint((test::fixtures_dir() / "llama-tiny-random").string(), llama, o);
    chunk_checkpoint((test::fixtures_dir() / "t5-tiny-random").string(), t5, o);
  }
};
Stores& stores() {
  static Stores s;
  return s;
}

TensorMap llama_inputs() {
  const TensorMap g = read_safetensors(test::fixtures_dir() / "llama-tiny-random" / "golden.safetensors");
  return {{"input_ids", g.at("input_ids")},
          {"attention_mask", g.at("attention_mask")},
          {"position_ids", g.at("position_ids")}};
}

OpenOptions options(int cache = 1, int prefetch = 2) {
  OpenOptions o;
  o.plugin_dirs = {test::plugin_dir()};
  o.cache_size = cache;
  o.prefetch = prefetch;
  return o;
}

// A protocol-level client for sending requests a well-behaved client never would.
class RawClient {
 public:
  explicit RawClient(int port, const std::string& bearer = "") : ws_(ioc_) {
    tcp::resolver resolver(ioc_);
    net::connect(ws_.next_layer(), resolver.resolve("127.0.0.1", std::to_string(port)));
    ws_.set_option(beast::websocket::stream_base::decorator([bearer](beast::websocket::request_type& req) {
      if (!bearer.empty()) req.set(beast::http::field::authorization, "Bearer " + bearer);
    }));
    ws_.handshake("127.0.0.1", "/");
    ws_.binary(true);
  }
  // Sends raw bytes, returns (wire error code or "ok", message).
  std::pair<std::string, std::string> send(const void* data, size_t size, bool binary = true) {
    ws_.binary(binary);
    ws_.write(net::buffer(data, size));
    beast::flat_buffer in;
    ws_.read(in);
    const wire::Answer a = wire::decode_answer(static_cast<const std::byte*>(in.data().data()), in.size());
    if (const auto* e = std::get_if<wire::ErrorAnswer>(&a.body)) return {wire::code_for(e->code), e->message};
    return {"ok", ""};
  }
  std::pair<std::string, std::string> send(const wire::Request& r) {
    ByteBuffer b;
    wire::encode_request(b, r);
    return send(b.data(), b.size());
  }

 private:
  net::io_context ioc_;
  beast::websocket::stream<tcp::socket> ws_;
};

}  // namespace

// The llama fixture's goldens, fetched from `url` with cache 1 and the given client prefetch.
void expect_llama_goldens(const std::string& url, int prefetch, const std::string& what = "") {
  CheckOptions o;
  o.source = url;
  o.plugin_dirs = {test::plugin_dir()};
  o.cache_size = 1;
  o.prefetch = prefetch;
  const CheckReport r = check_fixture((test::fixtures_dir() / "llama-tiny-random").string(), o);
  ASSERT_FALSE(r.lines.empty());
  for (const auto& l : r.lines) EXPECT_TRUE(l.passed) << what << l.tensor << " " << l.note;
}

TEST(WeightServer, GoldensMatchThroughTheServer) {
  test::ServerProcess server({"--store", stores().llama});
  expect_llama_goldens(server.url("llama"), 2);
}

// The server reads the next components in execution order after each request, so a client that
// asks one at a time (no prefetch of its own) finds them read; goldens unchanged. --read-ahead 0
// turns it off.
TEST(WeightServer, ReadAheadServesTheNextComponents) {
  for (const char* depth : {"2", "0"}) {
    test::ServerProcess server({"--store", stores().llama, "--cache-mb", "0", "--read-ahead", depth});
    expect_llama_goldens(server.url("llama"), 0, std::string(depth) + ": ");
    const std::string m = http_get(server.port(), "/metrics");
    if (std::string(depth) == "0") {
      EXPECT_EQ(metric(m, "surf_read_ahead_total"), 0u) << m;
      EXPECT_EQ(metric(m, "surf_read_ahead_hits_total"), 0u) << m;
    } else {
      // 2 resident + 3 layers + lm_head in order; each request after the first reads ahead.
      EXPECT_GE(metric(m, "surf_read_ahead_total"), 3u) << m;
      EXPECT_GE(metric(m, "surf_read_ahead_hits_total"), 3u) << m;
      EXPECT_LE(metric(m, "surf_read_ahead_bytes"), 2 * 1000000u) << m;  // at most 2 chunks held
    }
  }
}

TEST(WeightServer, TwoModelsOnOneServer) {
  test::ServerProcess server({"--store", stores().llama, "--store", "seq2seq=" + stores().t5});
  for (const auto& [model, fixture] :
       {std::pair<std::string, std::string>{"llama", "llama-tiny-random"}, {"seq2seq", "t5-tiny-random"}}) {
    CheckOptions o;
    o.source = server.url(model);
    o.plugin_dirs = {test::plugin_dir()};
    const CheckReport r = check_fixture((test::fixtures_dir() / fixture).string(), o);
    ASSERT_FALSE(r.lines.empty()) << model;
    for (const auto& l : r.lines) EXPECT_TRUE(l.passed) << model << " " << l.tensor << " " << l.note;
  }
  // Without a model name the client refuses to guess between two.
  test::expect_error([&] { Session::open(server.url(), options()); }, ErrorCode::invalid_argument,
                     "serves 2 models (llama, seq2seq)");
}

TEST(WeightServer, SixteenConcurrentClients) {
  test::ServerProcess server({"--store", stores().llama, "--threads", "2"});
  const TensorMap in = llama_inputs();
  const TensorMap local = Session::open(stores().llama, options())->forward(in);
  std::vector<std::thread> clients;
  std::atomic<int> correct{0};
  std::vector<std::string> errors(16);
  for (int i = 0; i < 16; ++i) {
    clients.emplace_back([&, i] {
      try {
        auto s = Session::open(server.url("llama"), options(1, i % 3));
        if (test::bitwise_equal(s->forward(in).at("logits"), local.at("logits"))) correct++;
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  for (auto& t : clients) t.join();
  for (const auto& e : errors) EXPECT_EQ(e, "");
  EXPECT_EQ(correct.load(), 16);
}

TEST(WeightServer, ServerKilledMidPassAndRestarted) {
  // A model big enough that a pass takes a while: 8 layers of ~6 MB chunks.
  test::TempDir d;
  SynthOptions so;
  so.preset = "small";
  synth_checkpoint(d.str("hf"), so);
  ChunkOptions co;
  co.plugin_dirs = {test::plugin_dir()};
  chunk_checkpoint(d.str("hf"), d.str("store"), co);
  const TensorMap in{{"input_ids", read_safetensors(d.path() / "hf" / "inputs.safetensors").at("input_ids")}};
  const TensorMap local = Session::open(d.str("store"), options())->forward(in);

  test::ServerProcess server({"--store", d.str("store"), "--cache-mb", "0"});
  auto s = Session::open(server.url("store"), options(1, 1));
  auto pending = s->forward_async(in);
  std::this_thread::sleep_for(std::chrono::milliseconds(15));
  server.kill_hard();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  server.restart();
  const TensorMap out = pending.get();
  EXPECT_TRUE(test::bitwise_equal(out.at("logits"), local.at("logits")));
  EXPECT_TRUE(test::bitwise_equal(s->forward(in).at("logits"), local.at("logits")));
}

TEST(WeightServer, NoServerWithinTheRetryBudgetIsAClearError) {
  test::ServerProcess server({"--store", stores().llama});
  OpenOptions o = options(1, 0);
  o.retry_attempts = 3;
  o.retry_backoff_ms = 50;
  auto s = Session::open(server.url("llama"), o);
  server.kill_hard();
  // The first component the model asks for is the (resident) embedding.
  const std::string m =
      test::expect_error([&] { s->forward(llama_inputs()); }, ErrorCode::network, "failed 3 attempts");
  EXPECT_NE(m.find("component 'embed'"), std::string::npos) << m;
}

TEST(WeightServer, CorruptChunkOnDiskIsAChecksumErrorNotWrongNumbers) {
  test::TempDir d;
  fs::copy(stores().llama, d.path() / "llama", fs::copy_options::recursive);
  test::ServerProcess server({"--store", d.str("llama")});
  {
    std::fstream f(d.path() / "llama/chunks/layers.1.msgpack", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(3000);
    f.put('\x42');
  }
  auto s = Session::open(server.url("llama"), options(1, 0));
  const std::string m =
      test::expect_error([&] { s->forward(llama_inputs()); }, ErrorCode::corrupt, "checksum mismatch");
  EXPECT_NE(m.find("component 'layers.1'"), std::string::npos) << m;
}

TEST(WeightServer, BadRequestsGetErrorAnswersAndTheServerKeepsServing) {
  test::TempDir d;
  std::ofstream(d.path() / "token") << "s3cret\n";
  test::ServerProcess server(
      {"--store", stores().llama, "--token-file", d.str("token"), "--max-request-bytes", "4096"});
  RawClient c(server.port());
  EXPECT_EQ(c.send({1, wire::GetManifest{"llama"}}).first, "unauthorized");
  EXPECT_EQ(c.send({2, wire::Hello{wire::kProtocolVersion, "wrong"}}).first, "unauthorized");
  EXPECT_EQ(c.send({3, wire::Hello{2, "s3cret"}}).first, "unsupported_version");
  EXPECT_EQ(c.send({3, wire::Hello{wire::kProtocolVersion, "s3cret"}}).first, "ok");
  EXPECT_EQ(c.send({4, wire::GetManifest{"nope"}}).first, "not_found");
  EXPECT_EQ(c.send({5, wire::GetChunk{"llama", "layers.99"}}).first, "not_found");
  EXPECT_EQ(c.send({6, wire::GetChunk{"llama", "../manifest"}}).first, "bad_request");
  EXPECT_EQ(c.send({7, wire::GetChunk{"llama", "/etc/passwd"}}).first, "bad_request");
  EXPECT_EQ(c.send({8, wire::GetChunk{"llama", std::string(6000, 'a')}}).first, "too_large");
  EXPECT_EQ(c.send("hello", 5).first, "bad_request");      // not msgpack
  EXPECT_EQ(c.send("{}", 2, false).first, "bad_request");  // a text message
  // A map with an op the protocol does not have: made by hand, as no client of wire.h can.
  ByteBuffer unknown;
  {
    mp::BufferWriter w{unknown};
    msgpack::packer<mp::BufferWriter> pk(w);
    pk.pack_map(2);
    pk.pack(std::string("id"));
    pk.pack(10);
    pk.pack(std::string("op"));
    pk.pack(std::string("delete_everything"));
  }
  EXPECT_EQ(c.send(unknown.data(), unknown.size()),
            (std::pair<std::string, std::string>{"bad_request", "unknown op 'delete_everything'"}));
  EXPECT_EQ(c.send({11, wire::GetChunk{"llama", "layers.0"}}).first, "ok");  // the connection still serves
  // The bearer header on the upgrade request authenticates too; the Session API uses it.
  RawClient bearer(server.port(), "s3cret");
  EXPECT_EQ(bearer.send({1, wire::GetManifest{"llama"}}).first, "ok");
  OpenOptions wrong = options();
  wrong.token = "guess";
  test::expect_error([&] { Session::open(server.url("llama"), wrong); }, ErrorCode::unauthorized, "");
  OpenOptions right = options();
  right.token = "s3cret";
  EXPECT_NO_THROW(Session::open(server.url("llama"), right)->forward(llama_inputs()));
}

TEST(WeightServer, HealthzAndMetricsMoveWithTraffic) {
  test::ServerProcess server({"--store", stores().llama});
  EXPECT_EQ(http_get(server.port(), "/healthz"), "200\nok\n");
  EXPECT_EQ(http_get(server.port(), "/nope").substr(0, 3), "404");
  const std::string before = http_get(server.port(), "/metrics");
  EXPECT_EQ(before.substr(0, 3), "200");
  EXPECT_EQ(metric(before, "surf_bytes_served_total"), 0u);
  auto s = Session::open(server.url("llama"), options(1, 0));
  s->forward(llama_inputs());
  const std::string after = http_get(server.port(), "/metrics");
  // 2 resident components on first use + 3 layers + lm_head.
  EXPECT_NE(after.find("surf_requests_total{op=\"get_chunk\"} 6"), std::string::npos) << after;
  EXPECT_GT(metric(after, "surf_bytes_served_total"), 100000u);
  EXPECT_EQ(metric(after, "surf_cache_misses_total"), 6u);
  EXPECT_EQ(metric(after, "surf_active_connections"), 1u);
  EXPECT_GE(metric(after, "surf_request_duration_seconds_count"), 8u);  // + hello, get_manifest
  s->forward(llama_inputs());
  const std::string third = http_get(server.port(), "/metrics");
  EXPECT_EQ(metric(third, "surf_cache_hits_total"), 4u);
}

TEST(WeightServer, ChunkDataIsChecksummedWhileItArrives) {
  test::ServerProcess server({"--store", stores().llama});
  const Manifest m = Manifest::from_json(read_text_file(fs::path(stores().llama) / "manifest.json"));
  const ManifestComponent* c = m.find("layers.1");
  ASSERT_NE(c, nullptr);
  auto pool = std::make_shared<BufferPool>(2);
  WsConnection conn(parse_ws_url(server.url("llama")), "", pool);
  conn.connect(5000);
  const ReplyPtr r = conn.request(wire::GetChunk{"llama", "layers.1"}, c->bytes).get();
  const auto& chunk = std::get<wire::ChunkAnswer>(r->answer.body);
  EXPECT_EQ(chunk.size, c->bytes);
  EXPECT_EQ(r->data_checksum, c->checksum);  // computed while the bytes arrived
  EXPECT_EQ(checksum_of(chunk.data, chunk.size), c->checksum);
  EXPECT_GE(r->message->capacity(), c->bytes);  // sized once from the expected size
  const ReplyPtr error = conn.request(wire::GetChunk{"llama", "nope"}, 0).get();
  EXPECT_EQ(std::get<wire::ErrorAnswer>(error->answer.body).code, ErrorCode::not_found);
  EXPECT_EQ(error->data_checksum, "");
}

TEST(WeightServer, OpenAndInspectFetchNoChunks) {
  test::ServerProcess server({"--store", stores().llama});
  {
    auto s = Session::open(server.url("llama"), options(1, 2));
    EXPECT_EQ(s->info().model_type, "llama");
    EXPECT_EQ(s->cache_stats().fetches, 0u);
    EXPECT_EQ(s->cache_stats().bytes_fetched, 0u);
  }
  const auto r =
      test::run_command({test::surf_exe(), "inspect", server.url("llama"), "--plugin-dir", test::plugin_dir()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("model_type: llama"), std::string::npos) << r.out;
  const std::string m = http_get(server.port(), "/metrics");
  EXPECT_NE(m.find("surf_requests_total{op=\"get_manifest\"} 2"), std::string::npos) << m;
  EXPECT_NE(m.find("surf_requests_total{op=\"get_chunk\"} 0"), std::string::npos) << m;
  EXPECT_EQ(metric(m, "surf_bytes_served_total"), 0u);
  // Resident components come on first use: the first forward fetches them with the layers.
  auto s = Session::open(server.url("llama"), options(1, 0));
  s->forward(llama_inputs());
  EXPECT_GT(s->cache_stats().resident_bytes, 0u);
}

TEST(WeightServer, ConnectionLimitAndCleanShutdown) {
  test::ServerProcess server({"--store", stores().llama, "--max-connections", "2"});
  OpenOptions o = options(1, 0);
  o.retry_attempts = 2;
  o.retry_backoff_ms = 20;
  auto a = Session::open(server.url("llama"), o);
  auto b = Session::open(server.url("llama"), o);
  // A third connection is refused.
  test::expect_error([&] { Session::open(server.url("llama"), o); }, ErrorCode::network, "");
  EXPECT_NO_THROW(a->forward(llama_inputs()));  // the admitted clients still work
  b.reset();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_NO_THROW(Session::open(server.url("llama"), o));  // a slot freed up
  EXPECT_EQ(server.stop(), 0);                             // SIGTERM: orderly exit
}
