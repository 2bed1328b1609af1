// The weight server's counters, served as Prometheus text on GET /metrics (docs/protocol.md).
#pragma once

#include <atomic>
#include <cstdint>
#include <iterator>
#include <map>
#include <mutex>
#include <string>

namespace surf::server {

class Metrics {
 public:
  static constexpr double kBuckets[] = {0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5};

  void request(const std::string& op);       // an op's name, or "invalid"
  void error(const std::string& wire_code);  // an error answer, by its code on the wire
  void latency(double seconds);              // from request to answer queued
  std::atomic<uint64_t> bytes_served{0}, cache_hits{0}, cache_misses{0}, connections{0};
  // Chunks read ahead of requests, and requests answered from them (or from a read under way).
  std::atomic<uint64_t> read_ahead{0}, read_ahead_hits{0};
  // Connections refused at accept, by reason; times accept ran out of file descriptors and
  // paused; connections closed for saying no hello in time; requests refused for lack of buffer
  // budget (docs/protocol.md, "Limits").
  std::atomic<uint64_t> refused_max_connections{0}, refused_per_address{0}, accept_pauses{0}, hello_timeouts{0},
      budget_refusals{0};

  // open_connections: accepted and not yet closed, upgraded or not; buffer_bytes: request bytes
  // buffered beyond the per-connection floors.
  std::string text(uint64_t cache_bytes, uint64_t ahead_bytes = 0, uint64_t open_connections = 0,
                   uint64_t buffer_bytes = 0) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, uint64_t> requests_, errors_;
  uint64_t buckets_[std::size(kBuckets)] = {};
  uint64_t count_ = 0;
  double sum_ = 0;
};

}  // namespace surf::server
