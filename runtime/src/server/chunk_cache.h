// The weight server's cache of chunks as stored, shared with in-flight answers; bounded in bytes,
// least recently used first out. It also holds what the server reads ahead: after answering for
// one component it reads the next ones in the model's execution order, so that a client's next
// request finds its chunk in memory rather than waiting for storage while the link idles. Read-
// ahead chunks have a bound of their own and leave that area when asked for; each key is read at
// most once at a time (a request for a chunk being read waits for that read).
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
  // max_bytes: the cache (0: none); ahead_bytes: chunks read ahead and not yet asked for.
  explicit ChunkCache(uint64_t max_bytes, uint64_t ahead_bytes = 0) : max_bytes_(max_bytes), ahead_max_(ahead_bytes) {}
  void set_ahead_bytes(uint64_t bytes);

  enum class Source { cache, ahead, load };
  // The chunk under `key`: from the cache, from the read-ahead area, from a read of it already
  // under way, or from load() (which runs without the lock; its exception reaches every waiter).
  // A chunk bigger than the whole cache is returned but not kept.
  std::shared_ptr<const ByteBuffer> get(const std::string& key,
                                        const std::function<std::shared_ptr<ByteBuffer>()>& load, Source* source);
  // Requests so far: a read-ahead decided at time t is skipped if its key was asked for since.
  uint64_t now() const;
  // Reads `key` into the read-ahead area unless it is cached, already read ahead, being read, or
  // was asked for after `decided_at` (that request read it); returns whether it read. Errors are
  // dropped (the request that wants the chunk reads it again and reports them).
  bool read_ahead(const std::string& key, const std::function<std::shared_ptr<ByteBuffer>()>& load,
                  uint64_t decided_at = UINT64_MAX);
  uint64_t bytes() const;
  uint64_t ahead_bytes() const;

 private:
  struct Pending;
  using Entry = std::pair<std::shared_ptr<const ByteBuffer>, std::list<std::string>::iterator>;
  void insert_locked(const std::string& key, std::shared_ptr<const ByteBuffer> data);
  void insert_ahead_locked(const std::string& key, std::shared_ptr<const ByteBuffer> data);
  uint64_t max_bytes_, ahead_max_;
  mutable std::mutex mutex_;
  std::list<std::string> lru_;  // front: most recent
  std::unordered_map<std::string, Entry> map_;
  uint64_t bytes_ = 0;
  std::list<std::string> ahead_order_;  // front: read last
  std::unordered_map<std::string, Entry> ahead_;
  uint64_t ahead_bytes_ = 0;
  std::unordered_map<std::string, std::shared_ptr<Pending>> pending_;
  uint64_t requests_ = 0;
  std::unordered_map<std::string, uint64_t> last_request_;  // key -> value of requests_ then
};

}  // namespace surf::server
