#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <thread>

#include "http_client.h"
#include "surf/error.h"
#include "surf/log.h"
#include "surf/storage/s3.h"
#include "surf/storage/s3_xml.h"
#include "surf/storage/sigv4.h"
#include "surf/storage/tls.h"

namespace surf {

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// A bucket name that can be the first label of a host name (and of a certificate's wildcard):
// lowercase letters, digits and '-', no dots.
bool dns_label(const std::string& b) {
  if (b.size() < 3 || b.size() > 63 || b.front() == '-' || b.back() == '-') return false;
  return std::all_of(b.begin(), b.end(), [](char c) {
    return std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '-';
  });
}

}  // namespace

S3Address s3_address(const S3Config& cfg, const std::string& bucket, const std::string& encoded_key) {
  S3Address a;
  std::string ep = cfg.endpoint;
  if (ep.empty()) {
    ep = "https://s3." + cfg.region + ".amazonaws.com";
  }
  if (ep.rfind("https://", 0) == 0) {
    a.scheme = "https";
    ep = ep.substr(8);
  } else if (ep.rfind("http://", 0) == 0) {
    a.scheme = "http";
    ep = ep.substr(7);
  } else {
    fail(ErrorCode::invalid_argument,
         "bad S3 endpoint '" + cfg.endpoint + "': expected http://HOST[:PORT] or https://HOST[:PORT]");
  }
  while (!ep.empty() && ep.back() == '/') ep.pop_back();
  if (ep.find('/') != std::string::npos)
    fail(ErrorCode::invalid_argument, "bad S3 endpoint '" + cfg.endpoint + "': no path allowed");
  const size_t colon = ep.rfind(':');
  a.host = colon == std::string::npos ? ep : ep.substr(0, colon);
  a.port = colon == std::string::npos ? (a.scheme == "https" ? "443" : "80") : ep.substr(colon + 1);
  if (a.host.empty() || a.port.empty() || a.port.find_first_not_of("0123456789") != std::string::npos) {
    fail(ErrorCode::invalid_argument, "bad S3 endpoint '" + cfg.endpoint + "'");
  }
  const bool aws = a.host.size() > 14 && a.host.compare(a.host.size() - 14, 14, ".amazonaws.com") == 0;
  if (cfg.addressing == "virtual") {
    if (!dns_label(bucket)) {
      fail(ErrorCode::invalid_argument, "bucket '" + bucket +
                                            "' cannot be addressed virtual-hosted style "
                                            "(lowercase letters, digits and '-' only): use path style");
    }
    a.virtual_hosted = true;
  } else if (cfg.addressing == "auto") {
    a.virtual_hosted = aws && dns_label(bucket);
  } else if (cfg.addressing != "path") {
    fail(ErrorCode::invalid_argument, "S3 addressing '" + cfg.addressing + "': expected auto, virtual or path");
  }
  if (a.virtual_hosted) a.host = bucket + "." + a.host;
  a.host_header = a.port == (a.scheme == "https" ? "443" : "80") ? a.host : a.host + ":" + a.port;
  a.path = a.virtual_hosted ? "/" + encoded_key : "/" + bucket + (encoded_key.empty() ? "" : "/" + encoded_key);
  return a;
}

namespace {

class S3Backend final : public StorageBackend {
 public:
  S3Backend(std::string bucket, std::string prefix, S3Config cfg)
      : bucket_(std::move(bucket)), prefix_(std::move(prefix)), cfg_(std::move(cfg)) {
    if (!cfg_.credentials && (cfg_.access_key_id.empty() || cfg_.secret_access_key.empty())) {
      fail(ErrorCode::unauthorized,
           "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile "
           "in ~/.aws/credentials (AWS_PROFILE)");
    }
    endpoint_ = s3_address(cfg_, bucket_, "");
    target_.host = endpoint_.host;
    target_.port = endpoint_.port;
    target_.tls = endpoint_.scheme == "https";
    target_.ca_file = cfg_.ca_file;
    target_.connect_to = cfg_.connect_to;
  }

  std::string describe() const override { return "s3://" + bucket_ + (prefix_.empty() ? "" : "/" + prefix_); }

