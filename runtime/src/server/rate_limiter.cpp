#include "server/rate_limiter.h"

#include <algorithm>

namespace surf::server {

RateLimiter::RateLimiter(double megabits_per_second) {
  if (megabits_per_second <= 0) return;
  bytes_per_second_ = megabits_per_second * 1e6 / 8;
  slice_ = std::clamp(static_cast<size_t>(bytes_per_second_ / 100), size_t{16} << 10, size_t{1} << 20);
  burst_ = static_cast<double>(slice_);
  tokens_ = burst_;
  last_ = Clock::now();
}

RateLimiter::Clock::duration RateLimiter::reserve(size_t bytes) {
  if (!limited()) return Clock::duration::zero();
  std::lock_guard lock(mutex_);
  const auto now = Clock::now();
  tokens_ = std::min(burst_, tokens_ + std::chrono::duration<double>(now - last_).count() * bytes_per_second_);
  last_ = now;
  tokens_ -= static_cast<double>(bytes);
  if (tokens_ >= 0) return Clock::duration::zero();
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(-tokens_ / bytes_per_second_));
}

}  // namespace surf::server
