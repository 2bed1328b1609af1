// AWS Signature Version 4 (HMAC-SHA256 over a canonical request), as S3 requires.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace surf::sigv4 {

struct Request {
  std::string method;                                        // "GET"
  std::string canonical_uri;                                 // already URI-encoded path, e.g. "/bucket/key"
  std::vector<std::pair<std::string, std::string>> query;    // raw (not encoded) names and values
  std::vector<std::pair<std::string, std::string>> headers;  // names any case; all are signed
  std::string payload_hash;                                  // hex SHA-256 of the body, or "UNSIGNED-PAYLOAD"
};

struct Signature {
  std::string canonical_request;
  std::string string_to_sign;
  std::string signature;       // hex
  std::string authorization;   // the Authorization header value
  std::string signed_headers;  // "host;x-amz-date"
};

// amz_date is "YYYYMMDDTHHMMSSZ".
Signature sign(const Request& request, std::string_view access_key, std::string_view secret_key,
               std::string_view region, std::string_view service, std::string_view amz_date);

std::string sha256_hex(const void* data, size_t size);
// RFC 3986 unreserved characters kept, everything else %XX (uppercase); '/' kept when !encode_slash.
std::string uri_encode(std::string_view s, bool encode_slash);
// The current UTC time as "YYYYMMDDTHHMMSSZ".
std::string amz_date_now();

}  // namespace surf::sigv4
