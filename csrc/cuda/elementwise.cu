// Elementwise, row-wise and reduction kernels of the CUDA backend: fused bias + activation and
// its derivative, bias gradients, merges, optimizer updates, clipping, finiteness checks. The
// formulas are core/formulas.h's (shared with the CPU backend); this file only maps them onto
// threads.
#include "../core/formulas.h"
#include "common.cuh"
#include "kernels.cuh"
#include "nn.cuh"

namespace nm::cuda {
namespace {

template <Act A>
__global__ void k_bias_act(float p, const float* alpha, float* z, const float* b, float* a,
                           size_t n, int width) {
  const float al = alpha ? *alpha : 0.f;
  NM_FOR(i, n) {
    const float zi = z[i] + b[i % width];
    z[i] = zi;
    a[i] = fm::act<A>(p, al, zi);
  }
}

// one warp per row: a = softmax(z + b)
__global__ void k_bias_softmax(float* z, const float* b, float* a, int rows, int width) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= rows) return;
  float* zr = z + size_t(row) * width;
  float* ar = a + size_t(row) * width;
  float m = -INFINITY;
  for (int i = lane; i < width; i += 32) {
    zr[i] += b[i];
    m = fmaxf(m, zr[i]);
  }
  m = warp_max(m);
  float sum = 0;
  for (int i = lane; i < width; i += 32) sum += (ar[i] = expf(zr[i] - m));
  const float inv = 1.f / warp_sum(sum);
  for (int i = lane; i < width; i += 32) ar[i] *= inv;
}

template <Act A>
__global__ void k_act_backward(float p, const float* alpha, const float* z, const float* a,
                               const float* da, float* dz, float* dalpha, size_t n) {
  const float al = alpha ? *alpha : 0.f;
  float s = 0;
  NM_FOR(i, n) {
    dz[i] = da[i] * fm::deriv<A>(p, al, z[i], a[i]);
    if (dalpha && !(z[i] > 0)) s += da[i] * z[i];
  }
  if (dalpha) {
    s = warp_sum(s);
    if (threadIdx.x % 32 == 0 && s != 0.f) atomicAdd(dalpha, s);
  }
}

// one warp per row: dz = a * (da - <da, a>)
__global__ void k_softmax_backward(const float* a, const float* da, float* dz, int rows, int width) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= rows) return;
  const float* ar = a + size_t(row) * width;
  const float* gr = da + size_t(row) * width;
  float dot = 0;
  for (int i = lane; i < width; i += 32) dot += ar[i] * gr[i];
  dot = warp_sum(dot);
  for (int i = lane; i < width; i += 32) dz[size_t(row) * width + i] = ar[i] * (gr[i] - dot);
}

// Column sums over the whole GPU: block (32 columns x 8 row lanes), the grid's y dimension
// splits the rows; each block reduces its part in shared memory and adds it with one atomic
// per column.
__global__ void k_bias_grad(const float* dz, float* db, int rows, int width) {
  __shared__ float part[8][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  float s = 0;
  if (c < width)
    for (int r = blockIdx.y * 8 + threadIdx.y; r < rows; r += gridDim.y * 8) s += dz[size_t(r) * width + c];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < width) {
    for (int k = 1; k < 8; ++k) s += part[k][threadIdx.x];
    atomicAdd(db + c, s);
  }
}

__global__ void k_merge(MergeOp op, const float* u, const float* v, float* y, size_t n) {
  NM_FOR(i, n) y[i] = fm::merge(op, u[i], v[i]);
}

__global__ void k_merge_backward(MergeOp op, const float* u, const float* v, const float* dy,
                                 float* du, float* dv, size_t n) {
  NM_FOR(i, n) {
    du[i] += dy[i] * fm::merge_partial(op, v[i]);
    if (dv) dv[i] += dy[i] * fm::merge_partial(op, u[i]);
  }
}

__global__ void k_sgd(float* p, const float* g, float rate, float wd, size_t n, const int* halt) {
  if (halt && *halt) return;
  NM_FOR(i, n) fm::sgd(p[i], g[i], rate, wd);
}

__global__ void k_momentum(float* p, const float* g, float* m, float rate, float wd, float mu,
                           bool first, size_t n, const int* halt) {
  if (halt && *halt) return;
  NM_FOR(i, n) fm::momentum(p[i], g[i], m[i], rate, wd, mu, first);
}

__global__ void k_adam(float* p, const float* g, float* m, float* v, float rate, float wd,
                       float b1, float b2, float eps, float step, float sbc2, bool decoupled,
                       size_t n, const int* halt) {
  if (halt && *halt) return;
  NM_FOR(i, n) fm::adam(p[i], g[i], m[i], v[i], rate, wd, b1, b2, eps, step, sbc2, decoupled);
}

