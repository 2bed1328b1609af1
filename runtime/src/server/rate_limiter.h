// `surf serve --max-mbps N`: one token bucket per server, shared by all its connections, that
// paces the bytes of answers (chunks, files) to N megabits per second. An operator's tool, and
// the way the benchmarks model a 100 Mbit/s or 1 Gbit/s link on loopback.
#pragma once

#include <chrono>
#include <cstddef>
#include <mutex>

namespace surf::server {

class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  explicit RateLimiter(double megabits_per_second);  // <= 0: unlimited

  bool limited() const { return bytes_per_second_ > 0; }
  // Answers go out in frames of at most this many bytes, each reserved on its own, so that
  // connections share the link fairly and no burst exceeds ~10 ms of the rate.
  size_t slice_bytes() const { return slice_; }
  // Takes `bytes` from the bucket and returns how long to wait before sending them (zero when the
  // bucket holds enough). The bucket may go into debt: later callers wait behind earlier ones, so
  // the rate holds across all connections together.
  Clock::duration reserve(size_t bytes);

 private:
  double bytes_per_second_ = 0;
  size_t slice_ = 0;
  double burst_ = 0;
  std::mutex mutex_;
  double tokens_ = 0;  // bytes; negative: debt
  Clock::time_point last_;
};

}  // namespace surf::server
