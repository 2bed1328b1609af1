// A store location string -> StorageBackend: a directory, or s3://bucket/prefix.
#pragma once

#include <memory>
#include <string>

#include "surf/error.h"
#include "surf/storage/backend.h"

namespace surf {

bool is_s3_url(const std::string& location);
// `create`: make the directory if missing (chunk output).
std::shared_ptr<StorageBackend> open_store_backend(const std::string& location, bool create);

}  // namespace surf
