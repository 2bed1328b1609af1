#include "server/limits.h"

#include "surf/log.h"

namespace surf::server {

void LogLimiter::warn(const std::string& message) {
  std::string line;
  {
    std::lock_guard lock(mutex_);
    const auto now = std::chrono::steady_clock::now();
    if (logged_ && now - last_ < interval_) {
      ++suppressed_;
      return;
    }
    line = message;
    if (suppressed_ > 0) line += " (and " + std::to_string(suppressed_) + " more since the last such line)";
    suppressed_ = 0;
    last_ = now;
    logged_ = true;
  }
  log_warn(line);
}

std::shared_ptr<ConnectionLimits::Slot> ConnectionLimits::admit(const std::string& address, Refusal& refusal) {
  std::lock_guard lock(mutex_);
  if (open_.load() >= max_total_) {
    refusal = Refusal::total;
    return nullptr;
  }
  size_t& mine = per_address_[address];
  if (max_per_address_ > 0 && mine >= max_per_address_) {
    if (mine == 0) per_address_.erase(address);
    refusal = Refusal::per_address;
    return nullptr;
  }
  ++mine;
  ++open_;
  refusal = Refusal::none;
  return std::make_shared<Slot>(*this, address);
}

ConnectionLimits::Slot::~Slot() {
  std::lock_guard lock(limits_.mutex_);
  auto it = limits_.per_address_.find(address_);
  if (it != limits_.per_address_.end() && --it->second == 0) limits_.per_address_.erase(it);
  --limits_.open_;
}

bool BufferBudget::try_charge(size_t bytes) {
  size_t used = used_.load();
  do {
    if (bytes > limit_ || used > limit_ - bytes) return false;
  } while (!used_.compare_exchange_weak(used, used + bytes));
  return true;
}

}  // namespace surf::server
