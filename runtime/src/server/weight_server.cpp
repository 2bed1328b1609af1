// `surf serve`: chunk stores over WebSocket (docs/protocol.md), plus /healthz and /metrics on the
// same port. This file accepts connections and routes their first HTTP request; the WebSocket
// side is ws_session.cpp, the operations handlers.cpp, the chunk cache and the metrics their own.
#include <utility>  // Asio wants it first with GCC 12

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/core/detect_ssl.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <mutex>
#include <thread>
#include <vector>

#include "server/server_state.h"
#include "server/ws_session.h"
#include "sources/store_backend.h"
#include "surf/log.h"
#include "surf/runtime.h"
#include "surf/storage/tls.h"
#include "surf/version.h"

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;

namespace surf {

namespace {

using server::ServerState;

using server::TlsStream;

// A connection's first request: a WebSocket upgrade, GET /healthz, GET /metrics, or a 404. Stream
// is a beast::tcp_stream (plain) or a TLS stream over one; the routing is the same.
template <class Stream>
class HttpSession : public std::enable_shared_from_this<HttpSession<Stream>> {
  using std::enable_shared_from_this<HttpSession<Stream>>::shared_from_this;
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

 public:
  // `buffer`: bytes already read while detecting TLS; `tls`: the context a TLS stream was made with;
  // `slot`: the connection's place in the limits (limits.h), handed on to its WebSocket session.
  HttpSession(Stream&& stream, beast::flat_buffer&& buffer, std::shared_ptr<ServerState> state,
              std::shared_ptr<net::ssl::context> tls, std::shared_ptr<void> slot)
      : stream_(std::move(stream)),
        buffer_(std::move(buffer)),
        state_(std::move(state)),
        tls_(std::move(tls)),
        slot_(std::move(slot)) {}

  void run() {
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(30));
    if constexpr (kTls) {
      // The handshake starts from the bytes the detector read.
      stream_.async_handshake(net::ssl::stream_base::server, buffer_.data(),
                              [self = shared_from_this()](beast::error_code ec, size_t used) {
                                if (ec) return self->handshake_failed(ec);
                                self->buffer_.consume(used);
                                self->read();
                              });
    } else {
      read();
    }
  }

 private:
  void handshake_failed(beast::error_code ec) {
    beast::error_code ignored;
    const auto peer = beast::get_lowest_layer(stream_).socket().remote_endpoint(ignored);
    log_info("serve: TLS handshake with " + peer.address().to_string() + ":" + std::to_string(peer.port()) +
             " failed: " + ec.message());
  }

  void read() {
    parser_.body_limit(state_->options.max_request_bytes);
    http::async_read(stream_, buffer_, parser_, beast::bind_front_handler(&HttpSession::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, size_t) {
    if (ec) return;
    auto req = parser_.release();
    if (websocket::is_upgrade(req) &&
        server::upgrade_path_ok(std::string_view(req.target().data(), req.target().size()))) {
      bool authed = state_->options.token.empty();
      const auto header = req[http::field::authorization];
      const std::string_view auth(header.data(), header.size());
      if (!authed && auth.starts_with("Bearer ")) authed = server::token_matches(state_->options.token, auth.substr(7));
      beast::get_lowest_layer(stream_).expires_never();
      if constexpr (kTls) {
        server::start_ws_session(std::move(stream_), std::move(tls_), state_, authed, std::move(req), std::move(slot_));
      } else {
        server::start_ws_session(std::move(stream_), state_, authed, std::move(req), std::move(slot_));
      }
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
      res->body() = state_->metrics.text(state_->cache.bytes(), state_->cache.ahead_bytes(), state_->limits.open(),
                                         state_->buffer_budget.used());
    } else {
      res->result(http::status::not_found);
      res->set(http::field::content_type, "text/plain");
      res->body() = "not found: GET /healthz, GET /metrics, or a WebSocket upgrade to / or /MODEL\n";
    }
    res->prepare_payload();
    http::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code, size_t) { self->finish(); });
  }

  void finish() {
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(5));
    if constexpr (kTls) {
      stream_.async_shutdown([self = shared_from_this()](beast::error_code) {
        beast::error_code ignored;
        beast::get_lowest_layer(self->stream_).socket().close(ignored);
      });
    } else {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    }
  }

  Stream stream_;
  beast::flat_buffer buffer_;
  http::request_parser<http::string_body> parser_;
  std::shared_ptr<ServerState> state_;
  std::shared_ptr<net::ssl::context> tls_;
  std::shared_ptr<void> slot_;
};

