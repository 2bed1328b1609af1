// A WebSocket connection on the weight server: reads requests, decodes them (wire.h), hands them
// to the handlers and writes their answers as they become ready.
#pragma once

#include <utility>  // Asio wants it first with GCC 12

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <memory>

#include "server/server_state.h"

namespace surf::server {

// Completes the upgrade `request` received on `socket` and serves the connection until it closes.
// `authed`: the upgrade carried the server's token (or none is required). `slot`: the
// connection's place in the server's limits (limits.h), held until the session ends.
void start_ws_session(boost::asio::ip::tcp::socket&& socket, std::shared_ptr<ServerState> state, bool authed,
                      boost::beast::http::request<boost::beast::http::string_body>&& request,
                      std::shared_ptr<void> slot);

}  // namespace surf::server
