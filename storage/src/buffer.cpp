#include "surf/storage/buffer.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace surf {

namespace {
// Buffers this large are placed on 2 MiB boundaries and asked for transparent huge pages. On the
// virtual machines this runs on, first touching a 4 KiB page costs far more than writing it (a
// fresh 131 MB lm_head buffer took ~950 ms to fill with 4 KiB pages, ~17 ms with 2 MiB pages), and
// a streamed pass that needs one fresh buffer loses its overlap. Smaller buffers keep small pages:
// a huge page would back them with up to 2 MiB of memory they never use.
constexpr size_t kHugePage = size_t{2} << 20;
}  // namespace

ByteBuffer::~ByteBuffer() { std::free(data_); }

ByteBuffer::ByteBuffer(ByteBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      capacity_(std::exchange(o.capacity_, 0)) {}

ByteBuffer& ByteBuffer::operator=(ByteBuffer&& o) noexcept {
  if (this != &o) {
    std::free(data_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    capacity_ = std::exchange(o.capacity_, 0);
  }
  return *this;
}

void ByteBuffer::reserve(size_t capacity) {
  if (capacity <= capacity_) return;
  if (capacity > (size_t{1} << 62)) throw std::bad_alloc();  // also keeps the rounding below from wrapping
  size_t rounded = ((capacity + 63) / 64) * 64;
  std::byte* p = nullptr;
  if (rounded >= kHugePage) {
    void* raw = nullptr;
    if (::posix_memalign(&raw, kHugePage, rounded) != 0) throw std::bad_alloc();
    p = static_cast<std::byte*>(raw);
    // A hint: where THP is off or unsupported this fails and the buffer keeps small pages.
    ::madvise(p, rounded / 4096 * 4096, MADV_HUGEPAGE);  // whole pages of this buffer only
  } else {
    p = static_cast<std::byte*>(std::aligned_alloc(64, rounded));
    if (p == nullptr) throw std::bad_alloc();
  }
  if (size_) std::memcpy(p, data_, size_);
  std::free(data_);
  data_ = p;
  capacity_ = rounded;
}

void ByteBuffer::resize(size_t size) {
  if (size > capacity_) reserve(size);
  size_ = size;
}

void ByteBuffer::append(const void* data, size_t size) {
  if (size > capacity_ - size_) reserve(std::max(size_ + size, capacity_ * 2));
  std::memcpy(data_ + size_, data, size);
  size_ += size;
}

}  // namespace surf
