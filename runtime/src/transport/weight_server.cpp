// `surf serve`: chunk stores over WebSocket (docs/protocol.md), plus /healthz and /metrics.
#include <utility>  // Asio coroutine headers want it first with GCC 12

#include <boost/asio/signal_set.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <atomic>
#include <chrono>
#include <deque>
#include <filesystem>
#include <list>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <mutex>
#include <unordered_map>

#include "sources/store_backend.h"
#include "surf/log.h"
#include "surf/runtime.h"
#include "surf/version.h"
#include "surf/storage/backend.h"
#include "surf/storage/manifest.h"
#include "surf/storage/msgpack_util.h"
#include "transport/wire.h"

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;

namespace surf {

namespace {

struct ServedModel {
  std::string name;
  std::shared_ptr<StorageBackend> backend;
  Manifest manifest;
  std::string manifest_text;
};

// Chunks as stored, shared with in-flight answers; bounded in bytes, least recently used first out.
class ChunkCache {
 public:
  explicit ChunkCache(uint64_t max_bytes) : max_bytes_(max_bytes) {}

  std::shared_ptr<const ByteBuffer> get(const std::string& key, const std::function<std::shared_ptr<ByteBuffer>()>& load,
                                        bool* hit) {
    {
      std::lock_guard lock(mutex_);
      auto it = map_.find(key);
      if (it != map_.end()) {
        lru_.splice(lru_.begin(), lru_, it->second.second);
        *hit = true;
        return it->second.first;
      }
    }
    *hit = false;
    std::shared_ptr<const ByteBuffer> data = load();
    std::lock_guard lock(mutex_);
    if (map_.count(key) || data->size() > max_bytes_) return data;
    lru_.push_front(key);
    map_[key] = {data, lru_.begin()};
    bytes_ += data->size();
    while (bytes_ > max_bytes_ && !lru_.empty()) {
      auto victim = map_.find(lru_.back());
      bytes_ -= victim->second.first->size();
      map_.erase(victim);
      lru_.pop_back();
    }
    return data;
  }

  uint64_t bytes() const {
    std::lock_guard lock(mutex_);
    return bytes_;
  }

 private:
  uint64_t max_bytes_;
  mutable std::mutex mutex_;
  std::list<std::string> lru_;
  std::unordered_map<std::string, std::pair<std::shared_ptr<const ByteBuffer>, std::list<std::string>::iterator>> map_;
  uint64_t bytes_ = 0;
};

class Metrics {
 public:
  static constexpr double kBuckets[] = {0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5};

  void request(const std::string& op) {
    std::lock_guard lock(mutex_);
    requests_[op]++;
  }
  void error(const std::string& code) {
    std::lock_guard lock(mutex_);
    errors_[code]++;
  }
  void latency(double seconds) {
    std::lock_guard lock(mutex_);
    for (size_t i = 0; i < std::size(kBuckets); ++i) {
      if (seconds <= kBuckets[i]) buckets_[i]++;
    }
    count_++;
    sum_ += seconds;
  }
  std::atomic<uint64_t> bytes_served{0}, cache_hits{0}, cache_misses{0}, connections{0};

