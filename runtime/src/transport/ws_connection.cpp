#include <utility>  // Asio wants it first with GCC 12

#include "transport/ws_connection.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <cctype>
#include <type_traits>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "surf/storage/chunk.h"
#include "surf/storage/tls.h"
#include "transport/tls_stream.h"

namespace surf {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;
using TlsStream = tls::TlsStream;  // large-buffer TLS (tls_stream.h)

WsUrl parse_ws_url(const std::string& url) {
  const bool tls = url.rfind("wss://", 0) == 0;
  if (!tls && url.rfind("ws://", 0) != 0) {
    fail(ErrorCode::invalid_argument, "'" + url + "' is not a ws[s]://host:port[/model] URL");
  }
  std::string rest = url.substr(tls ? 6 : 5);
  WsUrl u;
  u.tls = tls;
  const size_t slash = rest.find('/');
  if (slash != std::string::npos) {
    u.model = rest.substr(slash + 1);
    rest = rest.substr(0, slash);
    while (!u.model.empty() && u.model.back() == '/') u.model.pop_back();
  }
  const size_t colon = rest.rfind(':');
  u.host = colon == std::string::npos ? rest : rest.substr(0, colon);
  u.port = colon == std::string::npos ? "8765" : rest.substr(colon + 1);
  if (u.host.empty() || u.port.empty() || u.port.find_first_not_of("0123456789") != std::string::npos) {
    fail(ErrorCode::invalid_argument, "'" + url + "' is not a ws[s]://host:port[/model] URL");
  }
  return u;
}

std::string WsUrl::text() const {
  return std::string(tls ? "wss://" : "ws://") + host + ":" + port + (model.empty() ? "" : "/" + model);
}

namespace {

// At most this much is read (and then hashed, while still in cache) per step.
constexpr size_t kReadStep = 1 << 20;

// A message being received into a pooled buffer. Once the head of a chunk answer has arrived the
// data's place is known (wire::probe_chunk_data) and the data is hashed piece by piece as it
// comes, instead of in a second pass over hundreds of megabytes afterwards.
struct Incoming {
  std::shared_ptr<ByteBuffer> buffer;  // size(): bytes received so far
  wire::DataProbe probe;
  size_t hashed = 0;
  StreamingChecksum sum;

  void on_bytes() {
    if (probe.status == wire::DataProbe::need_more) {
      probe = wire::probe_chunk_data(buffer->data(), buffer->size());
      if (probe.status == wire::DataProbe::found) hashed = probe.offset;
    }
    if (probe.status != wire::DataProbe::found) return;
    const size_t end = std::min(buffer->size(), probe.offset + probe.size);
    if (end > hashed) {
      sum.update(buffer->data() + hashed, end - hashed);
      hashed = end;
    }
  }

  // Whether the streamed checksum covers exactly this decoded chunk.
  bool covers(const wire::ChunkAnswer& c) const {
    return probe.status == wire::DataProbe::found && c.data == buffer->data() + probe.offset && c.size == probe.size &&
           hashed == probe.offset + probe.size;
  }
};

}  // namespace

// Handlers capture `this`: they only run on the connection's own thread, which the destructor
// joins, so no handler outlives the object and the thread never holds the last reference.
struct WsConnection::Impl {
  virtual ~Impl() = default;
  virtual void connect(int timeout_ms) = 0;
  virtual std::future<ReplyPtr> request(wire::RequestBody body, size_t expected_bytes) = 0;
  virtual bool alive() const = 0;
  virtual void close() = 0;
};

// One code path for ws:// and wss://: Stream is a beast::tcp_stream or a TLS stream over one.
template <class Stream>
struct WsConnection::Conn final : WsConnection::Impl {
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

  Conn(const WsUrl& url, std::string token, std::shared_ptr<BufferPool> pool, std::shared_ptr<net::ssl::context> tls)
      : url_(url), token_(std::move(token)), pool_(std::move(pool)), tls_(std::move(tls)), ws_(make_stream()) {}

  websocket::stream<Stream> make_stream() {
    if constexpr (kTls) {
      return websocket::stream<Stream>(net::make_strand(ioc_), *tls_);
    } else {
      return websocket::stream<Stream>(net::make_strand(ioc_));
    }
  }

  ~Conn() override {
    fail_all("connection closed");
    work_.reset();
    ioc_.stop();
    if (thread_.joinable()) thread_.join();
  }

  std::string where() const { return url_.host + ":" + url_.port; }