  void get(const std::string& key, ByteBuffer& out) override { get_blocks(key, out, nullptr); }

  void get_blocks(const std::string& key, ByteBuffer& out, const BlockFn& on_block) override {
    http::Request r;
    r.method = "GET";
    r.into = &out;
    r.on_block = on_block;
    const http::Response res = send(r, object_path(key), {}, "GET " + key);
    expect(res, 200, "GET", key);
  }

  void get_range(const std::string& key, uint64_t offset, uint64_t length, void* dst) override {
    if (length == 0) return;
    http::Request r;
    r.method = "GET";
    r.headers.emplace_back("range", "bytes=" + std::to_string(offset) + "-" + std::to_string(offset + length - 1));
    r.into_raw = dst;
    r.into_raw_size = length;
    const http::Response res = send(r, object_path(key), {}, "GET " + key);
    if (res.status == 416) {
      fail(ErrorCode::invalid_argument, "range " + std::to_string(offset) + "+" + std::to_string(length) +
                                            " beyond the end of " + describe() + "/" + key);
    }
    expect(res, 206, "GET", key);
  }

  void put(const std::string& key, const void* data, size_t size) override {
    validate_key(key);
    if (size > cfg_.multipart_threshold) return put_multipart(key, data, size);
    http::Request r;
    r.method = "PUT";
    r.body = data;
    r.body_size = size;
    const http::Response res = send(r, object_path(key), {}, "PUT " + key);
    expect(res, 200, "PUT", key);
  }

  bool exists(const std::string& key) override {
    const http::Response res = head(key);
    if (res.status == 404) return false;
    expect(res, 200, "HEAD", key);
    return true;
  }

  uint64_t size(const std::string& key) override {
    const http::Response res = head(key);
    expect(res, 200, "HEAD", key);
    const std::string* len = res.header("content-length");
    return len ? std::stoull(*len) : 0;
  }

  std::vector<std::string> list(const std::string& prefix) override {
    std::vector<std::string> keys;
    std::string token;
    const std::string full = join(prefix);
    // The server-side prefix stops before the first '/': moto mis-signs '/' in query values.
    // Keys are filtered here to the exact prefix.
    const std::string server_prefix = full.substr(0, full.find('/'));
    for (int page = 0; page < 100000; ++page) {
      std::vector<std::pair<std::string, std::string>> q = {
          {"list-type", "2"}, {"prefix", server_prefix}, {"max-keys", std::to_string(cfg_.list_page_size)}};
      if (!token.empty()) q.emplace_back("continuation-token", token);
      http::Request r;
      r.method = "GET";
      const http::Response res = send(r, bucket_path(), q, "LIST " + full);
      expect(res, 200, "LIST", prefix);
      s3xml::ListPage listed = s3xml::parse_list_page(res.body);
      for (const std::string& k : listed.keys) {
        if (k.rfind(full, 0) != 0) continue;
        keys.push_back(prefix_.empty() ? k : k.substr(prefix_.size() + 1));
      }
      if (!listed.truncated || listed.next_token.empty()) break;
      token = std::move(listed.next_token);
    }
    std::sort(keys.begin(), keys.end());
    return keys;
  }

  void remove(const std::string& key) override {
    http::Request r;
    r.method = "DELETE";
    const http::Response res = send(r, object_path(key), {}, "DELETE " + key);
    if (res.status != 204 && res.status != 200) expect(res, 204, "DELETE", key);
  }

 private:
  std::string join(const std::string& key) const { return prefix_.empty() ? key : prefix_ + "/" + key; }
  std::string bucket_path() const { return s3_address(cfg_, bucket_, "").path; }
  std::string object_path(const std::string& key) const {
    validate_key(key);
    return s3_address(cfg_, bucket_, sigv4::uri_encode(join(key), false)).path;
  }

  http::Response head(const std::string& key) {
    http::Request r;
    r.method = "HEAD";
    r.head = true;
    return send(r, object_path(key), {}, "HEAD " + key);
  }

