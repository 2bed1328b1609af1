// A TLS stream for the weight server's bulk transfers (wss://), on OpenSSL directly.
//
// Asio's ssl::stream moves one TLS record (<= 16 KB) per operation: each record costs a socket
// call, a completion handler and a BIO copy on both ends, and that overhead, not the cipher, kept
// wss:// at half the speed of ws://. This stream moves ciphertext in large pieces: OpenSSL reads
// through a BIO of ours straight from the socket into its own kInBytes read-ahead buffer (the
// bytes a wait brought first pass through a buffer of ours), and a read decrypts every whole
// record there into the caller's buffer; a write encrypts up to kWriteBytes of plaintext into one
// buffer and sends it with one socket write. Handshake, verification (tls::prepare_client) and the
// error codes (Asio's ssl category, so tls::describe_error reads them) are as with Asio's stream.
//
// It is an AsyncStream for Beast (HTTP and WebSocket, with teardown), over a beast::tcp_stream so
// its timeouts apply. Like Asio's stream it allows one read and one write in flight at a time, on
// one strand.
#pragma once

#include <utility>  // Asio wants it first with GCC 12

#include <boost/asio/compose.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream_base.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/websocket/teardown.hpp>
#include <memory>
#include <vector>

typedef struct ssl_st SSL;

namespace surf::tls {

// The OpenSSL side of a TlsStream: the SSL object, the ciphertext received but not yet decrypted,
// and the ciphertext produced but not yet sent. No I/O of its own.
class TlsEngine {
 public:
  static constexpr size_t kInBytes = 256 << 10;
  static constexpr size_t kWriteBytes = 256 << 10;  // plaintext encrypted per write operation

  explicit TlsEngine(boost::asio::ssl::context& ctx);
  ~TlsEngine();
  TlsEngine(const TlsEngine&) = delete;
  TlsEngine& operator=(const TlsEngine&) = delete;

  SSL* ssl() const { return ssl_; }
  // The connected socket: once what arrived through in_space() is used up, OpenSSL's reads go
  // straight to it (recv into OpenSSL's own buffer, no copy through ours) until it would block.
  void set_socket(int fd) { fd_ = fd; }

  enum class Step { done, want_read, failed };
  // Advances the handshake; its output, if any, is left in out().
  Step handshake(boost::system::error_code& ec);
  // Decrypts into [data, data+size) as much as the received ciphertext holds: `got` bytes. want_read
  // with got 0: more ciphertext is needed. failed: ec is eof (the peer's close_notify) or the error.
  Step read(void* data, size_t size, size_t& got, boost::system::error_code& ec);
  // Encrypts all of [data, data+size) into out().
  bool write(const void* data, size_t size, boost::system::error_code& ec);
  // Queues close_notify in out().
  void shutdown();

  // Room for the next socket read (whole records left over are kept; a partial one is moved to the
  // front), and how much of it the read filled.
  boost::asio::mutable_buffer in_space();
  void in_commit(size_t n) { in_end_ += n; }
  // Bytes received before the stream existed (the server's TLS detection).
  void in_put(const void* data, size_t size);

  // Ciphertext waiting to be sent: take_out() hands it over (the engine keeps appending to a
  // second buffer meanwhile, so the one being sent is never moved).
  bool has_out() const { return !out_.empty(); }
  std::vector<unsigned char>& take_out();

  // The BIO's callbacks. bio_read: bytes, 0 at end of stream, kWouldBlock or kFailed.
  static constexpr int kWouldBlock = -1, kFailed = -2;
  int bio_read(char* out, int len);
  int bio_write(const char* data, int len);

 private:
  boost::system::error_code error_for(int ret);

  SSL* ssl_ = nullptr;
  int fd_ = -1;
  bool eof_ = false;  // the socket reached its end
  int errno_ = 0;     // the socket's error, if a read failed
  std::unique_ptr<unsigned char[]> in_;
  size_t in_begin_ = 0, in_end_ = 0;
  std::vector<unsigned char> out_, sending_;
};

class TlsStream {
 public:
  using next_layer_type = boost::beast::tcp_stream;
  using executor_type = next_layer_type::executor_type;

  TlsStream(next_layer_type&& next, boost::asio::ssl::context& ctx)
      : next_(std::move(next)), engine_(std::make_unique<TlsEngine>(ctx)) {}
  template <class Executor>
  TlsStream(const Executor& ex, boost::asio::ssl::context& ctx)
      : next_(ex), engine_(std::make_unique<TlsEngine>(ctx)) {}
  TlsStream(TlsStream&&) = default;
  TlsStream& operator=(TlsStream&&) = default;

  executor_type get_executor() noexcept { return next_.get_executor(); }
  next_layer_type& next_layer() { return next_; }
  const next_layer_type& next_layer() const { return next_; }
  SSL* native_handle() { return engine_->ssl(); }

