#include "transport/tls_stream.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <boost/asio/error.hpp>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include "surf/error.h"

namespace surf::tls {

namespace net = boost::asio;
using boost::system::error_code;

namespace {

TlsEngine* engine_of(BIO* bio) { return static_cast<TlsEngine*>(BIO_get_data(bio)); }

int bio_read(BIO* bio, char* out, int len) {
  BIO_clear_retry_flags(bio);
  const int n = engine_of(bio)->bio_read(out, len);
  if (n == TlsEngine::kWouldBlock) BIO_set_retry_read(bio);
  return n < 0 ? -1 : n;
}

int bio_write(BIO* bio, const char* data, int len) {
  BIO_clear_retry_flags(bio);
  return engine_of(bio)->bio_write(data, len);
}

long bio_ctrl(BIO*, int cmd, long, void*) {
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;  // nothing is buffered in the BIO itself
}

int bio_create(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

// One method table for every stream: the BIO hands OpenSSL's reads and writes to the engine.
BIO_METHOD* method() {
  static BIO_METHOD* const m = [] {
    BIO_METHOD* made = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "surf-tls");
    if (made == nullptr || !BIO_meth_set_read(made, bio_read) || !BIO_meth_set_write(made, bio_write) ||
        !BIO_meth_set_ctrl(made, bio_ctrl) || !BIO_meth_set_create(made, bio_create)) {
      fail(ErrorCode::internal, "TLS: cannot make the stream's BIO method");
    }
    return made;
  }();
  return m;
}

}  // namespace

TlsEngine::TlsEngine(net::ssl::context& ctx) : in_(new unsigned char[kInBytes]) {
  ssl_ = SSL_new(ctx.native_handle());
  BIO* bio = ssl_ ? BIO_new(method()) : nullptr;
  if (bio == nullptr) {
    SSL_free(ssl_);
    fail(ErrorCode::internal, "TLS: cannot make a connection object");
  }
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_, bio, bio);  // one reference, owned by ssl_
  // Whole runs of records per BIO read: the BIO is a memory copy, so reading ahead costs nothing.
  SSL_set_read_ahead(ssl_, 1);
  // A write must never need to read: no TLS 1.2 renegotiation (TLS 1.3 has none).
  SSL_set_options(ssl_, SSL_OP_NO_RENEGOTIATION);
  // With read-ahead, OpenSSL fills this much of its buffer per read: many records per recv().
  SSL_set_default_read_buffer_len(ssl_, kInBytes);
  out_.reserve(kWriteBytes + (kWriteBytes >> 4));
  sending_.reserve(out_.capacity());
}

TlsEngine::~TlsEngine() { SSL_free(ssl_); }

error_code TlsEngine::error_for(int ret) {
  const int err = SSL_get_error(ssl_, ret);
  const unsigned long lib = ERR_get_error();
  switch (err) {
    case SSL_ERROR_ZERO_RETURN:
      return net::error::eof;
    case SSL_ERROR_SSL:
    case SSL_ERROR_SYSCALL:
      if (errno_ != 0) return error_code(errno_, boost::system::system_category());
      if (eof_) return net::ssl::error::stream_truncated;  // no close_notify before the end
      if (lib != 0) return error_code(static_cast<int>(lib), net::error::get_ssl_category());
      return net::ssl::error::stream_truncated;
    default:
      return net::ssl::error::unexpected_result;
  }
}

TlsEngine::Step TlsEngine::handshake(error_code& ec) {
  ERR_clear_error();
  const int ret = SSL_do_handshake(ssl_);
  if (ret == 1) return Step::done;
  if (SSL_get_error(ssl_, ret) == SSL_ERROR_WANT_READ) return Step::want_read;
  ec = error_for(ret);
  return Step::failed;
}

