// The buffer pool keeps big freed buffers for the next fetch, within its bounds.
#include <gtest/gtest.h>

#include "cache/buffer_pool.h"

using namespace surf;

namespace {
constexpr size_t MB = size_t{1} << 20;
}

TEST(BufferPool, ReusesAFreedBufferOfTheRightSize) {
  BufferPool pool(2);
  const std::byte* first = nullptr;
  {
    auto a = pool.acquire(8 * MB);
    first = a->data();
    EXPECT_EQ(a->size(), 8 * MB);
    EXPECT_EQ(pool.stats().out_bytes, a->capacity());
  }
  EXPECT_EQ(pool.stats().free_count, 1u);
  EXPECT_EQ(pool.stats().out_bytes, 0u);
  auto b = pool.acquire(7 * MB);
  EXPECT_EQ(b->data(), first);
  EXPECT_EQ(pool.stats().free_count, 0u);
}

// A layer's small f32 norms once took a lm_head-sized spare and kept it alive in the cache.
TEST(BufferPool, SmallRequestsNeverTakeABigSpare) {
  BufferPool pool(2);
  { auto big = pool.acquire(64 * MB); }
  auto small = pool.acquire(16 * 1024);
  EXPECT_LT(small->capacity(), BufferPool::kMinPooled);
  EXPECT_EQ(pool.stats().free_count, 1u);
  // Nor a request far smaller than the only spare: a fresh buffer, and the spare stays.
  auto medium = pool.acquire(4 * MB);
  EXPECT_LT(medium->capacity(), 64 * MB);
  EXPECT_EQ(pool.stats().free_count, 1u);
  // A bigger request grows the spare rather than adding a buffer.
  auto huge = pool.acquire(100 * MB);
  EXPECT_GE(huge->capacity(), 100 * MB);
  EXPECT_EQ(pool.stats().free_count, 0u);
}

TEST(BufferPool, KeepsNoMoreThanMaxFree) {
  BufferPool pool(1);
  {
    auto a = pool.acquire(2 * MB);
    auto b = pool.acquire(2 * MB);
  }
  EXPECT_EQ(pool.stats().free_count, 1u);
}

// Buffers out plus spares kept stay within the limit: a freed buffer that would exceed it is
// given back to the system, never kept.
TEST(BufferPool, LimitBoundsOutPlusSpares) {
  BufferPool pool(4);
  pool.set_limit(20 * MB);
  auto a = pool.acquire(8 * MB);
  auto b = pool.acquire(8 * MB);
  auto c = pool.acquire(8 * MB);  // never refused: 24 MB out
  c.reset();                      // 16 out + 8 spare would be 24 > 20: freed
  EXPECT_EQ(pool.stats().free_count, 0u);
  b.reset();  // 8 out + 8 spare: kept
  EXPECT_EQ(pool.stats().free_count, 1u);
  a.reset();  // 0 out + 16 spare: kept
  EXPECT_EQ(pool.stats().free_count, 2u);
  EXPECT_LE(pool.stats().out_bytes + pool.stats().free_bytes, 20 * MB);
}

TEST(BufferPool, OutlivesNothing) {
  std::shared_ptr<ByteBuffer> kept;
  {
    BufferPool pool(2);
    kept = pool.acquire(2 * MB);
  }
  kept->data()[0] = std::byte{1};  // the pool is gone; the buffer is freed by its last user
  kept.reset();
}