  // handler(error_code)
  template <class Handler>
  auto async_handshake(boost::asio::ssl::stream_base::handshake_type type, Handler&& handler);
  // The server's handshake starting from bytes already read; handler(error_code, bytes used): all
  // of them, as the stream keeps what follows the handshake for its reads.
  template <class ConstBuffers, class Handler>
  auto async_handshake(boost::asio::ssl::stream_base::handshake_type type, const ConstBuffers& buffers,
                       Handler&& handler);
  // Sends close_notify; handler(error_code).
  template <class Handler>
  auto async_shutdown(Handler&& handler);
  // handler(error_code, bytes)
  template <class MutableBuffers, class Handler>
  auto async_read_some(const MutableBuffers& buffers, Handler&& handler);
  template <class ConstBuffers, class Handler>
  auto async_write_some(const ConstBuffers& buffers, Handler&& handler);

  // Blocking close_notify (WebSocket teardown's synchronous form).
  void shutdown(boost::system::error_code& ec);

 private:
  template <bool WithUsed>
  struct HandshakeOp;
  struct ShutdownOp;
  template <class MutableBuffers>
  struct ReadOp;
  template <class ConstBuffers>
  struct WriteOp;

  next_layer_type next_;
  std::unique_ptr<TlsEngine> engine_;
};

// ---- operations --------------------------------------------------------------------------------

namespace detail {
void set_handshake_side(SSL* ssl, bool server);
// A socket error during a TLS read: end of stream without close_notify is stream_truncated, as
// with Asio's stream.
boost::system::error_code socket_error(const boost::system::error_code& ec);
// Completes an operation that finished without waiting for anything: through the executor, never
// from inside the initiating call.
template <class Self>
void complete_later(Self& self, TlsStream& s, boost::system::error_code ec, size_t n) {
  boost::asio::post(s.get_executor(), boost::beast::bind_front_handler(std::move(self), ec, n));
}
}  // namespace detail

// Runs the handshake: sends what the engine produced, reads when it wants more. On failure the
// alert the engine produced is sent before the error is reported. WithUsed: the completion also
// gets the number of initial bytes used.
template <bool WithUsed>
struct TlsStream::HandshakeOp {
  TlsStream& s;
  size_t used = 0;
  enum { start, sending, receiving, report } state = start;
  boost::system::error_code failure{};

  template <class Self>
  void finish(Self& self, boost::system::error_code ec) {
    if constexpr (WithUsed) {
      self.complete(ec, ec ? 0 : used);
    } else {
      self.complete(ec);
    }
  }

  template <class Self>
  void operator()(Self& self, boost::system::error_code ec = {}, size_t n = 0) {
    namespace net = boost::asio;
    switch (state) {
      case report:
        return finish(self, failure);
      case sending:
        if (ec) return finish(self, ec);
        if (failure) return finish(self, failure);
        break;
      case receiving:
        if (ec) return finish(self, detail::socket_error(ec));
        s.engine_->in_commit(n);
        break;
      case start:
        break;
    }
    s.engine_->set_socket(s.next_.socket().native_handle());
    const TlsEngine::Step step = s.engine_->handshake(ec);
    if (step == TlsEngine::Step::failed) failure = ec;
    if (s.engine_->has_out()) {
      state = sending;
      return net::async_write(s.next_, net::buffer(s.engine_->take_out()), std::move(self));
    }
    if (step == TlsEngine::Step::want_read) {
      state = receiving;
      return s.next_.async_read_some(s.engine_->in_space(), std::move(self));
    }
    if (state == start) {
      state = report;
      return detail::complete_later(self, s, ec, 0);
    }
    finish(self, failure);
  }
};

template <class Handler>
auto TlsStream::async_handshake(boost::asio::ssl::stream_base::handshake_type type, Handler&& handler) {
  detail::set_handshake_side(engine_->ssl(), type == boost::asio::ssl::stream_base::server);
  return boost::asio::async_compose<Handler, void(boost::system::error_code)>(HandshakeOp<false>{*this}, handler,
                                                                              next_);
}

template <class ConstBuffers, class Handler>
auto TlsStream::async_handshake(boost::asio::ssl::stream_base::handshake_type type, const ConstBuffers& buffers,
                                Handler&& handler) {
  detail::set_handshake_side(engine_->ssl(), type == boost::asio::ssl::stream_base::server);
  size_t used = 0;
  for (const auto b : boost::beast::buffers_range_ref(buffers)) {
    engine_->in_put(b.data(), b.size());
    used += b.size();
  }
  return boost::asio::async_compose<Handler, void(boost::system::error_code, size_t)>(HandshakeOp<true>{*this, used},
                                                                                      handler, next_);
}

// Queues close_notify and sends it (and anything still unsent).
struct TlsStream::ShutdownOp {
  TlsStream& s;
  bool started = false;

