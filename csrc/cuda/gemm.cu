// Row-major GEMM for the CUDA backend: cuBLAS when the toolkit has it (the usual case), else a
// tiled kernel of our own so the backend still builds against a minimal toolkit (nvcc + cudart).
#include "common.cuh"
#include "gemm.cuh"

namespace nm::cuda {
namespace {

constexpr int kTile = 16;

// C[m,n] = alpha op(A)[m,k] op(B)[k,n] + beta C, row-major, one 16x16 tile per block
__global__ void k_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda,
                       long long sa, const float* B, int ldb, long long sb, float beta, float* C,
                       int ldc, long long sc) {
  A += blockIdx.z * sa;
  B += blockIdx.z * sb;
  C += blockIdx.z * sc;
  __shared__ float As[kTile][kTile + 1], Bs[kTile][kTile + 1];
  const int row = blockIdx.y * kTile + threadIdx.y, col = blockIdx.x * kTile + threadIdx.x;
  float acc = 0;
  for (int t = 0; t < k; t += kTile) {
    const int ak = t + threadIdx.x, bk = t + threadIdx.y;
    As[threadIdx.y][threadIdx.x] =
        row < m && ak < k ? (ta ? A[size_t(ak) * lda + row] : A[size_t(row) * lda + ak]) : 0.f;
    Bs[threadIdx.y][threadIdx.x] =
        bk < k && col < n ? (tb ? B[size_t(col) * ldb + bk] : B[size_t(bk) * ldb + col]) : 0.f;
    __syncthreads();
    for (int i = 0; i < kTile; ++i) acc += As[threadIdx.y][i] * Bs[i][threadIdx.x];
    __syncthreads();
  }
  if (row < m && col < n) {
    float* c = C + size_t(row) * ldc + col;
    *c = alpha * acc + (beta == 0.f ? 0.f : beta * *c);
  }
}

}  // namespace

Blas::Blas(cudaStream_t stream) : stream_(stream) {
#if NM_HAVE_CUBLAS
  NM_CUBLAS_CHECK(cublasCreate(&handle_));
  NM_CUBLAS_CHECK(cublasSetStream(handle_, stream_));
#endif
}

Blas::~Blas() {
#if NM_HAVE_CUBLAS
  if (handle_) cublasDestroy(handle_);
#endif
}

void Blas::gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda,
                const float* B, int ldb, float beta, float* C, int ldc) {
#if NM_HAVE_CUBLAS
  // row-major C = op(A) op(B)  ==  column-major Cᵀ = op(B)ᵀ op(A)ᵀ
  NM_CUBLAS_CHECK(cublasSgemm(handle_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                              n, m, k, &alpha, B, ldb, A, lda, &beta, C, ldc));
#else
  gemm_batched(ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
#endif
}

void Blas::gemm_batched(bool ta, bool tb, int m, int n, int k, float alpha, const float* A,
                        int lda, long long sa, const float* B, int ldb, long long sb, float beta,
                        float* C, int ldc, long long sc, int count) {
  if (count <= 0 || m <= 0 || n <= 0) return;
#if NM_HAVE_CUBLAS
  NM_CUBLAS_CHECK(cublasSgemmStridedBatched(handle_, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                            ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, B,
                                            ldb, sb, A, lda, sa, &beta, C, ldc, sc, count));
#else
  const dim3 block(kTile, kTile), grid((n + kTile - 1) / kTile, (m + kTile - 1) / kTile, count);
  k_gemm<<<grid, block, 0, stream_>>>(ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C,
                                      ldc, sc);
  NM_CUDA_LAUNCHED();
#endif
}

}  // namespace nm::cuda
