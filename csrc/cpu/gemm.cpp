// BLAS-backed dense products (see gemm.h). Small products stay on the scalar ops, where a
// BLAS call's fixed cost would dominate.
#include <atomic>
#include "gemm.h"

#include <algorithm>
#include <cstring>

#include "ops.h"
#include "simd.h"

#if NM_HAVE_BLAS
#include <cblas.h>
#endif

namespace nm::cpu {
namespace {
// Below this many multiply-adds a BLAS call costs more than it saves; at or below this many
// rows the own kernels beat BLAS's skinny-matrix paths (both measured with bench/run.py).
constexpr size_t kBlasMin = 4096;
constexpr int kSmallRows = 16;

#if NM_HAVE_BLAS
// Threads pay only for large products: waking a BLAS worker costs more than it saves below
// this many multiply-adds (bench/run.py --threads 2: 256x128x256 got slower, 256x784x512 ~1.9x).
constexpr double kThreadMin = double(1 << 24);
int g_threads = 1;   // what build(threads=N) asked for
int g_active = -1;   // what OpenBLAS is set to now
std::atomic<int> g_pinned{0};  // open blas_single_threaded regions (they nest): OpenBLAS stays at 1

void use_threads(double work) {
  if (g_pinned.load(std::memory_order_relaxed) > 0) return;
  int want = work >= kThreadMin ? g_threads : 1;
  if (want != g_active) {
    scipy_openblas_set_num_threads(want);
    g_active = want;
  }
}

void gemm(bool ta, bool tb, int m, int n, int k, const float* a, int lda, const float* b, int ldb,
          float* c, int ldc) {
  use_threads(double(m) * n * k);
  scipy_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    m, n, k, 1.0f, a, lda, b, ldb, 1.0f, c, ldc);
}
#endif
}  // namespace

bool have_blas() { return NM_HAVE_BLAS != 0; }

void blas_pin(bool on) {
#if NM_HAVE_BLAS
  if (on && g_pinned.fetch_add(1) == 0 && g_active != 1) {
    scipy_openblas_set_num_threads(1);
    g_active = 1;
  }
  if (!on) g_pinned.fetch_sub(1);
#else
  (void)on;
#endif
}

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
  if (rows <= kSmallRows && in >= 16) return simd::dense_forward_small(u, W, b, z, rows, in, out);
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
  if (rows <= kSmallRows && in >= 16)
    return simd::dense_backward_small(u, W, dz, dW, db, du, rows, in, out);
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

void dense_backward_sgd(const float* u, float* W, const float* dz, float* b, float* du, int rows,
                        int in, int out, float lr) {
  if (rows <= kSmallRows && in >= 16 && simd::dense_backward_sgd_small(u, W, dz, b, du, rows, in, out, lr))
    return;
#if NM_HAVE_BLAS
  if (size_t(rows) * in * out >= kBlasMin) {
    if (du) gemm(false, false, rows, in, out, dz, out, W, in, du, in);
    use_threads(double(out) * in * rows);
    scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, rows, -lr, dz, out, u, in,
                      1.0f, W, in);
    for (int r = 0; r < rows; ++r)
      for (int o = 0; o < out; ++o) b[o] -= lr * dz[size_t(r) * out + o];
    return;
  }
#endif
  // Small and without SIMD: the reference op into a scratch-free form, row by row.
  if (du) ops::dense_backward<float>(u, W, dz, nullptr, nullptr, du, rows, in, out);
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
#if NM_HAVE_BLAS
  if (k > 0 && size_t(m) * n * k >= kBlasMin) {
    use_threads(double(m) * n * k);
    scipy_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                      m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
#endif
  gemm_loops(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

template void dense_forward<float>(const float*, const float*, const float*, float*, int, int, int);
template void dense_backward<float>(const float*, const float*, const float*, float*, float*,
                                    float*, int, int, int);

}  // namespace nm::cpu