// A new connection: its first bytes tell a TLS ClientHello from plain HTTP. A server with a
// certificate speaks only TLS and one without only plaintext; a client of the other kind gets a
// plain HTTP 400 saying so at once (a TLS client reads it as "not TLS"), never a hang.
class Detector : public std::enable_shared_from_this<Detector> {
 public:
  Detector(tcp::socket&& socket, std::shared_ptr<ServerState> state, std::shared_ptr<void> slot)
      : stream_(std::move(socket)), state_(std::move(state)), slot_(std::move(slot)) {}

  void run() {
    stream_.expires_after(std::chrono::seconds(30));
    beast::async_detect_ssl(stream_, buffer_, beast::bind_front_handler(&Detector::on_detect, shared_from_this()));
  }

 private:
  void on_detect(beast::error_code ec, bool is_tls) {
    if (ec) return;
    auto tls = state_->tls();
    if (tls && is_tls) {
      TlsStream s(std::move(stream_), *tls);
      return std::make_shared<HttpSession<TlsStream>>(std::move(s), std::move(buffer_), state_, std::move(tls),
                                                      std::move(slot_))
          ->run();
    }
    if (!tls && !is_tls) {
      return std::make_shared<HttpSession<beast::tcp_stream>>(std::move(stream_), std::move(buffer_), state_, nullptr,
                                                              std::move(slot_))
          ->run();
    }
    const std::string body = tls ? "this port speaks TLS: use wss:// (or https:// for /healthz and /metrics)\n"
                                 : "this port does not speak TLS: use ws:// (or http:// for /healthz and /metrics)\n";
    auto text = std::make_shared<std::string>(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\nConnection: close\r\n\r\n" + body);
    net::async_write(stream_, net::buffer(*text), [self = shared_from_this(), text](beast::error_code, size_t) {
      beast::error_code ignored;
      self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::shared_ptr<ServerState> state_;
  std::shared_ptr<void> slot_;  // the connection's place in the limits (limits.h)
};

}  // namespace

struct WeightServer::Impl {
  std::shared_ptr<ServerState> state;
  net::io_context ioc;
  tcp::acceptor acceptor{net::make_strand(ioc)};  // its handlers, the timer's and stop's close: one strand
  net::steady_timer accept_timer{acceptor.get_executor()};
  std::chrono::milliseconds accept_backoff{0};  // 0: not paused
  std::vector<std::thread> threads;
  std::once_flag stopped;

  explicit Impl(const ServeOptions& o) : state(std::make_shared<ServerState>(o)), ioc(std::max(1, o.threads)) {}

  void accept() {
    if (!acceptor.is_open()) return;  // stopped
    acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted || !acceptor.is_open()) return;  // stopped
      if (ec) return accept_failed(ec);
      if (accept_backoff.count() > 0) {
        log_warn("serve: accepting connections again");
        accept_backoff = std::chrono::milliseconds(0);
      }
      admit(std::move(socket));
      accept();
    });
  }

  // Out of file descriptors (or kernel memory): accepting again at once would fail again, and
  // giving up would leave the port dead for good. Pause, doubling up to 1 s, and retry; the
  // connections already open keep being served and, as they close, free descriptors. One warning
  // per burst. Any other error concerns one connection only: accept the next.
  void accept_failed(beast::error_code ec) {
    namespace errc = boost::system::errc;
    if (ec != errc::too_many_files_open && ec != errc::too_many_files_open_in_system && ec != errc::no_buffer_space &&
        ec != errc::not_enough_memory) {
      return accept();
    }
    if (accept_backoff.count() == 0) {
      state->metrics.accept_pauses++;
      state->accept_log.warn("serve: cannot accept connections: " + ec.message() +
                             "; retrying, open connections are still served");
      accept_backoff = std::chrono::milliseconds(10);
    } else {
      accept_backoff = std::min(accept_backoff * 2, std::chrono::milliseconds(1000));
    }
    accept_timer.expires_after(accept_backoff);
    accept_timer.async_wait([this](beast::error_code wec) {
      if (!wec) accept();
    });
  }

  // A slot in the limits (limits.h) for the new connection, or it is closed at once: counted in
  // /metrics, logged at most once per interval.
  void admit(tcp::socket socket) {
    beast::error_code ec;
    const auto peer = socket.remote_endpoint(ec);
    const std::string address = ec ? std::string("?") : peer.address().to_string();
    server::ConnectionLimits::Refusal why{};
    auto slot = state->limits.admit(address, why);
    if (!slot) {
      if (why == server::ConnectionLimits::Refusal::total) {
        state->metrics.refused_max_connections++;
        state->refusal_log.warn("serve: refusing connections: " + std::to_string(state->options.max_connections) +
                                " already open (--max-connections)");
      } else {
        state->metrics.refused_per_address++;
        state->refusal_log.warn("serve: refusing connections from " + address + ": " +
                                std::to_string(state->options.max_connections_per_address) +
                                " already open from it (--max-connections-per-address)");
      }
      socket.close(ec);
      return;
    }
    socket.set_option(tcp::no_delay(true), ec);
    std::make_shared<Detector>(std::move(socket), state, std::move(slot))->run();
  }
};

