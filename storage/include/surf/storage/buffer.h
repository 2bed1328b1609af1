// A growable, 64-byte aligned byte buffer that keeps its memory when shrunk, so hot paths can
// reuse warm pages instead of touching fresh ones (fresh pages cost ~0.3 GB/s on this class of VM).
#pragma once

#include <cstddef>
#include <cstdint>

namespace surf {

class ByteBuffer {
 public:
  ByteBuffer() = default;
  explicit ByteBuffer(size_t size) { resize(size); }
  ~ByteBuffer();
  ByteBuffer(ByteBuffer&& o) noexcept;
  ByteBuffer& operator=(ByteBuffer&& o) noexcept;
  ByteBuffer(const ByteBuffer&) = delete;
  ByteBuffer& operator=(const ByteBuffer&) = delete;

  // Contents up to min(old, new) size are kept; new bytes are uninitialised.
  void resize(size_t size);
  void reserve(size_t capacity);
  void clear() { size_ = 0; }
  void append(const void* data, size_t size);

  std::byte* data() { return data_; }
  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }

 private:
  std::byte* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

}  // namespace surf
