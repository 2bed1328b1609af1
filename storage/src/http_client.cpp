#include "http_client.h"

#include <utility>

#include <boost/asio/connect.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstring>

#include "surf/error.h"
#include "surf/storage/tls.h"

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;

namespace surf::http {

struct Client::Impl {
  Target target;
  std::string host, port;  // of the target, for messages
  int timeout_ms;
  net::io_context ioc;
  std::shared_ptr<net::ssl::context> tls_context;  // https only
  // One of the two is set while connected.
  std::unique_ptr<beast::tcp_stream> plain;
  std::unique_ptr<net::ssl::stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;

  bool connected() const { return plain || tls; }
  void disconnect() {
    plain.reset();
    tls.reset();
  }
  beast::tcp_stream& lowest() { return tls ? tls->next_layer() : *plain; }
  void expires_after_timeout() { lowest().expires_after(std::chrono::milliseconds(timeout_ms)); }
  // Calls fn with the connection's stream, whichever kind it is.
  template <class Fn>
  void io(Fn&& fn) {
    if (tls) {
      fn(*tls);
    } else {
      fn(*plain);
    }
  }

  // Runs one asynchronous operation to completion with the stream's deadline in force.
  template <class Start>
  beast::error_code run(Start&& start) {
    beast::error_code result;
    bool done = false;
    start([&](beast::error_code ec, auto&&...) {
      result = ec;
      done = true;
    });
    ioc.restart();
    while (!done && ioc.run_one() > 0) {
    }
    return result;
  }

  void connect() {
    disconnect();
    std::string to_host = host, to_port = port;
    if (!target.connect_to.empty()) {
      const size_t colon = target.connect_to.rfind(':');
      to_host = target.connect_to.substr(0, colon);
      to_port = colon == std::string::npos ? port : target.connect_to.substr(colon + 1);
    }
    tcp::resolver resolver(ioc);
    beast::error_code ec;
    auto results = resolver.resolve(to_host, to_port, ec);
    if (ec) fail(ErrorCode::network, "cannot resolve " + to_host + ": " + ec.message());
    if (target.tls) {
      if (!tls_context) tls_context = tls::shared_client_context(target.ca_file);
      tls = std::make_unique<net::ssl::stream<beast::tcp_stream>>(ioc, *tls_context);
    } else {
      plain = std::make_unique<beast::tcp_stream>(ioc);
    }
    expires_after_timeout();
    ec = run([&](auto h) {
      lowest().async_connect(results, [h](beast::error_code e, const tcp::endpoint&) mutable { h(e); });
    });
    if (ec) {
      disconnect();
      fail(ec == beast::error::timeout ? ErrorCode::timeout : ErrorCode::network,
           "cannot connect to " + to_host + ":" + to_port + ": " + ec.message());
    }
    lowest().socket().set_option(tcp::no_delay(true), ec);
    if (tls) {
      tls::prepare_client(tls->native_handle(), host);
      ec = run([&](auto h) { tls->async_handshake(net::ssl::stream_base::client, h); });
      if (ec) {
        const std::string why = tls::describe_error(ec, tls->native_handle());
        const ErrorCode code = ec == beast::error::timeout ? ErrorCode::timeout : tls::error_code_for(ec);
        disconnect();
        fail(code, "TLS with " + host + ":" + port + ": " + why);
      }
    }
    buffer.consume(buffer.size());
  }

  [[noreturn]] void broken(beast::error_code ec, const std::string& what) {
    disconnect();
    fail(ec == beast::error::timeout ? ErrorCode::timeout : ErrorCode::network,
         what + " " + host + ":" + port + ": " + ec.message());
  }

