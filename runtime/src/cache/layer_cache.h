// The bounded LRU cache of streamed components, the prefetcher that fills it ahead of compute,
// and the resident set. It is the ComponentSource a plugin model sees.
#pragma once

#include <condition_variable>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>

#include "sources/component_provider.h"
#include "surf/runtime.h"

namespace surf {

// The knobs of OpenOptions (validate_cache_options is their rule).
struct CacheOptions {
  int cache_size = kDefaultCacheSize;  // streamed components kept
  uint64_t cache_bytes = 0;            // 0: unbounded
  int prefetch = kDefaultPrefetch;     // components fetched ahead (they may exceed cache_size by this)
};

// What kind of pass over the layers is about to start: the runtime marks each one, and the
// cache prefetches where that kind of pass began last time (a decoding step of T5 begins at the
// decoder, its first pass at the encoder), else where the execution order continues.
enum class PassKind { forward, start, step };

class LayerCache final : public ComponentSource {
 public:
  LayerCache(std::shared_ptr<ComponentProvider> provider, CacheOptions options);
  ~LayerCache() override;

  ComponentRef acquire(const std::string& id) override;
  // ABI 1.0 plugins mark their passes themselves: prefetch from first_id (empty: the start).
  void begin_pass(std::string_view first_id = {}) override;
  void begin_pass(PassKind kind);

  // Resident components load on first use; these load them now (warm: ids, or "all").
  void load_resident();
  void warm(const std::vector<std::string>& ids);
  CacheStats stats() const;
  void reset_stats();
  // Drops every ready component, resident ones included, that no model holds; components being
  // fetched stay (their waiters need them).
  void clear();

 private:
  enum class State { loading, ready };
  struct Entry {
    State state = State::loading;
    std::shared_ptr<LoadedComponent> data;
    bool prefetched = false;
    bool used = false;
    std::list<std::string>::iterator lru;  // valid when ready
  };

  std::shared_ptr<LoadedComponent> fetch_counted(const std::string& id, bool prefetch = false);
  // Marks streamed_order_[first, first+count) as loading and queues them (mutex held).
  void schedule_prefetch(size_t first, size_t count);
  // Evicts least recently used entries until `room` more fit (pinned ones and unused prefetches stay).
  void evict_locked(size_t room = 0);
  void worker();
  bool is_resident(const std::string& id) const { return resident_ids_.count(id) > 0; }

  std::shared_ptr<ComponentProvider> provider_;
  CacheOptions options_;
  std::vector<std::string> streamed_order_;  // streamed ids in execution order
  std::unordered_map<std::string, size_t> order_index_;
  std::map<std::string, bool> resident_ids_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::unordered_map<std::string, Entry> entries_;
  std::list<std::string> lru_;  // front = most recent
  std::map<std::string, std::shared_ptr<LoadedComponent>> resident_;
  std::set<std::string> resident_loading_;
  std::deque<std::string> queue_;
  bool stop_ = false;
  // Where passes begin: per kind, the first streamed component the last such pass acquired.
  PassKind pass_kind_ = PassKind::forward;
  bool pass_started_ = false;  // the current pass has acquired a streamed component
  std::map<PassKind, size_t> pass_first_;
  std::optional<size_t> last_acquired_;
  CacheStats stats_;
  std::thread worker_;
};

}  // namespace surf
