#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "file_io.h"
#include "surf/error.h"
#include "surf/storage/backend.h"

namespace fs = std::filesystem;

namespace surf {

void validate_key(std::string_view key) {
  auto bad = [&](const char* why) {
    fail(ErrorCode::invalid_argument, "invalid storage key '" + std::string(key) + "': " + why);
  };
  if (key.empty()) bad("empty");
  if (key.front() == '/') bad("absolute paths are not allowed");
  size_t start = 0;
  while (start <= key.size()) {
    size_t slash = key.find('/', start);
    std::string_view seg = key.substr(start, slash == key.npos ? key.npos : slash - start);
    if (seg.empty()) bad("empty path segment");
    if (seg == "." || seg == "..") bad("'.' and '..' segments are not allowed");
    for (char c : seg) {
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) {
        bad("only [A-Za-z0-9_.-] and '/' are allowed");
      }
    }
    if (slash == key.npos) break;
    start = slash + 1;
  }
}

namespace {

[[noreturn]] void io_error(const std::string& what, const fs::path& p) {
  const int err = errno;
  fail(err == ENOENT ? ErrorCode::not_found : ErrorCode::io, what + " '" + p.string() + "': " + std::strerror(err));
}

class FilesystemBackend final : public StorageBackend {
 public:
  explicit FilesystemBackend(fs::path root) : root_(std::move(root)) {}

  std::string describe() const override { return "file:" + root_.string(); }

  void get(const std::string& key, ByteBuffer& out) override {
    get_blocks(key, out, [](const std::byte*, size_t) {});
  }

  void get_blocks(const std::string& key, ByteBuffer& out, const BlockFn& on_block) override {
    const fs::path p = path_of(key);
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) io_error("cannot open", p);
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      ::close(fd);
      io_error("cannot stat", p);
    }
    out.resize(static_cast<size_t>(st.st_size));
    constexpr size_t kBlock = 4u << 20;  // small enough to be hashed while still in cache
    try {
      for (size_t at = 0; at < out.size(); at += kBlock) {
        const size_t n = std::min(kBlock, out.size() - at);
        pread_all(fd, out.data() + at, n, at, p);
        on_block(out.data() + at, n);
      }
    } catch (...) {
      ::close(fd);
      throw;
    }
    ::close(fd);
  }

  void get_range(const std::string& key, uint64_t offset, uint64_t length, void* dst) override {
    const fs::path p = path_of(key);
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) io_error("cannot open", p);
    struct stat st {};
    ::fstat(fd, &st);
    if (offset + length > static_cast<uint64_t>(st.st_size)) {
      ::close(fd);
      fail(ErrorCode::invalid_argument, "range " + std::to_string(offset) + "+" + std::to_string(length) +
                                            " beyond the end of '" + p.string() + "' (" + std::to_string(st.st_size) +
                                            " bytes)");
    }
    try {
      pread_all(fd, dst, length, offset, p);
    } catch (...) {
      ::close(fd);
      throw;
    }
    ::close(fd);
  }

  void put(const std::string& key, const void* data, size_t size) override {
    const fs::path p = path_of(key);
    fs::create_directories(p.parent_path());
    // Write to a temporary name and rename, so readers never see a half-written object.
    const fs::path tmp = p.string() + ".tmp" + std::to_string(::getpid());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) io_error("cannot create", tmp);
    const auto* b = static_cast<const std::byte*>(data);
    size_t done = 0;
    while (done < size) {
      ssize_t n = ::write(fd, b + done, std::min<size_t>(size - done, 1 << 30));
      if (n < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        ::close(fd);
        ::unlink(tmp.c_str());  // no temporary file left behind
        errno = err;
        io_error("cannot write", tmp);
      }
      done += static_cast<size_t>(n);
    }
    if (::close(fd) != 0) {
      const int err = errno;
      ::unlink(tmp.c_str());
      errno = err;
      io_error("cannot close", tmp);
    }
    if (::rename(tmp.c_str(), p.c_str()) != 0) {
      const int err = errno;
      ::unlink(tmp.c_str());
      errno = err;
      io_error("cannot rename into", p);
    }
  }

  bool exists(const std::string& key) override { return fs::is_regular_file(path_of(key)); }

  uint64_t size(const std::string& key) override {
    std::error_code ec;
    auto n = fs::file_size(path_of(key), ec);
    if (ec) fail(ErrorCode::not_found, "no object '" + key + "' in " + describe());
    return n;
  }

  std::vector<std::string> list(const std::string& prefix) override {
    std::vector<std::string> keys;
    if (!fs::exists(root_)) return keys;
    for (const auto& e : fs::recursive_directory_iterator(root_)) {
      if (!e.is_regular_file()) continue;
      std::string k = fs::relative(e.path(), root_).generic_string();
      if (k.rfind(prefix, 0) == 0) keys.push_back(k);
    }
    std::sort(keys.begin(), keys.end());
    return keys;
  }

  void remove(const std::string& key) override { fs::remove(path_of(key)); }

 private:
  fs::path path_of(const std::string& key) const {
    validate_key(key);
    return root_ / key;
  }

  fs::path root_;
};

}  // namespace

std::unique_ptr<StorageBackend> open_filesystem_backend(const fs::path& root, bool create) {
  if (create) {
    fs::create_directories(root);
  } else if (!fs::is_directory(root)) {
    fail(ErrorCode::not_found, "store directory '" + root.string() + "' does not exist");
  }
  return std::make_unique<FilesystemBackend>(root);
}

}  // namespace surf
