// The weight server's chunk cache and read-ahead area: each chunk read once however many ask,
// read-ahead chunks handed over when asked for, both areas within their bounds.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>

#include "server/chunk_cache.h"

using namespace surf;
using server::ChunkCache;

namespace {

std::shared_ptr<ByteBuffer> bytes(size_t n, std::atomic<int>* loads = nullptr) {
  if (loads) ++*loads;
  auto b = std::make_shared<ByteBuffer>(n);
  for (size_t i = 0; i < n; ++i) b->data()[i] = static_cast<std::byte>(i);
  return b;
}

}  // namespace

TEST(ChunkCache, ReadAheadIsHandedOverOnce) {
  ChunkCache cache(0, 1000);  // no cache: read-ahead only
  std::atomic<int> loads = 0;
  auto load = [&] { return bytes(100, &loads); };
  EXPECT_TRUE(cache.read_ahead("m/a", load));
  EXPECT_FALSE(cache.read_ahead("m/a", load));  // already there
  EXPECT_EQ(cache.ahead_bytes(), 100u);
  ChunkCache::Source source{};
  EXPECT_EQ(cache.get("m/a", load, &source)->size(), 100u);
  EXPECT_EQ(source, ChunkCache::Source::ahead);
  EXPECT_EQ(loads, 1);
  EXPECT_EQ(cache.ahead_bytes(), 0u);  // handed over, and with no cache not kept
  cache.get("m/a", load, &source);
  EXPECT_EQ(source, ChunkCache::Source::load);
  EXPECT_EQ(loads, 2);
}

TEST(ChunkCache, HandedOverChunksStayInTheCache) {
  ChunkCache cache(1000, 1000);
  std::atomic<int> loads = 0;
  auto load = [&] { return bytes(100, &loads); };
  cache.read_ahead("m/a", load);
  ChunkCache::Source source{};
  cache.get("m/a", load, &source);
  EXPECT_EQ(source, ChunkCache::Source::ahead);
  cache.get("m/a", load, &source);
  EXPECT_EQ(source, ChunkCache::Source::cache);
  EXPECT_EQ(cache.bytes(), 100u);
  EXPECT_EQ(cache.ahead_bytes(), 0u);
  EXPECT_FALSE(cache.read_ahead("m/a", load));  // cached: nothing to read
  EXPECT_EQ(loads, 1);
}

TEST(ChunkCache, ReadAheadAreaKeepsTheNewest) {
  ChunkCache cache(0, 250);
  for (const char* k : {"m/a", "m/b", "m/c"}) cache.read_ahead(k, [] { return bytes(100); });
  EXPECT_EQ(cache.ahead_bytes(), 200u);
  std::atomic<int> loads = 0;
  ChunkCache::Source source{};
  cache.get(
      "m/a", [&] { return bytes(100, &loads); }, &source);  // the oldest gave way
  EXPECT_EQ(source, ChunkCache::Source::load);
  cache.get(
      "m/c", [&] { return bytes(100, &loads); }, &source);
  EXPECT_EQ(source, ChunkCache::Source::ahead);
  EXPECT_EQ(loads, 1);
  ChunkCache off(0, 0);  // read-ahead off
  EXPECT_FALSE(off.read_ahead("m/a", [] { return bytes(1); }));
}

// A request for a chunk that is being read ahead waits for that read instead of reading again.
TEST(ChunkCache, RequestWaitsForTheReadUnderWay) {
  ChunkCache cache(0, 1000);
  std::atomic<int> loads = 0;
  std::atomic<bool> reading = false, release = false;
  std::thread ahead([&] {
    cache.read_ahead("m/a", [&] {
      reading = true;
      for (int i = 0; i < 5000 && !release; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      return bytes(100, &loads);
    });
  });
  for (int i = 0; i < 5000 && !reading; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_TRUE(reading);
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    release = true;
  });
  ChunkCache::Source source{};
  const auto got = cache.get(
      "m/a", [&] { return bytes(100, &loads); }, &source);
  ahead.join();
  releaser.join();
  EXPECT_EQ(source, ChunkCache::Source::ahead);
  EXPECT_EQ(got->size(), 100u);
  EXPECT_EQ(loads, 1);
  EXPECT_EQ(cache.ahead_bytes(), 0u);
}

// A read-ahead that fails leaves nothing behind; the request reads again and gets its own error.
TEST(ChunkCache, FailedReadsAreNotKept) {
  ChunkCache cache(1000, 1000);
  EXPECT_FALSE(cache.read_ahead("m/a", []() -> std::shared_ptr<ByteBuffer> { throw std::runtime_error("disk"); }));
  ChunkCache::Source source{};
  EXPECT_THROW(cache.get(
                   "m/a", []() -> std::shared_ptr<ByteBuffer> { throw std::runtime_error("disk again"); }, &source),
               std::runtime_error);
  EXPECT_EQ(cache
                .get(
                    "m/a", [] { return bytes(10); }, &source)
                ->size(),
            10u);
  EXPECT_EQ(source, ChunkCache::Source::load);
  EXPECT_EQ(cache.bytes(), 10u);
}

// A read-ahead decided before a request for the same chunk came in is dropped: the request read it.
TEST(ChunkCache, ReadAheadOvertakenByItsRequestIsSkipped) {
  ChunkCache cache(0, 1000);
  std::atomic<int> loads = 0;
  const uint64_t decided = cache.now();
  ChunkCache::Source source{};
  cache.get("m/b", [&] { return bytes(10, &loads); }, &source);
  EXPECT_FALSE(cache.read_ahead("m/b", [&] { return bytes(10, &loads); }, decided));
  EXPECT_EQ(loads, 1);
  EXPECT_TRUE(cache.read_ahead("m/b", [&] { return bytes(10, &loads); }, cache.now()));
}
