// The local disk tier (--disk-cache DIR --disk-cache-mb N): chunks fetched from a weight server or
// S3 are kept as files named by their checksum and size, verified when read back, evicted
// least-recently-used by bytes. Several processes may share the directory: a file is written
// under a temporary name and renamed into place (readers never see a torn file), a read takes the
// file it opened even if another process evicts it meanwhile, and a file that fails its checksum
// (a disk error, a crash before the data reached the disk) is removed and fetched again.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "sources/component_provider.h"
#include "surf/storage/buffer.h"

namespace surf {

class DiskTier {
 public:
  DiskTier(std::filesystem::path dir, uint64_t max_bytes);  // creates dir; Error(io) if it cannot

  enum class Read { miss, hit, corrupt };
  // Reads the chunk with this checksum and size into `out` and verifies it; a corrupt file is
  // removed and reported (warning) as Read::corrupt; a hit marks the file recently used.
  Read read(const std::string& checksum, uint64_t bytes, ByteBuffer& out);
  // Keeps a verified chunk (no-op if present or larger than the tier), then evicts the least
  // recently used files until the directory holds at most max_bytes. I/O errors only warn:
  // the tier is a cache, the fetch already succeeded.
  void write(const std::string& checksum, const std::byte* data, size_t size);

  // The file a chunk is kept in; empty if the checksum has characters unfit for a file name.
  std::filesystem::path path_of(const std::string& checksum, uint64_t bytes) const;
  const std::filesystem::path& dir() const { return dir_; }
  uint64_t max_bytes() const { return max_bytes_; }

 private:
  void evict();
  std::filesystem::path dir_;
  uint64_t max_bytes_;
};

// Wraps a network provider (ws://, s3://): each fetch reads the disk tier first and fills it after
// a network fetch. bytes_fetched counts network bytes only; disk reads count as disk_bytes.
std::unique_ptr<ComponentProvider> make_disk_tier_provider(std::shared_ptr<ComponentProvider> inner,
                                                           std::shared_ptr<DiskTier> tier,
                                                           std::shared_ptr<BufferPool> pool);

}  // namespace surf
