// ws[s]://host:port[/model], or several such URLs for one model (a fleet): components and the
// model's files from weight servers, spread over the healthy ones, with failover, reconnect and
// retry.
#include <algorithm>
#include <chrono>
#include <mutex>
#include <sstream>
#include <thread>

#include "sources/component_provider.h"
#include "surf/log.h"
#include "surf/runtime.h"
#include "surf/storage/chunk.h"
#include "surf/storage/tls.h"
#include "transport/wire.h"
#include "text/model_files.h"
#include "transport/ws_connection.h"

namespace surf {

namespace {

using Clock = std::chrono::steady_clock;

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

// Network failures, timeouts and server-side internal errors may pass; the rest will not.
bool retryable(const Error& e) {
  return e.code() == ErrorCode::network || e.code() == ErrorCode::timeout || e.code() == ErrorCode::internal;
}

// Where two servers' manifests of one model differ ("" if they agree on every chunk).
std::string manifest_difference(const Manifest& a, const Manifest& b) {
  if (a.model_type != b.model_type) return "model_type '" + a.model_type + "' vs '" + b.model_type + "'";
  if (a.components.size() != b.components.size()) {
    return std::to_string(a.components.size()) + " vs " + std::to_string(b.components.size()) + " components";
  }
  for (const auto& c : a.components) {
    const ManifestComponent* o = b.find(c.id);
    if (o == nullptr) return "component '" + c.id + "' missing";
    if (o->checksum != c.checksum || o->bytes != c.bytes) {
      return "component '" + c.id + "': " + c.checksum + " vs " + o->checksum;
    }
  }
  return "";
}

class WsProvider final : public ComponentProvider {
  struct Server {
    std::string text;  // as given
    WsUrl url;
    std::mutex connect_mutex;  // one connection attempt at a time per server
    // Guarded by the provider's mutex_:
    std::shared_ptr<WsConnection> conn;
    bool verified = false;  // its manifest agrees with the model's
    bool dead = false;      // a network failure; tried again from retry_at
    int failures = 0;       // consecutive, for the backoff
    Clock::time_point retry_at{};
    std::string excluded;  // non-empty: never used again (why)
    int in_flight = 0;
  };

 public:
  WsProvider(const std::string& urls, const OpenOptions& o, std::shared_ptr<BufferPool> pool)
      : url_text_(urls), options_(o), pool_(std::move(pool)) {
    std::stringstream ss(urls);
    std::string part;
    while (std::getline(ss, part, ',')) {
      if (part.empty()) continue;
      auto s = std::make_unique<Server>();
      s->text = part;
      s->url = parse_ws_url(part);
      if (!s->url.model.empty()) {
        if (!model_.empty() && model_ != s->url.model) {
          fail(ErrorCode::invalid_argument, "'" + urls + "' names two models ('" + model_ + "' and '" + s->url.model +
                                                "'): every server of a fleet serves the same model");
        }
        model_ = s->url.model;
      }
      servers_.push_back(std::move(s));
    }
    if (servers_.empty()) fail(ErrorCode::invalid_argument, "'" + urls + "' names no weight server");
    if (options_.connect_timeout_ms <= 0) {
      fail(ErrorCode::invalid_argument,
           "connect timeout must be positive, got " + std::to_string(options_.connect_timeout_ms) + " ms");
    }
    if (options_.ca_file.empty()) options_.ca_file = tls::ca_bundle_from_env(false);
    for (auto& s : servers_) s->url.model = model_;
    open();
  }

  const Manifest& manifest() const override { return manifest_; }

  std::string describe() const override {
    if (servers_.size() == 1) return servers_[0]->url.text();
    std::string d;
    for (const auto& s : servers_) {
      if (!d.empty()) d += ',';
      d += s->url.text();
    }
    return d;
  }

  FetchResult fetch(const std::string& id) override { return fetch(id, false); }
  FetchResult prefetch(const std::string& id) override { return fetch(id, true); }

