// Helpers shared by the test binaries: paths from the environment meson sets, temp dirs,
// running the surf executable.
#pragma once

#include <filesystem>
#include <functional>
#include <source_location>
#include <string>
#include <string_view>
#include <vector>

#include "surf/error.h"
#include "surf/tensor.h"

namespace surf::test {

std::filesystem::path fixtures_dir();
std::vector<std::filesystem::path> fixture_dirs();  // every fixture, sorted
std::filesystem::path data_dir();                   // tests/data (made by scripts there, committed)
std::string plugin_dir();                           // build tree plugins
std::string loader_plugin_dir();                    // tests/plugins build dir
std::string surf_exe();

// A fresh directory removed at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::string str(const std::string& child = "") const { return (path_ / child).string(); }

 private:
  std::filesystem::path path_;
};

struct CommandResult {
  int exit_code;
  std::string out;
  std::string err;
};
// Runs argv (no shell) with a 120 s limit; captures stdout and stderr.
CommandResult run_command(const std::vector<std::string>& argv);
// The two halves: start argv (no shell) with stdout and stderr to files, returning its pid; wait
// at most timeout_s for its exit status (128 + signal if killed), else kill it and return -1.
int spawn_command(const std::vector<std::string>& argv, const std::string& out_path, const std::string& err_path);
int wait_command(int pid, int timeout_s);

bool bitwise_equal(const Tensor& a, const Tensor& b);

// Expects fn to throw surf::Error with `code` and a message containing `text`; a test failure at
// the caller's line otherwise. Returns the message (empty if nothing was thrown) for more checks.
std::string expect_error(const std::function<void()>& fn, ErrorCode code, std::string_view text,
                         std::source_location where = std::source_location::current());

// Plain loopback sockets for test peers: a listener on a free 127.0.0.1 port (its port in *port),
// and a connection to 127.0.0.1:port (-1 on failure).
int listen_loopback(int* port, int backlog = 64);
int connect_loopback(int port);

}  // namespace surf::test
