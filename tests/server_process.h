// Starts `surf serve` on 127.0.0.1 with a free port and stops it by its pid.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace surf::test {

class ServerProcess {
 public:
  // args: extra arguments after `surf serve` (stores, token file, ...). port 0 = any free port.
  // log_file: the server's stderr goes there (appended) instead of the test's.
  explicit ServerProcess(std::vector<std::string> args, int port = 0, std::string log_file = "");
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  int port() const { return port_; }
  std::string url(const std::string& model = "") const;
  std::string wss_url(const std::string& model = "", const std::string& host = "127.0.0.1") const;
  void send_signal(int sig);  // e.g. SIGHUP: reload the certificate
  void kill_hard();           // SIGKILL, as if the machine died
  // SIGTERM, then SIGKILL after 5 s; returns the exit status (128 + signal if killed), -1 if not running.
  int stop();
  void restart();  // same arguments, same port
  bool running() const { return pid_ > 0; }
  int pid() const { return pid_; }

 private:
  void start();
  std::vector<std::string> args_;
  int port_;
  std::string log_file_;
  int pid_ = -1;
};

// GET http://127.0.0.1:port/target with a deadline: "status\nbody", or "error: ..." if no answer
// came in time (a server that stopped answering fails the caller's check, not the test binary).
std::string http_get(int port, const std::string& target, int timeout_ms = 5000);
// A metric's value in /metrics text by its full name, labels included (e.g.
// surf_connections_refused_total{reason="per_address"}); throws naming it if it is absent.
uint64_t metric(const std::string& metrics_text, const std::string& name);

}  // namespace surf::test
