// Row-major single-precision GEMM on the device (cuBLAS, or our tiled kernel without it).
#pragma once
#if NM_HAVE_CUBLAS
#include <cublas_v2.h>
#endif

namespace nm::cuda {

class Blas {
 public:
  Blas();
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  // C[m,n] = alpha op(A)[m,k] op(B)[k,n] + beta C (row-major, leading dimensions as stored)
  void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda,
            const float* B, int ldb, float beta, float* C, int ldc);

 private:
#if NM_HAVE_CUBLAS
  cublasHandle_t handle_ = nullptr;
#endif
};

}  // namespace nm::cuda
