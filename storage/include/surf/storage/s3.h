// S3-compatible object storage (AWS S3, MinIO, Ceph) as a StorageBackend, over HTTP with
// Signature Version 4.
#pragma once

#include <memory>
#include <string>

#include "surf/storage/backend.h"
#include "surf/storage/credentials.h"

namespace surf {

struct S3Config {
  // "http://127.0.0.1:9000", "https://minio.example:9000"; empty: AWS proper
  // (https://s3.REGION.amazonaws.com).
  std::string endpoint;
  std::string region = "us-east-1";
  // auto: virtual-hosted style (bucket.s3.REGION.amazonaws.com) on AWS endpoints when the bucket
  // name is a DNS label without dots, path style (/bucket/key) on custom endpoints; virtual or
  // path forces one.
  std::string addressing = "auto";
  // PEM CA bundle for https:// endpoints instead of the system store.
  std::string ca_file;
  // "ADDR:PORT" to connect to instead of the endpoint's host (its name still used for the Host
  // header, SNI and the certificate check), as curl --connect-to: a host-name mapping.
  std::string connect_to;
  std::string access_key_id, secret_access_key, session_token;
  // Set: credentials are taken from it for every request (temporary ones refreshed before they
  // expire), and the three fields above are ignored.
  std::shared_ptr<CredentialSource> credentials;
  int timeout_ms = 30000;
  int max_attempts = 5;  // per request, for 5xx / 429 / SlowDown / dropped connections
  int backoff_ms = 100;  // doubles per attempt, capped at 5 s
  uint64_t multipart_threshold = 64ull << 20;
  uint64_t part_bytes = 16ull << 20;  // S3 needs >= 5 MiB for every part but the last
  int list_page_size = 1000;
};

// From the AWS conventions: credentials from default_credential_chain() (the environment, the
// shared credentials and config files with AWS_PROFILE, the ECS container endpoint, EC2 IMDSv2;
// Error(unauthorized) naming each place looked in if none has any); AWS_REGION /
// AWS_DEFAULT_REGION / the profile's region; AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL; the CA
// bundle AWS_CA_BUNDLE, else SURF_CA_BUNDLE; SURF_S3_ADDRESSING (auto|virtual|path);
// SURF_S3_CONNECT_TO (ADDR:PORT).
S3Config s3_config_from_environment();

// Where a request for `encoded_key` (URI-encoded, '/' kept; empty: the bucket itself) goes under
// `config`'s endpoint and addressing style: the Host header, the path (the SigV4 canonical URI)
// and whether it is https. Error(invalid_argument) for a malformed endpoint or a bucket name that
// cannot be virtual-hosted when that is forced.
struct S3Address {
  std::string scheme, host, port;  // host and port of the connection (bucket.s3... when virtual-hosted)
  std::string host_header;         // host, with ":port" unless the scheme's default
  std::string path;                // "/bucket/key" (path style) or "/key" (virtual-hosted)
  bool virtual_hosted = false;
};
S3Address s3_address(const S3Config& config, const std::string& bucket, const std::string& encoded_key);

// url: s3://bucket[/prefix]. Error(invalid_argument) for a malformed URL or missing credentials.
std::unique_ptr<StorageBackend> open_s3_backend(const std::string& url, const S3Config& config);

}  // namespace surf
