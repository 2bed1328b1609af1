// AWS credentials in the AWS SDKs' order: the environment, the shared credentials and config
// files (AWS_PROFILE), the ECS container endpoint, EC2 instance metadata (IMDSv2); temporary
// credentials are fetched again before they expire. Web identity and credential_process are not
// supported (yet).
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

namespace surf {

struct AwsCredentials {
  std::string access_key_id, secret_access_key, session_token;
  // Temporary credentials: when they lapse (system clock). Absent: they do not.
  std::optional<std::chrono::system_clock::time_point> expiration;
  std::string source;  // "environment", "profile default", "ecs", "imds": for messages and logs
};

// Where credentials come from, and how to get them again. Thread-safe.
class CredentialSource {
 public:
  virtual ~CredentialSource() = default;
  // Current credentials: cached, fetched again when they expire within the refresh margin.
  // Error(unauthorized) if none can be had (naming every place looked in).
  virtual AwsCredentials get() = 0;
  virtual std::string describe() const = 0;
};

struct CredentialChainOptions {
  // Temporary credentials are fetched again this long before they expire (the AWS SDKs use
  // minutes; tests use seconds).
  std::chrono::seconds refresh_margin{300};
  int metadata_timeout_ms = 1000;  // ECS and IMDS requests
};

// The first source that has credentials now, in the SDKs' order. Environment and profile
// credentials are fixed; ECS and IMDS ones refresh. Error(unauthorized) when none has any.
std::shared_ptr<CredentialSource> default_credential_chain(const CredentialChainOptions& options = {});

// The region from AWS_REGION, AWS_DEFAULT_REGION, or the profile's `region` in the config file;
// empty if none.
std::string aws_region_from_environment();

}  // namespace surf
