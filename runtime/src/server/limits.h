// What bounds a weight server's use of connections and memory (docs/protocol.md, "Limits"):
// every accepted connection holds a slot from the moment it is accepted (before its upgrade) to
// the moment it closes, within a total and a per-address limit; request buffers beyond a small
// per-connection floor draw from one shared budget; refusals are counted and logged at most once
// per interval. Kept apart from the session code so the accounting is in one place.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace surf::server {

// Logs a recurring event at most once per `interval`, saying how many went unlogged meanwhile.
class LogLimiter {
 public:
  explicit LogLimiter(std::chrono::steady_clock::duration interval) : interval_(interval) {}
  // Counts one event; logs `message` (a warning) if the interval since the last line has passed.
  void warn(const std::string& message);

 private:
  std::mutex mutex_;
  std::chrono::steady_clock::duration interval_;
  std::chrono::steady_clock::time_point last_{};
  bool logged_ = false;
  uint64_t suppressed_ = 0;
};

// Connections open on the server, in total and by peer address.
class ConnectionLimits {
 public:
  // max_per_address 0: no per-address limit.
  ConnectionLimits(size_t max_total, size_t max_per_address)
      : max_total_(max_total), max_per_address_(max_per_address) {}

  enum class Refusal { none, total, per_address };
  // A connection's place; gives it back when the last owner lets go.
  class Slot {
   public:
    Slot(ConnectionLimits& limits, std::string address) : limits_(limits), address_(std::move(address)) {}
    ~Slot();
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;

   private:
    ConnectionLimits& limits_;
    std::string address_;
  };
  // A slot for a connection from `address`, or null with why not in `refusal`.
  std::shared_ptr<Slot> admit(const std::string& address, Refusal& refusal);
  size_t open() const { return open_.load(); }

 private:
  const size_t max_total_, max_per_address_;
  std::mutex mutex_;
  std::map<std::string, size_t> per_address_;
  std::atomic<size_t> open_{0};
};

// The shared budget for request bytes held in connection buffers (partial and whole messages).
// Thread-safe; charges are all-or-nothing.
class BufferBudget {
 public:
  explicit BufferBudget(size_t bytes) : limit_(bytes) {}
  bool try_charge(size_t bytes);
  void release(size_t bytes) { used_.fetch_sub(bytes); }
  size_t used() const { return used_.load(); }
  size_t limit() const { return limit_; }

 private:
  const size_t limit_;
  std::atomic<size_t> used_{0};
};

// Each connection's first bytes of buffer are its own, outside the budget, so that a client's
// ordinary requests (a few hundred bytes) are served however full the budget is.
inline constexpr size_t kBufferFloor = 8 * 1024;

}  // namespace surf::server
