#include "server_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>
#include <thread>
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange without it

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "test_util.h"

namespace surf::test {

ServerProcess::ServerProcess(std::vector<std::string> args, int port, std::string log_file)
    : args_(std::move(args)), port_(port), log_file_(std::move(log_file)) {
  start();
}

ServerProcess::~ServerProcess() { stop(); }

std::string ServerProcess::url(const std::string& model) const {
  return "ws://127.0.0.1:" + std::to_string(port_) + (model.empty() ? "" : "/" + model);
}

std::string ServerProcess::wss_url(const std::string& model, const std::string& host) const {
  return "wss://" + host + ":" + std::to_string(port_) + (model.empty() ? "" : "/" + model);
}

void ServerProcess::send_signal(int sig) {
  if (pid_ > 0) ::kill(pid_, sig);
}

void ServerProcess::start() {
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
  std::vector<std::string> argv = {surf_exe(), "serve", "--host", "127.0.0.1", "--port", std::to_string(port_)};
  argv.insert(argv.end(), args_.begin(), args_.end());
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::dup2(fds[1], 1);
    ::close(fds[0]);
    if (!log_file_.empty()) {
      const int log = ::open(log_file_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (log >= 0) ::dup2(log, 2);
    }
    std::vector<char*> a;
    for (auto& s : argv) a.push_back(s.data());
    a.push_back(nullptr);
    ::execv(a[0], a.data());
    std::_Exit(127);
  }
  ::close(fds[1]);
  // Wait (bounded) for "listening on 127.0.0.1:PORT".
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (out.find('\n') == std::string::npos) {
    if (std::chrono::steady_clock::now() > deadline) break;
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) {
      char buf[256];
      const ssize_t n = ::read(fds[0], buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fds[0]);
  const size_t at = out.find("listening on 127.0.0.1:");
  if (at == std::string::npos) {
    stop();
    throw std::runtime_error("surf serve did not start: '" + out + "'");
  }
  port_ = std::stoi(out.substr(at + 23));
}

void ServerProcess::kill_hard() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

int ServerProcess::stop() {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  for (int i = 0; i < 500; ++i) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill_hard();
  return 128 + SIGKILL;
}

void ServerProcess::restart() {
  stop();
  // The port was just released; SO_REUSEADDR lets the new server bind it at once.
  for (int attempt = 0; attempt < 20; ++attempt) {
    try {
      start();
      return;
    } catch (const std::runtime_error&) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  throw std::runtime_error("surf serve could not restart on port " + std::to_string(port_));
}

std::string http_get(int port, const std::string& target, int timeout_ms) {
  namespace net = boost::asio;
  namespace beast = boost::beast;
  try {
    net::io_context ioc;
    beast::tcp_stream stream(ioc);
    stream.expires_after(std::chrono::milliseconds(timeout_ms));
    stream.connect(net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)));
    beast::http::request<beast::http::empty_body> req(beast::http::verb::get, target, 11);
    req.set(beast::http::field::host, "127.0.0.1");
    beast::http::write(stream, req);
    beast::flat_buffer buf;
    beast::http::response<beast::http::string_body> res;
    beast::http::read(stream, buf, res);
    return std::to_string(res.result_int()) + "\n" + res.body();
  } catch (const std::exception& e) {
    return std::string("error: ") + e.what();
  }
}

uint64_t metric(const std::string& metrics_text, const std::string& name) {
  const size_t at = metrics_text.find("\n" + name + " ");
  if (at == std::string::npos) throw std::runtime_error("no metric " + name + " in:\n" + metrics_text);
  return std::stoull(metrics_text.substr(at + name.size() + 2));
}

}  // namespace surf::test