  // A file the manifest lists (get_file), checked against its size and checksum.
  std::optional<std::string> read_file(const std::string& name) {
    const ManifestFile* f = manifest_.find_file(name);
    if (f == nullptr) return std::nullopt;
    return on_a_server("file '" + name + "'", false, [&](Server& s) {
      auto conn = connection(s);
      ReplyPtr r = call(conn, wire::GetFile{model_, name}, f->bytes);
      const std::string where = s.url.text();
      const auto& file = expect<wire::FileAnswer>(*r, "file '" + name + "' from " + where, "a file");
      if (file.size != f->bytes || checksum_of(file.data, file.size) != f->checksum) {
        fail(ErrorCode::corrupt,
             "file '" + name + "' from " + where + " does not match its manifest entry (size or checksum)");
      }
      return std::optional<std::string>(std::string(reinterpret_cast<const char*>(file.data), file.size));
    });
  }

 private:
  // Connects to every server; the first reachable one gives the model (and its manifest), the
  // others must agree with it. Servers unreachable now are retried later, when fetching.
  void open() {
    const int attempts = std::max(1, options_.retry_attempts);
    const auto start = Clock::now();
    // One deadline over every attempt: a server that accepts and never answers costs the connect
    // timeout, not attempts x (connect + request timeouts).
    const auto deadline = start + std::chrono::milliseconds(options_.connect_timeout_ms);
    std::string last;
    for (int a = 0; a < attempts; ++a) {
      if (a > 0) {
        const auto pause = std::min<Clock::duration>(std::chrono::milliseconds(backoff_ms(a)), deadline - Clock::now());
        if (pause > Clock::duration::zero()) std::this_thread::sleep_for(pause);
      }
      if (Clock::now() >= deadline) break;
      bool any = false;
      for (auto& s : servers_) {
        if (s->verified) continue;
        try {
          connection(*s, deadline);
          any = true;
        } catch (const Error& e) {
          if (!retryable(e)) throw;
          last = e.what();
          log_info("connecting to " + s->text + ": attempt " + std::to_string(a + 1) + " failed: " + last);
          mark_dead(*s);
        }
      }
      if (any || have_manifest_) return;
    }
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    if (Clock::now() >= deadline) {
      fail(ErrorCode::timeout,
           "connecting: weight server " + url_text_ + " did not answer within the connect timeout (" +
               timeout_text(options_.connect_timeout_ms) + ", --connect-timeout); last error: " + last);
    }
    fail(ErrorCode::network, "connecting: weight server " + url_text_ + " failed " + std::to_string(attempts) +
                                 " attempts over " + std::to_string(static_cast<int>(secs * 1000)) +
                                 " ms; last error: " + last);
  }

  static std::string timeout_text(int ms) {
    std::ostringstream t;
    t << ms / 1000.0 << " s";
    return t.str();
  }

  FetchResult fetch(const std::string& id, bool prefetch) {
    const ManifestComponent* c = manifest_.find(id);
    if (c == nullptr) fail(ErrorCode::not_found, "component '" + id + "' is not in " + describe());
    return on_a_server("component '" + id + "'", prefetch, [&](Server& s) { return fetch_from(s, id, *c); });
  }

  // Runs fn on a server picked for the attempt, retrying network failures, timeouts and
  // server-side internal errors with backoff (on another server when there is one); other
  // errors (not found, corrupt, unauthorized) are final, except that a fleet member whose
  // certificate or protocol is refused is dropped and the others tried.
  template <class Fn>
  auto on_a_server(const std::string& what, bool prefetch, Fn&& fn) -> decltype(fn(std::declval<Server&>())) {
    const int attempts = std::max(1, options_.retry_attempts);
    const auto start = Clock::now();
    std::string last;
    for (int a = 0; a < attempts; ++a) {
      Server& s = pick(prefetch, last);
      try {
        auto r = fn(s);
        std::lock_guard lock(mutex_);
        s.in_flight--;
        s.failures = 0;
        return r;
      } catch (const Error& e) {
        {
          std::lock_guard lock(mutex_);
          s.in_flight--;
        }
        if (!retryable(e)) {
          if (servers_.size() > 1 && (e.code() == ErrorCode::unauthorized || e.code() == ErrorCode::unsupported ||
                                      e.code() == ErrorCode::invalid_argument)) {
            exclude(s, e.what());
            last = e.what();
            continue;
          }
          throw;
        }
        last = e.what();
        log_info(what + " from " + s.text + ": attempt " + std::to_string(a + 1) + " failed: " + last);
        mark_dead(s);
      }
    }
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    fail(ErrorCode::network, what + ": weight server " + url_text_ + " failed " + std::to_string(attempts) +
                                 " attempts over " + std::to_string(static_cast<int>(secs * 1000)) +
                                 " ms; last error: " + last);
  }

