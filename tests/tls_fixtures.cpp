#include "tls_fixtures.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <stdexcept>
#include <thread>

namespace surf::test {

namespace {

void run_ok(const std::vector<std::string>& argv) {
  const auto r = run_command(argv);
  if (r.exit_code != 0) throw std::runtime_error(argv[0] + " " + argv[1] + " failed: " + r.err);
}

}  // namespace

TestPki::TestPki() = default;

void TestPki::ca(const std::string& name) {
  run_ok({"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
          "-keyout", path(name + ".key"), "-out", path(name + ".pem"), "-days", "2", "-subj", "/CN=surf test " + name});
}

void TestPki::leaf(const std::string& name, const std::string& san, int days, const std::string& ca) {
  run_ok({"/usr/bin/openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
          path(name + ".key"), "-out", path(name + ".csr"), "-subj", "/CN=" + name});
  std::ofstream(path(name + ".ext")) << "subjectAltName=" << san << "\n";
  run_ok({"/usr/bin/openssl", "x509", "-req", "-in", path(name + ".csr"), "-CA", path(ca + ".pem"), "-CAkey",
          path(ca + ".key"), "-CAcreateserial", "-days", std::to_string(days), "-extfile", path(name + ".ext"), "-out",
          path(name + ".pem")});
}

StunnelProcess::StunnelProcess(int backend_port, const std::string& cert, const std::string& key) {
  // A free port: bound and released here, then given to stunnel (retried if taken meanwhile).
  for (int attempt = 0; attempt < 5 && pid_ < 0; ++attempt) {
    int port = 0;
    const int fd = listen_loopback(&port);
    if (fd < 0) throw std::runtime_error("no free port for stunnel");
    ::close(fd);
    const std::string conf = dir_.str("stunnel.conf");
    std::ofstream(conf) << "foreground = yes\npid =\nsyslog = no\ndebug = 0\noutput = " << dir_.str("stunnel.log")
                        << "\n[tls]\naccept = 127.0.0.1:" << port << "\nconnect = 127.0.0.1:" << backend_port
                        << "\ncert = " << cert << "\nkey = " << key << "\n";
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
      ::execl("/usr/bin/stunnel4", "stunnel4", conf.c_str(), static_cast<char*>(nullptr));
      std::_Exit(127);
    }
    // Ready when the port accepts (bounded: 10 s).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) break;  // exited: port taken or bad config
      const int c = connect_loopback(port);
      if (c >= 0) {
        ::close(c);
        pid_ = pid;
        port_ = port;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  throw std::runtime_error("stunnel4 did not start (see " + dir_.str("stunnel.log") + ")");
}

StunnelProcess::~StunnelProcess() {
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

namespace surf::test {

PythonServer::PythonServer(const std::string& script, const std::vector<std::string>& args) {
  int out[2], in[2];
  if (::pipe(out) != 0 || ::pipe(in) != 0) throw std::runtime_error("pipe failed");
  std::vector<std::string> argv = {"/usr/bin/python3", script};
  argv.insert(argv.end(), args.begin(), args.end());
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
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
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    pollfd p{out[0], POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) {
      char buf[256];
      const ssize_t n = ::read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(out[0]);
  if (line.rfind("READY ", 0) != 0) {
    stop();
    throw std::runtime_error(script + " did not start: '" + line + "'");
  }
  port_ = std::stoi(line.substr(6));
}

PythonServer::~PythonServer() { stop(); }

void PythonServer::stop() {
  if (stdin_fd_ >= 0) ::close(stdin_fd_);
  stdin_fd_ = -1;
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
