// The SDK's persistent thread pool, shared by every kernel: workers start once (at the first
// parallel kernel) and wait for work spinning briefly, then sleeping. A call splits its work into
// tasks that the calling thread and the workers take in turn; each task's arithmetic does not
// depend on which thread runs it, so results are the same whatever the thread count.
//
// Threads: SURF_THREADS, else the cores this process may use. Calls from inside a task, or while
// another thread's call holds the pool, run on the calling thread alone (no nesting, no waiting).
// OpenBLAS is set to one thread when the pool starts: the pool provides the parallelism, so
// BLAS calls inside tasks never oversubscribe the cores.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>

namespace surf::kernels {

class Pool {
 public:
  static Pool& get();
  int threads() const { return threads_; }
  // Cores the host reserves for its own work (e.g. fetching the next layer while this one
  // computes): calls then use that many fewer threads (never fewer than the caller), and the
  // workers left out sleep instead of spinning. Adds `delta` (+1 take, -1 give back) and returns
  // the reservations now held; std::invalid_argument if that would go below zero.
  int reserve(int delta);
  int reserved() const;
  // Threads a call made now would use: threads() less the reservations, at least 1.
  int usable_threads() const;

  // fn(task) for task in [0, tasks), spread over the pool; returns when all are done.
  template <class Fn>
  void run(int64_t tasks, Fn&& fn) {
    if (tasks <= 0) return;
    run_erased(
        tasks, [](void* ctx, int64_t task) { (*static_cast<Fn*>(ctx))(task); }, &fn);
  }

  // Splits [0, n) into ranges of at least `grain` items, multiples of `align` (but the last), at
  // most `per_thread` per thread, and calls fn(begin, end) for each. More ranges balance better
  // when another process takes a core for a while; fewer cost less to hand out.
  template <class Fn>
  void run_ranges(int64_t n, int64_t grain, int64_t align, Fn&& fn, int per_thread = 4) {
    const int64_t chunk = chunk_size(n, grain, align, per_thread);
    run((n + chunk - 1) / chunk, [&](int64_t t) { fn(t * chunk, std::min(n, (t + 1) * chunk)); });
  }

  int64_t chunk_size(int64_t n, int64_t grain, int64_t align, int per_thread) const;

  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

 private:
  Pool();
  ~Pool();
  void run_erased(int64_t tasks, void (*call)(void*, int64_t), void* ctx);
  struct State;
  State* state_;
  int threads_ = 1;
};

}  // namespace surf::kernels
