#include "surf/storage/credentials.h"

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>

#include "http_client.h"
#include "surf/error.h"
#include "surf/log.h"
#include "surf/storage/json.h"

namespace surf {

namespace {

using SysClock = std::chrono::system_clock;

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

std::string home_file(const char* var, const std::string& default_name) {
  if (!env(var).empty()) return env(var);
  return env("HOME").empty() ? "" : env("HOME") + "/.aws/" + default_name;
}

std::string profile_name() { return env("AWS_PROFILE").empty() ? "default" : env("AWS_PROFILE"); }

// The key = value pairs of one section of an AWS ini file ("[name]", or in the config file
// "[profile name]" and "[default]").
std::map<std::string, std::string> ini_section(const std::string& file, const std::string& section, bool config_file) {
  std::map<std::string, std::string> out;
  std::ifstream in(file);
  std::string line, current;
  const std::string wanted = config_file && section != "default" ? "profile " + section : section;
  while (std::getline(in, line)) {
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[' && line.back() == ']') {
      current = trim(line.substr(1, line.size() - 2));
      continue;
    }
    if (current != wanted) continue;
    const size_t eq = line.find('=');
    if (eq != std::string::npos) out[trim(line.substr(0, eq))] = trim(line.substr(eq + 1));
  }
  return out;
}

// "2026-11-29T06:00:00Z" (fractions and a +00:00 zone tolerated).
std::optional<SysClock::time_point> parse_iso8601(const std::string& s) {
  std::tm tm{};
  const char* end = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (end == nullptr) return std::nullopt;
  return SysClock::from_time_t(timegm(&tm));
}

struct Url {
  std::string scheme, host, port, path;
};
Url parse_url(const std::string& text, const std::string& what) {
  Url u;
  std::string rest;
  if (text.rfind("http://", 0) == 0) {
    u.scheme = "http";
    rest = text.substr(7);
  } else if (text.rfind("https://", 0) == 0) {
    u.scheme = "https";
    rest = text.substr(8);
  } else {
    fail(ErrorCode::invalid_argument, what + " '" + text + "' is not an http:// or https:// URL");
  }
  const size_t slash = rest.find('/');
  u.path = slash == std::string::npos ? "/" : rest.substr(slash);
  rest = rest.substr(0, slash);
  const size_t colon = rest.rfind(':');
  u.host = colon == std::string::npos ? rest : rest.substr(0, colon);
  u.port = colon == std::string::npos ? (u.scheme == "https" ? "443" : "80") : rest.substr(colon + 1);
  if (u.host.empty()) fail(ErrorCode::invalid_argument, what + " '" + text + "' names no host");
  return u;
}

http::Response request(const Url& u, const std::string& method, const std::string& path,
                       const std::vector<std::pair<std::string, std::string>>& headers, int timeout_ms) {
  http::Target t;
  t.host = u.host;
  t.port = u.port;
  t.tls = u.scheme == "https";
  http::Client client(t, timeout_ms);
  http::Request r;
  r.method = method;
  r.target = path;
  r.headers = headers;
  return client.send(r);
}

// The JSON both ECS and IMDS answer with.
AwsCredentials credentials_from_json(const std::string& body, const std::string& source) {
  const auto j = parse_json(body, source + " credentials");
  if (!j.is_object()) fail(ErrorCode::corrupt, source + " credentials are not a JSON object");
  if (j.contains("Code") && j["Code"].is_string() && j["Code"] != "Success") {
    fail(ErrorCode::unauthorized, source + " answered Code " + j["Code"].get<std::string>());
  }
  AwsCredentials c;
  c.source = source;
  auto str = [&](const char* k) { return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string(); };
  c.access_key_id = str("AccessKeyId");
  c.secret_access_key = str("SecretAccessKey");
  c.session_token = str("Token");
  if (c.access_key_id.empty() || c.secret_access_key.empty()) {
    fail(ErrorCode::corrupt, source + " credentials lack AccessKeyId or SecretAccessKey");
  }
  if (const std::string e = str("Expiration"); !e.empty()) {
    c.expiration = parse_iso8601(e);
    if (!c.expiration) fail(ErrorCode::corrupt, source + " credentials: unreadable Expiration '" + e + "'");
  }
  return c;
}

AwsCredentials fetch_ecs(int timeout_ms) {
  Url u;
  if (!env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").empty()) {
    // The AWS SDKs join the relative URI to the fixed ECS agent address. SURF_ECS_CREDENTIALS_ENDPOINT
    // (ours, not an AWS variable) moves that address, as AWS_EC2_METADATA_SERVICE_ENDPOINT does for
    // IMDS: for a credentials proxy, and for tests, which cannot listen on 169.254.170.2.
    std::string base = env("SURF_ECS_CREDENTIALS_ENDPOINT");
    if (base.empty()) base = "http://169.254.170.2";
    while (!base.empty() && base.back() == '/') base.pop_back();
    std::string relative = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    if (relative.front() != '/') relative = "/" + relative;
    u = parse_url(base + relative, "ECS credentials URI (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI)");
  } else {
    u = parse_url(env("AWS_CONTAINER_CREDENTIALS_FULL_URI"), "AWS_CONTAINER_CREDENTIALS_FULL_URI");
  }
  std::vector<std::pair<std::string, std::string>> headers;
  std::string auth = env("AWS_CONTAINER_AUTHORIZATION_TOKEN");
  if (!env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE").empty()) {
    const std::string file = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    std::ifstream in(file);
    if (!in) fail(ErrorCode::invalid_argument, "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE '" + file + "'");
    std::getline(in, auth);
    auth = trim(auth);
  }
  if (!auth.empty()) headers.emplace_back("authorization", auth);
  const http::Response r = request(u, "GET", u.path, headers, timeout_ms);
  if (r.status != 200)
    fail(ErrorCode::unauthorized, "ECS credentials endpoint answered HTTP " + std::to_string(r.status));
  return credentials_from_json(r.body, "ecs");
}

// IMDSv2: a session token first (PUT), then the role name, then its credentials.
AwsCredentials fetch_imds(int timeout_ms) {
  const std::string endpoint = env("AWS_EC2_METADATA_SERVICE_ENDPOINT").empty()
                                   ? "http://169.254.169.254"
                                   : env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
  const Url u = parse_url(endpoint, "AWS_EC2_METADATA_SERVICE_ENDPOINT");
  http::Response r =
      request(u, "PUT", "/latest/api/token", {{"x-aws-ec2-metadata-token-ttl-seconds", "21600"}}, timeout_ms);
  if (r.status != 200 || r.body.empty())
    fail(ErrorCode::unauthorized, "IMDSv2 token request answered HTTP " + std::to_string(r.status));
  const std::vector<std::pair<std::string, std::string>> auth = {{"x-aws-ec2-metadata-token", trim(r.body)}};
  const std::string base = "/latest/meta-data/iam/security-credentials/";
  r = request(u, "GET", base, auth, timeout_ms);
  if (r.status != 200)
    fail(ErrorCode::unauthorized, "instance metadata has no IAM role (HTTP " + std::to_string(r.status) + ")");
  const std::string role = trim(r.body.substr(0, r.body.find('\n')));
  if (role.empty()) fail(ErrorCode::unauthorized, "instance metadata has no IAM role");
  r = request(u, "GET", base + role, auth, timeout_ms);
  if (r.status != 200)
    fail(ErrorCode::unauthorized,
         "instance metadata credentials for role '" + role + "' answered HTTP " + std::to_string(r.status));
  return credentials_from_json(r.body, "imds");
}

class FixedSource final : public CredentialSource {
 public:
  explicit FixedSource(AwsCredentials c) : c_(std::move(c)) {}
  AwsCredentials get() override { return c_; }
  std::string describe() const override { return c_.source; }

