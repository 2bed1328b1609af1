// What the parts of a weight server share: its options, the models it serves, the chunk cache,
// the metrics and the pool of threads that read chunks from storage.
#pragma once

#include <utility>  // Asio wants it first with GCC 12

#include <boost/asio/ssl/context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "server/chunk_cache.h"
#include "server/limits.h"
#include "server/metrics.h"
#include "server/rate_limiter.h"
#include "surf/runtime.h"
#include "surf/storage/backend.h"
#include "surf/storage/manifest.h"

namespace surf::server {

struct ServedModel {
  std::string name;
  std::shared_ptr<StorageBackend> backend;
  Manifest manifest;
  std::string manifest_text;  // served verbatim
  // The components after each one in execution order, as read-ahead follows them.
  std::unordered_map<std::string, std::vector<const ManifestComponent*>> next;
};

struct ServerState {
  ServeOptions options;
  std::map<std::string, ServedModel> models;
  ChunkCache cache;
  RateLimiter limiter{options.max_mbps};  // --max-mbps, shared by all connections
  Metrics metrics;
  // Connections from accept to close, request-buffer memory, rate-limited warnings (limits.h).
  ConnectionLimits limits{options.max_connections, options.max_connections_per_address};
  BufferBudget buffer_budget{options.max_buffer_bytes};
  LogLimiter refusal_log{std::chrono::seconds(10)}, accept_log{std::chrono::seconds(10)};
  boost::asio::thread_pool loaders{2};  // storage reads, off the I/O threads
  explicit ServerState(const ServeOptions& o) : options(o), cache(o.cache_bytes) {}

  // The TLS context new connections take (null: plain ws:// and http://). A reload swaps it; each
  // connection keeps the one it started with for its whole life.
  std::shared_ptr<boost::asio::ssl::context> tls() const {
    std::lock_guard lock(tls_mutex_);
    return tls_;
  }
  void set_tls(std::shared_ptr<boost::asio::ssl::context> ctx) {
    std::lock_guard lock(tls_mutex_);
    tls_ = std::move(ctx);
  }

 private:
  mutable std::mutex tls_mutex_;
  std::shared_ptr<boost::asio::ssl::context> tls_;
};

// Compares a presented token with the server's in time independent of where they differ.
inline bool token_matches(const std::string& want, std::string_view got) {
  if (want.size() != got.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < want.size(); ++i) diff |= static_cast<unsigned char>(want[i] ^ got[i]);
  return diff == 0;
}

// The paths a WebSocket upgrade may ask for: `/` or `/MODEL` (a name in [A-Za-z0-9_.-], no
// `..`; whether the server has that model is get_manifest's to say). Anything else is a 404.
inline bool upgrade_path_ok(std::string_view target) {
  if (target == "/") return true;
  return target.size() > 1 && target[0] == '/' && is_valid_component_id(target.substr(1));
}

}  // namespace surf::server
