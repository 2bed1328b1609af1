// A pool of big byte buffers: fetching into warm pages is far faster than into fresh ones on
// this class of machine, so freed component buffers are kept for the next fetch. A session has
// one: chunk reads from stores, WebSocket receives, decompression and f32 conversion all draw
// from it, and OpenOptions::spare_buffers bounds what it keeps.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "surf/storage/buffer.h"

namespace surf {

// Reuses big buffers: fresh pages cost ~50x more than warm ones on this class of machine.
class BufferPool {
 public:
  explicit BufferPool(size_t max_free = 4);
  // A buffer of at least `size` bytes (size() == size, contents undefined): the best fitting free
  // one, else the biggest grown, else a new one. Returns to the pool when the last user releases it.
  std::shared_ptr<ByteBuffer> acquire(size_t size);

 private:
  struct State {
    std::mutex mutex;
    std::vector<std::unique_ptr<ByteBuffer>> free;
    size_t max_free;
  };
  std::shared_ptr<State> state_;
};

}  // namespace surf
