// A pool of big byte buffers: fetching into warm pages is far faster than into fresh ones on
// this class of machine, so freed component buffers are kept for the next fetch.
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
  // A buffer of at least `size` bytes (size() == size); returns to the pool when released.
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
