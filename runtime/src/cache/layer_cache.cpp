#include "cache/layer_cache.h"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>

#include "surf/log.h"
#include "surf/ops.h"

namespace surf {

namespace {
uint64_t now_ns() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}
}  // namespace

LayerCache::LayerCache(std::shared_ptr<ComponentProvider> provider, CacheOptions options)
    : provider_(std::move(provider)), options_(options) {
  validate_cache_options(options_.cache_size, options_.prefetch);
  const Manifest& m = provider_->manifest();
  for (const auto& c : m.components) {
    if (c.role == ComponentRole::resident) resident_ids_[c.id] = true;
  }
  for (const auto& id : m.execution_order) {
    if (!is_resident(id) && !order_index_.count(id)) {
      order_index_[id] = streamed_order_.size();
      streamed_order_.push_back(id);
    }
  }
  if (options_.prefetch > 0) worker_ = std::thread([this] { worker(); });
}

LayerCache::~LayerCache() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
    queue_.clear();
  }
  changed_.notify_all();
  if (worker_.joinable()) worker_.join();
}

std::shared_ptr<LoadedComponent> LayerCache::fetch_counted(const std::string& id, bool prefetch) {
  const uint64_t t0 = now_ns();
  FetchResult r = prefetch ? provider_->prefetch(id) : provider_->fetch(id);
  std::lock_guard lock(mutex_);
  stats_.fetches++;
  stats_.bytes_fetched += r.bytes_fetched;
  stats_.disk_hits += r.disk_hits;
  stats_.disk_bytes += r.disk_bytes;
  stats_.disk_corrupt += r.disk_corrupt;
  stats_.fetch_ns += now_ns() - t0;
  return r.component;
}

void LayerCache::load_resident() {
  for (const auto& [id, _] : resident_ids_) acquire(id);
}

ComponentRef LayerCache::acquire(const std::string& id) {
  std::unique_lock lock(mutex_);
  if (auto it = resident_.find(id); it != resident_.end()) return it->second;
  if (is_resident(id)) {
    // Loaded on first use (or by warm-up), then kept; one fetch however many callers ask at once.
    const uint64_t wait_start = now_ns();
    while (resident_loading_.count(id)) {
      changed_.wait(lock);
      if (auto it = resident_.find(id); it != resident_.end()) return it->second;
    }
    resident_loading_.insert(id);
    lock.unlock();
    std::shared_ptr<LoadedComponent> c;
    try {
      c = fetch_counted(id);
    } catch (...) {
      lock.lock();
      resident_loading_.erase(id);
      changed_.notify_all();
      throw;
    }
    lock.lock();
    resident_loading_.erase(id);
    stats_.resident_bytes += c->memory_bytes();
    stats_.wait_ns += now_ns() - wait_start;
    resident_[id] = c;
    changed_.notify_all();
    return c;
  }
  auto oi = order_index_.find(id);
  if (oi == order_index_.end()) {
    fail(ErrorCode::not_found, "model has no component '" + id + "' (" + provider_->describe() + ")");
  }
  const size_t index = oi->second;
  if (!pass_started_) {
    pass_first_[pass_kind_] = index;
    pass_started_ = true;
  }
  last_acquired_ = index;
  const uint64_t wait_start = now_ns();
  std::shared_ptr<LoadedComponent> result;
  while (!result) {
    auto it = entries_.find(id);
    if (it == entries_.end()) {
      // Miss: fetch on this thread. The loading entry makes concurrent askers wait.
      stats_.misses++;
      evict_locked(1);  // free a buffer first, so the fetch reuses its pages
      entries_[id] = Entry{};
      schedule_prefetch(index + 1, static_cast<size_t>(options_.prefetch));
      lock.unlock();
      std::shared_ptr<LoadedComponent> data;
      try {
        data = fetch_counted(id);
      } catch (...) {
        lock.lock();
        entries_.erase(id);
        changed_.notify_all();
        throw;
      }
      lock.lock();
      Entry& e = entries_[id];
      e.state = State::ready;
      e.data = data;
      e.used = true;
      lru_.push_front(id);
      e.lru = lru_.begin();
      stats_.cached_bytes += data->memory_bytes();
      result = data;
      changed_.notify_all();
      break;
    }
    Entry& e = it->second;
    if (e.state == State::loading) {
      changed_.wait(lock);  // a prefetch (or another caller) is fetching it; it may also fail
      continue;
    }
    stats_.hits++;
    if (e.prefetched && !e.used) stats_.prefetch_used++;
    e.used = true;
    lru_.splice(lru_.begin(), lru_, e.lru);
    result = e.data;
    schedule_prefetch(index + 1, static_cast<size_t>(options_.prefetch));
  }
  stats_.wait_ns += now_ns() - wait_start;
  evict_locked();
  stats_.peak_cached_bytes = std::max(stats_.peak_cached_bytes, stats_.cached_bytes);
  return result;
}

void LayerCache::begin_pass(std::string_view first_id) {
  if (options_.prefetch <= 0 || streamed_order_.empty()) return;
  std::unique_lock lock(mutex_);
  size_t start = 0;
  if (!first_id.empty()) {
    auto it = order_index_.find(std::string(first_id));
    if (it == order_index_.end()) return;  // resident or unknown: nothing to fetch ahead
    start = it->second;
  }
  // The first `prefetch` streamed components from `start` on.
  schedule_prefetch(start, static_cast<size_t>(options_.prefetch));
}