// Sums of squares in double, as on the CPU: a finite float gradient past ~1.8e19 has a float
// square of inf, and clip / inf would zero the step (float squares cannot overflow a double sum).
__device__ double warp_sum_d(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// block partial sums of squares into work[blockIdx.x]
__global__ void k_sumsq(const float* x, double* work, size_t n) {
  __shared__ double red[kThreads / 32];
  double s = 0;
  NM_FOR(i, n) s += double(x[i]) * double(x[i]);
  s = warp_sum_d(s);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = s;
  __syncthreads();
  if (threadIdx.x < 32) {
    s = threadIdx.x < kThreads / 32 ? red[threadIdx.x] : 0.0;
    s = warp_sum_d(s);
    if (threadIdx.x == 0) work[blockIdx.x] = s;
  }
}

// g *= clip coefficient of the sum of the partials (each block re-reduces the kReduceParts)
__global__ void k_clip(float* g, const double* work, float clip, size_t n) {
  __shared__ double coef;
  if (threadIdx.x < 32) {
    double s = 0;
    for (int k = threadIdx.x; k < kReduceParts; k += 32) s += work[k];
    s = warp_sum_d(s);
    if (threadIdx.x == 0) coef = fm::clip_coef(s, double(clip));
  }
  __syncthreads();
  const double c = coef;
  if (c < 1.0) NM_FOR(i, n) g[i] = float(double(g[i]) * c);
}

__global__ void k_finite(const float* x, size_t n, int* flag) {
  bool bad = false;
  NM_FOR(i, n) bad |= !isfinite(x[i]);
  if (__any_sync(0xffffffffu, bad) && threadIdx.x % 32 == 0) *flag = 1;
}

__global__ void k_fill(float* x, float v, size_t n) {
  NM_FOR(i, n) x[i] = v;
}

}  // namespace

void bias_act_forward(cudaStream_t s, Act f, float p, const float* alpha, float* z,
                      const float* b, float* a, int rows, int width) {
  if (rows <= 0 || width <= 0) return;
  if (f == Act::Softmax) {
    k_bias_softmax<<<(rows + 7) / 8, kThreads, 0, s>>>(z, b, a, rows, width);
  } else {
    const size_t n = size_t(rows) * width;
    fm::with_act_host(f, [&](auto tag) {
      k_bias_act<decltype(tag)::value><<<grid_for(n), kThreads, 0, s>>>(p, alpha, z, b, a, n, width);
    });
  }
  NM_CUDA_LAUNCHED();
}

void act_backward(cudaStream_t s, Act f, float p, const float* alpha, const float* z,
                  const float* a, const float* da, float* dz, float* dalpha, int rows, int width) {
  if (rows <= 0 || width <= 0) return;
  if (f == Act::Softmax) {
    k_softmax_backward<<<(rows + 7) / 8, kThreads, 0, s>>>(a, da, dz, rows, width);
  } else {
    const size_t n = size_t(rows) * width;
    fm::with_act_host(f, [&](auto tag) {
      k_act_backward<decltype(tag)::value><<<grid_for(n), kThreads, 0, s>>>(
          p, alpha, z, a, da, dz, f == Act::ReluParametric ? dalpha : nullptr, n);
    });
  }
  NM_CUDA_LAUNCHED();
}

void bias_grad(cudaStream_t s, const float* dz, float* db, int rows, int width) {
  if (rows <= 0 || width <= 0) return;
  const int gx = (width + 31) / 32;
  int gy = (rows + 63) / 64;  // about 64 rows per block, at most ~4 blocks per SM-column lane
  if (gy > 1024 / gx + 1) gy = 1024 / gx + 1;
  k_bias_grad<<<dim3(gx, gy), dim3(32, 8), 0, s>>>(dz, db, rows, width);
  NM_CUDA_LAUNCHED();
}

void merge_forward(cudaStream_t s, MergeOp op, const float* u, const float* v, float* y, size_t n) {
  if (!n) return;
  k_merge<<<grid_for(n), kThreads, 0, s>>>(op, u, v, y, n);
  NM_CUDA_LAUNCHED();
}

void merge_backward(cudaStream_t s, MergeOp op, const float* u, const float* v, const float* dy,
                    float* du, float* dv, size_t n) {
  if (!n) return;
  k_merge_backward<<<grid_for(n), kThreads, 0, s>>>(op, u, v, dy, du, dv, n);
  NM_CUDA_LAUNCHED();
}

void sgd(cudaStream_t s, float* p, const float* g, float rate, float wd, size_t n, const int* halt) {
  k_sgd<<<grid_for(n), kThreads, 0, s>>>(p, g, rate, wd, n, halt);
  NM_CUDA_LAUNCHED();
}

void momentum(cudaStream_t s, float* p, const float* g, float* m, float rate, float wd, float mu,
              bool first, size_t n, const int* halt) {
  k_momentum<<<grid_for(n), kThreads, 0, s>>>(p, g, m, rate, wd, mu, first, n, halt);
  NM_CUDA_LAUNCHED();
}

void adam(cudaStream_t s, float* p, const float* g, float* m, float* v, float rate, float wd,
          float b1, float b2, float eps, float step, float sbc2, bool decoupled, size_t n,
          const int* halt) {
  k_adam<<<grid_for(n), kThreads, 0, s>>>(p, g, m, v, rate, wd, b1, b2, eps, step, sbc2, decoupled,
                                        n, halt);
  NM_CUDA_LAUNCHED();
}

void clip_grad(cudaStream_t s, float* g, double* work, float clip, size_t n) {
  k_sumsq<<<kReduceParts, kThreads, 0, s>>>(g, work, n);
  NM_CUDA_LAUNCHED();
  k_clip<<<grid_for(n), kThreads, 0, s>>>(g, work, clip, n);
  NM_CUDA_LAUNCHED();
}

void check_finite(cudaStream_t s, const float* x, size_t n, int* flag) {
  if (!n) return;
  k_finite<<<grid_for(n), kThreads, 0, s>>>(x, n, flag);
  NM_CUDA_LAUNCHED();
}

void fill(cudaStream_t s, float* x, float v, size_t n) {
  if (!n) return;
  k_fill<<<grid_for(n), kThreads, 0, s>>>(x, v, n);
  NM_CUDA_LAUNCHED();
}

}  // namespace nm::cuda