  FetchResult fetch_from(Server& s, const std::string& id, const ManifestComponent& c) {
    auto conn = connection(s);
    ReplyPtr r = call(conn, wire::GetChunk{model_, id}, c.bytes);
    const std::string where = s.url.text();
    const auto& chunk = expect<wire::ChunkAnswer>(*r, "component '" + id + "' from " + where, "a chunk");
    // The checksum computed while the data arrived, unless it could not be located early.
    const std::string sum = r->data_checksum.empty() ? checksum_of(chunk.data, chunk.size) : r->data_checksum;
    if (chunk.size != c.bytes || sum != c.checksum) {
      fail(ErrorCode::corrupt, "component '" + id + "' from " + where + ": checksum mismatch (manifest " + c.checksum +
                                   ", " + std::to_string(c.bytes) + " bytes; received " + sum + ", " +
                                   std::to_string(chunk.size) + " bytes)");
    }
    FetchResult out;
    out.bytes_fetched = chunk.size;
    // Tensors of a plain chunk stay in the received message: no copy.
    out.component = decode_into_component(id, r->message, chunk.data, chunk.size, *pool_);
    out.chunk = chunk.data;  // the verified chunk, for a disk tier to keep
    out.chunk_size = chunk.size;
    out.chunk_holder = r->message;
    return out;
  }

  // The server for the next attempt (its in_flight counted): prefetches go round-robin over the
  // healthy servers, demand fetches to the least loaded one. With none healthy, the dead one due
  // first, after waiting for it (at most 2 s).
  Server& pick(bool prefetch, const std::string& last) {
    std::unique_lock lock(mutex_);
    const auto now = Clock::now();
    std::vector<Server*> healthy;
    Server* soonest = nullptr;
    for (auto& s : servers_) {
      if (!s->excluded.empty()) continue;
      if (!s->dead || s->retry_at <= now) {
        healthy.push_back(s.get());
      } else if (soonest == nullptr || s->retry_at < soonest->retry_at) {
        soonest = s.get();
      }
    }
    Server* chosen = nullptr;
    if (!healthy.empty()) {
      if (prefetch) {
        chosen = healthy[next_prefetch_++ % healthy.size()];
      } else {
        chosen = *std::min_element(healthy.begin(), healthy.end(),
                                   [](const Server* a, const Server* b) { return a->in_flight < b->in_flight; });
      }
    } else if (soonest != nullptr) {
      const auto wait = std::min<Clock::duration>(soonest->retry_at - now, std::chrono::milliseconds(2000));
      lock.unlock();
      std::this_thread::sleep_for(wait);
      lock.lock();
      chosen = soonest;
    } else {
      std::string why;
      for (const auto& s : servers_) why += (why.empty() ? "" : "; ") + s->text + ": " + s->excluded;
      fail(ErrorCode::network,
           "no usable weight server left (" + why + ")" + (last.empty() ? "" : "; last error: " + last));
    }
    chosen->in_flight++;
    return *chosen;
  }

  int backoff_ms(int failures) const {
    return std::min(2000, options_.retry_backoff_ms << std::min(std::max(failures - 1, 0), 10));
  }

  void mark_dead(Server& s) {
    std::lock_guard lock(mutex_);
    if (s.conn) s.conn->close();
    s.conn.reset();
    s.dead = true;
    s.failures++;
    // A dead member of a fleet waits longer (the others serve meanwhile); a lone server is
    // waited for within the fetch's retry budget.
    const int cap = servers_.size() > 1 ? 30000 : 2000;
    s.retry_at = Clock::now() +
                 std::chrono::milliseconds(std::min(cap, options_.retry_backoff_ms << std::min(s.failures - 1, 10)));
  }

