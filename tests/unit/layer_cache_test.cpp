// The cache and prefetcher against an in-memory provider that records what was fetched.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <set>
#include <thread>

#include "../test_util.h"
#include "cache/layer_cache.h"

using namespace surf;

namespace {

class MemoryProvider final : public ComponentProvider {
 public:
  explicit MemoryProvider(int layers, uint64_t bytes_each = 1000) : bytes_(bytes_each) {
    manifest_.model_type = "test";
    manifest_.config_json = "{}";
    add("embed", ComponentRole::resident);
    for (int i = 0; i < layers; ++i) add("layers." + std::to_string(i), ComponentRole::streamed);
    add("head", ComponentRole::streamed);
  }
  const Manifest& manifest() const override { return manifest_; }
  std::string describe() const override { return "memory"; }
  FetchResult fetch(const std::string& id) override {
    if (fail_.count(id)) fail(ErrorCode::network, "injected failure fetching '" + id + "'");
    if (delay_ms) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    fetched.fetch_add(1);
    Tensor t = Tensor::from_f32({1}, {static_cast<float>(id.size())});
    return {std::make_shared<LoadedComponent>(id, std::vector<std::pair<std::string, Tensor>>{{"w", t}}, bytes_),
            bytes_};
  }
  void fail_on(const std::string& id) { fail_.insert(id); }
  std::atomic<int> fetched{0};
  int delay_ms = 0;

 private:
  void add(const std::string& id, ComponentRole role) {
    ManifestComponent c;
    c.id = id;
    c.role = role;
    manifest_.components.push_back(c);
    manifest_.execution_order.push_back(id);
  }
  Manifest manifest_;
  uint64_t bytes_;
  std::set<std::string> fail_;
};

std::string L(int i) { return "layers." + std::to_string(i); }

// Waits (bounded) until the background prefetcher has nothing in flight.
void settle(LayerCache& c, const MemoryProvider& p, int expected_fetches) {
  for (int i = 0; i < 400 && p.fetched.load() < expected_fetches; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  (void)c;
}

}  // namespace

TEST(LayerCacheTest, LeastRecentlyUsedIsEvictedFirst) {
  auto p = std::make_shared<MemoryProvider>(4);
  LayerCache c(p, {2, 0, 0});
  c.acquire(L(0));
  c.acquire(L(1));
  c.acquire(L(0));  // L1 is now least recent
  c.acquire(L(2));  // evicts L1
  c.acquire(L(0));  // still cached
  c.acquire(L(1));  // fetched again
  CacheStats s = c.stats();
  EXPECT_EQ(s.misses, 4u);
  EXPECT_EQ(s.hits, 2u);
  EXPECT_EQ(s.evictions, 2u);
  EXPECT_EQ(s.bytes_fetched, 4000u);
  EXPECT_EQ(s.cached_components, 2u);
  EXPECT_EQ(p->fetched.load(), 4);
}

TEST(LayerCacheTest, ByteBudgetBoundsTheCache) {
  auto p = std::make_shared<MemoryProvider>(6, 1000);
  LayerCache c(p, {10, 2500, 0});
  for (int i = 0; i < 6; ++i) c.acquire(L(i));
  CacheStats s = c.stats();
  EXPECT_EQ(s.cached_components, 2u);
  EXPECT_LE(s.cached_bytes, 2500u);
  EXPECT_LE(s.peak_cached_bytes, 3000u);  // one over while the newest is pinned by the caller
  EXPECT_EQ(s.evictions, 4u);
}

TEST(LayerCacheTest, PinnedEntriesAreNotEvicted) {
  auto p = std::make_shared<MemoryProvider>(4);
  LayerCache c(p, {1, 0, 0});
  ComponentRef held = c.acquire(L(0));
  c.acquire(L(1));
  c.acquire(L(2));
  // L0 is still held: a new acquire must hit, not refetch it.
  const int before = p->fetched.load();
  ComponentRef again = c.acquire(L(0));
  EXPECT_EQ(p->fetched.load(), before);
  EXPECT_EQ(again.get(), held.get());
  held.reset();
  again.reset();
  c.acquire(L(3));
  EXPECT_LE(c.stats().cached_components, 1u);
}

TEST(LayerCacheTest, ResidentComponentsAreLoadedOnceAndNotCounted) {
  auto p = std::make_shared<MemoryProvider>(2);
  LayerCache c(p, {1, 0, 0});
  c.load_resident();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(c.acquire("embed")->id(), "embed");
  EXPECT_EQ(p->fetched.load(), 1);
  CacheStats s = c.stats();
  EXPECT_EQ(s.resident_bytes, 1000u);
  EXPECT_EQ(s.hits + s.misses, 0u);
}

TEST(LayerCacheTest, ResidentComponentsLoadOnFirstUseOnceForConcurrentCallers) {
  auto p = std::make_shared<MemoryProvider>(2);
  p->delay_ms = 20;
  LayerCache c(p, {1, 0, 1});
  EXPECT_EQ(p->fetched.load(), 0);  // nothing at construction
  std::vector<std::thread> callers;
  std::atomic<int> right{0};
  for (int i = 0; i < 4; ++i) {
    callers.emplace_back([&] { right += c.acquire("embed")->id() == "embed"; });
  }
  for (auto& t : callers) t.join();
  EXPECT_EQ(right.load(), 4);
  EXPECT_EQ(p->fetched.load(), 1);
  EXPECT_EQ(c.stats().resident_bytes, 1000u);
  // A failed first load is reported to its caller and retried by the next.
  auto q = std::make_shared<MemoryProvider>(1);
  q->fail_on("embed");
  LayerCache d(q, {1, 0, 0});
  test::expect_error([&] { d.acquire("embed"); }, ErrorCode::network, "embed");
  test::expect_error([&] { d.acquire("embed"); }, ErrorCode::network, "embed");
  EXPECT_EQ(d.stats().resident_bytes, 0u);
}

TEST(LayerCacheTest, PrefetchFollowsExecutionOrder) {
  auto p = std::make_shared<MemoryProvider>(4);
  p->delay_ms = 5;
  LayerCache c(p, {1, 0, 2});
  c.acquire(L(0));  // miss; prefetches L1, L2
  settle(c, *p, 3);
  c.acquire(L(1));  // prefetched: hit; prefetches L3
  c.acquire(L(2));
  settle(c, *p, 5);
  c.acquire(L(3));
  c.acquire("head");
  CacheStats s = c.stats();
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.hits, 4u);
  EXPECT_EQ(s.prefetch_used, 4u);
  EXPECT_EQ(s.prefetch_issued, 4u);
  EXPECT_EQ(s.prefetch_wasted, 0u);
}

