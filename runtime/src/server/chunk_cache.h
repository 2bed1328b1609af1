// The weight server's cache of chunks as stored, shared with in-flight answers; bounded in bytes,
// least recently used first out.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "surf/storage/buffer.h"

namespace surf::server {

class ChunkCache {
 public:
  explicit ChunkCache(uint64_t max_bytes) : max_bytes_(max_bytes) {}

  // The chunk under `key`, from the cache (*hit = true) or from load() (*hit = false), which runs
  // without the lock. A chunk bigger than the whole cache is returned but not kept.
  std::shared_ptr<const ByteBuffer> get(const std::string& key,
                                        const std::function<std::shared_ptr<ByteBuffer>()>& load, bool* hit);
  uint64_t bytes() const;

 private:
  using Entry = std::pair<std::shared_ptr<const ByteBuffer>, std::list<std::string>::iterator>;
  uint64_t max_bytes_;
  mutable std::mutex mutex_;
  std::list<std::string> lru_;  // front: most recent
  std::unordered_map<std::string, Entry> map_;
  uint64_t bytes_ = 0;
};

}  // namespace surf::server
