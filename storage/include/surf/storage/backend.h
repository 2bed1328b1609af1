// Where chunk stores live: a key/value object store (filesystem directory, S3 bucket).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "surf/storage/buffer.h"

namespace surf {

class StorageBackend {
 public:
  virtual ~StorageBackend() = default;
  // "file:/path" or "s3://bucket/prefix": for messages.
  virtual std::string describe() const = 0;
  // Whole object into `out` (resized). Error(not_found) if absent.
  virtual void get(const std::string& key, ByteBuffer& out) = 0;
  // Same, calling on_block(data, size) for consecutive pieces as they arrive, so a caller can
  // checksum while the bytes are still in cache. Default: one call after the whole object.
  using BlockFn = std::function<void(const std::byte* data, size_t size)>;
  virtual void get_blocks(const std::string& key, ByteBuffer& out, const BlockFn& on_block) {
    get(key, out);
    on_block(out.data(), out.size());
  }
  // Bytes [offset, offset+length) into dst. Error(invalid_argument) if beyond the object.
  virtual void get_range(const std::string& key, uint64_t offset, uint64_t length, void* dst) = 0;
  virtual void put(const std::string& key, const void* data, size_t size) = 0;
  virtual bool exists(const std::string& key) = 0;
  virtual uint64_t size(const std::string& key) = 0;
  // Keys starting with prefix, sorted.
  virtual std::vector<std::string> list(const std::string& prefix) = 0;
  virtual void remove(const std::string& key) = 0;
};

// Keys are relative paths of [A-Za-z0-9_.-] segments separated by '/'; "..", ".", empty segments,
// absolute paths and backslashes are refused with Error(invalid_argument).
void validate_key(std::string_view key);

std::unique_ptr<StorageBackend> open_filesystem_backend(const std::filesystem::path& root, bool create = false);

}  // namespace surf