WeightServer::WeightServer(const ServeOptions& options) : impl_(std::make_unique<Impl>(options)) {
  auto& state = *impl_->state;
  if (options.stores.empty()) fail(ErrorCode::invalid_argument, "serve: no store given (--store DIR)");
  if (options.read_ahead < 0 || options.read_ahead > 64) {
    fail(ErrorCode::invalid_argument, "serve: read_ahead must be 0-64 (components read ahead)");
  }
  if (!(options.max_mbps >= 0)) fail(ErrorCode::invalid_argument, "serve: max_mbps must be >= 0 (0: unlimited)");
  uint64_t largest_chunk = 0;
  for (const auto& [name, source] : options.stores) {
    if (!is_valid_component_id(name)) fail(ErrorCode::invalid_argument, "serve: invalid model name '" + name + "'");
    if (state.models.count(name)) fail(ErrorCode::invalid_argument, "serve: two stores named '" + name + "'");
    server::ServedModel m;
    m.name = name;
    m.backend = open_store_backend(source, false);
    ByteBuffer text;
    m.backend->get("manifest.json", text);
    m.manifest_text.assign(reinterpret_cast<const char*>(text.data()), text.size());
    m.manifest = Manifest::from_json(m.manifest_text);
    const auto& order = m.manifest.execution_order;
    for (size_t i = 0; i < order.size(); ++i) {
      auto& next = m.next[order[i]];
      for (size_t j = i + 1; j < order.size() && next.size() < static_cast<size_t>(options.read_ahead); ++j) {
        if (const ManifestComponent* c = m.manifest.find(order[j])) next.push_back(c);
      }
    }
    for (const auto& c : m.manifest.components) largest_chunk = std::max(largest_chunk, c.bytes);
    state.models[name] = std::move(m);
  }
  state.cache.set_ahead_bytes(static_cast<uint64_t>(options.read_ahead) * largest_chunk);
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    fail(ErrorCode::invalid_argument, "serve: TLS needs both a certificate and a key (--tls-cert and --tls-key)");
  }
  if (!options.tls_cert_file.empty()) {
    auto ctx = tls::server_context(options.tls_cert_file, options.tls_key_file);
    log_info("serve: TLS with " + tls::describe_certificate(*ctx));
    state.set_tls(std::move(ctx));
  }
  const tcp::endpoint endpoint(net::ip::make_address(options.host), options.port);
  auto& acceptor = impl_->acceptor;
  acceptor.open(endpoint.protocol());
  acceptor.set_option(net::socket_base::reuse_address(true));
  beast::error_code ec;
  acceptor.bind(endpoint, ec);
  if (ec)
    fail(ErrorCode::io,
         "serve: cannot bind " + options.host + ":" + std::to_string(options.port) + ": " + ec.message());
  acceptor.listen(net::socket_base::max_listen_connections);
  impl_->accept();
  for (int i = 0; i < std::max(1, options.threads); ++i) impl_->threads.emplace_back([this] { impl_->ioc.run(); });
}

WeightServer::~WeightServer() { stop(); }

uint16_t WeightServer::port() const { return impl_->acceptor.local_endpoint().port(); }

bool WeightServer::tls() const { return impl_->state->tls() != nullptr; }

std::string WeightServer::reload_certificate() {
  const ServeOptions& o = impl_->state->options;
  if (o.tls_cert_file.empty())
    fail(ErrorCode::invalid_argument, "serve: no TLS certificate to reload (started without --tls-cert)");
  // A bad new pair leaves the old one in place (server_context throws before the swap).
  auto ctx = tls::server_context(o.tls_cert_file, o.tls_key_file);
  std::string what = tls::describe_certificate(*ctx);
  impl_->state->set_tls(std::move(ctx));
  return what;
}

void WeightServer::stop() {
  std::call_once(impl_->stopped, [this] {
    net::post(impl_->acceptor.get_executor(), [this] {
      beast::error_code ignored;
      impl_->accept_timer.cancel();
      impl_->acceptor.close(ignored);
      impl_->ioc.stop();
    });
    for (auto& t : impl_->threads) t.join();
    impl_->state->loaders.join();
  });
}

}  // namespace surf