  void put_multipart(const std::string& key, const void* data, size_t size) {
    const std::string path = object_path(key);
    http::Request start;
    start.method = "POST";
    http::Response res = send(start, path, {{"uploads", ""}}, "CreateMultipartUpload " + key);
    expect(res, 200, "POST", key);
    const std::string upload = s3xml::value(res.body, "UploadId");
    if (upload.empty()) fail(ErrorCode::io, "S3 CreateMultipartUpload for " + key + " returned no UploadId");
    try {
      std::string parts_xml;
      const auto* bytes = static_cast<const std::byte*>(data);
      int number = 1;
      for (uint64_t at = 0; at < size; at += cfg_.part_bytes, ++number) {
        http::Request part;
        part.method = "PUT";
        part.body = bytes + at;
        part.body_size = std::min<uint64_t>(cfg_.part_bytes, size - at);
        res = send(part, path, {{"partNumber", std::to_string(number)}, {"uploadId", upload}}, "UploadPart " + key);
        expect(res, 200, "PUT part", key);
        const std::string* etag = res.header("etag");
        if (!etag) fail(ErrorCode::io, "S3 UploadPart for " + key + " returned no ETag");
        parts_xml += "<Part><PartNumber>" + std::to_string(number) + "</PartNumber><ETag>" + *etag + "</ETag></Part>";
      }
      const std::string body = "<CompleteMultipartUpload>" + parts_xml + "</CompleteMultipartUpload>";
      http::Request done;
      done.method = "POST";
      done.body = body.data();
      done.body_size = body.size();
      res = send(done, path, {{"uploadId", upload}}, "CompleteMultipartUpload " + key);
      expect(res, 200, "POST", key);
      // S3 may answer 200 and still report an error in the body.
      if (res.body.find("<Error>") != std::string::npos) expect_error_body(res, "CompleteMultipartUpload", key);
    } catch (...) {
      http::Request abort;
      abort.method = "DELETE";
      try {
        send(abort, path, {{"uploadId", upload}}, "AbortMultipartUpload " + key);
      } catch (...) {
      }
      throw;
    }
  }

  // Signs and sends, retrying dropped connections, 5xx, 429 and SlowDown with backoff.
  http::Response send(http::Request r, const std::string& path,
                      const std::vector<std::pair<std::string, std::string>>& query, const std::string& what) {
    // Parameters go out in canonical (sorted, encoded) order: some S3-compatible servers (moto)
    // recompute the canonical query in the order received.
    std::vector<std::pair<std::string, std::string>> sorted;
    for (const auto& [k, v] : query) sorted.emplace_back(sigv4::uri_encode(k, true), sigv4::uri_encode(v, true));
    std::sort(sorted.begin(), sorted.end());
    std::string target = path, q;
    for (const auto& [k, v] : sorted) q += (q.empty() ? "?" : "&") + k + "=" + v;
    target += q;
    const std::string payload_hash = r.body_size ? sigv4::sha256_hex(r.body, r.body_size)
                                                 : "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const auto base_headers = r.headers;
    std::string last;
    for (int attempt = 0; attempt < std::max(1, cfg_.max_attempts); ++attempt) {
      if (attempt > 0) {
        std::this_thread::sleep_for(
            std::chrono::milliseconds(std::min(5000, cfg_.backoff_ms << std::min(attempt - 1, 10))));
      }
      sigv4::Request sr;
      sr.method = r.method;
      sr.canonical_uri = path;
      sr.query = query;
      sr.payload_hash = payload_hash;
      const std::string date = sigv4::amz_date_now();
      sr.headers = {{"host", endpoint_.host_header}, {"x-amz-content-sha256", payload_hash}, {"x-amz-date", date}};
      // Taken per attempt: temporary credentials may have been refreshed meanwhile.
      const AwsCredentials creds = cfg_.credentials ? cfg_.credentials->get()
                                                    : AwsCredentials{cfg_.access_key_id, cfg_.secret_access_key,
                                                                     cfg_.session_token, std::nullopt, ""};
      if (!creds.session_token.empty()) sr.headers.emplace_back("x-amz-security-token", creds.session_token);
      const sigv4::Signature sig =
          sigv4::sign(sr, creds.access_key_id, creds.secret_access_key, cfg_.region, "s3", date);
      r.target = target;
      r.headers = base_headers;
      for (const auto& h : sr.headers) {
        if (h.first != "host") r.headers.push_back(h);
      }
      r.headers.emplace_back("authorization", sig.authorization);
      try {
        std::lock_guard lock(client_mutex_);
        if (!client_) client_ = std::make_unique<http::Client>(target_, cfg_.timeout_ms);
        http::Response res = client_->send(r);
        const bool slow_down =
            res.status == 503 || res.status == 429 || res.body.find("<Code>SlowDown</Code>") != std::string::npos;
        if (res.status < 500 && !slow_down) return res;
        last = "HTTP " + std::to_string(res.status) + " " + s3xml::parse_error(res.body).code;
      } catch (const Error& e) {
        if (e.code() != ErrorCode::network && e.code() != ErrorCode::timeout) throw;
        last = e.what();
        std::lock_guard lock(client_mutex_);
        client_.reset();
      }
      log_info("S3 " + what + ": attempt " + std::to_string(attempt + 1) + " failed: " + last);
    }
    fail(ErrorCode::network, "S3 " + what + " on " + describe() + " failed after " +
                                 std::to_string(std::max(1, cfg_.max_attempts)) + " attempts: " + last);
  }

