#include "cache/buffer_pool.h"

#include <algorithm>
#include <string>

#include "surf/log.h"

namespace surf {

BufferPool::BufferPool(size_t max_free) : state_(std::make_shared<State>()) { state_->max_free = max_free; }

std::shared_ptr<ByteBuffer> BufferPool::acquire(size_t size) {
  std::unique_ptr<ByteBuffer> buf;
  {
    std::lock_guard lock(state_->mutex);
    auto& free = state_->free;
    // Best fit among buffers big enough; else the biggest (it grows).
    auto best = free.end();
    for (auto it = free.begin(); it != free.end(); ++it) {
      if ((*it)->capacity() >= size && (best == free.end() || (*it)->capacity() < (*best)->capacity())) best = it;
    }
    if (best == free.end() && !free.empty()) {
      best = std::max_element(free.begin(), free.end(),
                              [](const auto& a, const auto& b) { return a->capacity() < b->capacity(); });
    }
    if (best != free.end()) {
      buf = std::move(*best);
      free.erase(best);
    }
  }
  if (!buf) buf = std::make_unique<ByteBuffer>();
  buf->clear();  // old contents are not kept: growing copies nothing
  if (buf->capacity() < size)
    log_debug("buffer pool: new allocation of " + std::to_string(size) + " bytes (had " +
              std::to_string(buf->capacity()) + ")");
  buf->resize(size);
  std::weak_ptr<State> weak = state_;
  return std::shared_ptr<ByteBuffer>(buf.release(), [weak](ByteBuffer* b) {
    if (auto s = weak.lock()) {
      std::lock_guard lock(s->mutex);
      if (s->free.size() < s->max_free) {
        s->free.emplace_back(b);
        return;
      }
    }
    delete b;
  });
}

}  // namespace surf