TlsEngine::Step TlsEngine::read(void* data, size_t size, size_t& got, error_code& ec) {
  got = 0;
  auto* p = static_cast<unsigned char*>(data);
  while (got < size) {
    ERR_clear_error();
    const int want = static_cast<int>(std::min<size_t>(size - got, std::numeric_limits<int>::max()));
    const int ret = SSL_read(ssl_, p + got, want);
    if (ret > 0) {
      got += static_cast<size_t>(ret);
      continue;
    }
    if (SSL_get_error(ssl_, ret) == SSL_ERROR_WANT_READ) return Step::want_read;
    ec = error_for(ret);
    return Step::failed;
  }
  return Step::done;
}

bool TlsEngine::write(const void* data, size_t size, error_code& ec) {
  const auto* p = static_cast<const unsigned char*>(data);
  while (size > 0) {
    ERR_clear_error();
    const int n = static_cast<int>(std::min<size_t>(size, std::numeric_limits<int>::max()));
    const int ret = SSL_write(ssl_, p, n);
    if (ret <= 0) {
      ec = error_for(ret);
      return false;
    }
    p += ret;
    size -= static_cast<size_t>(ret);
  }
  return true;
}

void TlsEngine::shutdown() {
  ERR_clear_error();
  SSL_shutdown(ssl_);  // queues close_notify; the peer's is not waited for
  ERR_clear_error();
}

net::mutable_buffer TlsEngine::in_space() {
  if (in_begin_ == in_end_) {
    in_begin_ = in_end_ = 0;
  } else if (in_begin_ > 0 && kInBytes - in_end_ < (64 << 10)) {
    std::memmove(in_.get(), in_.get() + in_begin_, in_end_ - in_begin_);
    in_end_ -= in_begin_;
    in_begin_ = 0;
  }
  return net::buffer(in_.get() + in_end_, kInBytes - in_end_);
}

void TlsEngine::in_put(const void* data, size_t size) {
  while (size > 0) {
    const auto room = in_space();
    if (room.size() == 0) fail(ErrorCode::invalid_argument, "TLS: too many bytes before the handshake");
    const size_t n = std::min(size, room.size());
    std::memcpy(room.data(), data, n);
    in_commit(n);
    data = static_cast<const unsigned char*>(data) + n;
    size -= n;
  }
}

std::vector<unsigned char>& TlsEngine::take_out() {
  sending_.clear();
  std::swap(out_, sending_);
  return sending_;
}

int TlsEngine::bio_read(char* out, int len) {
  const size_t have = in_end_ - in_begin_;
  if (have == 0) {
    if (fd_ < 0 || eof_) return eof_ ? 0 : kWouldBlock;
    while (true) {
      const ssize_t n = ::recv(fd_, out, static_cast<size_t>(len), MSG_DONTWAIT);
      if (n > 0) return static_cast<int>(n);
      if (n == 0) {
        eof_ = true;
        return 0;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return kWouldBlock;
      errno_ = errno;
      return kFailed;
    }
  }
  const size_t n = std::min(have, static_cast<size_t>(len));
  std::memcpy(out, in_.get() + in_begin_, n);
  in_begin_ += n;
  return static_cast<int>(n);
}

int TlsEngine::bio_write(const char* data, int len) {
  out_.insert(out_.end(), data, data + len);
  return len;
}

namespace detail {

void set_handshake_side(SSL* ssl, bool server) {
  if (server) {
    SSL_set_accept_state(ssl);
  } else {
    SSL_set_connect_state(ssl);
  }
}

error_code socket_error(const error_code& ec) {
  return ec == net::error::eof ? error_code(net::ssl::error::stream_truncated) : ec;
}

}  // namespace detail

void TlsStream::shutdown(error_code& ec) {
  engine_->shutdown();
  net::write(next_.socket(), net::buffer(engine_->take_out()), ec);
}

void teardown(boost::beast::role_type role, TlsStream& stream, error_code& ec) {
  stream.shutdown(ec);
  boost::beast::websocket::teardown(role, stream.next_layer().socket(), ec);
}

}  // namespace surf::tls
