// Kernels shared by the CUDA kinds (attn2d.cu, column.cu): launch shapes, warp reductions,
// layer norm over rows with grouped gains, deterministic column sums, bias + activation. Each
// including file gets its own copies (anonymous namespace): include from .cu files only.
#pragma once
#include <algorithm>
#include <cstddef>

#include "../core/formulas.h"

namespace nm::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr float kLnEps = 1e-5f;

// blocks for a grid-stride loop over n items
int grid_for(size_t n) {
  const size_t b = (n + kThreads - 1) / kThreads;
  return int(std::min<size_t>(std::max<size_t>(b, 1), 65535 * 32));
}
// blocks for one warp per item
int grid_warps(size_t items) { return int((items + kWarps - 1) / kWarps); }

#define NM_FOR(i, n) \
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < (n); i += size_t(gridDim.x) * blockDim.x)

__device__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// ------------------------------------------------------------------ layer norm and MLP pieces

// one warp per row: y = g ⊙ LN(x) + b, g and b in G groups of d (row r uses group r % G);
// saves xhat and rstd
__global__ void k_ln_forward(const float* x, const float* g, const float* b, float* xhat,
                             float* rstd, float* y, int rows, int d, int G) {
  const int r = blockIdx.x * kWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (r >= rows) return;
  const float* xr = x + size_t(r) * d;
  const float* gr = g + size_t(r % G) * d;
  const float* br = b + size_t(r % G) * d;
  float s = 0;
  for (int c = lane; c < d; c += 32) s += xr[c];
  const float mean = warp_sum(s) / float(d);
  float v = 0;
  for (int c = lane; c < d; c += 32) v += (xr[c] - mean) * (xr[c] - mean);
  const float rs = 1.0f / sqrtf(warp_sum(v) / float(d) + kLnEps);
  if (lane == 0) rstd[r] = rs;
  for (int c = lane; c < d; c += 32) {
    const float h = (xr[c] - mean) * rs;
    xhat[size_t(r) * d + c] = h;
    y[size_t(r) * d + c] = gr[c] * h + br[c];
  }
}

// y = g ⊙ xhat + b again (backward recomputes the LN output); gw = G * d
__global__ void k_ln_apply(const float* xhat, const float* g, const float* b, float* y, size_t n,
                           int gw) {
  NM_FOR(i, n) y[i] = g[i % gw] * xhat[i] + b[i % gw];
}

// one warp per row: dx += dLN/dx . dy (the parameter gradients: k_colsum)
__global__ void k_ln_backward(const float* xhat, const float* rstd, const float* g,
                              const float* dy, float* dx, int rows, int d, int G) {
  const int r = blockIdx.x * kWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (r >= rows) return;
  const float* h = xhat + size_t(r) * d;
  const float* dyr = dy + size_t(r) * d;
  const float* gr = g + size_t(r % G) * d;
  float m1 = 0, m2 = 0;
  for (int c = lane; c < d; c += 32) {
    const float t = dyr[c] * gr[c];
    m1 += t;
    m2 += t * h[c];
  }
  m1 = warp_sum(m1) / float(d);
  m2 = warp_sum(m2) / float(d);
  for (int c = lane; c < d; c += 32)
    dx[size_t(r) * d + c] += rstd[r] * (dyr[c] * gr[c] - m1 - h[c] * m2);
}

// Column sums over rows of A[rows, w]: sum_ab[c] += Σ A·B, sum_a[c] += Σ A (either may be null).
// Block (32, 32): 32 columns, the rows split over 32 lanes, then summed in a fixed order.
__global__ void k_colsum(const float* A, const float* B, float* sum_ab, float* sum_a, int rows,
                         int w) {
  __shared__ float pab[32][33], pa[32][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  float ab = 0, a = 0;
  if (c < w)
    for (int r = threadIdx.y; r < rows; r += 32) {
      const float v = A[size_t(r) * w + c];
      a += v;
      if (B) ab += v * B[size_t(r) * w + c];
    }
  pab[threadIdx.y][threadIdx.x] = ab;
  pa[threadIdx.y][threadIdx.x] = a;
  __syncthreads();
  if (threadIdx.y != 0 || c >= w) return;
  ab = 0, a = 0;
  for (int k = 0; k < 32; ++k) ab += pab[k][threadIdx.x], a += pa[k][threadIdx.x];
  if (sum_ab) sum_ab[c] += ab;
  if (sum_a) sum_a[c] += a;
}

template <Act A>
__global__ void k_bias_act(float p, float* z, const float* b, float* a, size_t n, int width) {
  NM_FOR(i, n) {
    const float zi = z[i] + b[i % width];
    z[i] = zi;
    a[i] = fm::act<A>(p, 0.0f, zi);
  }
}

template <Act A>
__global__ void k_act_backward(float p, const float* z, const float* a, float* dz, size_t n) {
  NM_FOR(i, n) dz[i] *= fm::deriv<A>(p, 0.0f, z[i], a[i]);
}

__global__ void k_add_bias(float* y, const float* b, size_t n, int width) {
  NM_FOR(i, n) y[i] += b[i % width];
}


__global__ void k_add(float* y, const float* x, size_t n) {
  NM_FOR(i, n) y[i] += x[i];
}

}  // namespace
}  // namespace nm::cuda