  std::string text(uint64_t cache_bytes) const {
    std::lock_guard lock(mutex_);
    std::ostringstream s;
    s << "# HELP surf_requests_total Requests by operation.\n# TYPE surf_requests_total counter\n";
    for (const char* op : {"hello", "list_models", "get_manifest", "get_chunk", "invalid"}) {
      auto it = requests_.find(op);
      s << "surf_requests_total{op=\"" << op << "\"} " << (it == requests_.end() ? 0 : it->second) << "\n";
    }
    s << "# HELP surf_errors_total Error answers by code.\n# TYPE surf_errors_total counter\n";
    for (const char* c : {"bad_request", "unauthorized", "not_found", "too_large", "unsupported_version", "internal"}) {
      auto it = errors_.find(c);
      s << "surf_errors_total{code=\"" << c << "\"} " << (it == errors_.end() ? 0 : it->second) << "\n";
    }
    s << "# HELP surf_bytes_served_total Chunk bytes sent.\n# TYPE surf_bytes_served_total counter\n"
      << "surf_bytes_served_total " << bytes_served.load() << "\n"
      << "# TYPE surf_cache_hits_total counter\nsurf_cache_hits_total " << cache_hits.load() << "\n"
      << "# TYPE surf_cache_misses_total counter\nsurf_cache_misses_total " << cache_misses.load() << "\n"
      << "# TYPE surf_cache_bytes gauge\nsurf_cache_bytes " << cache_bytes << "\n"
      << "# TYPE surf_active_connections gauge\nsurf_active_connections " << connections.load() << "\n"
      << "# HELP surf_request_duration_seconds Time from request to answer queued.\n"
      << "# TYPE surf_request_duration_seconds histogram\n";
    for (size_t i = 0; i < std::size(kBuckets); ++i) {
      s << "surf_request_duration_seconds_bucket{le=\"" << kBuckets[i] << "\"} " << buckets_[i] << "\n";
    }
    s << "surf_request_duration_seconds_bucket{le=\"+Inf\"} " << count_ << "\n"
      << "surf_request_duration_seconds_sum " << sum_ << "\n"
      << "surf_request_duration_seconds_count " << count_ << "\n";
    return s.str();
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, uint64_t> requests_, errors_;
  uint64_t buckets_[std::size(kBuckets)] = {};
  uint64_t count_ = 0;
  double sum_ = 0;
};

struct ServerState {
  ServeOptions options;
  std::map<std::string, ServedModel> models;
  ChunkCache cache;
  Metrics metrics;
  net::thread_pool loaders{2};
  explicit ServerState(const ServeOptions& o) : options(o), cache(o.cache_bytes) {}
};

bool token_matches(const std::string& want, std::string_view got) {
  if (want.size() != got.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < want.size(); ++i) diff |= static_cast<unsigned char>(want[i] ^ got[i]);
  return diff == 0;
}

class WsSession : public std::enable_shared_from_this<WsSession> {
 public:
  WsSession(tcp::socket&& socket, std::shared_ptr<ServerState> state, bool authed)
      : ws_(std::move(socket)), state_(std::move(state)), authed_(authed) {
    state_->metrics.connections++;
  }
  ~WsSession() { state_->metrics.connections--; }

  void run(http::request<http::string_body> req) {
    ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    // A hard cap well above the request limit: requests between the two get a too_large answer.
    ws_.read_message_max(state_->options.max_request_bytes * 4 + (1 << 20));
    ws_.write_buffer_bytes(1 << 20);
    ws_.auto_fragment(false);
    ws_.binary(true);
    ws_.async_accept(req, beast::bind_front_handler(&WsSession::on_accept, shared_from_this()));
  }

 private:
  struct Outgoing {
    ByteBuffer header;
    std::shared_ptr<const ByteBuffer> body;
  };

  void on_accept(beast::error_code ec) {
    if (ec) return;
    read();
  }

