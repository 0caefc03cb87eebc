// The worker pool (threads.h): persistent threads that sleep on a condition variable between
// jobs (they never spin, so they do not compete with OpenBLAS's threads).
#include "threads.h"

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace nm::cpu {
namespace {

// True on a thread while it runs a chunk: a parallel_for from inside one (a node that cuts its
// own work by samples and calls the elementwise helpers per chunk) runs inline as one chunk.
thread_local bool t_in_job = false;

struct InJob {
  bool was = t_in_job;
  InJob() { t_in_job = true; }
  ~InJob() { t_in_job = was; }
};

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
      ++generation_;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
    stop_ = false;
    size_ = n;
    for (int i = 1; i < n; ++i) workers_.emplace_back([this, i] { loop(i); });
  }

  int size() const { return size_; }

  int run(size_t n, size_t min_per_chunk,
          const std::function<void(int, size_t, size_t)>& fn) {
    const size_t most = min_per_chunk ? n / min_per_chunk : n;
    const int chunks = int(std::max<size_t>(1, std::min<size_t>(size_t(size_), most)));
    if (chunks == 1 || t_in_job) {
      if (n) fn(0, 0, n);
      return 1;
    }
    std::lock_guard<std::mutex> run(run_mu_);  // one job at a time (models of other threads)
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = &fn;
      n_ = n;
      chunks_ = chunks;
      pending_ = chunks - 1;
      error_ = nullptr;
      ++generation_;
    }
    cv_.notify_all();
    std::exception_ptr mine;
    try {
      work(0);
    } catch (...) {
      mine = std::current_exception();
    }
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return pending_ == 0; });
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

  void loop(int index) {
    unsigned long seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (stop_) return;
        if (!job_ || index >= chunks_) continue;
      }
      std::exception_ptr err;
      try {
        work(index);
      } catch (...) {
        err = std::current_exception();
      }
      std::lock_guard<std::mutex> lock(mu_);
      if (err && !error_) error_ = err;
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex run_mu_, mu_;
  std::condition_variable cv_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(int, size_t, size_t)>* job_ = nullptr;
  size_t n_ = 0;
  int chunks_ = 1, pending_ = 0, size_ = 1;
  unsigned long generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

Pool& pool() {
  static Pool p;
  return p;
}

}  // namespace

void set_pool_threads(int n) { pool().resize(n); }
int pool_threads() { return pool().size(); }

int parallel_for(size_t n, size_t min_per_chunk,
                 const std::function<void(int, size_t, size_t)>& fn) {
  return pool().run(n, min_per_chunk, fn);
}

}  // namespace nm::cpu
