// The worker pool (threads.h): persistent threads that wait for the next job by spinning a
// short while, yielding the core between checks, and then sleep on a condition variable.
//
// Why spin at all: the engine's parallel regions are fine-grained (an elementwise pass, one
// cut product) with short serial gaps between them, and a sleeping worker's wake-up costs a
// futex call and, in a virtual machine, the wake-up of a halted virtual CPU — measured on the
// 2-vCPU VM of performance.md, the HAMUX case's 2-thread speed-up fell from ~1.5x to ~1.1x when
// the workers had slept. Why yield: while a worker waits, another thread may need its core;
// sched_yield hands it over at once. OpenBLAS's own threads, which spin too, are never used:
// large products are cut over this pool (gemm.cpp).
#include "threads.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace nm::cpu {
namespace {

// How long a waiting thread checks for its event before it sleeps.
constexpr auto kSpin = std::chrono::microseconds(200);

// True on a thread while it runs a chunk: a parallel_for from inside one (a node that cuts its
// own work by samples and calls the elementwise helpers per chunk) runs inline as one chunk.
thread_local bool t_in_job = false;

struct InJob {
  bool was = t_in_job;
  InJob() { t_in_job = true; }
  ~InJob() { t_in_job = was; }
};

// Checks ready() for up to kSpin, yielding the core between checks; true when it became true.
template <class F>
bool spin_until(F&& ready) {
  const auto until = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 64; ++i)
      if (ready()) return true;
    if (std::chrono::steady_clock::now() >= until) return ready();
    std::this_thread::yield();
  }
}

class Pool {
 public:
  ~Pool() { resize(1); }

  void resize(int n) {
    n = std::max(1, std::min(n, 256));
    std::lock_guard<std::mutex> run(run_mu_);  // no job in flight while resizing
    if (n == size_) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
    stop_ = false;
    size_.store(n, std::memory_order_relaxed);
    for (int i = 1; i < n; ++i) workers_.emplace_back([this] { loop(); });
  }

  int size() const { return size_.load(std::memory_order_relaxed); }
  // For tests: on, no worker claims a chunk once this returns (one already claiming, perhaps
  // the next job's chunks, is waited for; seq_cst: it sees held_ or we see it inside).
  void hold(bool on) {
    held_.store(on, std::memory_order_seq_cst);
    while (on && inside_.load(std::memory_order_seq_cst) > 0) std::this_thread::yield();
  }

  int run(size_t n, size_t min_per_chunk,
          const std::function<void(int, size_t, size_t)>& fn, int max_chunks) {
    const size_t most = min_per_chunk ? n / min_per_chunk : n;
    size_t cap = size_t(size());
    if (max_chunks > 0) cap = std::min(cap, size_t(max_chunks));
    int chunks = int(std::max<size_t>(1, std::min<size_t>(cap, most)));
    if (chunks == 1 || t_in_job) {
      if (n) fn(0, 0, n);
      return 1;
    }
    std::lock_guard<std::mutex> run(run_mu_);  // one job at a time (models of other threads)
    chunks = std::min(chunks, size());  // the pool may have shrunk meanwhile (resize holds run_mu_)
    if (chunks == 1) {
      if (n) fn(0, 0, n);
      return 1;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = &fn;
      n_ = n;
      chunks_ = chunks;
      pending_.store(chunks - 1, std::memory_order_relaxed);
      error_ = nullptr;
      tickets_.store(uint32_t(chunks) << 16 | 1u, std::memory_order_release);  // 0: the caller's
      generation_.fetch_add(1, std::memory_order_release);
    }
    if (sleepers_.load(std::memory_order_acquire) > 0) cv_.notify_all();
    std::exception_ptr mine;
    try {
      work(0);
    } catch (...) {
      mine = std::current_exception();
    }
    claim_rest();  // the chunks no worker has taken yet: one asleep, or its virtual CPU not running
    if (!spin_until([this] { return pending_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lock(mu_);
      done_.wait(lock, [this] { return pending_.load(std::memory_order_acquire) == 0; });
    }
    std::lock_guard<std::mutex> lock(mu_);
    job_ = nullptr;
    if (mine) std::rethrow_exception(mine);
    if (error_) std::rethrow_exception(error_);
    return chunks;
  }

 private:
  void work(int chunk) {
    if (chunk >= chunks_) return;
    const size_t begin = n_ * size_t(chunk) / size_t(chunks_);
    const size_t end = n_ * size_t(chunk + 1) / size_t(chunks_);
    InJob job;
    if (begin < end) (*job_)(chunk, begin, end);
  }

  void loop() {
    unsigned long seen = 0;
    auto fresh = [&] { return generation_.load(std::memory_order_acquire) != seen; };
    for (;;) {
      if (!spin_until(fresh)) {
        std::unique_lock<std::mutex> lock(mu_);
        sleepers_.fetch_add(1, std::memory_order_acq_rel);
        cv_.wait(lock, fresh);
        sleepers_.fetch_sub(1, std::memory_order_acq_rel);
      }
      {
        std::lock_guard<std::mutex> lock(mu_);  // the job's fields, as published with it
        seen = generation_.load(std::memory_order_acquire);
        if (stop_) return;
        if (!job_) continue;
      }
      inside_.fetch_add(1, std::memory_order_seq_cst);  // hold(true) waits for none inside
      if (!held_.load(std::memory_order_seq_cst)) claim_rest();
      inside_.fetch_sub(1, std::memory_order_seq_cst);
    }
  }

  // Runs unclaimed chunks of the current job until none is left. tickets_ holds the job's chunk
  // count (high half) and the next chunk to hand out (low half) in one word, so a claim can
  // never take a chunk number of one job against another job's count; the job's fields were
  // published before the word (release), a successful claim reads them after (acquire), and no
  // job is published before every chunk of the last one is done. A chunk's result depends on
  // its index only, so it does not matter which thread takes it.
  void claim_rest() {
    uint32_t t = tickets_.load(std::memory_order_acquire);
    for (;;) {
      const uint32_t c = t & 0xffffu;
      if (c >= t >> 16) return;
      if (!tickets_.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel,
                                          std::memory_order_acquire))
        continue;
      std::exception_ptr err;
      try {
        work(int(c));
      } catch (...) {
        err = std::current_exception();
      }
      if (err) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!error_) error_ = err;
      }
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mu_);  // the caller may be about to sleep on done_
        done_.notify_one();
      }
      t = tickets_.load(std::memory_order_acquire);
    }
  }

  std::mutex run_mu_, mu_;
  std::condition_variable cv_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(int, size_t, size_t)>* job_ = nullptr;
  size_t n_ = 0;
  int chunks_ = 1;
  std::atomic<int> size_{1};
  std::atomic<int> pending_{0}, sleepers_{0};
  std::atomic<uint32_t> tickets_{0};  // chunk count << 16 | next chunk (claim_rest)
  std::atomic<bool> held_{false};     // hold_pool_workers (tests)
  std::atomic<int> inside_{0};        // workers past the held_ check
  std::atomic<unsigned long> generation_{0};
  bool stop_ = false;
  std::exception_ptr error_;
};

Pool& pool() {
  static Pool p;
  return p;
}

}  // namespace

void set_pool_threads(int n) { pool().resize(n); }
bool in_parallel_job() { return t_in_job; }
int pool_threads() { return pool().size(); }
void hold_pool_workers(bool on) { pool().hold(on); }

int parallel_for(size_t n, size_t min_per_chunk,
                 const std::function<void(int, size_t, size_t)>& fn, int max_chunks) {
  return pool().run(n, min_per_chunk, fn, max_chunks);
}

}  // namespace nm::cpu
