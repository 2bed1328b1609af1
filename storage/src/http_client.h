// A small HTTP/1.1 client on Beast for the S3 backend (and metadata endpoints): one keep-alive
// connection, plain or TLS, timeouts on every operation, request bodies sent from the caller's
// memory and response bodies received straight into the caller's buffer in blocks.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "surf/storage/buffer.h"

namespace surf::http {

struct Response {
  unsigned status = 0;
  std::map<std::string, std::string> headers;  // lowercase names
  std::string body;                            // when not received into a caller's buffer
  const std::string* header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? nullptr : &it->second;
  }
};

struct Request {
  std::string method;
  std::string target;  // path + query, encoded
  std::vector<std::pair<std::string, std::string>> headers;
  const void* body = nullptr;
  size_t body_size = 0;
  // For successful (2xx) answers: receive the body into `into` (resized), calling on_block per piece.
  ByteBuffer* into = nullptr;
  void* into_raw = nullptr;  // or into fixed memory of into_raw_size bytes
  size_t into_raw_size = 0;
  std::function<void(const std::byte*, size_t)> on_block;
  bool head = false;
};

// Where a client connects. With tls, the server's certificate is verified against ca_file (empty:
// the system store) and must be for `host` (SNI and host name check); no fallback to plaintext.
struct Target {
  std::string host, port;
  bool tls = false;
  std::string ca_file;
  // "ADDR:PORT" to connect to instead of host:port, the Host header, SNI and the certificate
  // check staying those of `host` (as curl --connect-to): a host-name mapping for tests.
  std::string connect_to;
  // The Host header: host, with ":port" unless the scheme's default.
  std::string host_header() const { return port == (tls ? "443" : "80") ? host : host + ":" + port; }
};

class Client {
 public:
  Client(Target target, int timeout_ms);
  ~Client();
  // Throws surf::Error(network/timeout) on connection failures, Error(unauthorized) when the
  // server's certificate is refused and Error(unsupported) when it does not speak TLS; any HTTP
  // status is returned.
  Response send(const Request& request);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace surf::http