 private:
  AwsCredentials c_;
};

// Temporary credentials, fetched again `margin` before they expire. A failed refresh keeps
// credentials that have not lapsed yet (and is tried again on the next call).
class RefreshingSource final : public CredentialSource {
 public:
  RefreshingSource(std::string name, std::function<AwsCredentials()> fetch, std::chrono::seconds margin)
      : name_(std::move(name)), fetch_(std::move(fetch)), margin_(margin) {
    current_ = fetch_();
  }
  AwsCredentials get() override {
    std::lock_guard lock(mutex_);
    const auto now = SysClock::now();
    if (current_.expiration && now + margin_ >= *current_.expiration) {
      try {
        current_ = fetch_();
        log_info("S3 credentials from " + name_ + " refreshed");
      } catch (const Error& e) {
        if (now >= *current_.expiration) {
          fail(ErrorCode::unauthorized,
               "S3 credentials from " + name_ + " expired and cannot be refreshed: " + e.what());
        }
        log_warn("S3 credentials from " + name_ + " not refreshed yet: " + e.what());
      }
    }
    return current_;
  }
  std::string describe() const override { return name_; }

 private:
  std::string name_;
  std::function<AwsCredentials()> fetch_;
  std::chrono::seconds margin_;
  std::mutex mutex_;
  AwsCredentials current_;
};

}  // namespace

