// The buffer pool keeps big freed buffers for the next fetch, within its bounds.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

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

// Over a bound, the smallest spares go first: a streamed pass that moved from 88 MB layers to a
// 131 MB lm_head dropped the returning big buffer and grew a small spare into fresh pages on
// every pass.
TEST(BufferPool, OverABoundTheSmallestSpareGoesFirst) {
  BufferPool pool(2);
  pool.set_limit(18 * MB);
  auto a = pool.acquire(8 * MB);
  auto b = pool.acquire(8 * MB);
  a.reset();  // 8 out + 8 spare
  EXPECT_EQ(pool.stats().free_count, 1u);
  b->resize(12 * MB);  // its user grew it
  const std::byte* grown = b->data();
  b.reset();  // 0 out + 8 + 12 spare would be 20 > 18: the 8 MB spare goes, the 12 MB one stays
  EXPECT_EQ(pool.stats().free_count, 1u);
  EXPECT_GE(pool.stats().free_bytes, 12 * MB);
  EXPECT_LE(pool.stats().free_bytes, 18 * MB);
  auto c = pool.acquire(10 * MB);
  EXPECT_EQ(c->data(), grown);
}

// Also for the spare count: a bigger returning buffer replaces the smallest spare.
TEST(BufferPool, OverMaxFreeTheSmallestSpareGoesFirst) {
  BufferPool pool(1);
  auto a = pool.acquire(2 * MB);
  auto b = pool.acquire(6 * MB);
  const std::byte* big = b->data();
  a.reset();
  b.reset();
  EXPECT_EQ(pool.stats().free_count, 1u);
  auto c = pool.acquire(5 * MB);
  EXPECT_EQ(c->data(), big);
}

namespace {
// The VmFlags line of the mapping in /proc/self/smaps that holds `p`, or "" if none does.
std::string vm_flags_of(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  const auto at = reinterpret_cast<uintptr_t>(p);
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
      inside = lo <= at && at < hi;
      continue;
    }
    if (inside && line.rfind("VmFlags:", 0) == 0) return line;
  }
  return "";
}
}  // namespace

// Fresh 4 KiB pages cost ~30 us each to fault in on these VMs (a fresh 131 MB buffer ~950 ms to
// fill); big buffers sit on 2 MiB boundaries with transparent huge pages asked for (MADV_HUGEPAGE
// shows as "hg" in the mapping's VmFlags). Small buffers do not ask.
TEST(ByteBuffer, BigBuffersAskForHugePages) {
  if (!std::filesystem::exists("/sys/kernel/mm/transparent_hugepage")) GTEST_SKIP() << "no THP in this kernel";
  ByteBuffer big(8 * MB + 100);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(big.data()) % (2 * MB), 0u);
  EXPECT_NE(vm_flags_of(big.data()).find(" hg"), std::string::npos) << vm_flags_of(big.data());
  big.data()[big.size() - 1] = std::byte{1};
  ByteBuffer small(64 * 1024);
  EXPECT_EQ(vm_flags_of(small.data()).find(" hg"), std::string::npos) << vm_flags_of(small.data());
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
