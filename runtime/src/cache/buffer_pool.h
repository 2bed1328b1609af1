// A pool of big byte buffers: fetching into warm pages is far faster than into fresh ones on
// this class of machine, so freed component buffers are kept for the next fetch. A session has
// one: chunk reads from stores, WebSocket receives, decompression and f32 conversion all draw
// from it, and OpenOptions::spare_buffers bounds what it keeps.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "surf/storage/buffer.h"

namespace surf {

// Reuses big buffers: fresh pages cost ~50x more than warm ones on this class of machine.
class BufferPool {
 public:
  // Smaller requests are plain allocations, never served from or kept by the pool: fresh small
  // buffers cost little, and a big spare handed to one (a layer's norms, converted to f32) would
  // keep all its pages alive in the cache for a few kilobytes.
  static constexpr size_t kMinPooled = size_t{1} << 20;

  explicit BufferPool(size_t max_free = 4);
  // Bound on the bytes the pool accounts for: buffers handed out and not yet back, plus the spares
  // it keeps. A returned buffer is kept only while that total stays within the bound, else freed;
  // nothing is ever refused. 0: no bound (then max_free alone limits the spares).
  void set_limit(uint64_t bytes);
  // A buffer of at least `size` bytes (size() == size, contents undefined): the best fitting spare
  // (one at most about twice the size), else the biggest spare grown, else a new one. Pooled
  // buffers go back to the pool when their last user releases them.
  std::shared_ptr<ByteBuffer> acquire(size_t size);

  struct Stats {
    uint64_t out_bytes = 0;   // pooled buffers in use
    uint64_t free_bytes = 0;  // spares kept
    size_t free_count = 0;
  };
  Stats stats() const;

 private:
  struct State {
    mutable std::mutex mutex;
    std::vector<std::unique_ptr<ByteBuffer>> free;
    size_t max_free;
    uint64_t limit = 0;
    uint64_t out_bytes = 0, free_bytes = 0;
  };
  std::shared_ptr<State> state_;
};

}  // namespace surf
