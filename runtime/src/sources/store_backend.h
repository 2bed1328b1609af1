// A store location string -> StorageBackend: a directory, or s3://bucket/prefix.
#pragma once

#include <memory>
#include <string>

#include "surf/error.h"
#include "surf/storage/backend.h"

namespace surf {

bool is_s3_url(const std::string& location);
// `create`: make the directory if missing (chunk output). `ca_file`: a PEM CA bundle for an
// https:// S3 endpoint, winning over AWS_CA_BUNDLE / SURF_CA_BUNDLE (empty: those, else the
// system store).
std::shared_ptr<StorageBackend> open_store_backend(const std::string& location, bool create,
                                                   const std::string& ca_file = "");

}  // namespace surf
