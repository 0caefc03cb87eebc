// Row-major single-precision GEMM on the device (cuBLAS, or our tiled kernel without it). Every
// product runs on the stream the Blas was given (the model's stream), so a step's launches are
// ordered and can be captured into a CUDA graph.
#pragma once
#include <cuda_runtime.h>
#if NM_HAVE_CUBLAS
#include <cublas_v2.h>
#endif

namespace nm::cuda {

class Blas {
 public:
  explicit Blas(cudaStream_t stream = nullptr);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  cudaStream_t stream() const { return stream_; }
  // C[m,n] = alpha op(A)[m,k] op(B)[k,n] + beta C (row-major, leading dimensions as stored)
  void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda,
            const float* B, int ldb, float beta, float* C, int ldc);
  // `count` independent products: the i-th uses A + i*sa, B + i*sb, C + i*sc (strides in
  // elements; a stride 0 shares that operand across the batch).
  void gemm_batched(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda,
                    long long sa, const float* B, int ldb, long long sb, float beta, float* C,
                    int ldc, long long sc, int count);

 private:
  cudaStream_t stream_ = nullptr;
#if NM_HAVE_CUBLAS
  cublasHandle_t handle_ = nullptr;
#endif
};

}  // namespace nm::cuda
