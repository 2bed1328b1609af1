#include "server/chunk_cache.h"

namespace surf::server {

std::shared_ptr<const ByteBuffer> ChunkCache::get(const std::string& key,
                                                  const std::function<std::shared_ptr<ByteBuffer>()>& load, bool* hit) {
  {
    std::lock_guard lock(mutex_);
    auto it = map_.find(key);
    if (it != map_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.second);
      *hit = true;
      return it->second.first;
    }
  }
  *hit = false;
  std::shared_ptr<const ByteBuffer> data = load();
  std::lock_guard lock(mutex_);
  if (map_.count(key) || data->size() > max_bytes_) return data;
  lru_.push_front(key);
  map_[key] = {data, lru_.begin()};
  bytes_ += data->size();
  while (bytes_ > max_bytes_ && !lru_.empty()) {
    auto victim = map_.find(lru_.back());
    bytes_ -= victim->second.first->size();
    map_.erase(victim);
    lru_.pop_back();
  }
  return data;
}

uint64_t ChunkCache::bytes() const {
  std::lock_guard lock(mutex_);
  return bytes_;
}

}  // namespace surf::server
