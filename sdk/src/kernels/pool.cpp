#include "kernels/pool.h"

#include <cblas.h>
#include <immintrin.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace surf::kernels {

namespace {

thread_local bool in_pool_task = false;

int default_threads() {
  if (const char* env = std::getenv("SURF_THREADS")) {
    const int n = std::atoi(env);
    if (n >= 1) return std::min(n, 256);
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

// Workers spin this long for the next call before sleeping: decoding issues a matmul every few
// tens of microseconds, and a futex wake-up costs about as much as a small matmul.
constexpr auto kSpin = std::chrono::microseconds(300);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

}  // namespace

// Protocol. The caller publishes a call by making `generation` odd (closed), waiting until no
// worker is inside the previous call, writing the call, and making `generation` even (open).
// A worker announces itself in `active` before it reads `generation`: if it reads an open
// generation it has not served, that call's fields stay intact until it leaves. The caller returns
// once every task is done, without waiting for workers that have not woken up yet (on a busy
// machine a sleeping worker may take a scheduler tick to run; the caller takes its tasks instead).
struct Pool::State {
  std::mutex call_mutex;  // one caller at a time; others run inline
  std::atomic<uint32_t> generation{0};
  std::atomic<int> active{0};
  std::atomic<bool> stop{false};
  std::atomic<int> reserved{0};  // cores the host has taken for its own work (Pool::reserve)
  // The current call.
  void (*call)(void*, int64_t) = nullptr;
  void* ctx = nullptr;
  int64_t tasks = 0;
  int helpers = 0;  // workers 1..helpers join the current call
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::mutex error_mutex;
  std::exception_ptr error;  // the first exception a task threw
  std::vector<std::thread> workers;

  void work() {
    in_pool_task = true;
    for (int64_t t; (t = next.fetch_add(1, std::memory_order_relaxed)) < tasks;) {
      try {
        call(ctx, t);
      } catch (...) {
        std::lock_guard g(error_mutex);
        if (!error) error = std::current_exception();
      }
      done.fetch_add(1, std::memory_order_release);
    }
    in_pool_task = false;
  }

  void worker_loop(int index) {
    uint32_t seen = 0;
    bool spin = true;
    for (;;) {
      const auto start = std::chrono::steady_clock::now();
      for (int spins = 0;; ++spins) {
        const uint32_t g = generation.load(std::memory_order_acquire);
        if (g != seen && (g & 1) == 0) break;
        if ((spins & 255) == 255 && (!spin || std::chrono::steady_clock::now() - start > kSpin)) {
          generation.wait(g, std::memory_order_acquire);
          spins = 0;
          continue;
        }
        cpu_relax();
      }
      if (stop.load(std::memory_order_acquire)) return;
      active.fetch_add(1, std::memory_order_seq_cst);
      const uint32_t g = generation.load(std::memory_order_seq_cst);
      if ((g & 1) == 0 && g != seen) {
        seen = g;
        // A worker left out of a call (its core is reserved) sleeps at once rather than spinning
        // on the core the host wants.
        spin = index <= helpers;
        if (spin) work();
      }
      active.fetch_sub(1, std::memory_order_release);
    }
  }
};

Pool& Pool::get() {
  static Pool* pool = new Pool();  // never destroyed: workers may outlive static destructors' order
  return *pool;
}

Pool::Pool() : state_(new State) {
  threads_ = default_threads();
  // The pool is the parallelism: OpenBLAS, called inside tasks, runs on the calling thread.
  openblas_set_num_threads(1);
  for (int i = 1; i < threads_; ++i) state_->workers.emplace_back([s = state_, i] { s->worker_loop(i); });
}

Pool::~Pool() {
  state_->stop.store(true, std::memory_order_release);
  state_->generation.fetch_add(2, std::memory_order_seq_cst);
  state_->generation.notify_all();
  for (auto& w : state_->workers) w.join();
  delete state_;
}

int64_t Pool::chunk_size(int64_t n, int64_t grain, int64_t align, int per_thread) const {
  align = std::max<int64_t>(align, 1);
  const int64_t ranges = static_cast<int64_t>(std::max(1, per_thread)) * threads_;
  int64_t chunk = std::max<int64_t>(grain, (n + ranges - 1) / ranges);
  chunk = (chunk + align - 1) / align * align;
  return std::max<int64_t>(chunk, 1);
}

int Pool::reserve(int delta) {
  const int now = state_->reserved.fetch_add(delta, std::memory_order_relaxed) + delta;
  if (now < 0) {
    state_->reserved.fetch_sub(delta, std::memory_order_relaxed);
    throw std::invalid_argument("kernel thread reservations released more often than taken");
  }
  return now;
}

int Pool::reserved() const { return state_->reserved.load(std::memory_order_relaxed); }

int Pool::usable_threads() const {
  return std::max(1, threads_ - std::max(0, state_->reserved.load(std::memory_order_relaxed)));
}

void Pool::run_erased(int64_t tasks, void (*call)(void*, int64_t), void* ctx) {
  State& s = *state_;
  std::unique_lock lock(s.call_mutex, std::defer_lock);
  const int usable = usable_threads();
  if (tasks == 1 || usable == 1 || in_pool_task || !lock.try_lock()) {
    struct Restore {
      bool outer = in_pool_task;
      ~Restore() { in_pool_task = outer; }
    } restore;
    in_pool_task = true;
    for (int64_t t = 0; t < tasks; ++t) call(ctx, t);
    return;
  }
  s.generation.fetch_add(1, std::memory_order_seq_cst);  // closed: no worker starts the old call
  while (s.active.load(std::memory_order_seq_cst) != 0) cpu_relax();
  s.call = call;
  s.ctx = ctx;
  s.tasks = tasks;
  s.helpers = usable - 1;
  s.next.store(0, std::memory_order_relaxed);
  s.done.store(0, std::memory_order_relaxed);
  s.generation.fetch_add(1, std::memory_order_seq_cst);  // open
  s.generation.notify_all();
  s.work();
  while (s.done.load(std::memory_order_acquire) < tasks) cpu_relax();
  if (s.error) std::rethrow_exception(std::exchange(s.error, nullptr));
}

}  // namespace surf::kernels
