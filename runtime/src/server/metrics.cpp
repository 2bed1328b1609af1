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

std::string Metrics::text(uint64_t cache_bytes, uint64_t ahead_bytes, uint64_t open_connections,
                          uint64_t buffer_bytes) const {
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
    << "# HELP surf_read_ahead_total Chunks read from storage ahead of a request.\n"
    << "# TYPE surf_read_ahead_total counter\nsurf_read_ahead_total " << read_ahead.load() << "\n"
    << "# HELP surf_read_ahead_hits_total Requests answered from a chunk read ahead.\n"
    << "# TYPE surf_read_ahead_hits_total counter\nsurf_read_ahead_hits_total " << read_ahead_hits.load() << "\n"
    << "# HELP surf_read_ahead_bytes Chunks read ahead and not yet asked for.\n"
    << "# TYPE surf_read_ahead_bytes gauge\nsurf_read_ahead_bytes " << ahead_bytes << "\n"
    << "# TYPE surf_active_connections gauge\nsurf_active_connections " << connections.load() << "\n"
    << "# HELP surf_open_connections Accepted connections not yet closed, upgraded or not.\n"
    << "# TYPE surf_open_connections gauge\nsurf_open_connections " << open_connections << "\n"
    << "# HELP surf_connections_refused_total Connections closed at accept, by the limit they hit.\n"
    << "# TYPE surf_connections_refused_total counter\n"
    << "surf_connections_refused_total{reason=\"max_connections\"} " << refused_max_connections.load() << "\n"
    << "surf_connections_refused_total{reason=\"per_address\"} " << refused_per_address.load() << "\n"
    << "# HELP surf_accept_pauses_total Times accepting paused for lack of file descriptors.\n"
    << "# TYPE surf_accept_pauses_total counter\nsurf_accept_pauses_total " << accept_pauses.load() << "\n"
    << "# HELP surf_hello_timeouts_total Connections closed for not authenticating in time.\n"
    << "# TYPE surf_hello_timeouts_total counter\nsurf_hello_timeouts_total " << hello_timeouts.load() << "\n"
    << "# HELP surf_request_buffer_bytes Request bytes buffered against the shared budget.\n"
    << "# TYPE surf_request_buffer_bytes gauge\nsurf_request_buffer_bytes " << buffer_bytes << "\n"
    << "# HELP surf_budget_refusals_total Requests refused because the buffer budget was spent.\n"
    << "# TYPE surf_budget_refusals_total counter\nsurf_budget_refusals_total " << budget_refusals.load() << "\n"
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
