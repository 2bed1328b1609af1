#include "sources/disk_tier.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <random>
#include <vector>

#include "surf/log.h"
#include "surf/storage/chunk.h"

namespace fs = std::filesystem;

namespace surf {

namespace {

constexpr const char* kSuffix = ".chunk";
constexpr const char* kTempPrefix = ".tmp-";

// Closes a descriptor on scope exit.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

std::string temp_name() {
  static std::atomic<uint64_t> counter{0};
  thread_local std::mt19937_64 rng(std::random_device{}());
  return std::string(kTempPrefix) + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
         std::to_string(rng() % 1000000007);
}

}  // namespace

DiskTier::DiskTier(fs::path dir, uint64_t max_bytes) : dir_(std::move(dir)), max_bytes_(max_bytes) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec || !fs::is_directory(dir_)) {
    fail(ErrorCode::io, "disk cache: cannot create directory '" + dir_.string() + "': " + ec.message());
  }
  if (::access(dir_.c_str(), W_OK | R_OK | X_OK) != 0) {
    fail(ErrorCode::io, "disk cache: directory '" + dir_.string() + "' is not writable: " + std::strerror(errno));
  }
}

fs::path DiskTier::path_of(const std::string& checksum, uint64_t bytes) const {
  std::string name;
  for (char ch : checksum) {
    if (ch == ':') {
      name += '-';
    } else if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')) {
      name += ch;
    } else {
      return {};
    }
  }
  if (name.empty()) return {};
  return dir_ / (name + "-" + std::to_string(bytes) + kSuffix);
}

DiskTier::Read DiskTier::read(const std::string& checksum, uint64_t bytes, ByteBuffer& out) {
  const fs::path p = path_of(checksum, bytes);
  if (p.empty()) return Read::miss;
  Fd f{::open(p.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) return Read::miss;  // absent, or evicted by another process just now
  out.resize(bytes);
  StreamingChecksum sum;
  uint64_t at = 0;
  constexpr size_t kStep = 4 << 20;
  while (at < bytes) {
    const ssize_t n = ::pread(f.fd, out.data() + at, std::min<uint64_t>(kStep, bytes - at), static_cast<off_t>(at));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    sum.update(out.data() + at, static_cast<size_t>(n));
    at += static_cast<uint64_t>(n);
  }
  char extra;
  const bool longer = at == bytes && ::pread(f.fd, &extra, 1, static_cast<off_t>(at)) == 1;
  if (at != bytes || longer || sum.hex() != checksum) {
    log_warn("disk cache: " + p.string() + " is corrupt (" +
             (at != bytes || longer ? "wrong size" : "checksum mismatch") + "); removed, fetching it again");
    std::error_code ec;
    fs::remove(p, ec);
    return Read::corrupt;
  }
  ::futimens(f.fd, nullptr);  // recently used: the eviction order is modification time
  return Read::hit;
}

void DiskTier::write(const std::string& checksum, const std::byte* data, size_t size) {
  const fs::path p = path_of(checksum, size);
  if (p.empty() || size > max_bytes_) return;
  std::error_code ec;
  if (fs::exists(p, ec)) return;
  const fs::path tmp = dir_ / temp_name();
  {
    Fd f{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)};
    if (f.fd < 0) {
      log_warn("disk cache: cannot create " + tmp.string() + ": " + std::strerror(errno));
      return;
    }
    size_t at = 0;
    while (at < size) {
      const ssize_t n = ::write(f.fd, data + at, size - at);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        log_warn("disk cache: cannot write " + tmp.string() + ": " + std::strerror(errno));
        fs::remove(tmp, ec);
        return;
      }
      at += static_cast<size_t>(n);
    }
  }
  // Atomic: readers see no file or the whole file, never a part of it.
  fs::rename(tmp, p, ec);
  if (ec) {
    log_warn("disk cache: cannot rename into " + p.string() + ": " + ec.message());
    fs::remove(tmp, ec);
    return;
  }
  evict();
}

void DiskTier::evict() {
  struct Entry {
    fs::path path;
    fs::file_time_type used;
    uint64_t bytes;
  };
  std::vector<Entry> entries;
  uint64_t total = 0;
  std::error_code ec;
  const auto stale = fs::file_time_type::clock::now() - std::chrono::hours(1);
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    std::error_code fe;
    const std::string name = e.path().filename().string();
    const bool temp = name.rfind(kTempPrefix, 0) == 0;
    if (!temp && !name.ends_with(kSuffix)) continue;  // not ours
    const uint64_t bytes = e.file_size(fe);
    const auto used = e.last_write_time(fe);
    if (fe) continue;  // removed meanwhile by another process
    if (temp) {
      if (used < stale)
        fs::remove(e.path(), fe);  // left by a process that died mid-write
      else
        total += bytes;  // another writer's, counted but not ours to remove
      continue;
    }
    entries.push_back({e.path(), used, bytes});
    total += bytes;
  }
  if (total <= max_bytes_) return;
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.used < b.used; });
  for (const auto& e : entries) {
    if (total <= max_bytes_) break;
    std::error_code re;
    if (fs::remove(e.path, re))
      total -= e.bytes;
    else if (!re)
      total -= e.bytes;  // another process removed it first
  }
}

namespace {

class DiskTierProvider final : public ComponentProvider {
 public:
  DiskTierProvider(std::shared_ptr<ComponentProvider> inner, std::shared_ptr<DiskTier> tier,
                   std::shared_ptr<BufferPool> pool)
      : inner_(std::move(inner)), tier_(std::move(tier)), pool_(std::move(pool)) {}

  const Manifest& manifest() const override { return inner_->manifest(); }
  std::string describe() const override { return inner_->describe() + " (disk cache " + tier_->dir().string() + ")"; }

  FetchResult fetch(const std::string& id) override { return fetch(id, false); }
  // A miss goes to the inner provider's prefetch, so a fleet still spreads them over its servers.
  FetchResult prefetch(const std::string& id) override { return fetch(id, true); }

 private:
  FetchResult fetch(const std::string& id, bool ahead) {
    const ManifestComponent* c = manifest().find(id);
    if (c == nullptr) return inner_->fetch(id);  // the inner provider's not_found
    auto buf = pool_->acquire(c->bytes);
    const DiskTier::Read got = tier_->read(c->checksum, c->bytes, *buf);
    if (got == DiskTier::Read::hit) {
      FetchResult r;
      r.component = decode_into_component(id, buf, buf->data(), buf->size(), *pool_);
      r.disk_hits = 1;
      r.disk_bytes = c->bytes;
      return r;
    }
    buf.reset();
    FetchResult r = ahead ? inner_->prefetch(id) : inner_->fetch(id);
    if (got == DiskTier::Read::corrupt) r.disk_corrupt = 1;
    if (r.chunk != nullptr) tier_->write(c->checksum, r.chunk, r.chunk_size);
    r.chunk = nullptr;
    r.chunk_size = 0;
    r.chunk_holder.reset();
    return r;
  }

  std::shared_ptr<ComponentProvider> inner_;
  std::shared_ptr<DiskTier> tier_;
  std::shared_ptr<BufferPool> pool_;
};

}  // namespace

std::unique_ptr<ComponentProvider> make_disk_tier_provider(std::shared_ptr<ComponentProvider> inner,
                                                           std::shared_ptr<DiskTier> tier,
                                                           std::shared_ptr<BufferPool> pool) {
  return std::make_unique<DiskTierProvider>(std::move(inner), std::move(tier), std::move(pool));
}

}  // namespace surf