  void exclude(Server& s, const std::string& why) {
    log_warn("weight server " + s.text + " is no longer used: " + why);
    std::lock_guard lock(mutex_);
    if (s.conn) s.conn->close();
    s.conn.reset();
    s.excluded = why;
  }

  // The server's live connection, or a new one: hello, and the first time the server's manifest,
  // checked against the model's (the first server reached defines it).
  std::shared_ptr<WsConnection> connection(Server& s) {
    return connection(s, Clock::now() + std::chrono::milliseconds(options_.connect_timeout_ms));
  }
  // Connect, TLS, upgrade and hello must be done by `deadline`.
  std::shared_ptr<WsConnection> connection(Server& s, Clock::time_point deadline) {
    std::lock_guard connecting(s.connect_mutex);
    {
      std::lock_guard lock(mutex_);
      if (s.conn && s.conn->alive()) return s.conn;
      s.conn.reset();
    }
    auto c = std::make_shared<WsConnection>(s.url, options_.token, pool_, options_.ca_file);
    auto left_ms = [&] {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) {
        fail(ErrorCode::timeout, "connecting to " + s.text + ": connect timeout (" +
                                     timeout_text(options_.connect_timeout_ms) + ") reached");
      }
      return static_cast<int>(left);
    };
    c->connect(left_ms());
    ReplyPtr r = call(c, wire::Hello{wire::kProtocolVersion, options_.token}, 0, left_ms());
    expect<wire::HelloAnswer>(*r, "hello to " + s.text, "a hello");
    bool verified;
    {
      std::lock_guard lock(mutex_);
      verified = s.verified;
    }
    if (!verified) {
      std::string model;
      {
        std::lock_guard lock(mutex_);
        model = model_;
      }
      if (model.empty()) model = only_model(c, s);
      r = call(c, wire::GetManifest{model}, 0);
      const std::string what = "model '" + model + "' on " + s.text;
      Manifest m = Manifest::from_json(expect<wire::ManifestAnswer>(*r, what, "a manifest").manifest);
      std::lock_guard lock(mutex_);
      if (!have_manifest_) {
        manifest_ = std::move(m);
        have_manifest_ = true;
        model_ = model;
        for (auto& other : servers_) other->url.model = model;
      } else if (const std::string diff = manifest_difference(manifest_, m); !diff.empty()) {
        fail(ErrorCode::invalid_argument, "weight servers disagree on model '" + model + "': " + s.text +
                                              " differs from the first server reached (" + diff +
                                              "); every server of a fleet must serve the same chunks");
      }
      s.verified = true;
    }
    std::lock_guard lock(mutex_);
    s.conn = c;
    s.dead = false;
    return c;
  }

  // The model a server serves when the URL names none: its only one.
  std::string only_model(const std::shared_ptr<WsConnection>& c, const Server& s) {
    ReplyPtr r = call(c, wire::ListModels{}, 0);
    const auto& list = expect<wire::ListModelsAnswer>(*r, "list_models", "a model list");
    std::string names;
    for (const auto& m : list.models) names += (names.empty() ? "" : ", ") + m.name;
    if (list.models.size() != 1) {
      fail(ErrorCode::invalid_argument, s.text + " serves " + std::to_string(list.models.size()) + " models (" + names +
                                            "): name one as ws://host:port/MODEL");
    }
    return list.models[0].name;
  }

  ReplyPtr call(const std::shared_ptr<WsConnection>& conn, wire::RequestBody request, size_t expected,
                int timeout_ms = -1) {
    if (timeout_ms < 0) timeout_ms = options_.request_timeout_ms;
    auto future = conn->request(std::move(request), expected);
    if (future.wait_for(std::chrono::milliseconds(timeout_ms)) != std::future_status::ready) {
      conn->close();
      fail(ErrorCode::timeout, "no answer within " + std::to_string(timeout_ms) + " ms");
    }
    return future.get();
  }

  std::string url_text_;
  OpenOptions options_;
  std::shared_ptr<BufferPool> pool_;
  std::vector<std::unique_ptr<Server>> servers_;
  mutable std::mutex mutex_;
  std::string model_;
  Manifest manifest_;  // written once, before open() returns
  bool have_manifest_ = false;
  size_t next_prefetch_ = 0;
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
