// TLS for tests: a private PKI made with the openssl CLI at run time, and stunnel4 as a TLS
// terminator in front of a plain local server (moto), started on a free 127.0.0.1 port and
// stopped by its pid.
#pragma once

#include <string>
#include <vector>

#include "child_process.h"
#include "test_util.h"

namespace surf::test {

class TestPki {
 public:
  TestPki();  // an empty directory; make what the test needs
  std::string path(const std::string& file) const { return dir_.str(file); }
  // A self-signed CA: NAME.pem, NAME.key.
  void ca(const std::string& name);
  // A leaf NAME.pem / NAME.key with subjectAltName `san` ("DNS:localhost,IP:127.0.0.1"), signed by
  // `ca`, valid for `days` (negative: already expired).
  void leaf(const std::string& name, const std::string& san, int days, const std::string& ca = "ca");

 private:
  TempDir dir_;
};

class StunnelProcess {
 public:
  // TLS on a free 127.0.0.1 port with cert/key, forwarding in plain TCP to 127.0.0.1:backend_port.
  StunnelProcess(int backend_port, const std::string& cert, const std::string& key);
  StunnelProcess(const StunnelProcess&) = delete;
  StunnelProcess& operator=(const StunnelProcess&) = delete;
  int port() const { return port_; }

 private:
  TempDir dir_;
  ChildProcess stunnel_;  // stopped by its pid before dir_ goes
  int port_ = 0;
};

}  // namespace surf::test

namespace surf::test {

// A helper server in Python (/usr/bin/python3 SCRIPT ARGS...) that prints "READY <port>" when
// it listens on 127.0.0.1 and serves until its stdin closes; stopped by its pid.
class PythonServer {
 public:
  PythonServer(const std::string& script, const std::vector<std::string>& args);
  PythonServer(const PythonServer&) = delete;
  PythonServer& operator=(const PythonServer&) = delete;
  int port() const { return port_; }
  std::string url(const std::string& path = "") const { return "http://127.0.0.1:" + std::to_string(port_) + path; }

 private:
  ChildProcess child_;  // stopped by its pid at destruction
  int port_ = 0;
};

}  // namespace surf::test
