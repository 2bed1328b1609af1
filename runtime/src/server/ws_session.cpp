#include "server/ws_session.h"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <deque>

#include "server/handlers.h"

namespace surf::server {

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

class WsSession : public std::enable_shared_from_this<WsSession> {
 public:
  WsSession(tcp::socket&& socket, std::shared_ptr<ServerState> state, bool authed)
      : ws_(std::move(socket)), state_(std::move(state)) {
    auth_.authed = authed;
    state_->metrics.connections++;
  }
  ~WsSession() { state_->metrics.connections--; }

  void run(http::request<http::string_body> req) {
    ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    // A hard cap well above the request limit: requests between the two get a too_large answer.
    ws_.read_message_max(state_->options.max_request_bytes * 4 + (1 << 20));
    ws_.write_buffer_bytes(1 << 20);
    ws_.auto_fragment(false);
    ws_.binary(true);
    ws_.async_accept(req, [self = shared_from_this()](beast::error_code ec) {
      if (!ec) self->read();
    });
  }

 private:
  void read() {
    in_.consume(in_.size());
    ws_.async_read(in_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return;  // closed, timed out or a protocol violation: Beast has dealt with the socket
      self->receive(self->responder(Clock::now()));
      self->read();
    });
  }

  // Answers go out on this connection's strand, whichever thread produced them.
  Respond responder(Clock::time_point start) {
    return [self = shared_from_this(), start](Outgoing o) {
      auto out = std::make_shared<Outgoing>(std::move(o));
      net::dispatch(self->ws_.get_executor(), [self, start, out] { self->send(std::move(*out), start); });
    };
  }

  // One message in `in_`: a request, or an error answer saying why not.
  void receive(const Respond& respond) {
    if (!ws_.got_binary()) {
      return respond(error_answer(*state_, 0, ErrorCode::invalid_argument, "messages must be binary msgpack"));
    }
    if (in_.size() > state_->options.max_request_bytes) {
      state_->metrics.request("invalid");
      return respond(error_answer(*state_, 0, ErrorCode::too_large,
                                  "request of " + std::to_string(in_.size()) + " bytes exceeds the limit of " +
                                      std::to_string(state_->options.max_request_bytes)));
    }
    auto decoded = wire::decode_request(static_cast<const std::byte*>(in_.data().data()), in_.size());
    if (const auto* bad = std::get_if<wire::BadRequest>(&decoded)) {
      state_->metrics.request("invalid");
      return respond(error_answer(*state_, bad->id, ErrorCode::invalid_argument, bad->message));
    }
    handle_request(state_, auth_, std::get<wire::Request>(decoded), respond);
  }

  void send(Outgoing o, Clock::time_point start) {
    state_->metrics.latency(std::chrono::duration<double>(Clock::now() - start).count());
    queue_.push_back(std::move(o));
    if (queue_.size() == 1) write();
  }

  void write() {
    if (state_->limiter.limited()) return write_paced(0);
    const Outgoing& o = queue_.front();
    std::array<net::const_buffer, 2> buffers{net::buffer(o.head.data(), o.head.size()),
                                             o.body ? net::buffer(o.body->data(), o.body->size()) : net::const_buffer()};
    ws_.async_write(buffers, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return;
      if (self->queue_.front().body) self->state_->metrics.bytes_served += self->queue_.front().body->size();
      self->queue_.pop_front();
      if (!self->queue_.empty()) self->write();
    });
  }

  // --max-mbps: the answer goes out as frames of one message, each reserved from the server's
  // token bucket and sent when the bucket allows (server/rate_limiter.h).
  void write_paced(size_t sent) {
    const Outgoing& o = queue_.front();
    const size_t body = o.body ? o.body->size() : 0;
    const size_t total = o.head.size() + body;
    const size_t n = std::min(state_->limiter.slice_bytes(), total - sent);
    const auto wait = state_->limiter.reserve(n);
    auto send = [self = shared_from_this(), sent, n, total] {
      const Outgoing& o = self->queue_.front();
      std::array<net::const_buffer, 2> buffers{};
      const size_t head = o.head.size();
      if (sent < head) buffers[0] = net::buffer(o.head.data() + sent, std::min(n, head - sent));
      const size_t from = sent > head ? sent - head : 0;
      const size_t in_body = n - buffers[0].size();
      if (in_body) buffers[1] = net::buffer(o.body->data() + from, in_body);
      self->ws_.async_write_some(sent + n == total, buffers, [self, sent, total](beast::error_code ec, size_t wrote) {
        if (ec) return;
        if (sent + wrote < total) return self->write_paced(sent + wrote);
        self->written();
      });
    };
    if (wait <= Clock::duration::zero()) return send();
    pace_.expires_after(wait);
    pace_.async_wait([send](beast::error_code ec) {
      if (!ec) send();
    });
  }

  void written() {
    if (queue_.front().body) state_->metrics.bytes_served += queue_.front().body->size();
    queue_.pop_front();
    if (!queue_.empty()) write();
  }

  websocket::stream<beast::tcp_stream> ws_;
  net::steady_timer pace_{ws_.get_executor()};
  beast::flat_buffer in_;
  std::shared_ptr<ServerState> state_;
  ConnectionAuth auth_;
  std::deque<Outgoing> queue_;  // strand only
};

}  // namespace

void start_ws_session(tcp::socket&& socket, std::shared_ptr<ServerState> state, bool authed,
                      http::request<http::string_body>&& request) {
  std::make_shared<WsSession>(std::move(socket), std::move(state), authed)->run(std::move(request));
}

}  // namespace surf::server
