#include "moto_process.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <sstream>
#include <thread>

#include "test_util.h"

namespace surf::test {

MotoProcess::MotoProcess(const std::vector<std::string>& buckets) {
  int out[2], in[2];
  if (::pipe(out) != 0 || ::pipe(in) != 0) {
    why_ = "pipe failed";
    return;
  }
  std::vector<std::string> argv = {"/usr/bin/env", "python3",
                                   (fixtures_dir().parent_path() / "s3" / "moto_server.py").string()};
  argv.insert(argv.end(), buckets.begin(), buckets.end());
  pid_ = ::fork();
  if (pid_ == 0) {
    ::dup2(out[1], 1);
    ::dup2(in[0], 0);
    ::close(out[0]);
    ::close(in[1]);
    std::vector<char*> a;
    for (auto& s : argv) a.push_back(s.data());
    a.push_back(nullptr);
    ::execv(a[0], a.data());
    std::_Exit(127);
  }
  ::close(out[1]);
  ::close(in[0]);
  stdin_fd_ = in[1];
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    pollfd p{out[0], POLLIN, 0};
    if (::poll(&p, 1, 200) > 0) {
      char buf[512];
      const ssize_t n = ::read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(out[0]);
  std::istringstream s(line);
  std::string word;
  s >> word;
  if (word == "READY") {
    s >> port_ >> key_ >> secret_;
  } else {
    why_ = line.empty() ? "moto did not start (is python3 with moto and boto3 installed?)" : line;
    port_ = 0;
  }
}

MotoProcess::~MotoProcess() {
  if (stdin_fd_ >= 0) ::close(stdin_fd_);
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  for (int i = 0; i < 300; ++i) {
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
}

}  // namespace surf::test