  void connect(int timeout_ms) override {
    auto ready = std::make_shared<std::promise<void>>();
    auto done = ready->get_future();
    auto resolver = std::make_shared<tcp::resolver>(ioc_);
    resolver->async_resolve(
        url_.host, url_.port,
        [this, resolver, ready, timeout_ms](beast::error_code ec, tcp::resolver::results_type results) {
          if (ec) return fail_connect(ready, "cannot resolve " + url_.host + ": " + ec.message());
          beast::get_lowest_layer(ws_).expires_after(std::chrono::milliseconds(timeout_ms));
          beast::get_lowest_layer(ws_).async_connect(results, [this, ready](beast::error_code cec,
                                                                            const tcp::endpoint&) {
            if (cec) return fail_connect(ready, "cannot connect to " + where() + ": " + cec.message());
            beast::error_code ignored;
            beast::get_lowest_layer(ws_).socket().set_option(tcp::no_delay(true),
                                                             ignored);  // small requests go out at once
            if constexpr (kTls) {
              tls::prepare_client(ws_.next_layer().native_handle(), url_.host);
              ws_.next_layer().async_handshake(net::ssl::stream_base::client, [this, ready](beast::error_code tec) {
                if (tec) {
                  return fail_connect(
                      ready, "TLS with " + where() + ": " + tls::describe_error(tec, ws_.next_layer().native_handle()),
                      tls::error_code_for(tec));
                }
                upgrade(ready);
              });
            } else {
              upgrade(ready);
            }
          });
        });
    work_.emplace(net::make_work_guard(ioc_));
    thread_ = std::thread([this] { ioc_.run(); });
    if (done.wait_for(std::chrono::milliseconds(timeout_ms + 1000)) != std::future_status::ready) {
      close();
      fail(ErrorCode::timeout, "connecting to " + where() + " timed out");
    }
    try {
      done.get();
    } catch (...) {
      close();
      throw;
    }
  }

