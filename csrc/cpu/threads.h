// The engine's own worker threads: its loops (elementwise activations and their derivatives,
// softmax rows, the loss rows, the optimizer update), its large products cut into pieces
// (gemm.cpp) and nodes' chunks of samples. Sized by build(threads=N) (process-wide). Work over
// [0, n) is cut into at most N contiguous chunks by index alone; chunk 0 runs on the calling
// thread and each other chunk on whichever thread claims it first (the caller too, after its
// own: a worker that sleeps or whose virtual CPU the host has paused does not hold the job up).
// What a chunk computes depends on its index only, so every result is the same for a fixed N;
// a reduction combines its per-chunk partials in chunk order.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>


namespace nm::cpu {

void set_pool_threads(int n);  // 1: everything on the calling thread (the default)
int pool_threads();
// For tests: while on, the workers take no chunk, so the caller claims and runs every chunk of
// its jobs (what happens when the workers sleep or their CPUs are busy, made certain).
void hold_pool_workers(bool on);
// True on a thread while it runs a chunk of a parallel_for (where a nested one runs inline).
bool in_parallel_job();
// fn(chunk, begin, end) for the chunks of [0, n); a single chunk (on the caller) when n is
// below min_per_chunk * 2 or one thread is set, or when called from inside a chunk (nested
// loops run inline, as chunk 0: per-chunk scratch indexed by chunk must then not be a member
// shared with another thread's inline call). Returns the number of chunks.
// At most max_chunks chunks when it is positive (a caller that sized per-chunk scratch for
// that many: another thread may change the pool's size in between).
int parallel_for(size_t n, size_t min_per_chunk,
                 const std::function<void(int chunk, size_t begin, size_t end)>& fn,
                 int max_chunks = 0);
// The same for any callable, held by reference: a lambda with several captures would make
// the std::function above allocate, and these loops run inside the train step.
template <class F>
int parallel_for(size_t n, size_t min_per_chunk, const F& fn, int max_chunks = 0) {
  return parallel_for(n, min_per_chunk,
                      std::function<void(int, size_t, size_t)>(std::cref(fn)), max_chunks);
}

// Per-sample chunks for a node whose every operation is per sample (attn2d, energy): fn(first
// sample, count, chunk) over chunks of `rows` samples on the worker threads, so each worker
// takes its samples through the whole node (its products whole: in_parallel_job). One chunk on
// the calling thread with one thread, fewer than two samples, or `single` (inspect's probe is
// not thread-safe). At most `threads` chunks: the count the caller sized its per-chunk scratch
// for. The chunks depend on the thread count only. Returns the number of chunks.
template <class F>
int sample_chunks(int rows, int threads, bool single, F&& fn) {
  if (threads < 2 || rows < 2 || single) {
    fn(0, rows, 0);
    return 1;
  }
  return parallel_for(size_t(rows), 1, [&](int c, size_t b0, size_t b1) {
    fn(int(b0), int(b1 - b0), c);
  }, threads);
}

// The parameter gradients of such a node's chunks: chunk 0 adds into the arena G itself, the
// others into zeroed copies of the node's chunk-written parameters, added into G in chunk order
// afterwards (the same sums for the same thread count).
template <class T>
class ChunkGrads {
 public:
  // at declare: a parameter of n entries at arena offset off; `chunked`: the chunks write its
  // gradient (false: only the node's whole-batch work after the chunks does, into G itself)
  size_t track(size_t off, size_t n, bool chunked = true) {
    hi_ = std::max(hi_, off + n);
    if (chunked && n) {
      if (!ranges_.empty() && ranges_.back().second == off) ranges_.back().second = off + n;
      else ranges_.emplace_back(off, off + n);
    }
    return off;
  }
  // entries the chunks' copies hold (each zeroed and added back every call)
  size_t size() const {
    size_t s = 0;
    for (const auto& r : ranges_) s += r.second - r.first;
    return s;
  }
  // on the calling thread, before at most `threads` chunks: one copy per extra chunk (allocated
  // once per thread count; arena-indexed, only the tracked ranges are ever read)
  void reserve(int threads) {
    const size_t want = size_t(std::max(1, threads));
    for (size_t c = std::max<size_t>(copies_.size(), 1); c < want; ++c) {
      copies_.resize(c + 1);
      copies_[c].reset(new T[hi_]);
    }
  }
  // the gradient target of chunk c
  T* get(T* G, int c) {
    if (c == 0 || hi_ == 0) return G;
    T* Gc = copies_[size_t(c)].get();
    for (const auto& r : ranges_) std::fill(Gc + r.first, Gc + r.second, T(0));
    return Gc;
  }
  // after the chunks: the copies of chunks 1..n-1 into G
  void fold(T* G, int n) const {
    for (int c = 1; c < n && hi_ > 0; ++c)
      for (const auto& r : ranges_)
        for (size_t i = r.first; i < r.second; ++i) G[i] += copies_[size_t(c)][i];
  }

 private:
  size_t hi_ = 0;
  std::vector<std::pair<size_t, size_t>> ranges_;  // [begin, end) arena ranges the chunks write
  std::vector<std::unique_ptr<T[]>> copies_;
};

}  // namespace nm::cpu
