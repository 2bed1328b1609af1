// One persistent WebSocket connection to a weight server (docs/protocol.md), shared by demand
// fetches and prefetches: requests pipelined, answers matched by id, chunk data checksummed
// while it arrives, receive buffers reused.
#pragma once

#include <utility>

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "surf/storage/chunk.h"
#include "surf/storage/msgpack_util.h"

namespace surf {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;



struct WsUrl {
  std::string host, port, model;
};

inline WsUrl parse_ws_url(const std::string& url) {
  if (url.rfind("ws://", 0) != 0) {
    fail(ErrorCode::invalid_argument, "'" + url + "' is not a ws://host:port[/model] URL (wss:// is not supported yet)");
  }
  std::string rest = url.substr(5);
  WsUrl u;
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
    fail(ErrorCode::invalid_argument, "'" + url + "' is not a ws://host:port[/model] URL");
  }
  return u;
}

// A received answer: the message bytes (kept alive while tensors reference them) and its map.
struct Reply {
  std::shared_ptr<beast::flat_buffer> buffer;
  msgpack::object_handle handle;
  // Checksum of the bytes from data_offset to the end, computed while they arrived (empty if
  // the answer's layout was not recognised in its first bytes).
  size_t data_offset = 0;
  std::string streamed_checksum;
  const msgpack::object& root() const { return handle.get(); }
};

// Hashes a chunk answer's data while the message is still arriving, piece by piece in cache,
// instead of a second pass over hundreds of megabytes afterwards.
struct IncomingMessage {
  std::shared_ptr<beast::flat_buffer> buffer;
  size_t data_offset = std::string::npos;  // found from the header in the first bytes
  size_t hashed = 0;
  bool give_up = false;
  StreamingChecksum sum;

  void on_bytes() {
    const auto* p = static_cast<const unsigned char*>(buffer->data().data());
    const size_t size = buffer->size();
    if (data_offset == std::string::npos && !give_up) {
      // The chunk answer's header ends with the key "data" (fixstr a4) and a bin32 header (c6).
      static const unsigned char marker[] = {0xa4, 'd', 'a', 't', 'a', 0xc6};
      const size_t window = std::min<size_t>(size, 4096);
      for (size_t i = 0; i + 10 <= window; ++i) {
        if (std::memcmp(p + i, marker, sizeof marker) == 0 && (i + 10) % 64 == 0) {
          data_offset = hashed = i + 10;
          break;
        }
      }
      if (data_offset == std::string::npos && size >= 4096) give_up = true;
    }
    if (data_offset != std::string::npos && size > hashed) {
      sum.update(p + hashed, size - hashed);
      hashed = size;
    }
  }
};
using ReplyPtr = std::shared_ptr<const Reply>;

// Received-message buffers kept warm between messages; shared with the buffers' deleters so a
// buffer released after its connection is gone still has somewhere to go.
struct BufferFreeList {
  std::mutex mutex;
  std::vector<std::unique_ptr<beast::flat_buffer>> free;
};

// Handlers capture `this`: they only run on the connection's own thread, which the destructor
// joins, so no handler outlives the object and the thread never holds the last reference.
class WsConnection {
 public:
  WsConnection(const WsUrl& url, std::string token) : url_(url), token_(std::move(token)), ws_(net::make_strand(ioc_)) {}

  ~WsConnection() {
    fail_all("connection closed");
    work_.reset();
    ioc_.stop();
    if (thread_.joinable()) thread_.join();
  }

