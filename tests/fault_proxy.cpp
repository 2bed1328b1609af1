#include "fault_proxy.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "test_util.h"

namespace surf::test {

namespace {
// Copies both ways until either side closes (bounded by a 30 s idle timeout).
void relay(int a, int b) {
  std::vector<char> buf(1 << 16);
  pollfd fds[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
  while (::poll(fds, 2, 30000) > 0) {
    for (int i = 0; i < 2; ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t n = ::read(fds[i].fd, buf.data(), buf.size());
      if (n <= 0) return;
      const int to = i == 0 ? b : a;
      for (ssize_t off = 0; off < n;) {
        const ssize_t w = ::write(to, buf.data() + off, static_cast<size_t>(n - off));
        if (w <= 0) return;
        off += w;
      }
    }
  }
}
}  // namespace

FaultProxy::FaultProxy(int target_port, int drops, int errors)
    : target_port_(target_port), drops_left_(drops), errors_left_(errors) {
  listener_ = listen_loopback(&port_);
  thread_ = std::thread([this] { serve(); });
}

FaultProxy::~FaultProxy() {
  stop_ = true;
  ::shutdown(listener_, SHUT_RDWR);
  ::close(listener_);
  thread_.join();
  for (auto& w : workers_) w.join();
}

void FaultProxy::serve() {
  while (!stop_) {
    pollfd p{listener_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    int client = ::accept(listener_, nullptr, nullptr);
    if (client < 0) continue;
    workers_.emplace_back([this, client] {
      if (drops_left_.fetch_sub(1) > 0) {
        char buf[4096];
        (void)::read(client, buf, sizeof buf);  // take (part of) the request, then vanish
        faults_++;
        ::close(client);
        return;
      }
      if (errors_left_.fetch_sub(1) > 0) {
        char buf[4096];
        (void)::read(client, buf, sizeof buf);
        const std::string body =
            "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Please reduce your request "
            "rate.</Message></Error>";
        const std::string res = "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: " +
                                std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
        (void)::write(client, res.data(), res.size());
        faults_++;
        ::close(client);
        return;
      }
      int upstream = connect_loopback(target_port_);
      if (upstream >= 0) {
        relay(client, upstream);
        ::close(upstream);
      }
      ::close(client);
    });
  }
}

}  // namespace surf::test
