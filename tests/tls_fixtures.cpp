#include "tls_fixtures.h"

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
  for (int attempt = 0; attempt < 5 && !stunnel_.running(); ++attempt) {
    int port = 0;
    const int fd = listen_loopback(&port);
    if (fd < 0) throw std::runtime_error("no free port for stunnel");
    ::close(fd);
    const std::string conf = dir_.str("stunnel.conf");
    std::ofstream(conf) << "foreground = yes\npid =\nsyslog = no\ndebug = 0\noutput = " << dir_.str("stunnel.log")
                        << "\n[tls]\naccept = 127.0.0.1:" << port << "\nconnect = 127.0.0.1:" << backend_port
                        << "\ncert = " << cert << "\nkey = " << key << "\n";
    stunnel_.start({"/usr/bin/stunnel4", conf}, false);
    // Ready when the port accepts (bounded: 10 s).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      if (stunnel_.exited()) break;  // port taken or bad config
      const int c = connect_loopback(port);
      if (c >= 0) {
        ::close(c);
        port_ = port;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    stunnel_.stop();
  }
  throw std::runtime_error("stunnel4 did not start (see " + dir_.str("stunnel.log") + ")");
}

}  // namespace surf::test

namespace surf::test {

PythonServer::PythonServer(const std::string& script, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"/usr/bin/python3", script};
  argv.insert(argv.end(), args.begin(), args.end());
  child_.start(argv, true);
  const std::string line = child_.read_line(std::chrono::seconds(20));
  if (line.rfind("READY ", 0) != 0) {
    child_.stop();
    throw std::runtime_error(script + " did not start: '" + line + "'");
  }
  port_ = std::stoi(line.substr(6));
}

}  // namespace surf::test