  template <class Self>
  void operator()(Self& self, boost::system::error_code ec = {}, size_t = 0) {
    if (started) return self.complete(ec);
    started = true;
    s.engine_->shutdown();
    boost::asio::async_write(s.next_, boost::asio::buffer(s.engine_->take_out()), std::move(self));
  }
};

template <class Handler>
auto TlsStream::async_shutdown(Handler&& handler) {
  return boost::asio::async_compose<Handler, void(boost::system::error_code)>(ShutdownOp{*this}, handler, next_);
}

// Decrypts what has arrived into the caller's buffers, reading the socket directly while it has
// data; waits for the socket (into in_space()) only when not one byte is ready.
template <class MutableBuffers>
struct TlsStream::ReadOp {
  TlsStream& s;
  MutableBuffers buffers;
  enum { start, receiving, report } state = start;

  template <class Self>
  void operator()(Self& self, boost::system::error_code ec = {}, size_t n = 0) {
    if (state == report) return self.complete(ec, n);
    if (state == receiving) {
      if (ec) return self.complete(detail::socket_error(ec), 0);
      s.engine_->in_commit(n);
    }
    size_t total = 0;
    TlsEngine::Step step = TlsEngine::Step::want_read;
    s.engine_->set_socket(s.next_.socket().native_handle());
    for (const auto b : boost::beast::buffers_range_ref(buffers)) {
      size_t got = 0;
      step = s.engine_->read(b.data(), b.size(), got, ec);
      total += got;
      if (got < b.size()) break;
    }
    if (total == 0 && step == TlsEngine::Step::want_read && boost::beast::buffer_bytes(buffers) > 0) {
      state = receiving;
      return s.next_.async_read_some(s.engine_->in_space(), std::move(self));
    }
    if (total > 0) ec = {};  // an error after data is reported by the next read
    if (state == start) {
      state = report;
      return detail::complete_later(self, s, ec, total);
    }
    self.complete(ec, total);
  }
};

template <class MutableBuffers, class Handler>
auto TlsStream::async_read_some(const MutableBuffers& buffers, Handler&& handler) {
  return boost::asio::async_compose<Handler, void(boost::system::error_code, size_t)>(
      ReadOp<MutableBuffers>{*this, buffers}, handler, next_);
}

// Encrypts up to kWriteBytes of the caller's bytes into one buffer and sends it with one write,
// together with anything a read left to send (a TLS 1.3 key update's answer).
template <class ConstBuffers>
struct TlsStream::WriteOp {
  TlsStream& s;
  ConstBuffers buffers;
  size_t taken = 0;
  enum { start, sending, report } state = start;

  template <class Self>
  void operator()(Self& self, boost::system::error_code ec = {}, size_t = 0) {
    namespace net = boost::asio;
    switch (state) {
      case report:
        return self.complete(ec, 0);
      case sending:
        if (ec) return self.complete(ec, 0);
        if (s.engine_->has_out()) break;  // a read queued more meanwhile
        return self.complete(ec, taken);
      case start:
        for (const auto b : boost::beast::buffers_range_ref(buffers)) {
          const size_t n = std::min(b.size(), TlsEngine::kWriteBytes - taken);
          if (n > 0 && !s.engine_->write(b.data(), n, ec)) break;
          taken += n;
          if (taken == TlsEngine::kWriteBytes) break;
        }
        break;
    }
    if (ec || !s.engine_->has_out()) {  // failed, or nothing to write at all
      state = report;
      return detail::complete_later(self, s, ec, 0);
    }
    state = sending;
    net::async_write(s.next_, net::buffer(s.engine_->take_out()), std::move(self));
  }
};

template <class ConstBuffers, class Handler>
auto TlsStream::async_write_some(const ConstBuffers& buffers, Handler&& handler) {
  return boost::asio::async_compose<Handler, void(boost::system::error_code, size_t)>(
      WriteOp<ConstBuffers>{*this, buffers}, handler, next_);
}

namespace detail {
// close_notify, then the TCP teardown (a failed close_notify still leaves the socket to close).
struct TeardownOp {
  TlsStream& s;
  boost::beast::role_type role;
  int step = 0;
  template <class Self>
  void operator()(Self& self, boost::system::error_code ec = {}) {
    switch (step++) {
      case 0:
        return s.async_shutdown(std::move(self));
      case 1:
        return boost::beast::websocket::async_teardown(role, s.next_layer().socket(), std::move(self));
      default:
        return self.complete(ec);
    }
  }
};
}  // namespace detail

// WebSocket teardown, found by argument-dependent lookup.
template <class Handler>
void async_teardown(boost::beast::role_type role, TlsStream& stream, Handler&& handler) {
  boost::asio::async_compose<Handler, void(boost::system::error_code)>(detail::TeardownOp{stream, role}, handler,
                                                                       stream);
}
void teardown(boost::beast::role_type role, TlsStream& stream, boost::system::error_code& ec);

}  // namespace surf::tls
