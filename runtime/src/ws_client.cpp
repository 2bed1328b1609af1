// The weight-server client: one persistent WebSocket connection shared by demand fetches and
// prefetches (requests pipelined, answers matched by id), reconnect + retry with exponential
// backoff, checksum verification, receive buffers reused and decoded by reference.
#include <utility>

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "component_provider.h"
#include "surf/log.h"
#include "surf/runtime.h"
#include "surf/storage/chunk.h"
#include "surf/storage/msgpack_util.h"
#include "wire.h"

namespace net = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;

namespace surf {

namespace {

struct WsUrl {
  std::string host, port, model;
};

WsUrl parse_ws_url(const std::string& url) {
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

// Throws the server's error answer as a typed Error.
void check_ok(const Reply& r, const std::string& what) {
  const msgpack::object* ok = mp::field(r.root(), "ok");
  if (ok && ok->type == msgpack::type::BOOLEAN && ok->via.boolean) return;
  std::string code = "internal", message = "malformed answer";
  if (const msgpack::object* e = mp::field(r.root(), "error")) {
    if (auto* c = mp::field(*e, "code")) code = c->as<std::string>();
    if (auto* m = mp::field(*e, "message")) message = m->as<std::string>();
  }
  throw Error(wire::error_from_code(code), what + ": server answered " + code + ": " + message);
}

std::string string_field(const Reply& r, const char* name) {
  const msgpack::object* f = mp::field(r.root(), name);
  if (f == nullptr || f->type != msgpack::type::STR) fail(ErrorCode::network, std::string("answer lacks '") + name + "'");
  return f->as<std::string>();
}

class WsProvider final : public ComponentProvider {
 public:
  WsProvider(const std::string& url, const OpenOptions& o, std::shared_ptr<BufferPool> pool)
      : url_text_(url), url_(parse_ws_url(url)), options_(o), pool_(std::move(pool)) {
    retrying("connecting", [&] {
      auto conn = connection();
      if (url_.model.empty()) {
        ReplyPtr r = call(conn, [](ByteBuffer& b, uint64_t id) { wire::encode_list_models(b, id); }, 0);
        check_ok(*r, "list_models");
        std::vector<std::string> names;
        if (auto* models = mp::field(r->root(), "models"); models && models->type == msgpack::type::ARRAY) {
          for (uint32_t i = 0; i < models->via.array.size; ++i) {
            if (auto* n = mp::field(models->via.array.ptr[i], "name")) names.push_back(n->as<std::string>());
          }
        }
        if (names.size() != 1) {
          std::string list;
          for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
          fail(ErrorCode::invalid_argument, url_text_ + " serves " + std::to_string(names.size()) +
                                                " models (" + list + "): name one as ws://host:port/MODEL");
        }
        url_.model = names[0];
      }
      ReplyPtr r = call(conn, [&](ByteBuffer& b, uint64_t id) { wire::encode_get_manifest(b, id, url_.model); }, 0);
      check_ok(*r, "model '" + url_.model + "' on " + url_text_);
      manifest_ = Manifest::from_json(string_field(*r, "manifest"));
      return 0;
    });
  }

  const Manifest& manifest() const override { return manifest_; }
  std::string describe() const override { return "ws://" + url_.host + ":" + url_.port + "/" + url_.model; }

  FetchResult fetch(const std::string& id) override {
    const ManifestComponent* c = manifest_.find(id);
    if (c == nullptr) fail(ErrorCode::not_found, "component '" + id + "' is not in " + describe());
    return retrying("component '" + id + "'", [&] {
      auto conn = connection();
      ReplyPtr r = call(conn, [&](ByteBuffer& b, uint64_t rid) { wire::encode_get_chunk(b, rid, url_.model, id); }, c->bytes);
      check_ok(*r, "component '" + id + "' from " + describe());
      const msgpack::object* data = mp::field(r->root(), "data");
      if (data == nullptr || data->type != msgpack::type::BIN) fail(ErrorCode::network, "chunk answer without data");
      const auto* bytes = reinterpret_cast<const std::byte*>(data->via.bin.ptr);
      const size_t size = data->via.bin.size;
      // Use the checksum computed on arrival when it covered exactly this bin.
      const bool streamed = !r->streamed_checksum.empty() &&
                            bytes == static_cast<const std::byte*>(r->buffer->data().data()) + r->data_offset &&
                            r->data_offset + size == r->buffer->size();
      const std::string sum = streamed ? r->streamed_checksum : checksum_of(bytes, size);
      if (size != c->bytes || sum != c->checksum) {
        fail(ErrorCode::corrupt, "component '" + id + "' from " + describe() + ": checksum mismatch (manifest " +
                                     c->checksum + ", " + std::to_string(c->bytes) + " bytes; received " + sum + ", " +
                                     std::to_string(size) + " bytes)");
      }
      FetchResult out;
      out.bytes_fetched = size;
      out.component = decode_into_component(id, r, bytes, size, *pool_);
      return out;
    });
  }

 private:
  std::shared_ptr<WsConnection> connection() {
    std::lock_guard lock(mutex_);
    if (conn_ && conn_->alive()) return conn_;
    conn_.reset();
    auto c = std::make_shared<WsConnection>(url_, options_.token);
    c->connect(std::min(options_.request_timeout_ms, 10000));
    ReplyPtr r = call(c, [&](ByteBuffer& b, uint64_t id) { wire::encode_hello(b, id, options_.token); }, 0);
    check_ok(*r, "hello to " + url_text_);
    conn_ = c;
    return c;
  }

  ReplyPtr call(const std::shared_ptr<WsConnection>& conn, const std::function<void(ByteBuffer&, uint64_t)>& encode,
                size_t expected) {
    auto future = conn->request(encode, expected);
    if (future.wait_for(std::chrono::milliseconds(options_.request_timeout_ms)) != std::future_status::ready) {
      conn->close();
      fail(ErrorCode::timeout, "no answer within " + std::to_string(options_.request_timeout_ms) + " ms");
    }
    return future.get();
  }

  // Runs fn, retrying network failures, timeouts and server-side internal errors with
  // exponential backoff; other errors (not found, corrupt, unauthorized) are final.
  template <class Fn>
  auto retrying(const std::string& what, Fn&& fn) -> decltype(fn()) {
    const int attempts = std::max(1, options_.retry_attempts);
    const auto start = std::chrono::steady_clock::now();
    std::string last;
    for (int a = 0; a < attempts; ++a) {
      if (a > 0) {
        const int backoff = std::min(2000, options_.retry_backoff_ms << std::min(a - 1, 10));
        std::this_thread::sleep_for(std::chrono::milliseconds(backoff));
      }
      try {
        return fn();
      } catch (const Error& e) {
        if (e.code() != ErrorCode::network && e.code() != ErrorCode::timeout && e.code() != ErrorCode::internal) throw;
        last = e.what();
        log_info(what + ": attempt " + std::to_string(a + 1) + " failed: " + last);
        std::lock_guard lock(mutex_);
        conn_.reset();
      }
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fail(ErrorCode::network, what + ": weight server " + url_text_ + " failed " + std::to_string(attempts) +
                                 " attempts over " + std::to_string(static_cast<int>(secs * 1000)) + " ms; last error: " + last);
  }

  std::string url_text_;
  WsUrl url_;
  OpenOptions options_;
  std::shared_ptr<BufferPool> pool_;
  Manifest manifest_;
  std::mutex mutex_;
  std::shared_ptr<WsConnection> conn_;
};

}  // namespace

std::unique_ptr<ComponentProvider> make_ws_provider(const std::string& url, const OpenOptions& options,
                                                    std::shared_ptr<BufferPool> pool) {
  return std::make_unique<WsProvider>(url, options, std::move(pool));
}

}  // namespace surf
