// Dense-layer matrix products for the CPU backend: BLAS (OpenBLAS) above a size threshold,
// the scalar reference ops below it or when the build has no BLAS. Same contract as
// ops::dense_forward / ops::dense_backward, which stay the oracle. The structured kinds'
// linear maps (cpu/nn.h) may take the own AVX2 products first (rows_product, tn_product below;
// gemm_avx2.cpp).
#pragma once
#include <cstddef>

namespace nm::cpu {

bool have_blas();
// Threads for large products (process-wide; no-op without BLAS): with more than one, a large
// float product is cut over the engine's worker threads (cpu/threads.h), each piece a
// one-thread BLAS product (OpenBLAS's own threads are never used; gemm.cpp says why).
void set_blas_threads(int n);

// z[rows, out] = u[rows, in] . W[out, in]^T + b[out] (float: the own small-batch kernels up to
// 16 rows, the weights as the own product's row operand at 32 or 48 rows, else BLAS)
template <class T> void dense_forward(const T* u, const T* W, const T* b, T* z, int rows, int in, int out);
// dW += dz^T . u ; db += sum_rows dz ; du += dz . W (du may be null)
template <class T> void dense_backward(const T* u, const T* W, const T* dz, T* dW, T* db, T* du,
                                       int rows, int in, int out);

// C[m,n] = alpha op(A)[m,k] op(B)[k,n] + beta C, row-major with leading dimensions (op = the
// transpose when ta / tb). The general product of the structured node kinds: for float the
// own short-side kernels where one side is short (gemm.cpp `skinny`), else BLAS above the size
// threshold, plain loops otherwise; double (the reference) always plain loops.
// beta == 0 overwrites C without reading it.
template <class T>
void gemm(bool ta, bool tb, int m, int n, int k, T alpha, const T* A, int lda, const T* B, int ldb,
          T beta, T* C, int ldc);

// C[m, n] = A[m, k] op(B) (+ bias[n] on every row) (+ C when accumulate), op(B) = B (k x n,
// ldb) or, when tb, the transpose of B (n x k): the own AVX2 kernel for many rows and a short
// inner dimension (gemm_avx2.cpp), no zeroing or bias pass and A read in place. False when it
// does not apply (no AVX2, n not a multiple of 16, k or m outside its range): the caller then
// takes gemm. A, B, C and gate must not overlap. Cut over the worker threads by rows outside
// a parallel job: the same bits for any thread count. gate (m x n, ldc; with neither bias nor accumulate): C = (A op(B)) ⊙ gate
// and colsum[n] += C's column sums (a gated unit's input gradient and its bias gradient);
// then never cut.
bool rows_product(bool tb, int m, int n, int k, const float* A, int lda, const float* B, int ldb,
                  const float* bias, bool accumulate, float* C, int ldc,
                  const float* gate = nullptr, float* colsum = nullptr);

// C[m, n] += A[k, m]^T B[k, n] (a weight gradient dy^T x), the own AVX2 kernel for narrow C
// (or short and wide C, through its transpose) and many rows (gemm_avx2.cpp); false when it
// does not apply (the caller takes gemm). Cut
// over the worker threads by C's rows outside a parallel job: the same bits for any count.
bool tn_product(int m, int n, int k, const float* A, int lda, const float* B, int ldb, float* C,
                int ldc);

// The fused SGD step's two halves (plain SGD, non-recurrent models; model.cpp fused_step):
// du += dz . W with the old W; then W -= lr dz^T u and b -= lr sum_rows dz, no gradient stored.
void dense_input_grad(const float* u, const float* W, const float* dz, float* du, int rows, int in,
                      int out);
void dense_sgd_update(const float* u, float* W, const float* dz, float* b, int rows, int in,
                      int out, float lr);

}  // namespace nm::cpu
