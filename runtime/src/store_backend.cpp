#include "store_backend.h"

namespace surf {

bool is_s3_url(const std::string& location) { return location.rfind("s3://", 0) == 0; }

std::shared_ptr<StorageBackend> open_store_backend(const std::string& location, bool create) {
  if (is_s3_url(location)) {
    fail(ErrorCode::unsupported, "S3 stores (" + location + ") are not available in this build yet");
  }
  return open_filesystem_backend(location, create);
}

}  // namespace surf
