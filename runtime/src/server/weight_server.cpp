// `surf serve`: chunk stores over WebSocket (docs/protocol.md), plus /healthz and /metrics on the
// same port. This file accepts connections and routes their first HTTP request; the WebSocket
// side is ws_session.cpp, the operations handlers.cpp, the chunk cache and the metrics their own.
#include <utility>  // Asio wants it first with GCC 12

#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
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
#include "surf/version.h"

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;

namespace surf {

namespace {

using server::ServerState;

// A new connection's first request: a WebSocket upgrade, GET /healthz, GET /metrics, or a 404.
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
      if (!authed && auth.starts_with("Bearer ")) authed = server::token_matches(state_->options.token, auth.substr(7));
      stream_.expires_never();
      server::start_ws_session(stream_.release_socket(), state_, authed, std::move(req));
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
  if (!(options.max_mbps >= 0)) fail(ErrorCode::invalid_argument, "serve: max_mbps must be >= 0 (0: unlimited)");
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

}  // namespace surf
