#include "sources/store_backend.h"

#include "surf/storage/s3.h"

namespace surf {

bool is_s3_url(const std::string& location) { return location.rfind("s3://", 0) == 0; }

std::shared_ptr<StorageBackend> open_store_backend(const std::string& location, bool create,
                                                   const std::string& ca_file) {
  if (is_s3_url(location)) {
    S3Config config = s3_config_from_environment();
    if (!ca_file.empty()) config.ca_file = ca_file;
    return open_s3_backend(location, config);
  }
  return open_filesystem_backend(location, create);
}

}  // namespace surf
