// A TCP proxy on 127.0.0.1 in front of an HTTP server that misbehaves for the first requests:
// it drops connections and answers 503 SlowDown, then forwards faithfully.
#pragma once

#include <atomic>
#include <thread>
#include <vector>

namespace surf::test {

class FaultProxy {
 public:
  // The first `drops` connections are closed after reading the request; the next `errors`
  // get "503 SlowDown"; later ones are forwarded to 127.0.0.1:target_port.
  FaultProxy(int target_port, int drops, int errors);
  ~FaultProxy();
  int port() const { return port_; }
  int faults_injected() const { return faults_.load(); }

 private:
  void serve();
  int target_port_, listener_ = -1, port_ = 0;
  std::atomic<int> drops_left_, errors_left_, faults_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::vector<std::thread> workers_;
};

}  // namespace surf::test
