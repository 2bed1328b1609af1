// The local S3 endpoint for tests: tests/s3/moto_server.py (moto, signature checking on) on a
// free 127.0.0.1 port, stopped by its pid.
#pragma once

#include <string>
#include <vector>

#include "child_process.h"

namespace surf::test {

class MotoProcess {
 public:
  explicit MotoProcess(const std::vector<std::string>& buckets);
  MotoProcess(const MotoProcess&) = delete;
  MotoProcess& operator=(const MotoProcess&) = delete;

  bool available() const { return port_ > 0; }
  const std::string& why_unavailable() const { return why_; }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  const std::string& access_key() const { return key_; }
  const std::string& secret_key() const { return secret_; }

 private:
  ChildProcess child_;  // stopped by its pid at destruction
  int port_ = 0;
  std::string key_, secret_, why_;
};

}  // namespace surf::test
