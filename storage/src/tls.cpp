#include "surf/storage/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <mutex>

#include "surf/error.h"

namespace surf::tls {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// OpenSSL's queued errors' reasons, oldest first, as one line (and the queue cleared):
// "no start line; PEM lib" rather than only the last, least specific one.
std::string openssl_reason() {
  std::string out;
  for (unsigned long e; (e = ERR_get_error()) != 0;) {
    const char* r = ERR_reason_error_string(e);
    const std::string reason = r ? r : "error " + std::to_string(e);
    if (out.find(reason) == std::string::npos) out += (out.empty() ? "" : "; ") + reason;
  }
  return out.empty() ? "unknown error" : out;
}

void tls12_minimum(ssl::context& ctx) {
  SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                  ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::no_compression);
}

std::string verify_reason(long result, const std::string& host) {
  switch (result) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
      return "unable to get local issuer certificate (not signed by a trusted CA; --ca-file / SURF_CA_BUNDLE)";
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
      return "self-signed certificate (not trusted; --ca-file / SURF_CA_BUNDLE)";
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return "certificate has expired";
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return "certificate is not yet valid";
    case X509_V_ERR_HOSTNAME_MISMATCH:
      return "hostname mismatch (the certificate is not for " + host + ")";
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
      return "hostname mismatch (the certificate is not for IP address " + host + ")";
    case X509_V_OK:
      return "rejected";
    default:
      return X509_verify_cert_error_string(result);
  }
}

}  // namespace

std::shared_ptr<ssl::context> client_context(const std::string& ca_file) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  tls12_minimum(*ctx);
  boost::system::error_code ec;
  if (ca_file.empty()) {
    ctx->set_default_verify_paths(ec);
    if (ec) fail(ErrorCode::invalid_argument, "cannot load the system CA store: " + openssl_reason());
  } else {
    if (!std::ifstream(ca_file)) fail(ErrorCode::invalid_argument, "cannot read CA bundle '" + ca_file + "'");
    ctx->load_verify_file(ca_file, ec);
    if (ec) fail(ErrorCode::invalid_argument, "CA bundle '" + ca_file + "' is not usable: " + openssl_reason());
  }
  ctx->set_verify_mode(ssl::verify_peer);
  return ctx;
}

std::shared_ptr<ssl::context> shared_client_context(const std::string& ca_file) {
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<ssl::context>> contexts;
  std::lock_guard lock(mutex);
  auto& c = contexts[ca_file];
  if (!c) c = client_context(ca_file);
  return c;
}

void keep_buffers(SSL* ssl) { SSL_clear_mode(ssl, SSL_MODE_RELEASE_BUFFERS); }

void prepare_client(SSL* ssl, const std::string& host_in) {
  keep_buffers(ssl);
  std::string host = host_in;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  boost::system::error_code ec;
  net::ip::make_address(host, ec);
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  if (!ec) {
    // An IP address: matched against the certificate's IP SANs; SNI carries no addresses.
    X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
  } else {
    SSL_set_tlsext_host_name(ssl, host.c_str());
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    SSL_set1_host(ssl, host.c_str());
  }
}

std::shared_ptr<ssl::context> server_context(const std::string& cert_file, const std::string& key_file) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  tls12_minimum(*ctx);
  boost::system::error_code ec;
  if (!std::ifstream(cert_file)) fail(ErrorCode::invalid_argument, "cannot read TLS certificate '" + cert_file + "'");
  if (!std::ifstream(key_file)) fail(ErrorCode::invalid_argument, "cannot read TLS key '" + key_file + "'");
  ctx->use_certificate_chain_file(cert_file, ec);
  if (ec) fail(ErrorCode::invalid_argument, "TLS certificate '" + cert_file + "' is not usable: " + openssl_reason());
  ctx->use_private_key_file(key_file, ssl::context::pem, ec);
  if (ec)
    fail(ErrorCode::invalid_argument,
         "TLS key '" + key_file + "' is not usable (not an unencrypted PEM private key?): " + openssl_reason());
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
    fail(ErrorCode::invalid_argument, "TLS key '" + key_file + "' does not match certificate '" + cert_file + "'");
  }
  return ctx;
}

std::string describe_certificate(ssl::context& ctx) {
  X509* cert = SSL_CTX_get0_certificate(ctx.native_handle());
  if (cert == nullptr) return "no certificate";
  char subject[256] = {};
  X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject - 1);
  std::string out = std::string("subject ") + subject;
  const ASN1_TIME* not_after = X509_get0_notAfter(cert);
  std::tm tm{};
  if (not_after && ASN1_TIME_to_tm(not_after, &tm) == 1) {
    char when[32];
    std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
    out += std::string(", expires ") + when;
  }
  return out;
}

bool is_verify_failure(const boost::system::error_code& ec) {
  return ec.category() == net::error::get_ssl_category() &&
         ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == SSL_R_CERTIFICATE_VERIFY_FAILED;
}

ErrorCode error_code_for(const boost::system::error_code& ec) {
  if (is_verify_failure(ec)) return ErrorCode::unauthorized;
  if (ec.category() == net::error::get_ssl_category()) return ErrorCode::unsupported;
  return ErrorCode::network;
}

std::string describe_error(const boost::system::error_code& ec, SSL* ssl) {
  if (ec == net::ssl::error::stream_truncated || ec == net::error::eof || ec == net::error::connection_reset) {
    return "the server closed the connection during the TLS handshake (is it a plain ws:// / http:// server?)";
  }
  if (ec.category() != net::error::get_ssl_category()) return ec.message();
  const int reason = ERR_GET_REASON(static_cast<unsigned long>(ec.value()));
  switch (reason) {
    case SSL_R_CERTIFICATE_VERIFY_FAILED: {
      std::string host;
      if (ssl != nullptr) {
        const char* h = SSL_get0_peername(ssl);
        if (h) host = h;
        if (host.empty()) {
          const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
          if (sni) host = sni;
        }
      }
      const long result = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
      if (host.empty() && ssl != nullptr && result == X509_V_ERR_IP_ADDRESS_MISMATCH) host = "the address asked for";
      return "certificate verify failed: " + verify_reason(result, host);
    }
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_RECORD_LENGTH_MISMATCH:
      return "the server does not speak TLS (is it a plain ws:// / http:// server?)";
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
      return "no TLS version in common (TLS 1.2 or newer is required)";
    default: {
      const char* r = ERR_reason_error_string(static_cast<unsigned long>(ec.value()));
      return r ? std::string("TLS error: ") + r : ec.message();
    }
  }
}

std::string ca_bundle_from_env(bool for_s3) {
  if (for_s3 && !env("AWS_CA_BUNDLE").empty()) return env("AWS_CA_BUNDLE");
  return env("SURF_CA_BUNDLE");
}

}  // namespace surf::tls