  // The WebSocket upgrade, on a connected (and for wss://, TLS-established) stream; the connect
  // deadline still runs until the upgrade is done.
  void upgrade(const std::shared_ptr<std::promise<void>>& ready) {
    ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::client));
    ws_.set_option(websocket::stream_base::decorator([token = token_](websocket::request_type& req) {
      req.set(beast::http::field::user_agent, "surf-client");
      if (!token.empty()) req.set(beast::http::field::authorization, "Bearer " + token);
    }));
    ws_.read_message_max(std::numeric_limits<uint64_t>::max());
    ws_.write_buffer_bytes(1 << 16);
    ws_.auto_fragment(false);
    ws_.binary(true);
    ws_.async_handshake(upgrade_answer_, where(), "/" + url_.model, [this, ready](beast::error_code hec) {
      if (hec) {
        // A server that declined says why in its answer (a TLS weight server to a plain client:
        // "this port speaks TLS").
        const unsigned status = upgrade_answer_.result_int();
        std::string why = hec.message();
        if (hec == websocket::error::upgrade_declined && status != 0) {
          std::string body = upgrade_answer_.body();
          while (!body.empty() && std::isspace(static_cast<unsigned char>(body.back()))) body.pop_back();
          why = "the server answered HTTP " + std::to_string(status) + (body.empty() ? "" : ": " + body.substr(0, 300));
        }
        return fail_connect(ready, "WebSocket handshake with " + where() + " failed: " + why,
                            status == 400 && !kTls ? ErrorCode::unsupported : ErrorCode::network);
      }
      beast::get_lowest_layer(ws_).expires_never();
      ready->set_value();
      read();
    });
  }

  static void fail_connect(const std::shared_ptr<std::promise<void>>& ready, const std::string& why,
                           ErrorCode code = ErrorCode::network) {
    ready->set_exception(std::make_exception_ptr(Error(code, why)));
  }

  std::future<ReplyPtr> request(wire::RequestBody body, size_t expected_bytes) override {
    auto msg = std::make_shared<ByteBuffer>();
    std::future<ReplyPtr> future;
    {
      std::lock_guard lock(mutex_);
      if (dead_) {
        std::promise<ReplyPtr> p;
        p.set_exception(std::make_exception_ptr(Error(ErrorCode::network, dead_reason_)));
        return p.get_future();
      }
      const uint64_t id = next_id_++;
      wire::encode_request(*msg, {id, std::move(body)});
      future = pending_[id].get_future();
      reserve_hint_ = std::max(reserve_hint_, expected_bytes + 4096);
    }
    net::post(ws_.get_executor(), [this, msg] {
      outbox_.push_back(msg);
      if (outbox_.size() == 1) write();
    });
    return future;
  }

  bool alive() const override {
    std::lock_guard lock(mutex_);
    return !dead_;
  }

  void close() override {
    fail_all("connection closed");
    net::post(ws_.get_executor(), [this] {
      beast::error_code ignored;
      beast::get_lowest_layer(ws_).socket().close(ignored);
    });
  }

  // Starts receiving the next message into a buffer from the pool, sized for the biggest answer
  // asked for so far: one allocation, no growth copies mid-message.
  void read() {
    size_t hint;
    {
      std::lock_guard lock(mutex_);
      hint = reserve_hint_;
    }
    auto msg = std::make_shared<Incoming>();
    msg->buffer = pool_->acquire(hint);
    msg->buffer->clear();
    read_more(msg);
  }

  void read_more(const std::shared_ptr<Incoming>& msg) {
    ByteBuffer& b = *msg->buffer;
    if (b.size() == b.capacity()) b.reserve(std::max(2 * b.capacity(), b.size() + kReadStep));  // bigger than asked for
    const size_t room = std::min(b.capacity() - b.size(), kReadStep);
    ws_.async_read_some(net::buffer(b.data() + b.size(), room), [this, msg](beast::error_code ec, size_t n) {
      if (ec) return fail_all("connection to " + where() + " lost: " + ec.message());
      msg->buffer->resize(msg->buffer->size() + n);  // within capacity: no copy
      msg->on_bytes();
      if (!ws_.is_message_done()) return read_more(msg);
      if (deliver(*msg)) read();
    });
  }

  // Decodes a complete message and fulfils the request it answers; false (and the connection
  // fails) if the message is not an answer.
  bool deliver(const Incoming& msg) {
    auto reply = std::make_shared<Reply>();
    reply->message = msg.buffer;
    try {
      reply->answer = wire::decode_answer(msg.buffer->data(), msg.buffer->size());
    } catch (const Error& e) {
      fail_all(e.what());
      return false;
    }
    if (const auto* chunk = std::get_if<wire::ChunkAnswer>(&reply->answer.body); chunk && msg.covers(*chunk)) {
      reply->data_checksum = msg.sum.hex();
    }
    std::promise<ReplyPtr> p;
    {
      std::lock_guard lock(mutex_);
      auto it = pending_.find(reply->answer.id);
      if (it == pending_.end()) return true;  // an answer to nothing pending: ignored
      p = std::move(it->second);
      pending_.erase(it);
    }
    p.set_value(std::move(reply));
    return true;
  }

  void write() {
    const auto& msg = outbox_.front();
    ws_.async_write(net::buffer(msg->data(), msg->size()), [this](beast::error_code ec, size_t) {
      if (ec) return fail_all("sending to the weight server failed: " + ec.message());
      outbox_.pop_front();
      if (!outbox_.empty()) write();
    });
  }

  void fail_all(const std::string& reason) {
    std::map<uint64_t, std::promise<ReplyPtr>> pending;
    {
      std::lock_guard lock(mutex_);
      if (!dead_) {
        dead_ = true;
        dead_reason_ = reason;
      }
      pending.swap(pending_);
    }
    for (auto& [id, p] : pending) p.set_exception(std::make_exception_ptr(Error(ErrorCode::network, reason)));
  }

  WsUrl url_;
  std::string token_;
  std::shared_ptr<BufferPool> pool_;
  std::shared_ptr<net::ssl::context> tls_;  // wss:// only
  net::io_context ioc_;
  websocket::stream<Stream> ws_;
  websocket::response_type upgrade_answer_;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work_;
  std::thread thread_;
  std::deque<std::shared_ptr<ByteBuffer>> outbox_;  // io thread only

  mutable std::mutex mutex_;
  std::map<uint64_t, std::promise<ReplyPtr>> pending_;
  uint64_t next_id_ = 1;
  size_t reserve_hint_ = 1 << 16;
  bool dead_ = false;
  std::string dead_reason_;
};

WsConnection::WsConnection(const WsUrl& url, std::string token, std::shared_ptr<BufferPool> pool, std::string ca_file) {
  if (url.tls) {
    impl_ =
        std::make_unique<Conn<TlsStream>>(url, std::move(token), std::move(pool), tls::shared_client_context(ca_file));
  } else {
    impl_ = std::make_unique<Conn<beast::tcp_stream>>(url, std::move(token), std::move(pool), nullptr);
  }
}
WsConnection::~WsConnection() = default;
void WsConnection::connect(int timeout_ms) { impl_->connect(timeout_ms); }
std::future<ReplyPtr> WsConnection::request(wire::RequestBody body, size_t expected_bytes) {
  return impl_->request(std::move(body), expected_bytes);
}
bool WsConnection::alive() const { return impl_->alive(); }
void WsConnection::close() { impl_->close(); }

}  // namespace surf
