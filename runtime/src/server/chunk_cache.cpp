#include "server/chunk_cache.h"

#include <condition_variable>
#include <exception>

namespace surf::server {

struct ChunkCache::Pending {
  bool done = false;
  std::shared_ptr<const ByteBuffer> data;
  std::exception_ptr error;
  std::condition_variable cv;
};

void ChunkCache::set_ahead_bytes(uint64_t bytes) {
  std::lock_guard lock(mutex_);
  ahead_max_ = bytes;
}

void ChunkCache::insert_locked(const std::string& key, std::shared_ptr<const ByteBuffer> data) {
  if (map_.count(key) || data->size() > max_bytes_) return;
  bytes_ += data->size();
  lru_.push_front(key);
  map_[key] = {std::move(data), lru_.begin()};
  while (bytes_ > max_bytes_ && !lru_.empty()) {
    auto victim = map_.find(lru_.back());
    bytes_ -= victim->second.first->size();
    map_.erase(victim);
    lru_.pop_back();
  }
}

void ChunkCache::insert_ahead_locked(const std::string& key, std::shared_ptr<const ByteBuffer> data) {
  if (ahead_.count(key) || data->size() > ahead_max_) return;
  ahead_bytes_ += data->size();
  ahead_order_.push_front(key);
  ahead_[key] = {std::move(data), ahead_order_.begin()};
  while (ahead_bytes_ > ahead_max_ && !ahead_order_.empty()) {  // the oldest read gives way
    auto victim = ahead_.find(ahead_order_.back());
    ahead_bytes_ -= victim->second.first->size();
    ahead_.erase(victim);
    ahead_order_.pop_back();
  }
}

std::shared_ptr<const ByteBuffer> ChunkCache::get(const std::string& key,
                                                  const std::function<std::shared_ptr<ByteBuffer>()>& load,
                                                  Source* source) {
  std::unique_lock lock(mutex_);
  last_request_[key] = ++requests_;
  if (auto it = map_.find(key); it != map_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.second);
    *source = Source::cache;
    return it->second.first;
  }
  if (auto it = ahead_.find(key); it != ahead_.end()) {
    std::shared_ptr<const ByteBuffer> data = std::move(it->second.first);
    ahead_order_.erase(it->second.second);
    ahead_bytes_ -= data->size();
    ahead_.erase(it);
    insert_locked(key, data);
    *source = Source::ahead;
    return data;
  }
  if (auto it = pending_.find(key); it != pending_.end()) {
    const std::shared_ptr<Pending> p = it->second;
    p->cv.wait(lock, [&] { return p->done; });
    if (p->data) {
      // Read ahead while this request waited: it is this request's now.
      if (auto a = ahead_.find(key); a != ahead_.end()) {
        ahead_order_.erase(a->second.second);
        ahead_bytes_ -= a->second.first->size();
        ahead_.erase(a);
        insert_locked(key, p->data);
      }
      *source = Source::ahead;
      return p->data;
    }
    // That read failed: read again here, so this request reports its own error.
  }
  *source = Source::load;
  auto p = std::make_shared<Pending>();
  pending_[key] = p;
  lock.unlock();
  std::shared_ptr<const ByteBuffer> data;
  std::exception_ptr error;
  try {
    data = load();
  } catch (...) {
    error = std::current_exception();
  }
  lock.lock();
  pending_.erase(key);
  p->done = true;
  p->data = data;
  p->cv.notify_all();
  if (error) std::rethrow_exception(error);
  insert_locked(key, data);
  return data;
}

uint64_t ChunkCache::now() const {
  std::lock_guard lock(mutex_);
  return requests_;
}

bool ChunkCache::read_ahead(const std::string& key, const std::function<std::shared_ptr<ByteBuffer>()>& load,
                            uint64_t decided_at) {
  std::unique_lock lock(mutex_);
  if (ahead_max_ == 0 || map_.count(key) || ahead_.count(key) || pending_.count(key)) return false;
  if (auto it = last_request_.find(key); it != last_request_.end() && it->second > decided_at) return false;
  auto p = std::make_shared<Pending>();
  pending_[key] = p;
  lock.unlock();
  std::shared_ptr<const ByteBuffer> data;
  try {
    data = load();
  } catch (...) {
  }
  lock.lock();
  pending_.erase(key);
  p->done = true;
  p->data = data;
  p->cv.notify_all();
  if (data) insert_ahead_locked(key, data);
  return data != nullptr;
}

uint64_t ChunkCache::bytes() const {
  std::lock_guard lock(mutex_);
  return bytes_;
}

uint64_t ChunkCache::ahead_bytes() const {
  std::lock_guard lock(mutex_);
  return ahead_bytes_;
}

}  // namespace surf::server
