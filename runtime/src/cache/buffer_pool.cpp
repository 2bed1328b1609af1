#include "cache/buffer_pool.h"

#include <algorithm>
#include <string>

#include "surf/log.h"

namespace surf {

BufferPool::BufferPool(size_t max_free) : state_(std::make_shared<State>()) { state_->max_free = max_free; }

void BufferPool::set_limit(uint64_t bytes) {
  std::lock_guard lock(state_->mutex);
  state_->limit = bytes;
}

BufferPool::Stats BufferPool::stats() const {
  std::lock_guard lock(state_->mutex);
  return {state_->out_bytes, state_->free_bytes, state_->free.size()};
}

std::shared_ptr<ByteBuffer> BufferPool::acquire(size_t size) {
  if (size < kMinPooled) return std::make_shared<ByteBuffer>(size);
  std::unique_ptr<ByteBuffer> buf;
  {
    std::lock_guard lock(state_->mutex);
    auto& free = state_->free;
    // Best fit among spares big enough but not wastefully so; else the biggest (it grows).
    const size_t most = size * 2 + kMinPooled;
    auto best = free.end();
    for (auto it = free.begin(); it != free.end(); ++it) {
      const size_t cap = (*it)->capacity();
      if (cap >= size && cap <= most && (best == free.end() || cap < (*best)->capacity())) best = it;
    }
    if (best == free.end() && !free.empty()) {
      auto biggest = std::max_element(free.begin(), free.end(),
                                      [](const auto& a, const auto& b) { return a->capacity() < b->capacity(); });
      if ((*biggest)->capacity() < size) best = biggest;
    }
    if (best != free.end()) {
      buf = std::move(*best);
      free.erase(best);
      state_->free_bytes -= buf->capacity();
    }
  }
  if (!buf) buf = std::make_unique<ByteBuffer>();
  buf->clear();  // old contents are not kept: growing copies nothing
  if (buf->capacity() < size)
    log_debug("buffer pool: new allocation of " + std::to_string(size) + " bytes (had " +
              std::to_string(buf->capacity()) + ")");
  buf->resize(size);
  const uint64_t cap = buf->capacity();
  {
    std::lock_guard lock(state_->mutex);
    state_->out_bytes += cap;
  }
  std::weak_ptr<State> weak = state_;
  return std::shared_ptr<ByteBuffer>(buf.release(), [weak, cap](ByteBuffer* b) {
    std::unique_ptr<ByteBuffer> back(b);
    std::vector<std::unique_ptr<ByteBuffer>> dropped;  // freed after the lock: unmapping takes a while
    if (auto s = weak.lock()) {
      std::lock_guard lock(s->mutex);
      s->out_bytes -= cap;
      const uint64_t now = back->capacity();  // a user may have grown it
      auto over = [&] {
        return s->free.size() > s->max_free || (s->limit != 0 && s->out_bytes + s->free_bytes > s->limit);
      };
      if (now >= kMinPooled && s->max_free > 0) {
        // Kept, and the smallest spares dropped while over a bound: a big spare serves any request
        // (best fit takes one up to twice the size), while dropping it makes the next big request
        // grow a small one into fresh pages. A streamed pass that went from layers to lm_head and
        // back regrew lm_head's buffer on every pass when the returning buffer was the one dropped.
        s->free.push_back(std::move(back));
        s->free_bytes += now;
        std::sort(s->free.begin(), s->free.end(),
                  [](const auto& a, const auto& c) { return a->capacity() > c->capacity(); });
        while (!s->free.empty() && over()) {
          s->free_bytes -= s->free.back()->capacity();
          dropped.push_back(std::move(s->free.back()));
          s->free.pop_back();
        }
      }
    }
  });
}

}  // namespace surf
