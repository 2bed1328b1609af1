// ws://host:port[/model]: components and the model's files from a weight server, with reconnect
// and retry.
#include <chrono>
#include <mutex>
#include <thread>

#include "sources/component_provider.h"
#include "surf/log.h"
#include "surf/runtime.h"
#include "surf/storage/chunk.h"
#include "transport/wire.h"
#include "text/model_files.h"
#include "transport/ws_connection.h"

namespace surf {

namespace {

// The answer's body of the kind asked for; an error answer becomes a typed Error.
template <class T>
const T& expect(const Reply& r, const std::string& what, const char* kind) {
  if (const auto* e = std::get_if<wire::ErrorAnswer>(&r.answer.body)) {
    throw Error(e->code, what + ": server answered " + wire::code_for(e->code) + ": " + e->message);
  }
  const T* body = std::get_if<T>(&r.answer.body);
  if (body == nullptr) fail(ErrorCode::network, what + ": the server's answer is not " + kind);
  return *body;
}

class WsProvider final : public ComponentProvider {
 public:
  WsProvider(const std::string& url, const OpenOptions& o, std::shared_ptr<BufferPool> pool)
      : url_text_(url), url_(parse_ws_url(url)), options_(o), pool_(std::move(pool)) {
    retrying("connecting", [&] {
      auto conn = connection();
      if (url_.model.empty()) {
        ReplyPtr r = call(conn, wire::ListModels{}, 0);
        const auto& list = expect<wire::ListModelsAnswer>(*r, "list_models", "a model list");
        std::string names;
        for (const auto& m : list.models) names += (names.empty() ? "" : ", ") + m.name;
        if (list.models.size() != 1) {
          fail(ErrorCode::invalid_argument, url_text_ + " serves " + std::to_string(list.models.size()) +
                                                " models (" + names + "): name one as ws://host:port/MODEL");
        }
        url_.model = list.models[0].name;
      }
      ReplyPtr r = call(conn, wire::GetManifest{url_.model}, 0);
      const std::string what = "model '" + url_.model + "' on " + url_text_;
      manifest_ = Manifest::from_json(expect<wire::ManifestAnswer>(*r, what, "a manifest").manifest);
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
      ReplyPtr r = call(conn, wire::GetChunk{url_.model, id}, c->bytes);
      const auto& chunk = expect<wire::ChunkAnswer>(*r, "component '" + id + "' from " + describe(), "a chunk");
      // The checksum computed while the data arrived, unless it could not be located early.
      const std::string sum = r->data_checksum.empty() ? checksum_of(chunk.data, chunk.size) : r->data_checksum;
      if (chunk.size != c->bytes || sum != c->checksum) {
        fail(ErrorCode::corrupt, "component '" + id + "' from " + describe() + ": checksum mismatch (manifest " +
                                     c->checksum + ", " + std::to_string(c->bytes) + " bytes; received " + sum + ", " +
                                     std::to_string(chunk.size) + " bytes)");
      }
      FetchResult out;
      out.bytes_fetched = chunk.size;
      // Tensors of a plain chunk stay in the received message: no copy.
      out.component = decode_into_component(id, r->message, chunk.data, chunk.size, *pool_);
      out.chunk = chunk.data;
      out.chunk_size = chunk.size;
      out.chunk_holder = r->message;
      return out;
    });
  }

  // A file the manifest lists (get_file), checked against its size and checksum.
  std::optional<std::string> read_file(const std::string& name) {
    const ManifestFile* f = manifest_.find_file(name);
    if (f == nullptr) return std::nullopt;
    return retrying("file '" + name + "'", [&] {
      auto conn = connection();
      ReplyPtr r = call(conn, wire::GetFile{url_.model, name}, f->bytes);
      const auto& file = expect<wire::FileAnswer>(*r, "file '" + name + "' from " + describe(), "a file");
      if (file.size != f->bytes || checksum_of(file.data, file.size) != f->checksum) {
        fail(ErrorCode::corrupt, "file '" + name + "' from " + describe() + " does not match its manifest entry (size or checksum)");
      }
      return std::optional<std::string>(std::string(reinterpret_cast<const char*>(file.data), file.size));
    });
  }

 private:
  std::shared_ptr<WsConnection> connection() {
    std::lock_guard lock(mutex_);
    if (conn_ && conn_->alive()) return conn_;
    conn_.reset();
    auto c = std::make_shared<WsConnection>(url_, options_.token, pool_);
    c->connect(std::min(options_.request_timeout_ms, 10000));
    ReplyPtr r = call(c, wire::Hello{wire::kProtocolVersion, options_.token}, 0);
    expect<wire::HelloAnswer>(*r, "hello to " + url_text_, "a hello");
    conn_ = c;
    return c;
  }

  ReplyPtr call(const std::shared_ptr<WsConnection>& conn, wire::RequestBody request, size_t expected) {
    auto future = conn->request(std::move(request), expected);
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

class WsFiles final : public ModelFiles {
 public:
  explicit WsFiles(std::shared_ptr<WsProvider> provider) : provider_(std::move(provider)) {}
  std::optional<std::string> read(const std::string& name) override { return provider_->read_file(name); }

 private:
  std::shared_ptr<WsProvider> provider_;
};

}  // namespace

std::unique_ptr<ComponentProvider> make_ws_provider(const std::string& url, const OpenOptions& options,
                                                    std::shared_ptr<BufferPool> pool) {
  return std::make_unique<WsProvider>(url, options, std::move(pool));
}

WsSource open_ws_source(const std::string& url, const OpenOptions& options, std::shared_ptr<BufferPool> pool) {
  auto p = std::make_shared<WsProvider>(url, options, std::move(pool));
  return {p, std::make_shared<WsFiles>(p)};
}

}  // namespace surf
