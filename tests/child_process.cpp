#include "child_process.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>
#include <thread>

namespace surf::test {

void ChildProcess::start(const std::vector<std::string>& argv_in, bool pipes) {
  stop();
  int out[2] = {-1, -1}, in[2] = {-1, -1};
  if (pipes && (::pipe(out) != 0 || ::pipe(in) != 0)) throw std::runtime_error("pipe failed");
  std::vector<std::string> argv = argv_in;
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    if (pipes) {
      ::dup2(out[1], 1);
      ::dup2(in[0], 0);
      ::close(out[0]);
      ::close(in[1]);
    }
    std::vector<char*> a;
    for (auto& s : argv) a.push_back(s.data());
    a.push_back(nullptr);
    ::execv(a[0], a.data());
    std::_Exit(127);
  }
  pid_ = pid;
  if (pipes) {
    ::close(out[1]);
    ::close(in[0]);
    stdout_fd_ = out[0];
    stdin_fd_ = in[1];
  }
}

std::string ChildProcess::read_line(std::chrono::milliseconds timeout) {
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (stdout_fd_ >= 0 && line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    pollfd p{stdout_fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) {
      char buf[512];
      const ssize_t n = ::read(stdout_fd_, buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, static_cast<size_t>(n));
    }
  }
  return line;
}

bool ChildProcess::exited() {
  if (pid_ <= 0) return true;
  if (::waitpid(pid_, nullptr, WNOHANG) != pid_) return false;
  pid_ = -1;
  return true;
}

void ChildProcess::stop() {
  for (int* fd : {&stdin_fd_, &stdout_fd_}) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  for (int i = 0; i < 300; ++i) {
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

}  // namespace surf::test