  // Connects and completes the WebSocket handshake, or throws Error(network/timeout).
  void connect(int timeout_ms) {
    auto ready = std::make_shared<std::promise<void>>();
    auto done = ready->get_future();
    auto resolver = std::make_shared<tcp::resolver>(ioc_);
    WsConnection* self = this;
    resolver->async_resolve(url_.host, url_.port, [self, resolver, ready, timeout_ms](beast::error_code ec, tcp::resolver::results_type results) {
      if (ec) return ready->set_exception(std::make_exception_ptr(Error(ErrorCode::network, "cannot resolve " + self->url_.host + ": " + ec.message())));
      beast::get_lowest_layer(self->ws_).expires_after(std::chrono::milliseconds(timeout_ms));
      beast::get_lowest_layer(self->ws_).async_connect(results, [self, ready](beast::error_code cec, const tcp::endpoint&) {
        if (cec) return ready->set_exception(std::make_exception_ptr(Error(ErrorCode::network, "cannot connect to " + self->url_.host + ":" + self->url_.port + ": " + cec.message())));
        beast::get_lowest_layer(self->ws_).expires_never();
        beast::error_code ignored;
        beast::get_lowest_layer(self->ws_).socket().set_option(tcp::no_delay(true), ignored);  // small requests go out at once
        self->ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::client));
        const std::string token = self->token_;
        self->ws_.set_option(websocket::stream_base::decorator([token](websocket::request_type& req) {
          req.set(beast::http::field::user_agent, "surf-client");
          if (!token.empty()) req.set(beast::http::field::authorization, "Bearer " + token);
        }));
        self->ws_.read_message_max(std::numeric_limits<uint64_t>::max());
        self->ws_.write_buffer_bytes(1 << 16);
        self->ws_.auto_fragment(false);
        self->ws_.binary(true);
        self->ws_.async_handshake(self->url_.host + ":" + self->url_.port, "/" + self->url_.model, [self, ready](beast::error_code hec) {
          if (hec) return ready->set_exception(std::make_exception_ptr(Error(ErrorCode::network, "WebSocket handshake with " + self->url_.host + ":" + self->url_.port + " failed: " + hec.message())));
          ready->set_value();
          self->read();
        });
      });
    });
    work_.emplace(net::make_work_guard(ioc_));
    thread_ = std::thread([this] { ioc_.run(); });
    if (done.wait_for(std::chrono::milliseconds(timeout_ms + 1000)) != std::future_status::ready) {
      close();
      fail(ErrorCode::timeout, "connecting to " + url_.host + ":" + url_.port + " timed out");
    }
    try {
      done.get();
    } catch (...) {
      close();
      throw;
    }
  }

  // Sends a request built by `encode(buffer, id)`; the answer may need `expected_bytes`.
  std::future<ReplyPtr> request(const std::function<void(ByteBuffer&, uint64_t)>& encode, size_t expected_bytes) {
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
      encode(*msg, id);
      future = pending_[id].get_future();
      reserve_hint_ = std::max(reserve_hint_, expected_bytes + 4096);
    }
    net::post(ws_.get_executor(), [this, msg] {
      outbox_.push_back(msg);
      if (outbox_.size() == 1) write();
    });
    return future;
  }

  bool alive() const {
    std::lock_guard lock(mutex_);
    return !dead_;
  }

  // Fails pending requests and closes the socket; the object stays valid until destroyed.
  void close() {
    fail_all("connection closed");
    net::post(ws_.get_executor(), [this] {
      beast::error_code ignored;
      beast::get_lowest_layer(ws_).socket().close(ignored);
    });
  }

 private:
  std::shared_ptr<beast::flat_buffer> take_buffer() {
    std::unique_ptr<beast::flat_buffer> b;
    size_t hint;
    {
      std::lock_guard lock(mutex_);
      hint = reserve_hint_;
    }
    {
      std::lock_guard lock(buffers_->mutex);
      if (!buffers_->free.empty()) {
        b = std::move(buffers_->free.back());
        buffers_->free.pop_back();
      }
    }
    if (!b) b = std::make_unique<beast::flat_buffer>();
    b->consume(b->size());
    if (b->capacity() < hint) b->reserve(hint);  // one allocation, no growth copies mid-message
    return std::shared_ptr<beast::flat_buffer>(b.release(), [list = buffers_](beast::flat_buffer* p) {
      std::lock_guard lock(list->mutex);
      if (list->free.size() < 4) {
        list->free.emplace_back(p);
      } else {
        delete p;
      }
    });
  }

  void read() {
    auto msg = std::make_shared<IncomingMessage>();
    msg->buffer = take_buffer();
    read_more(msg);
  }

  void read_more(const std::shared_ptr<IncomingMessage>& msg) {
    ws_.async_read_some(*msg->buffer, 1 << 20, [this, msg](beast::error_code ec, size_t) {
      WsConnection* self = this;
      if (ec) return self->fail_all("connection to " + self->url_.host + ":" + self->url_.port + " lost: " + ec.message());
      msg->on_bytes();
      if (!ws_.is_message_done()) return read_more(msg);
      const auto& buf = msg->buffer;
      auto reply = std::make_shared<Reply>();
      reply->buffer = buf;
      if (msg->data_offset != std::string::npos) {
        reply->data_offset = msg->data_offset;
        reply->streamed_checksum = msg->sum.hex();
      }
      uint64_t id = 0;
      try {
        reply->handle = msgpack::unpack(static_cast<const char*>(buf->data().data()), buf->size(), mp::reference_bins, nullptr);
        if (auto* f = mp::field(reply->root(), "id")) id = f->as<uint64_t>();
      } catch (const std::exception& e) {
        return self->fail_all(std::string("malformed answer from the weight server: ") + e.what());
      }
      std::promise<ReplyPtr> p;
      bool found = false;
      {
        std::lock_guard lock(self->mutex_);
        auto it = self->pending_.find(id);
        if (it != self->pending_.end()) {
          p = std::move(it->second);
          self->pending_.erase(it);
          found = true;
        }
      }
      if (found) p.set_value(reply);
      self->read();
    });
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
  net::io_context ioc_;
  websocket::stream<beast::tcp_stream> ws_;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work_;
  std::thread thread_;
  std::deque<std::shared_ptr<ByteBuffer>> outbox_;  // io thread only

  mutable std::mutex mutex_;
  std::map<uint64_t, std::promise<ReplyPtr>> pending_;
  std::shared_ptr<BufferFreeList> buffers_ = std::make_shared<BufferFreeList>();
  uint64_t next_id_ = 1;
  size_t reserve_hint_ = 1 << 16;
  bool dead_ = false;
  std::string dead_reason_;
};

}  // namespace surf