std::string aws_region_from_environment() {
  if (!env("AWS_REGION").empty()) return env("AWS_REGION");
  if (!env("AWS_DEFAULT_REGION").empty()) return env("AWS_DEFAULT_REGION");
  const std::string file = home_file("AWS_CONFIG_FILE", "config");
  if (file.empty()) return "";
  const auto section = ini_section(file, profile_name(), true);
  const auto it = section.find("region");
  return it == section.end() ? "" : it->second;
}

std::shared_ptr<CredentialSource> default_credential_chain(const CredentialChainOptions& options) {
  std::vector<std::string> looked;
  // 1. The environment.
  if (!env("AWS_ACCESS_KEY_ID").empty() && !env("AWS_SECRET_ACCESS_KEY").empty()) {
    return std::make_shared<FixedSource>(AwsCredentials{env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"),
                                                        env("AWS_SESSION_TOKEN"), std::nullopt, "environment"});
  }
  looked.push_back("AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY");
  // 2. The shared credentials file, then the config file, profile AWS_PROFILE or default.
  const std::string profile = profile_name();
  for (const bool config_file : {false, true}) {
    const std::string file =
        config_file ? home_file("AWS_CONFIG_FILE", "config") : home_file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
    if (file.empty()) continue;
    auto s = ini_section(file, profile, config_file);
    if (!s["aws_access_key_id"].empty() && !s["aws_secret_access_key"].empty()) {
      return std::make_shared<FixedSource>(AwsCredentials{s["aws_access_key_id"], s["aws_secret_access_key"],
                                                          s["aws_session_token"], std::nullopt,
                                                          "profile " + profile + " in " + file});
    }
    looked.push_back("profile '" + profile + "' in " + file);
  }
  // 3. The ECS container endpoint, when the container says there is one.
  if (!env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").empty() || !env("AWS_CONTAINER_CREDENTIALS_FULL_URI").empty()) {
    try {
      return std::make_shared<RefreshingSource>(
          "the ECS container endpoint", [t = options.metadata_timeout_ms] { return fetch_ecs(t); },
          options.refresh_margin);
    } catch (const Error& e) {
      looked.push_back("the ECS container endpoint (" + std::string(e.what()) + ")");
    }
  }
  // 4. EC2 instance metadata (IMDSv2), unless turned off.
  if (env("AWS_EC2_METADATA_DISABLED") != "true") {
    try {
      return std::make_shared<RefreshingSource>(
          "EC2 instance metadata", [t = options.metadata_timeout_ms] { return fetch_imds(t); }, options.refresh_margin);
    } catch (const Error& e) {
      looked.push_back("EC2 instance metadata (" + std::string(e.what()) + ")");
    }
  } else {
    looked.push_back("EC2 instance metadata (AWS_EC2_METADATA_DISABLED=true)");
  }
  std::string where;
  for (const auto& l : looked) where += (where.empty() ? "" : "; ") + l;
  fail(ErrorCode::unauthorized, "no S3 credentials found (looked in: " + where + ")");
}

}  // namespace surf
