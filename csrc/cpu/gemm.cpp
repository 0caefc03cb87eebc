// BLAS-backed dense products (see gemm.h). Small products stay on the scalar ops, where a
// BLAS call's fixed cost would dominate.
#include "gemm.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

#include "aligned.h"
#include "ops.h"
#include "simd.h"
#include "threads.h"

#if NM_HAVE_BLAS
#include <cblas.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
namespace nm::simd {  // gemm_avx2.cpp
void pack_panels_avx2(bool tb, int n, int k, const float* B, int ldb, float* Bp);
void rows_product_avx2(int m0, int m1, int n, int k, const float* A, int lda, const float* Bp,
                       const float* bias, bool acc, const float* gate, float* colsum, float* C,
                       int ldc);
void tn_product_avx2(int i0, int i1, int n, int k, const float* A, int lda, const float* B,
                     int ldb, float* C, int ldc);
void transpose_avx2(int m, int n, const float* src, int lds, float scale, const float* bias,
                    float* dst, int ldd);
void small_k_product_avx2(bool ta, int m, int n, int k, const float* A, int lda, const float* B,
                          int ldb, bool acc, float* C, int ldc);
void small_n_product_avx2(int m, int n, int k, const float* A, int lda, const float* B, int ldb,
                          bool acc, float* C, int ldc);
}  // namespace nm::simd
#endif

