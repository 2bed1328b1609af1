// What the parts of a weight server share: its options, the models it serves, the chunk cache,
// the metrics and the pool of threads that read chunks from storage.
#pragma once

#include <boost/asio/thread_pool.hpp>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "server/chunk_cache.h"
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
};

struct ServerState {
  ServeOptions options;
  std::map<std::string, ServedModel> models;
  ChunkCache cache;
  RateLimiter limiter{options.max_mbps};  // --max-mbps, shared by all connections
  Metrics metrics;
  boost::asio::thread_pool loaders{2};  // storage reads, off the I/O threads
  explicit ServerState(const ServeOptions& o) : options(o), cache(o.cache_bytes) {}
};

// Compares a presented token with the server's in time independent of where they differ.
inline bool token_matches(const std::string& want, std::string_view got) {
  if (want.size() != got.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < want.size(); ++i) diff |= static_cast<unsigned char>(want[i] ^ got[i]);
  return diff == 0;
}

}  // namespace surf::server
