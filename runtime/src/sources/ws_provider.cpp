// ws://host:port[/model]: components from a weight server, with reconnect and retry.
#include <chrono>
#include <thread>

#include "sources/component_provider.h"
#include "surf/log.h"
#include "surf/runtime.h"
#include "transport/wire.h"
#include "transport/ws_connection.h"

namespace surf {

namespace {

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
