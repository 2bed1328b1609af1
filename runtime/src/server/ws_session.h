// A WebSocket connection on the weight server: reads requests, decodes them (wire.h), hands them
// to the handlers and writes their answers as they become ready.
#pragma once

#include <utility>  // Asio wants it first with GCC 12

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <memory>

#include "server/server_state.h"
#include "transport/tls_stream.h"

namespace surf::server {

using TlsStream = surf::tls::TlsStream;
using UpgradeRequest = boost::beast::http::request<boost::beast::http::string_body>;

// Completes the upgrade `request` received on `stream` and serves the connection until it closes.
// `authed`: the upgrade carried the server's token (or none is required). One session code for
// ws:// and wss://; a TLS session keeps `tls` (the context it was accepted with) alive. `slot`: the
// connection's place in the server's limits (limits.h), held until the session ends.
void start_ws_session(boost::beast::tcp_stream&& stream, std::shared_ptr<ServerState> state, bool authed,
                      UpgradeRequest&& request, std::shared_ptr<void> slot);
void start_ws_session(TlsStream&& stream, std::shared_ptr<boost::asio::ssl::context> tls,
                      std::shared_ptr<ServerState> state, bool authed, UpgradeRequest&& request,
                      std::shared_ptr<void> slot);

}  // namespace surf::server
