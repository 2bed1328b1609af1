#include "server/metrics.h"

#include <sstream>

namespace surf::server {

void Metrics::request(const std::string& op) {
  std::lock_guard lock(mutex_);
  requests_[op]++;
}

void Metrics::error(const std::string& wire_code) {
  std::lock_guard lock(mutex_);
  errors_[wire_code]++;
}

void Metrics::latency(double seconds) {
  std::lock_guard lock(mutex_);
  for (size_t i = 0; i < std::size(kBuckets); ++i) {
    if (seconds <= kBuckets[i]) buckets_[i]++;
  }
  count_++;
  sum_ += seconds;
}

std::string Metrics::text(uint64_t cache_bytes) const {
  std::lock_guard lock(mutex_);
  std::ostringstream s;
  s << "# HELP surf_requests_total Requests by operation.\n# TYPE surf_requests_total counter\n";
  for (const char* op : {"hello", "list_models", "get_manifest", "get_chunk", "invalid"}) {
    auto it = requests_.find(op);
    s << "surf_requests_total{op=\"" << op << "\"} " << (it == requests_.end() ? 0 : it->second) << "\n";
  }
  s << "# HELP surf_errors_total Error answers by code.\n# TYPE surf_errors_total counter\n";
  for (const char* c : {"bad_request", "unauthorized", "not_found", "too_large", "unsupported_version", "internal"}) {
    auto it = errors_.find(c);
    s << "surf_errors_total{code=\"" << c << "\"} " << (it == errors_.end() ? 0 : it->second) << "\n";
  }
  s << "# HELP surf_bytes_served_total Chunk bytes sent.\n# TYPE surf_bytes_served_total counter\n"
    << "surf_bytes_served_total " << bytes_served.load() << "\n"
    << "# TYPE surf_cache_hits_total counter\nsurf_cache_hits_total " << cache_hits.load() << "\n"
    << "# TYPE surf_cache_misses_total counter\nsurf_cache_misses_total " << cache_misses.load() << "\n"
    << "# TYPE surf_cache_bytes gauge\nsurf_cache_bytes " << cache_bytes << "\n"
    << "# TYPE surf_active_connections gauge\nsurf_active_connections " << connections.load() << "\n"
    << "# HELP surf_request_duration_seconds Time from request to answer queued.\n"
    << "# TYPE surf_request_duration_seconds histogram\n";
  for (size_t i = 0; i < std::size(kBuckets); ++i) {
    s << "surf_request_duration_seconds_bucket{le=\"" << kBuckets[i] << "\"} " << buckets_[i] << "\n";
  }
  s << "surf_request_duration_seconds_bucket{le=\"+Inf\"} " << count_ << "\n"
    << "surf_request_duration_seconds_sum " << sum_ << "\n"
    << "surf_request_duration_seconds_count " << count_ << "\n";
  return s.str();
}

}  // namespace surf::server