  // Reads exactly `size` body bytes into dst, first from what the header read left over.
  void read_body(std::byte* dst, size_t size, const std::function<void(const std::byte*, size_t)>& on_block) {
    size_t got = std::min(size, buffer.size());
    if (got) {
      std::memcpy(dst, buffer.data().data(), got);
      buffer.consume(got);
      if (on_block) on_block(dst, got);
    }
    constexpr size_t kBlock = 4u << 20;
    while (got < size) {
      const size_t n = std::min(kBlock, size - got);
      expires_after_timeout();
      auto ec = run([&](auto h) { io([&](auto& s) { net::async_read(s, net::buffer(dst + got, n), h); }); });
      if (ec) broken(ec, "receiving from");
      if (on_block) on_block(dst + got, n);
      got += n;
    }
  }
};

Client::Client(Target target, int timeout_ms) : impl_(std::make_unique<Impl>()) {
  impl_->host = target.host;
  impl_->port = target.port;
  impl_->target = std::move(target);
  impl_->timeout_ms = timeout_ms;
  impl_->buffer.reserve(1 << 20);  // header reads in large recv calls
}

Client::~Client() = default;

Response Client::send(const Request& r) {
  Impl& c = *impl_;
  // A kept-alive connection may have been closed by the server meanwhile: one fresh retry.
  for (int attempt = 0;; ++attempt) {
    const bool reused = c.connected();
    if (!c.connected()) c.connect();
    bhttp::request<bhttp::buffer_body> req{bhttp::string_to_verb(r.method), r.target, 11};
    req.set(bhttp::field::host, c.target.host_header());
    for (const auto& [k, v] : r.headers) req.set(k, v);
    req.body().data = const_cast<void*>(r.body);
    req.body().size = r.body_size;
    req.body().more = false;
    req.content_length(r.body_size);
    req.keep_alive(true);
    c.expires_after_timeout();
    auto ec = c.run([&](auto h) { c.io([&](auto& s) { bhttp::async_write(s, req, h); }); });
    bhttp::response_parser<bhttp::empty_body> parser;
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    parser.skip(r.head);
    if (!ec) {
      c.expires_after_timeout();
      ec = c.run([&](auto h) { c.io([&](auto& s) { bhttp::async_read_header(s, c.buffer, parser, h); }); });
    }
    if (ec) {
      if (reused && attempt == 0 &&
          (ec == bhttp::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset ||
           ec == net::error::broken_pipe || ec == net::ssl::error::stream_truncated)) {
        c.disconnect();
        continue;
      }
      c.broken(ec, "request to");
    }
    Response out;
    const auto& head = parser.get();
    out.status = head.result_int();
    for (const auto& f : head) {
      std::string name(f.name_string());
      for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      out.headers[name] = std::string(f.value());
    }
    const bool keep = head.keep_alive();
    if (!r.head && out.status != 204 && out.status != 304) {
      const auto length = parser.content_length();
      if (!length) {
        // No Content-Length (chunked or until close): let Beast read it, as a string.
        bhttp::response_parser<bhttp::string_body> text{std::move(parser)};
        text.body_limit(64u << 20);
        c.expires_after_timeout();
        ec = c.run([&](auto h) { c.io([&](auto& s) { bhttp::async_read(s, c.buffer, text, h); }); });
        if (ec) c.broken(ec, "receiving from");
        out.body = text.get().body();
        if (r.into && out.status / 100 == 2) {
          r.into->resize(out.body.size());
          std::memcpy(r.into->data(), out.body.data(), out.body.size());
          if (r.on_block) r.on_block(r.into->data(), out.body.size());
        }
        c.disconnect();
        return out;
      }
      if (out.status / 100 == 2 && r.into) {
        r.into->resize(*length);
        c.read_body(r.into->data(), *length, r.on_block);
      } else if (out.status / 100 == 2 && r.into_raw) {
        if (*length != r.into_raw_size) {
          c.disconnect();
          fail(ErrorCode::corrupt,
               "expected " + std::to_string(r.into_raw_size) + " bytes, the server sends " + std::to_string(*length));
        }
        c.read_body(static_cast<std::byte*>(r.into_raw), *length, r.on_block);
      } else {
        out.body.resize(*length);
        c.read_body(reinterpret_cast<std::byte*>(out.body.data()), *length, nullptr);
      }
    }
    if (!keep) c.disconnect();
    return out;
  }
}

}  // namespace surf::http
