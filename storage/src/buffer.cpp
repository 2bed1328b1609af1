#include "surf/storage/buffer.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace surf {

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
  auto* p = static_cast<std::byte*>(std::aligned_alloc(64, rounded));
  if (p == nullptr) throw std::bad_alloc();
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
