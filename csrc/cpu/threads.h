// The engine's own worker threads, for its loops outside the BLAS products: elementwise
// activations and their derivatives, softmax rows, the loss rows, the optimizer update. Sized by
// build(threads=N) (process-wide, like the BLAS threads). Work over [0, n) is cut into at most N
// contiguous chunks by index alone and chunk i always runs on worker i, so every result is the
// same for a fixed N; a reduction combines its per-chunk partials in chunk order.
#pragma once
#include <cstddef>
#include <functional>

namespace nm::cpu {

void set_pool_threads(int n);  // 1: everything on the calling thread (the default)
int pool_threads();
// fn(chunk, begin, end) for the chunks of [0, n); a single chunk (on the caller) when n is
// below min_per_chunk * 2 or one thread is set, or when called from inside a chunk (nested
// loops run inline, as chunk 0: per-chunk scratch indexed by chunk must then not be a member
// shared with another thread's inline call). Returns the number of chunks.
int parallel_for(size_t n, size_t min_per_chunk,
                 const std::function<void(int chunk, size_t begin, size_t end)>& fn);
// The same for any callable, held by reference: a lambda with several captures would make
// the std::function above allocate, and these loops run inside the train step.
template <class F>
int parallel_for(size_t n, size_t min_per_chunk, const F& fn) {
  return parallel_for(n, min_per_chunk,
                      std::function<void(int, size_t, size_t)>(std::cref(fn)));
}

}  // namespace nm::cpu