namespace nm::cpu {
namespace {
// Below this many multiply-adds a BLAS call costs more than it saves; at or below this many
// rows the own kernels beat BLAS's skinny-matrix paths (both measured with bench/run.py).
constexpr size_t kBlasMin = 4096;
constexpr int kSmallRows = 16;
// The own small-batch kernels are AVX2 ones; without AVX2 (NEUROMORPH_NO_AVX2, another ISA) a
// small batch takes BLAS like a large one (the scalar reference was 7-10x slower: case a
// 163 vs 25 us per step, c at batch 8 4.8 vs 0.45 ms).
bool small_kernels(int rows, int in) { return rows <= kSmallRows && in >= 16 && simd::has_avx2(); }

// Products of at least this many multiply-adds are cut over the threads, the BLAS ones (sgemm:
// why and how measured, below) and the own ones alike.
constexpr double kSplitMin = double(1 << 22);

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// A batch of 32 or 48 rows against large weights (case c at batch 32: 32 x 784 x 512): the
// weights are the row operand of the own product, read in place six rows at a time, and the
// batch's rows (32-48 x in, at most 192 KB) are packed once, for every thread: OpenBLAS packs
// the weights for every product and, cut over 2 threads, each piece packs the batch again
// (its pieces ran at 65 GFLOP/s per thread against 72 whole). Alone, 1 thread: the forward
// 1.15-1.26x OpenBLAS, the weight update parity; the input gradient dz W stays on OpenBLAS
// (its transposed form lost, 0.89x); at 64 rows OpenBLAS is level (1.05x, 0.97x).
bool by_weights(int rows, int in, int out) {
  return rows > kSmallRows && rows <= 48 && rows % 16 == 0 && in >= 16 && in <= 1024 &&
         out >= 64 && out <= 4096 && simd::has_avx2();  // (z^T: <= 768 KB of scratch a thread)
}

// C[m, n] = A[m, k] Bp (+ bias) (+ C) (Bp: pack_panels_avx2's panels), cut over the pool by
// A's strips of six rows (at least `grain` strips a piece) when large: the same bits for any
// thread count.
void rows_on_pool(int m, int n, int k, const float* A, int lda, const float* Bp,
                  const float* bias, bool acc, float* C, int ldc, size_t grain) {
  if (pool_threads() > 1 && !in_parallel_job() && double(m) * n * k >= kSplitMin) {
    parallel_for(size_t(m + 5) / 6, grain, [&](int, size_t s0, size_t s1) {
      simd::rows_product_avx2(int(s0) * 6, std::min(m, int(s1) * 6), n, k, A, lda, Bp, bias,
                              acc, nullptr, nullptr, C, ldc);
    });
    return;
  }
  simd::rows_product_avx2(0, m, n, k, A, lda, Bp, bias, acc, nullptr, nullptr, C, ldc);
}

// Products with one short side, where OpenBLAS's packing outweighs the work (the energy
// synapses' 10-wide softmax layer against 1000 hidden units ran at 35-61 GFLOP/s): a short
// inner dimension against a wide B (C = A B, k <= 16, at most 64 rows; or C = A^T B for at most
// 12 rows of C and k <= 32), or at most 16 columns of C as dot products over a long k (C = A
// B^T, at most 256 rows). Alone, against OpenBLAS (session 15): 1.03-1.15x, 1.41-1.68x and
// 1.64-1.98x on the energy block's shapes; outside these bounds it lost (0.84x at 800 x 512 x
// 32, 0.85x for C = A^T B of 16 rows). alpha 1 and beta 0 or 1 only; gemm<float> leaves to
// sgemm the products it would cut over the threads (these run whole).
bool skinny(bool ta, bool tb, int m, int n, int k, float alpha, float beta) {
  if (alpha != 1.0f || (beta != 0.0f && beta != 1.0f) || !simd::has_avx2()) return false;
  if (tb) return !ta && n <= 16 && k >= 256 && m <= 256;
  return n >= 256 && (ta ? m <= 12 && k <= 32 : m <= 64 && k <= 16);
}

// z = u W^T + b as z^T = W u^T (the weights' rows in place), then z from z^T and b.
void forward_by_weights(const float* u, const float* W, const float* b, float* z, int rows,
                        int in, int out) {
  thread_local LineVector<float> panels, zt;  // the caller's (workers see the pointers)
  if (panels.size() < size_t(rows) * in) panels.resize(size_t(rows) * in);
  if (zt.size() < size_t(rows) * out) zt.resize(size_t(rows) * out);
  float* Bp = panels.data();
  float* T = zt.data();
  simd::pack_panels_avx2(true, rows, in, u, in, Bp);
  rows_on_pool(out, rows, in, W, in, Bp, nullptr, false, T, rows, 4);
  simd::transpose_avx2(rows, out, T, rows, 1.0f, b, z, out);
}

// W += scale dz^T u (a weight gradient, scale 1, or the SGD step, scale -lr): dz^T scaled as
// the row operand, u's rows packed.
void update_by_weights(const float* u, const float* dz, float scale, float* W, int rows, int in,
                       int out) {
  thread_local LineVector<float> panels, dzt;
  if (panels.size() < size_t(rows) * in) panels.resize(size_t(rows) * in);
  if (dzt.size() < size_t(rows) * out) dzt.resize(size_t(rows) * out);
  float* A = dzt.data();
  simd::transpose_avx2(out, rows, dz, out, scale, nullptr, A, rows);
  simd::pack_panels_avx2(false, in, rows, u, in, panels.data());
  rows_on_pool(out, in, rows, A, rows, panels.data(), nullptr, true, W, in, 4);
}
#endif

#if NM_HAVE_BLAS
// With more than one engine thread, a product of at least kSplitMin multiply-adds is cut over
// the engine's worker threads (cpu/threads.h) by C's columns (or rows, when C is narrow), each
// piece a one-thread OpenBLAS product; OpenBLAS's own threads are never used. Measured on the
// 2-vCPU VM of performance.md: OpenBLAS's second thread paid only 1.1-1.2x on the energy
// block's products (32 batch rows), and its threads spin between products (~0.1 s), taking the
// core the engine's pool needs (and the pool's spinning took theirs: case c's 2-thread speed-up
// 1.6x -> 1.3x with both). Each entry of C comes from one product over the same k whatever the
// cut, but OpenBLAS's kernels round differently with the column range (measured: a few entries
// in a thousand differ in the last bit), so a cut product equals the whole one to rounding, as
// with OpenBLAS's own threads before. The threshold (~0.1 ms of work) was measured with 2
// threads: case c at batch 32 (32x784x512) 1.0x at 2^24, 1.5-1.7x at 2^22; case b at batch
// 256 (256x128x256) 0.94x at 2^24, 1.24x at 2^22; smaller cuts lost on case b at batch 64.
int g_threads = 1;                // what build(threads=N) asked for

// one product on the calling thread
void sgemm1(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda,
            const float* b, int ldb, float beta, float* c, int ldc) {
  static std::once_flag one_thread;  // OpenBLAS's own threads: never (above)
  std::call_once(one_thread, [] { scipy_openblas_set_num_threads(1); });
  scipy_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// Every BLAS product of the engine: cut over the worker threads when large (above).
// whether sgemm cuts this product over the threads
bool sgemm_cuts(int m, int n, int k) {
  return std::min(g_threads, pool_threads()) > 1 &&
         !in_parallel_job() &&  // inside a chunk the cut would run inline: whole
         double(m) * n * k >= kSplitMin && (n >= 64 || m >= 64);
}

void sgemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda,
           const float* b, int ldb, float beta, float* c, int ldc) {
  const bool cut = sgemm_cuts(m, n, k);
  if (!cut) {
    sgemm1(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // Column cuts in units of 16 columns from column 0: on 64-byte boundaries of C's memory when
  // C's rows start on one (the executor's arenas are 64-byte aligned), so no cache line is
  // shared by two threads' pieces (that had made case c's 2-thread speed-up 1.0-1.8x). The cut
  // never depends on C's address: where a piece ends changes which of OpenBLAS's edge kernels
  // computes a column, i.e. its rounding, and a fixed thread count must give the same bits
  // wherever the allocator puts C (session 8: a skew taken from the address made two runs in
  // one process differ after the allocator's mmap threshold moved). Row cuts: units of 8 rows.
  const bool by_cols = n >= 64;
  const int unit = by_cols ? 16 : 8;
  const int len = by_cols ? n : m;
  const size_t units = size_t(len + unit - 1) / size_t(unit);
  parallel_for(units, by_cols ? 2 : 4, [&](int, size_t u0, size_t u1) {
      const int i0 = int(u0) * unit;
      const int i1 = std::min(len, int(u1) * unit);
      if (i1 <= i0) return;
      if (by_cols)
        sgemm1(ta, tb, m, i1 - i0, k, alpha, a, lda, tb ? b + size_t(i0) * ldb : b + i0, ldb, beta,
               c + i0, ldc);
      else
        sgemm1(ta, tb, i1 - i0, n, k, alpha, ta ? a + i0 : a + size_t(i0) * lda, lda, b, ldb, beta,
               c + size_t(i0) * ldc, ldc);
  });
}

void gemm(bool ta, bool tb, int m, int n, int k, const float* a, int lda, const float* b, int ldb,
          float* c, int ldc) {
  sgemm(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 1.0f, c, ldc);
}
#endif
}  // namespace

bool have_blas() { return NM_HAVE_BLAS != 0; }

void set_blas_threads(int n) {
#if NM_HAVE_BLAS
  g_threads = n < 1 ? 1 : n;
#else
  (void)n;
#endif
}

// Float models take the fast paths; double models are the reference and stay on ops.h.
template <>
void dense_forward<double>(const double* u, const double* W, const double* b, double* z, int rows,
                           int in, int out) {
  ops::dense_forward(u, W, b, z, rows, in, out);
}

template <>
void dense_backward<double>(const double* u, const double* W, const double* dz, double* dW,
                            double* db, double* du, int rows, int in, int out) {
  ops::dense_backward(u, W, dz, dW, db, du, rows, in, out);
}

template <class T>
void dense_forward(const T* u, const T* W, const T* b, T* z, int rows, int in, int out) {
  if (small_kernels(rows, in)) return simd::dense_forward_small(u, W, b, z, rows, in, out);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (by_weights(rows, in, out)) return forward_by_weights(u, W, b, z, rows, in, out);
#endif
#if NM_HAVE_BLAS
  if (size_t(rows) * in * out >= kBlasMin) {
    for (int r = 0; r < rows; ++r) std::memcpy(z + size_t(r) * out, b, sizeof(T) * out);
    gemm(false, true, rows, out, in, u, in, W, in, z, out);
    return;
  }
#endif
  ops::dense_forward(u, W, b, z, rows, in, out);
}

template <class T>
void dense_backward(const T* u, const T* W, const T* dz, T* dW, T* db, T* du, int rows, int in,
                    int out) {
  if (small_kernels(rows, in)) return simd::dense_backward_small(u, W, dz, dW, db, du, rows, in, out);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (dW && by_weights(rows, in, out) && in % 16 == 0) {
    update_by_weights(u, dz, 1.0f, dW, rows, in, out);
    for (int r = 0; r < rows; ++r)
      for (int o = 0; o < out; ++o) db[o] += dz[size_t(r) * out + o];
    if (du) gemm<T>(false, false, rows, in, out, T(1), dz, out, W, in, T(1), du, in);
    return;
  }
#endif
#if NM_HAVE_BLAS
  if (size_t(rows) * in * out >= kBlasMin) {
    gemm(true, false, out, in, rows, dz, out, u, in, dW, in);
    for (int r = 0; r < rows; ++r)
      for (int o = 0; o < out; ++o) db[o] += dz[size_t(r) * out + o];
    if (du) gemm(false, false, rows, in, out, dz, out, W, in, du, in);
    return;
  }
#endif
  ops::dense_backward(u, W, dz, dW, db, du, rows, in, out);
}

void dense_input_grad(const float* u, const float* W, const float* dz, float* du, int rows, int in,
                      int out) {
  if (!du) return;
  if (small_kernels(rows, in))
    return simd::dense_backward_small(u, W, dz, nullptr, nullptr, du, rows, in, out);
#if NM_HAVE_BLAS
  if (size_t(rows) * in * out >= kBlasMin)
    return gemm(false, false, rows, in, out, dz, out, W, in, du, in);
#endif
  ops::dense_backward<float>(u, W, dz, nullptr, nullptr, du, rows, in, out);
}

void dense_sgd_update(const float* u, float* W, const float* dz, float* b, int rows, int in,
                      int out, float lr) {
  if (small_kernels(rows, in) && simd::dense_sgd_update_small(u, W, dz, b, rows, in, out, lr)) return;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (by_weights(rows, in, out) && in % 16 == 0) {
    update_by_weights(u, dz, -lr, W, rows, in, out);
    for (int r = 0; r < rows; ++r)
      for (int o = 0; o < out; ++o) b[o] -= lr * dz[size_t(r) * out + o];
    return;
  }
#endif
#if NM_HAVE_BLAS
  if (size_t(rows) * in * out >= kBlasMin) {
    sgemm(true, false, out, in, rows, -lr, dz, out, u, in, 1.0f, W, in);
    for (int r = 0; r < rows; ++r)
      for (int o = 0; o < out; ++o) b[o] -= lr * dz[size_t(r) * out + o];
    return;
  }
#endif
  // Small and without SIMD: plain loops, row by row.
  for (int o = 0; o < out; ++o) {
    float gs = 0;
    for (int r = 0; r < rows; ++r) gs += dz[size_t(r) * out + o];
    b[o] -= lr * gs;
    for (int i = 0; i < in; ++i) {
      float acc = 0;
      for (int r = 0; r < rows; ++r) acc += dz[size_t(r) * out + o] * u[size_t(r) * in + i];
      W[size_t(o) * in + i] -= lr * acc;
    }
  }
}

bool rows_product(bool tb, int m, int n, int k, const float* A, int lda, const float* B, int ldb,
                  const float* bias, bool accumulate, float* C, int ldc, const float* gate,
                  float* colsum) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  // Where it beat OpenBLAS (session 14): at least 64 rows, k up to 512 (A's 6-row strip and a
  // 16-column panel of B stay in L1 and L2), whole 16-column panels.
  if (!simd::has_avx2() || m < 64 || n % 16 || n <= 0 || k < 16 || k > 512) return false;
  thread_local LineVector<float> panels;
  if (panels.size() < size_t(n) * k) panels.resize(size_t(n) * k);
  float* Bp = panels.data();  // the caller's (workers see Bp)
  simd::pack_panels_avx2(tb, n, k, B, ldb, Bp);
  // with a gate the column sums (a strip's rows in registers, then added strip by strip) run on
  // this thread: never cut
  if (gate)
    simd::rows_product_avx2(0, m, n, k, A, lda, Bp, bias, accumulate, gate, colsum, C, ldc);
  else
    rows_on_pool(m, n, k, A, lda, Bp, bias, accumulate, C, ldc, 8);
  return true;
#else
  (void)tb, (void)m, (void)n, (void)k, (void)A, (void)lda, (void)B, (void)ldb, (void)bias,
      (void)accumulate, (void)C, (void)ldc, (void)gate, (void)colsum;
  return false;
#endif
}

bool tn_product(int m, int n, int k, const float* A, int lda, const float* B, int ldb, float* C,
                int ldc) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  // Where it beat OpenBLAS (session 14): C at most 64 columns wide (B's block stays in L1),
  // k of at least 256 rows; wider C (case e's 128 and 512 columns) lost. C of at most 64 rows
  // and wider (attn2d's 64 x 256 W2): its transpose C^T += B^T A, added to C afterwards.
  if (!simd::has_avx2() || m <= 0 || n <= 0 || n % 16 || k < 256) return false;
  const bool flip = n > 64;
  if (flip ? m > 64 || m % 16 : m < 16) return false;
  thread_local std::vector<float> t;  // C^T (the caller's: workers see T)
  if (flip) t.assign(size_t(n) * m, 0.0f);
  float* T = t.data();
  // rows r0..r1-1 of C (or of C^T when flipped)
  auto rows = [&](int r0, int r1) {
    if (flip) simd::tn_product_avx2(r0, r1, m, k, B, ldb, A, lda, T, m);
    else simd::tn_product_avx2(r0, r1, n, k, A, lda, B, ldb, C, ldc);
  };
  const int R = flip ? n : m;
  if (pool_threads() > 1 && !in_parallel_job() && double(m) * n * k >= kSplitMin)
    parallel_for(size_t(R + 5) / 6, 4, [&](int, size_t s0, size_t s1) {
      rows(int(s0) * 6, std::min(R, int(s1) * 6));
    });
  else
    rows(0, R);
  if (flip)
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) C[size_t(i) * ldc + j] += T[size_t(j) * m + i];
  return true;
#else
  (void)m, (void)n, (void)k, (void)A, (void)lda, (void)B, (void)ldb, (void)C, (void)ldc;
  return false;
#endif
}

