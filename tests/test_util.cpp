#include "test_util.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>

namespace fs = std::filesystem;

namespace surf::test {

namespace {
std::string env_or_throw(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || !*v)
    throw std::runtime_error(std::string("test environment lacks ") + name + " (run via meson test)");
  return v;
}
}  // namespace

fs::path fixtures_dir() { return env_or_throw("SURF_TEST_FIXTURES"); }

std::vector<fs::path> fixture_dirs() {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(fixtures_dir())) {
    if (fs::is_regular_file(e.path() / "golden.json")) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

fs::path data_dir() { return env_or_throw("SURF_TEST_DATA"); }

std::string plugin_dir() { return env_or_throw("SURF_TEST_PLUGIN_DIR"); }
std::string loader_plugin_dir() { return env_or_throw("SURF_TEST_LOADER_PLUGINS"); }
std::string surf_exe() { return env_or_throw("SURF_EXE"); }

TempDir::TempDir() {
  std::random_device rd;
  path_ = fs::temp_directory_path() / ("surf-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
  fs::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

int spawn_command(const std::vector<std::string>& argv, const std::string& out_path, const std::string& err_path) {
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int o = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(o, 1);
    ::dup2(e, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    std::_Exit(127);
  }
  return pid;
}

int wait_command(int pid, int timeout_s) {
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

CommandResult run_command(const std::vector<std::string>& argv) {
  TempDir tmp;
  const std::string out_path = tmp.str("stdout"), err_path = tmp.str("stderr");
  const int code = wait_command(spawn_command(argv, out_path, err_path), 120);
  if (code == -1) throw std::runtime_error("command timed out: " + argv[0]);
  auto slurp = [](const std::string& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  CommandResult r;
  r.exit_code = code;
  r.out = slurp(out_path);
  r.err = slurp(err_path);
  return r;
}

namespace {
sockaddr_in loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  return a;
}
}  // namespace

int listen_loopback(int* port, int backlog) {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = loopback(0);
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(s, backlog) != 0) {
    ::close(s);
    throw std::runtime_error("cannot listen on 127.0.0.1");
  }
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return s;
}

int connect_loopback(int port) {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = loopback(port);
  if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(s);
    return -1;
  }
  return s;
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

std::string expect_error(const std::function<void()>& fn, ErrorCode code, std::string_view text,
                         std::source_location where) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string message = e.what();
    if (e.code() != code) {
      ADD_FAILURE_AT(where.file_name(), where.line()) << "expected error code " << error_code_name(code) << ", got "
                                                      << error_code_name(e.code()) << ": " << message;
    }
    if (message.find(text) == std::string::npos) {
      ADD_FAILURE_AT(where.file_name(), where.line())
          << "expected an error containing '" << text << "', got: " << message;
    }
    return message;
  } catch (const std::exception& e) {
    ADD_FAILURE_AT(where.file_name(), where.line()) << "expected surf::Error, got another exception: " << e.what();
    return e.what();
  }
  ADD_FAILURE_AT(where.file_name(), where.line())
      << "expected an error containing '" << text << "', nothing was thrown";
  return "";
}

}  // namespace surf::test
