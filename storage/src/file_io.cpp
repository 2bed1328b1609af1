#include "file_io.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "surf/error.h"

namespace surf {

void pread_all(int fd, void* dst, size_t size, uint64_t offset, const std::filesystem::path& path) {
  auto* b = static_cast<std::byte*>(dst);
  size_t done = 0;
  while (done < size) {
    // One call reads at most 1 GiB: larger counts are cut short by the kernel anyway.
    const ssize_t n = ::pread(fd, b + done, std::min<size_t>(size - done, 1 << 30), static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(ErrorCode::io, "cannot read '" + path.string() + "': " + std::strerror(errno));
    }
    if (n == 0) fail(ErrorCode::corrupt, "unexpected end of file in '" + path.string() + "'");
    done += static_cast<size_t>(n);
  }
}

}  // namespace surf
