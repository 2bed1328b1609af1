// TLS for the clients (wss:// weight servers, https:// S3, metadata endpoints) and the weight
// server, on Boost.Asio SSL (OpenSSL): contexts with safe defaults, host name checks, and
// OpenSSL's failures turned into one short reason a person can act on.
#pragma once

#include <utility>  // Asio wants it first with GCC 12

#include <boost/asio/ssl/context.hpp>
#include <boost/system/error_code.hpp>
#include <memory>
#include <string>

#include "surf/error.h"

typedef struct ssl_st SSL;

namespace surf::tls {

// A client context: TLS 1.2 or newer, peer certificates verified. `ca_file` empty: the system
// store (ca-certificates); otherwise only the PEM bundle in that file is trusted.
// Error(invalid_argument) if the bundle cannot be read.
std::shared_ptr<boost::asio::ssl::context> client_context(const std::string& ca_file);
// The same context for every caller with the same ca_file (built once; contexts are thread-safe).
std::shared_ptr<boost::asio::ssl::context> shared_client_context(const std::string& ca_file);

// Sets SNI and the name (or IP address) the certificate must match on a client connection
// before its handshake.
void prepare_client(SSL* ssl, const std::string& host);

// Keeps OpenSSL's record buffers for the connection's life: Asio's ssl::stream turns on
// SSL_MODE_RELEASE_BUFFERS, which frees and reallocates them around every 16 KB record of a bulk
// transfer. prepare_client does this too.
void keep_buffers(SSL* ssl);

// A server context from a PEM certificate chain and private key: TLS 1.2 or newer.
// Error(invalid_argument) naming the file and OpenSSL's reason if either is unusable.
std::shared_ptr<boost::asio::ssl::context> server_context(const std::string& cert_file, const std::string& key_file);
// "subject CN=..., expires 2026-01-01" of the context's certificate, for logs.
std::string describe_certificate(boost::asio::ssl::context& ctx);

// A client handshake failure in one line: "certificate verify failed: certificate has expired",
// "... hostname mismatch", "... unable to get local issuer certificate", "the server does not
// speak TLS (is it a plain ws:// / http:// server?)", ... `ssl` may be null.
std::string describe_error(const boost::system::error_code& ec, SSL* ssl);
// Whether describe_error would call it a certificate problem (final: retrying will not help).
bool is_verify_failure(const boost::system::error_code& ec);
// The surf::ErrorCode of a handshake failure: unauthorized (certificate refused), unsupported
// (the peer does not speak TLS, or no common version: final), network (connection lost: retry).
ErrorCode error_code_for(const boost::system::error_code& ec);

// The CA bundle named by the environment: SURF_CA_BUNDLE, and for S3 also AWS_CA_BUNDLE (which
// wins there, as in the AWS SDKs). Empty: the system store.
std::string ca_bundle_from_env(bool for_s3);

}  // namespace surf::tls
