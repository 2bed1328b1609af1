// A child process for the tests' helper servers (moto, stunnel4, the fake credential endpoints):
// started by fork/exec without a shell and stopped by its pid, never by name.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace surf::test {

class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess() { stop(); }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Starts argv (argv[0] a path). With `pipes` the child's stdin and stdout are pipes to us: its
  // stdin closing is its signal to exit, and read_line() reads its stdout. Throws
  // std::runtime_error if a pipe or fork fails.
  void start(const std::vector<std::string>& argv, bool pipes);
  // What the child printed up to its first newline, waiting at most `timeout` (less if it closes
  // its stdout); empty if nothing came. Only with pipes.
  std::string read_line(std::chrono::milliseconds timeout);
  // Whether the child has exited (and was reaped).
  bool exited();
  // Closes its stdin, then SIGTERM, then SIGKILL after 3 s; waits for it. Does nothing if it is
  // not running.
  void stop();
  bool running() const { return pid_ > 0; }

 private:
  int pid_ = -1;
  int stdin_fd_ = -1;
  int stdout_fd_ = -1;
};

}  // namespace surf::test
