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

template <class Stream>
class WsSession : public std::enable_shared_from_this<WsSession<Stream>> {
  using std::enable_shared_from_this<WsSession<Stream>>::shared_from_this;

 public:
  WsSession(Stream&& stream, std::shared_ptr<void> keep, std::shared_ptr<ServerState> state, bool authed,
            std::shared_ptr<void> slot)
      : ws_(std::move(stream)), keep_(std::move(keep)), state_(std::move(state)) {
    auth_.authed = authed;
    state_->metrics.connections++;
    slot_ = std::move(slot);
  }
  ~WsSession() {
    state_->metrics.connections--;
    state_->buffer_budget.release(charged_);
  }

  void run(http::request<http::string_body> req) {
    ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    // A hard cap well above the request limit: requests between the two get a too_large answer.
    ws_.read_message_max(state_->options.max_request_bytes * 4 + (1 << 20));
    ws_.write_buffer_bytes(1 << 20);
    ws_.auto_fragment(false);
    ws_.binary(true);
    ws_.async_accept(req, [self = shared_from_this()](beast::error_code ec) {
      if (ec) return;
      self->start_hello_deadline();
      self->read();
    });
  }

 private:
  // With a token required and none on the upgrade, the connection has hello_timeout_ms to
  // authenticate; then it is closed (1008), so idle strangers cannot hold the connection slots.
  void start_hello_deadline() {
    if (auth_.authed || state_->options.hello_timeout_ms <= 0) return;
    hello_timer_ = std::make_unique<net::steady_timer>(ws_.get_executor());
    hello_timer_->expires_after(std::chrono::milliseconds(state_->options.hello_timeout_ms));
    hello_timer_->async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->auth_.authed) return;
      self->state_->metrics.hello_timeouts++;
      if (self->queue_.empty()) {
        self->ws_.async_close({websocket::close_code::policy_error, "no hello with the token in time"},
                              [self](beast::error_code) {});
      } else {  // a write is under way: Beast allows no close beside it
        beast::error_code ignored;
        beast::get_lowest_layer(self->ws_).socket().close(ignored);
      }
    });
  }

  // Reads the next message a piece at a time (limits.h): up to max_request_bytes are buffered,
  // growth past the first kBufferFloor bytes charged to the server's shared budget; a message over
  // the limit, or one the budget cannot hold, is read to its end without keeping it and answered
  // too_large. Beast itself closes the connection (1009) past read_message_max.
  void read() {
    const size_t limit = state_->options.max_request_bytes;
    if (in_.capacity() == in_.size()) {
      const size_t want =
          (discarding_ ? kBufferFloor : std::min(std::max(in_.capacity() * 2, kBufferFloor), limit + 1));
      const size_t over_floor = want > kBufferFloor ? want - kBufferFloor : 0;
      if (!discarding_ && over_floor > charged_ && !state_->buffer_budget.try_charge(over_floor - charged_)) {
        over_budget_ = true;
        discard();
        return read();
      }
      charged_ = std::max(charged_, over_floor);
      in_.reserve(want);
    }
    ws_.async_read_some(in_, in_.capacity() - in_.size(), [self = shared_from_this()](beast::error_code ec, size_t n) {
      if (ec) {  // closed, timed out or a protocol violation: Beast has dealt with the socket
        if (self->hello_timer_) self->hello_timer_->cancel();
        return;
      }
      self->on_read(n);
    });
  }

  void on_read(size_t n) {
    message_bytes_ += n;
    const size_t limit = state_->options.max_request_bytes;
    if (!discarding_ && message_bytes_ > limit) discard();
    if (discarding_) in_.consume(in_.size());
    if (!ws_.is_message_done()) return read();
    const Respond respond = responder(Clock::now());
    if (message_bytes_ > limit) {
      state_->metrics.request("invalid");
      respond(error_answer(
          *state_, 0, ErrorCode::too_large,
          "request of " + std::to_string(message_bytes_) + " bytes exceeds the limit of " + std::to_string(limit)));
    } else if (over_budget_) {
      state_->metrics.request("invalid");
      state_->metrics.budget_refusals++;
      respond(error_answer(*state_, 0, ErrorCode::too_large,
                           "request of " + std::to_string(message_bytes_) +
                               " bytes found the server's request buffers full; send it again later"));
    } else {
      receive(respond);
      if (auth_.authed && hello_timer_) hello_timer_->cancel();
    }
    message_bytes_ = 0;
    over_budget_ = false;
    discarding_ = false;
    in_.consume(in_.size());
    if (in_.capacity() > kBufferFloor) discard();  // give a large buffer back between messages
    discarding_ = false;
    read();
  }

  // Drops what is buffered, gives the buffer's memory and budget back and keeps reading the
  // message into a small buffer that is emptied after every read.
  void discard() {
    in_.clear();
    in_.shrink_to_fit();
    state_->buffer_budget.release(charged_);
    charged_ = 0;
    discarding_ = true;
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
    std::array<net::const_buffer, 2> buffers{
        net::buffer(o.head.data(), o.head.size()),
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

  websocket::stream<Stream> ws_;
  std::shared_ptr<void> keep_;  // the TLS context of a wss:// session
  net::steady_timer pace_{ws_.get_executor()};
  beast::flat_buffer in_;
  std::shared_ptr<ServerState> state_;
  ConnectionAuth auth_;
  std::deque<Outgoing> queue_;  // strand only
  // Strand only: the connection's slot (limits.h), the reading of the current message, the
  // budget bytes its buffer holds and the hello deadline.
  std::shared_ptr<void> slot_;
  size_t message_bytes_ = 0, charged_ = 0;
  bool discarding_ = false, over_budget_ = false;
  std::unique_ptr<net::steady_timer> hello_timer_;
};

}  // namespace

void start_ws_session(beast::tcp_stream&& stream, std::shared_ptr<ServerState> state, bool authed,
                      UpgradeRequest&& request, std::shared_ptr<void> slot) {
  std::make_shared<WsSession<beast::tcp_stream>>(std::move(stream), nullptr, std::move(state), authed, std::move(slot))
      ->run(std::move(request));
}

void start_ws_session(TlsStream&& stream, std::shared_ptr<boost::asio::ssl::context> tls,
                      std::shared_ptr<ServerState> state, bool authed, UpgradeRequest&& request,
                      std::shared_ptr<void> slot) {
  std::make_shared<WsSession<TlsStream>>(std::move(stream), std::move(tls), std::move(state), authed, std::move(slot))
      ->run(std::move(request));
}

}  // namespace surf::server