  void read() {
    in_.consume(in_.size());
    ws_.async_read(in_, beast::bind_front_handler(&WsSession::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, size_t) {
    if (ec) return;  // closed, timed out or a protocol violation: Beast has dealt with the socket
    const auto start = std::chrono::steady_clock::now();
    handle(start);
    read();
  }

  void answer_error(uint64_t id, const char* code, const std::string& message,
                    std::chrono::steady_clock::time_point start) {
    state_->metrics.error(code);
    Outgoing o;
    wire::encode_error(o.header, id, code, message);
    send(std::move(o), start);
  }

  void answer_map(uint64_t id, const std::function<void(msgpack::packer<mp::BufferWriter>&)>& fields, uint32_t count,
                  std::chrono::steady_clock::time_point start) {
    Outgoing o;
    mp::BufferWriter w{o.header};
    msgpack::packer<mp::BufferWriter> pk(w);
    pk.pack_map(count + 2);
    pk.pack(std::string_view("id"));
    pk.pack(id);
    pk.pack(std::string_view("ok"));
    pk.pack(true);
    fields(pk);
    send(std::move(o), start);
  }

  void handle(std::chrono::steady_clock::time_point start) {
    if (!ws_.got_binary()) return answer_error(0, "bad_request", "messages must be binary msgpack", start);
    if (in_.size() > state_->options.max_request_bytes) {
      state_->metrics.request("invalid");
      return answer_error(0, "too_large",
                          "request of " + std::to_string(in_.size()) + " bytes exceeds the limit of " +
                              std::to_string(state_->options.max_request_bytes),
                          start);
    }
    msgpack::object_handle oh;
    try {
      oh = msgpack::unpack(static_cast<const char*>(in_.data().data()), in_.size());
    } catch (const std::exception&) {
      state_->metrics.request("invalid");
      return answer_error(0, "bad_request", "not a msgpack message", start);
    }
    const msgpack::object& req = oh.get();
    uint64_t id = 0;
    std::string op, model, component, token;
    int version = -1;
    try {
      if (req.type != msgpack::type::MAP) throw msgpack::type_error();
      if (auto* f = mp::field(req, "id")) id = f->as<uint64_t>();
      if (auto* f = mp::field(req, "op")) op = f->as<std::string>();
      if (auto* f = mp::field(req, "model")) model = f->as<std::string>();
      if (auto* f = mp::field(req, "component")) component = f->as<std::string>();
      if (auto* f = mp::field(req, "token")) token = f->as<std::string>();
      if (auto* f = mp::field(req, "version")) version = f->as<int>();
    } catch (const std::exception&) {
      state_->metrics.request("invalid");
      return answer_error(id, "bad_request", "request must be a map with id, op and string fields", start);
    }
    const bool known = op == "hello" || op == "list_models" || op == "get_manifest" || op == "get_chunk";
    state_->metrics.request(known ? op : "invalid");
    if (!known) return answer_error(id, "bad_request", "unknown op '" + op + "'", start);
    if (op == "hello") {
      if (version != wire::kProtocolVersion) {
        return answer_error(id, "unsupported_version",
                            "protocol version " + std::to_string(version) + " is not supported (server speaks " +
                                std::to_string(wire::kProtocolVersion) + ")",
                            start);
      }
      if (!state_->options.token.empty()) {
        if (!token_matches(state_->options.token, token)) {
          return answer_error(id, "unauthorized", "wrong or missing token", start);
        }
        authed_ = true;
      }
      return answer_map(id, [&](auto& pk) {
        pk.pack(std::string_view("version"));
        pk.pack(wire::kProtocolVersion);
        pk.pack(std::string_view("server"));
        pk.pack(std::string_view("surf/" SURF_SDK_VERSION));
        pk.pack(std::string_view("max_request_bytes"));
        pk.pack(static_cast<uint64_t>(state_->options.max_request_bytes));
      }, 3, start);
    }
    if (!state_->options.token.empty() && !authed_) {
      return answer_error(id, "unauthorized", "this server requires a token: send hello with it first", start);
    }
    if (op == "list_models") {
      return answer_map(id, [&](auto& pk) {
        pk.pack(std::string_view("models"));
        pk.pack_array(static_cast<uint32_t>(state_->models.size()));
        for (const auto& [name, m] : state_->models) {
          uint64_t bytes = 0;
          for (const auto& c : m.manifest.components) bytes += c.bytes;
          pk.pack_map(4);
          pk.pack(std::string_view("name"));
          pk.pack(name);
          pk.pack(std::string_view("model_type"));
          pk.pack(m.manifest.model_type);
          pk.pack(std::string_view("components"));
          pk.pack(static_cast<uint64_t>(m.manifest.components.size()));
          pk.pack(std::string_view("bytes"));
          pk.pack(bytes);
        }
      }, 1, start);
    }
    if (!is_valid_component_id(model)) return answer_error(id, "bad_request", "invalid model name '" + model + "'", start);
    auto mit = state_->models.find(model);
    if (mit == state_->models.end()) return answer_error(id, "not_found", "no model '" + model + "'", start);
    const ServedModel& m = mit->second;
    if (op == "get_manifest") {
      return answer_map(id, [&](auto& pk) {
        pk.pack(std::string_view("model"));
        pk.pack(model);
        pk.pack(std::string_view("manifest"));
        pk.pack(m.manifest_text);
      }, 2, start);
    }
    if (!is_valid_component_id(component)) {
      return answer_error(id, "bad_request", "invalid component name '" + component + "': only [A-Za-z0-9_.-], no '..'",
                          start);
    }
    const ManifestComponent* c = m.manifest.find(component);
    if (c == nullptr) {
      return answer_error(id, "not_found", "model '" + model + "' has no component '" + component + "'", start);
    }
    // Storage reads run on the loader pool; the answer is queued back on this session's strand.
    net::post(state_->loaders, [self = shared_from_this(), id, model, component, key = c->key, checksum = c->checksum,
                                backend = m.backend, start] {
      std::shared_ptr<const ByteBuffer> data;
      std::string error;
      bool hit = false;
      try {
        data = self->state_->cache.get(model + "/" + key, [&] {
          auto buf = std::make_shared<ByteBuffer>();
          backend->get(key, *buf);
          return buf;
        }, &hit);
        (hit ? self->state_->metrics.cache_hits : self->state_->metrics.cache_misses)++;
      } catch (const std::exception& e) {
        error = e.what();
      }
      net::post(self->ws_.get_executor(), [self, id, model, component, checksum, data, error, start] {
        if (!data) return self->answer_error(id, "internal", "cannot read component '" + component + "': " + error, start);
        if (data->size() > 0xffffffffu) return self->answer_error(id, "too_large", "chunk over 4 GiB", start);
        Outgoing o;
        wire::encode_chunk_header(o.header, id, model, component, checksum, static_cast<uint32_t>(data->size()));
        o.body = data;
        self->send(std::move(o), start);
      });
    });
  }

  void send(Outgoing o, std::chrono::steady_clock::time_point start) {
    state_->metrics.latency(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    queue_.push_back(std::move(o));
    if (queue_.size() == 1) write();
  }

  void write() {
    const Outgoing& o = queue_.front();
    std::array<net::const_buffer, 2> buffers{net::buffer(o.header.data(), o.header.size()),
                                             o.body ? net::buffer(o.body->data(), o.body->size()) : net::const_buffer()};
    ws_.async_write(buffers, beast::bind_front_handler(&WsSession::on_write, shared_from_this()));
  }

  void on_write(beast::error_code ec, size_t) {
    if (ec) return;
    if (queue_.front().body) state_->metrics.bytes_served += queue_.front().body->size();
    queue_.pop_front();
    if (!queue_.empty()) write();
  }

  websocket::stream<beast::tcp_stream> ws_;
  beast::flat_buffer in_;
  std::shared_ptr<ServerState> state_;
  bool authed_;
  std::deque<Outgoing> queue_;
};

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(tcp::socket&& socket, std::shared_ptr<ServerState> state)
      : stream_(std::move(socket)), state_(std::move(state)) {}

  void run() {
    stream_.expires_after(std::chrono::seconds(30));
    parser_.body_limit(state_->options.max_request_bytes);
    http::async_read(stream_, buffer_, parser_, beast::bind_front_handler(&HttpSession::on_read, shared_from_this()));
  }

 private:
  void on_read(beast::error_code ec, size_t) {
    if (ec) return;
    auto req = parser_.release();
    if (websocket::is_upgrade(req)) {
      bool authed = state_->options.token.empty();
      const auto header = req[http::field::authorization];
      const std::string_view auth(header.data(), header.size());
      if (!authed && auth.starts_with("Bearer ")) authed = token_matches(state_->options.token, auth.substr(7));
      stream_.expires_never();
      std::make_shared<WsSession>(stream_.release_socket(), state_, authed)->run(std::move(req));
      return;
    }
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(req.version());
    res->keep_alive(false);
    res->set(http::field::server, "surf/" SURF_SDK_VERSION);
    const std::string target(req.target());
    if (req.method() == http::verb::get && target == "/healthz") {
      res->result(http::status::ok);
      res->set(http::field::content_type, "text/plain");
      res->body() = "ok\n";
    } else if (req.method() == http::verb::get && target == "/metrics") {
      res->result(http::status::ok);
      res->set(http::field::content_type, "text/plain; version=0.0.4");
      res->body() = state_->metrics.text(state_->cache.bytes());
    } else {
      res->result(http::status::not_found);
      res->set(http::field::content_type, "text/plain");
      res->body() = "not found: GET /healthz, GET /metrics, or a WebSocket upgrade\n";
    }
    res->prepare_payload();
    http::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code, size_t) {
      beast::error_code ignored;
      self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request_parser<http::string_body> parser_;
  std::shared_ptr<ServerState> state_;
};

}  // namespace

struct WeightServer::Impl {
  std::shared_ptr<ServerState> state;
  net::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::vector<std::thread> threads;
  std::once_flag stopped;

  explicit Impl(const ServeOptions& o) : state(std::make_shared<ServerState>(o)), ioc(std::max(1, o.threads)) {}

  void accept() {
    acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
      if (ec) return;  // acceptor closed
      if (state->metrics.connections.load() >= state->options.max_connections) {
        log_warn("serve: refusing a connection: " + std::to_string(state->options.max_connections) + " already open");
        beast::error_code ignored;
        socket.close(ignored);
      } else {
        beast::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        std::make_shared<HttpSession>(std::move(socket), state)->run();
      }
      accept();
    });
  }
};

WeightServer::WeightServer(const ServeOptions& options) : impl_(std::make_unique<Impl>(options)) {
  auto& state = *impl_->state;
  if (options.stores.empty()) fail(ErrorCode::invalid_argument, "serve: no store given (--store DIR)");
  for (const auto& [name, source] : options.stores) {
    if (!is_valid_component_id(name)) fail(ErrorCode::invalid_argument, "serve: invalid model name '" + name + "'");
    if (state.models.count(name)) fail(ErrorCode::invalid_argument, "serve: two stores named '" + name + "'");
    ServedModel m;
    m.name = name;
    m.backend = open_store_backend(source, false);
    ByteBuffer text;
    m.backend->get("manifest.json", text);
    m.manifest_text.assign(reinterpret_cast<const char*>(text.data()), text.size());
    m.manifest = Manifest::from_json(m.manifest_text);
    state.models[name] = std::move(m);
  }
  const tcp::endpoint endpoint(net::ip::make_address(options.host), options.port);
  auto& acceptor = impl_->acceptor;
  acceptor.open(endpoint.protocol());
  acceptor.set_option(net::socket_base::reuse_address(true));
  beast::error_code ec;
  acceptor.bind(endpoint, ec);
  if (ec) fail(ErrorCode::io, "serve: cannot bind " + options.host + ":" + std::to_string(options.port) + ": " + ec.message());
  acceptor.listen(net::socket_base::max_listen_connections);
  impl_->accept();
  for (int i = 0; i < std::max(1, options.threads); ++i) impl_->threads.emplace_back([this] { impl_->ioc.run(); });
}

WeightServer::~WeightServer() { stop(); }

uint16_t WeightServer::port() const { return impl_->acceptor.local_endpoint().port(); }

void WeightServer::stop() {
  std::call_once(impl_->stopped, [this] {
    net::post(impl_->ioc, [this] {
      beast::error_code ignored;
      impl_->acceptor.close(ignored);
      impl_->ioc.stop();
    });
    for (auto& t : impl_->threads) t.join();
    impl_->state->loaders.join();
  });
}

void serve(const ServeOptions& options, const std::function<void(uint16_t)>& on_listening) {
  // Signals are waited for on a context of their own; the server's threads keep serving meanwhile.
  net::io_context signals_ioc;
  net::signal_set signals(signals_ioc, SIGINT, SIGTERM);
  WeightServer server(options);
  if (on_listening) on_listening(server.port());
  signals.async_wait([](beast::error_code, int) { log_info("serve: shutting down"); });
  signals_ioc.run();
  server.stop();
}

}  // namespace surf