void LayerCache::begin_pass(PassKind kind) {
  std::unique_lock lock(mutex_);
  pass_kind_ = kind;
  pass_started_ = false;
  if (options_.prefetch <= 0 || streamed_order_.empty()) return;
  size_t start = 0;
  if (auto it = pass_first_.find(kind); it != pass_first_.end()) {
    start = it->second;
  } else if (last_acquired_) {
    start = (*last_acquired_ + 1) % streamed_order_.size();
  }
  schedule_prefetch(start, static_cast<size_t>(options_.prefetch));
}

void LayerCache::schedule_prefetch(size_t first, size_t count) {
  for (size_t j = first; j < first + count && j < streamed_order_.size(); ++j) {
    const std::string& next = streamed_order_[j];
    if (entries_.count(next)) continue;
    evict_locked(1);
    Entry e;
    e.prefetched = true;
    entries_[next] = std::move(e);
    stats_.prefetch_issued++;
    queue_.push_back(next);
  }
  changed_.notify_all();
}

void LayerCache::evict_locked(size_t room) {
  const uint64_t max_entries = static_cast<uint64_t>(options_.cache_size) + static_cast<uint64_t>(options_.prefetch);
  auto over = [&] {
    return entries_.size() + room > max_entries || (options_.cache_bytes && stats_.cached_bytes > options_.cache_bytes);
  };
  // Walk from least recently used; pinned entries (held by a model) and unused prefetches stay.
  for (int pass = 0; pass < 2 && over(); ++pass) {
    for (auto it = lru_.end(); it != lru_.begin() && over();) {
      --it;
      Entry& e = entries_[*it];
      const bool pinned = e.data.use_count() > 1;
      const bool fresh_prefetch = e.prefetched && !e.used;
      if (pinned || (pass == 0 && fresh_prefetch)) continue;
      if (room > 0 && fresh_prefetch) continue;  // never drop a prefetch to make room for another
      stats_.evictions++;
      if (fresh_prefetch) stats_.prefetch_wasted++;
      stats_.cached_bytes -= e.data->memory_bytes();
      const std::string id = *it;
      it = lru_.erase(it);
      entries_.erase(id);
    }
  }
  stats_.cached_components = lru_.size();
}

void LayerCache::worker() {
  // Fetching fills the gaps compute leaves; at equal priority it would steal cycles from the
  // kernel threads, whose split matmuls then wait for the slowest thread. While a fetch runs it
  // also reserves a core (below), so the kernels leave it one.
  ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10);
  std::unique_lock lock(mutex_);
  while (true) {
    changed_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    const std::string id = queue_.front();
    queue_.pop_front();
    auto it = entries_.find(id);
    if (it == entries_.end() || it->second.state != State::loading) continue;
    lock.unlock();
    std::shared_ptr<LoadedComponent> data;
    std::string error;
    try {
      // The fetch (read, checksum, decode) needs a core of its own to overlap with compute: with
      // every core running kernel threads it ran only between the layers' matmuls.
      struct Reserve {
        Reserve() { ops::reserve_kernel_threads(1); }
        ~Reserve() { ops::reserve_kernel_threads(-1); }
      } reserve;
      data = fetch_counted(id, true);
    } catch (const std::exception& e) {
      error = e.what();
    }
    lock.lock();
    it = entries_.find(id);
    if (it == entries_.end()) continue;
    if (!data) {
      // The demand fetch will retry and report the error to the caller.
      log_debug("prefetch of '" + id + "' failed: " + error);
      entries_.erase(it);
      stats_.prefetch_wasted++;
    } else {
      Entry& e = it->second;
      e.state = State::ready;
      e.data = std::move(data);
      lru_.push_front(id);
      e.lru = lru_.begin();
      stats_.cached_bytes += e.data->memory_bytes();
      stats_.peak_cached_bytes = std::max(stats_.peak_cached_bytes, stats_.cached_bytes);
      evict_locked();
    }
    changed_.notify_all();
  }
}

void LayerCache::warm(const std::vector<std::string>& ids) {
  for (const auto& id : ids) {
    if (id == "all") {
      load_resident();
      for (const auto& s : streamed_order_) acquire(s);
      continue;
    }
    acquire(id);
  }
}

void LayerCache::clear() {
  std::lock_guard lock(mutex_);
  for (auto it = lru_.begin(); it != lru_.end();) {
    auto e = entries_.find(*it);
    if (e == entries_.end() || e->second.data.use_count() > 1) {
      ++it;
      continue;
    }
    stats_.cached_bytes -= e->second.data->memory_bytes();
    entries_.erase(e);
    it = lru_.erase(it);
  }
  for (auto it = resident_.begin(); it != resident_.end();) {
    if (it->second.use_count() > 1) {
      ++it;
      continue;
    }
    stats_.resident_bytes -= it->second->memory_bytes();
    it = resident_.erase(it);
  }
  stats_.cached_components = lru_.size();
}

CacheStats LayerCache::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void LayerCache::reset_stats() {
  std::lock_guard lock(mutex_);
  CacheStats fresh;
  fresh.resident_bytes = stats_.resident_bytes;
  fresh.cached_bytes = stats_.cached_bytes;
  fresh.peak_cached_bytes = stats_.cached_bytes;
  fresh.cached_components = stats_.cached_components;
  stats_ = fresh;
}

}  // namespace surf
