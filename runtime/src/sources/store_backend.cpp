#include "sources/store_backend.h"

#include "surf/storage/s3.h"

namespace surf {

bool is_s3_url(const std::string& location) { return location.rfind("s3://", 0) == 0; }

std::shared_ptr<StorageBackend> open_store_backend(const std::string& location, bool create) {
  if (is_s3_url(location)) return open_s3_backend(location, s3_config_from_environment());
  return open_filesystem_backend(location, create);
}

}  // namespace surf