  void expect(const http::Response& res, unsigned want, const std::string& op, const std::string& key) {
    if (res.status == want) return;
    expect_error_body(res, op, key);
  }

  [[noreturn]] void expect_error_body(const http::Response& res, const std::string& op, const std::string& key) {
    auto [code, message] = s3xml::parse_error(res.body);
    if (code.empty() && res.status == 404) code = "NoSuchKey";  // HEAD answers carry no body
    const std::string where = describe() + "/" + key;
    if (code == "NoSuchBucket") fail(ErrorCode::not_found, "S3 bucket '" + bucket_ + "' does not exist (NoSuchBucket)");
    if (code == "NoSuchKey") fail(ErrorCode::not_found, "no object " + where + " (NoSuchKey)");
    if (res.status == 403 || code == "SignatureDoesNotMatch" || code == "InvalidAccessKeyId") {
      fail(
          ErrorCode::unauthorized,
          "S3 " + op + " " + where + " denied for access key id " +
              (cfg_.credentials ? cfg_.credentials->get().access_key_id + " (from " + cfg_.credentials->describe() + ")"
                                : cfg_.access_key_id) +
              ": " + (code.empty() ? "HTTP 403" : code) + (message.empty() ? "" : ": " + message));
    }
    fail(ErrorCode::io, "S3 " + op + " " + where + " failed: HTTP " + std::to_string(res.status) +
                            (code.empty() ? "" : " " + code) + (message.empty() ? "" : ": " + message));
  }

  std::string bucket_, prefix_;
  S3Config cfg_;
  S3Address endpoint_;  // of the bucket
  http::Target target_;
  std::mutex client_mutex_;
  std::unique_ptr<http::Client> client_;
};

}  // namespace

S3Config s3_config_from_environment() {
  S3Config c;
  c.credentials = default_credential_chain();
  if (const std::string region = aws_region_from_environment(); !region.empty()) c.region = region;
  c.endpoint = !env("AWS_ENDPOINT_URL_S3").empty() ? env("AWS_ENDPOINT_URL_S3") : env("AWS_ENDPOINT_URL");
  c.ca_file = tls::ca_bundle_from_env(true);
  if (!env("SURF_S3_ADDRESSING").empty()) c.addressing = env("SURF_S3_ADDRESSING");
  c.connect_to = env("SURF_S3_CONNECT_TO");
  return c;
}

std::unique_ptr<StorageBackend> open_s3_backend(const std::string& url, const S3Config& config) {
  if (url.rfind("s3://", 0) != 0) fail(ErrorCode::invalid_argument, "'" + url + "' is not an s3://bucket/prefix URL");
  std::string rest = url.substr(5);
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  const size_t slash = rest.find('/');
  const std::string bucket = rest.substr(0, slash);
  const std::string prefix = slash == std::string::npos ? "" : rest.substr(slash + 1);
  if (bucket.empty()) fail(ErrorCode::invalid_argument, "'" + url + "' names no bucket");
  if (!prefix.empty()) validate_key(prefix);
  return std::make_unique<S3Backend>(bucket, prefix, config);
}

}  // namespace surf
