// Checked CUDA and cuBLAS calls: every call goes through NM_CUDA_CHECK / NM_CUBLAS_CHECK, which
// throw a typed engine error naming the expression, file and line (never exit). Out of device
// memory becomes nm::OutOfMemory (Python: neuromorph.OutOfMemoryError).
#pragma once
#include <cuda_runtime.h>
#if NM_HAVE_CUBLAS
#include <cublas_v2.h>
#endif

#include <string>

#include "neuromorph/errors.h"

namespace nm::cuda {

[[noreturn]] inline void fail(cudaError_t e, const char* expr, const char* file, int line) {
  const std::string where = std::string(expr) + " at " + file + ":" + std::to_string(line);
  if (e == cudaErrorMemoryAllocation)
    throw OutOfMemory("out of GPU memory: " + where);
  throw DeviceError(std::string("CUDA error '") + cudaGetErrorString(e) + "' in " + where);
}

#if NM_HAVE_CUBLAS
[[noreturn]] inline void fail_blas(cublasStatus_t s, const char* expr, const char* file, int line) {
  const std::string where = std::string(expr) + " at " + file + ":" + std::to_string(line);
  if (s == CUBLAS_STATUS_ALLOC_FAILED) throw OutOfMemory("out of GPU memory (cuBLAS): " + where);
  throw DeviceError("cuBLAS error " + std::to_string(int(s)) + " in " + where);
}
#endif

}  // namespace nm::cuda

#define NM_CUDA_CHECK(expr)                                                   \
  do {                                                                        \
    cudaError_t nm_err_ = (expr);                                             \
    if (nm_err_ != cudaSuccess) ::nm::cuda::fail(nm_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define NM_CUBLAS_CHECK(expr)                                                 \
  do {                                                                        \
    cublasStatus_t nm_st_ = (expr);                                           \
    if (nm_st_ != CUBLAS_STATUS_SUCCESS) ::nm::cuda::fail_blas(nm_st_, #expr, __FILE__, __LINE__); \
  } while (0)

// after a kernel launch: launch errors (bad configuration) surface here
#define NM_CUDA_LAUNCHED() NM_CUDA_CHECK(cudaGetLastError())