TEST(LayerCacheTest, BeginPassPrefetchesTheFirstLayers) {
  auto p = std::make_shared<MemoryProvider>(3);
  LayerCache c(p, {1, 0, 2});
  c.begin_pass();
  settle(c, *p, 2);
  c.acquire(L(0));
  c.acquire(L(1));
  EXPECT_EQ(c.stats().misses, 0u);
}

TEST(LayerCacheTest, UnusedPrefetchesCountAsWasted) {
  auto p = std::make_shared<MemoryProvider>(8);
  LayerCache c(p, {1, 0, 1});
  c.acquire(L(0));  // prefetches L1
  settle(c, *p, 2);
  c.acquire(L(5));  // jumps: L1 is never used
  settle(c, *p, 4);
  c.acquire(L(3));
  settle(c, *p, 6);
  EXPECT_GE(c.stats().prefetch_wasted, 1u);
}

TEST(LayerCacheTest, ErrorsReachTheCallerAndDoNotStick) {
  auto p = std::make_shared<MemoryProvider>(3);
  p->fail_on(L(1));
  LayerCache c(p, {2, 0, 1});
  c.acquire(L(0));  // the prefetch of L1 fails in the background
  test::expect_error([&] { c.acquire(L(1)); }, ErrorCode::network, "layers.1");
  test::expect_error([&] { c.acquire("layers.99"); }, ErrorCode::not_found, "layers.99");
  EXPECT_EQ(c.acquire(L(2))->id(), L(2));
}

TEST(LayerCacheTest, ConcurrentCallersGetTheRightComponents) {
  auto p = std::make_shared<MemoryProvider>(6);
  p->delay_ms = 1;
  LayerCache c(p, {2, 0, 2});
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int round = 0; round < 5; ++round) {
        c.begin_pass();
        for (int i = 0; i < 6; ++i) {
          if (c.acquire(L(i))->id() != L(i)) wrong++;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  CacheStats s = c.stats();
  EXPECT_EQ(s.hits + s.misses, 4u * 5u * 6u);
}

TEST(LayerCacheTest, CacheSizeAndPrefetchFollowTheOneRule) {
  auto p = std::make_shared<MemoryProvider>(2);
  test::expect_error(
      [&] {
        LayerCache c(p, {0, 0, 0});
      },
      ErrorCode::invalid_argument, "cache_size (--cache-size) must be at least 1, got 0");
  test::expect_error([&] { LayerCache c(p, {-1, 0, 0}); }, ErrorCode::invalid_argument, "got -1");
  test::expect_error(
      [&] {
        LayerCache c(p, {1, 0, -1});
      },
      ErrorCode::invalid_argument, "prefetch (--prefetch) must be 0 (none) or more, got -1");
  // The API's entry points apply it before opening anything.
  OpenOptions o;
  o.cache_size = 0;
  test::expect_error([&] { Session::open("/nonexistent", o); }, ErrorCode::invalid_argument, "cache_size");
  CheckOptions co;
  co.prefetch = -2;
  test::expect_error([&] { check_fixture("/nonexistent", co); }, ErrorCode::invalid_argument, "got -2");
  EXPECT_EQ(OpenOptions{}.cache_size, CheckOptions{}.cache_size);
  EXPECT_EQ(OpenOptions{}.prefetch, CheckOptions{}.prefetch);
}