namespace {
// The plain product: i-p-j order so the inner loop runs along contiguous rows of B and C.
template <class T>
void gemm_loops(bool ta, bool tb, int m, int n, int k, T alpha, const T* A, int lda, const T* B,
                int ldb, T beta, T* C, int ldc) {
  for (int i = 0; i < m; ++i) {
    T* c = C + size_t(i) * ldc;
    if (beta == T(0)) std::fill(c, c + n, T(0));
    else if (beta != T(1)) for (int j = 0; j < n; ++j) c[j] *= beta;
    if (tb) {
      for (int j = 0; j < n; ++j) {
        T acc = 0;
        for (int p = 0; p < k; ++p)
          acc += (ta ? A[size_t(p) * lda + i] : A[size_t(i) * lda + p]) * B[size_t(j) * ldb + p];
        c[j] += alpha * acc;
      }
      continue;
    }
    for (int p = 0; p < k; ++p) {
      const T a = alpha * (ta ? A[size_t(p) * lda + i] : A[size_t(i) * lda + p]);
      if (a == T(0)) continue;
      const T* b = B + size_t(p) * ldb;
      for (int j = 0; j < n; ++j) c[j] += a * b[j];
    }
  }
}
}  // namespace

template <>
void gemm<double>(bool ta, bool tb, int m, int n, int k, double alpha, const double* A, int lda,
                  const double* B, int ldb, double beta, double* C, int ldc) {
  gemm_loops(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <>
void gemm<float>(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  if (m <= 0 || n <= 0) return;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (k > 0 && size_t(m) * n * k >= kBlasMin && skinny(ta, tb, m, n, k, alpha, beta)
#if NM_HAVE_BLAS
      && !sgemm_cuts(m, n, k)
#endif
  ) {
    if (tb) simd::small_n_product_avx2(m, n, k, A, lda, B, ldb, beta != 0.0f, C, ldc);
    else simd::small_k_product_avx2(ta, m, n, k, A, lda, B, ldb, beta != 0.0f, C, ldc);
    return;
  }
#endif
#if NM_HAVE_BLAS
  if (k > 0 && size_t(m) * n * k >= kBlasMin) {
    sgemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
#endif
  gemm_loops(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

template void dense_forward<float>(const float*, const float*, const float*, float*, int, int, int);
template void dense_backward<float>(const float*, const float*, const float*, float*, float*,
                                    float*, int, int, int);

}  // namespace nm::cpu
