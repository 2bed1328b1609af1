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

#include "server/chunk_cache.h"
#include "server/metrics.h"
#include "surf/runtime.h"
#include "surf/storage/backend.h"
#include "surf/storage/manifest.h"

namespace surf::server {

struct ServedModel {
  std::string name;
  std::shared_ptr<StorageBackend> backend;
  Manifest manifest;
  std::string manifest_text;  // served verbatim
};

struct ServerState {
  ServeOptions options;
  std::map<std::string, ServedModel> models;
  ChunkCache cache;
  Metrics metrics;
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

}  // namespace surf::server
