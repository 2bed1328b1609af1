// POSIX file reading shared by the filesystem backend and the safetensors reader.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>

namespace surf {

// Reads exactly `size` bytes at `offset` of the open file `fd` into dst, through short reads and
// EINTR. Error(io) naming `path` if a read fails, Error(corrupt) if the file ends first.
void pread_all(int fd, void* dst, size_t size, uint64_t offset, const std::filesystem::path& path);

}  // namespace surf
