// S3-compatible object storage (AWS S3, MinIO, Ceph) as a StorageBackend, over HTTP with
// Signature Version 4.
#pragma once

#include <memory>
#include <string>

#include "surf/storage/backend.h"

namespace surf {

struct S3Config {
  std::string endpoint;  // "http://127.0.0.1:9000"; empty: AWS (virtual-hosted style)
  std::string region = "us-east-1";
  std::string access_key_id, secret_access_key, session_token;
  int timeout_ms = 30000;
  int max_attempts = 5;       // per request, for 5xx / 429 / SlowDown / dropped connections
  int backoff_ms = 100;       // doubles per attempt, capped at 5 s
  uint64_t multipart_threshold = 64ull << 20;
  uint64_t part_bytes = 16ull << 20;  // S3 needs >= 5 MiB for every part but the last
  int list_page_size = 1000;
};

// From the AWS conventions: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, else the
// shared credentials file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile AWS_PROFILE or
// "default"); AWS_REGION / AWS_DEFAULT_REGION; AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL.
S3Config s3_config_from_environment();

// url: s3://bucket[/prefix]. Error(invalid_argument) for a malformed URL or missing credentials.
std::unique_ptr<StorageBackend> open_s3_backend(const std::string& url, const S3Config& config);

}  // namespace surf
