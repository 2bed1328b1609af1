// The client side of one WebSocket connection to a weight server (docs/protocol.md), shared by
// demand fetches and prefetches: typed requests pipelined, answers matched by id, chunk data
// received into the session's buffer pool and checksummed while it arrives.
#pragma once

#include <cstdint>
#include <future>
#include <memory>
#include <string>

#include "cache/buffer_pool.h"
#include "transport/wire.h"

namespace surf {

struct WsUrl {
  std::string host, port, model;  // model empty: the server's only one
  bool tls = false;               // wss://
  std::string text() const;       // ws[s]://host:port[/model]
};
// ws[s]://host[:port][/model] (port 8765 by default); Error(invalid_argument) otherwise.
WsUrl parse_ws_url(const std::string& url);

// A received answer, decoded. A chunk answer's data points into `message`, which stays alive as
// long as the Reply (or whatever shares `message`, e.g. tensors decoded in place).
struct Reply {
  std::shared_ptr<const ByteBuffer> message;
  wire::Answer answer;
  // The checksum of a chunk answer's data, computed while the bytes arrived; empty if the data
  // could not be located in the message's head (then checksum it after the fact).
  std::string data_checksum;
};
using ReplyPtr = std::shared_ptr<const Reply>;

class WsConnection {
 public:
  // Received messages go into buffers from `pool` (returned to it when the last user lets go).
  // wss:// verifies the server's certificate against `ca_file` (empty: the system store) and its
  // host name; there is no fallback to plaintext.
  WsConnection(const WsUrl& url, std::string token, std::shared_ptr<BufferPool> pool, std::string ca_file = "");
  ~WsConnection();  // fails pending requests, closes, joins the I/O thread
  WsConnection(const WsConnection&) = delete;
  WsConnection& operator=(const WsConnection&) = delete;

  // Connects (TLS handshake for wss://) and completes the WebSocket handshake, or throws
  // Error(network/timeout); Error(unauthorized) when the server's certificate is refused and
  // Error(unsupported) when one side speaks TLS and the other does not (retrying cannot help).
  void connect(int timeout_ms);
  // Sends a request (the id is assigned here). `expected_bytes`: how big the answer may be, so the
  // receive buffer is sized once. The future fails with Error(network) if the connection is lost;
  // a malformed answer loses the connection.
  std::future<ReplyPtr> request(wire::RequestBody body, size_t expected_bytes);
  bool alive() const;
  // Fails pending requests and closes the socket; the object stays valid until destroyed.
  void close();

 private:
  struct Impl;
  template <class Stream>
  struct Conn;
  std::unique_ptr<Impl> impl_;
};

}  // namespace surf
