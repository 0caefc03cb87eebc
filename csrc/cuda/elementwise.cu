// Elementwise and row-wise kernels of the CUDA backend: fused bias + activation and its
// derivative, bias gradients, merges, optimizer updates. Formulas match cpu/ops.h.
#include "common.cuh"
#include "kernels.cuh"

namespace nm::cuda {
namespace {

constexpr int kThreads = 256;
constexpr float kSeluLambda = 1.0507009873554805f, kSeluAlpha = 1.6732632423543772f;
constexpr float kGeluC = 0.7978845608028654f;

int blocks(size_t n) { return int((n + kThreads - 1) / kThreads); }

__device__ float sigm(float z) {
  return z >= 0 ? 1.f / (1.f + __expf(-z)) : __expf(z) / (1.f + __expf(z));
}

__device__ float act(Act f, float p, float alpha, float z) {
  switch (f) {
    case Act::Sigmoid: return sigm(z);
    case Act::Tanh: return tanhf(z);
    case Act::Relu: return z > 0 ? z : 0.f;
    case Act::BinaryStep: return z >= 0 ? 1.f : 0.f;
    case Act::ReluLeaky: return z > 0 ? z : p * z;
    case Act::ReluParametric: return z > 0 ? z : alpha * z;
    case Act::Elu: return z > 0 ? z : p * (expf(z) - 1.f);
    case Act::Selu: return kSeluLambda * (z > 0 ? z : kSeluAlpha * (expf(z) - 1.f));
    case Act::Swish: return z * sigm(p * z);
    case Act::Gelu: return z * sigm(2.f * kGeluC * (z + 0.044715f * z * z * z));
    case Act::GeluErf: return 0.5f * z * erfcf(-z * 0.70710678118654752f);
    default: return z;
  }
}

__device__ float deriv(Act f, float p, float alpha, float z, float a) {
  switch (f) {
    case Act::Sigmoid: return a * (1.f - a);
    case Act::Tanh: return 1.f - a * a;
    case Act::Relu: return z > 0 ? 1.f : 0.f;
    case Act::BinaryStep: return 0.f;
    case Act::ReluLeaky: return z > 0 ? 1.f : p;
    case Act::ReluParametric: return z > 0 ? 1.f : alpha;
    case Act::Elu: return z > 0 ? 1.f : p * expf(z);
    case Act::Selu: return kSeluLambda * (z > 0 ? 1.f : kSeluAlpha * expf(z));
    case Act::Swish: {
      const float s = sigm(p * z);
      return s + p * z * s * (1.f - s);
    }
    case Act::Gelu: {
      const float s = sigm(2.f * kGeluC * (z + 0.044715f * z * z * z));
      return s + 2.f * z * s * (1.f - s) * kGeluC * (1.f + 3.f * 0.044715f * z * z);
    }
    case Act::GeluErf:  // Phi(z) + z phi(z)
      return 0.5f * erfcf(-z * 0.70710678118654752f) + z * 0.3989422804014327f * expf(-0.5f * z * z);
    default: return 1.f;
  }
}

__global__ void k_bias_act(Act f, float p, const float* alpha, float* z, const float* b, float* a,
                           size_t n, int width) {
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float zi = z[i] + b[i % width];
  z[i] = zi;
  a[i] = act(f, p, alpha ? *alpha : 0.f, zi);
}

// one block per row: softmax of z + b
__global__ void k_bias_softmax(float* z, const float* b, float* a, int width) {
  __shared__ float red[kThreads];
  float* zr = z + size_t(blockIdx.x) * width;
  float* ar = a + size_t(blockIdx.x) * width;
  float m = -INFINITY;
  for (int i = threadIdx.x; i < width; i += blockDim.x) {
    zr[i] += b[i];
    m = fmaxf(m, zr[i]);
  }
  red[threadIdx.x] = m;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) red[threadIdx.x] = fmaxf(red[threadIdx.x], red[threadIdx.x + s]);
    __syncthreads();
  }
  m = red[0];
  __syncthreads();
  float sum = 0;
  for (int i = threadIdx.x; i < width; i += blockDim.x) sum += (ar[i] = expf(zr[i] - m));
  red[threadIdx.x] = sum;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  const float inv = 1.f / red[0];
  for (int i = threadIdx.x; i < width; i += blockDim.x) ar[i] *= inv;
}

__global__ void k_act_backward(Act f, float p, const float* alpha, const float* z, const float* a,
                               const float* da, float* dz, float* dalpha, size_t n) {
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  dz[i] = da[i] * deriv(f, p, alpha ? *alpha : 0.f, z[i], a[i]);
  if (dalpha && !(z[i] > 0)) atomicAdd(dalpha, da[i] * z[i]);
}

__global__ void k_softmax_backward(const float* a, const float* da, float* dz, int width) {
  __shared__ float red[kThreads];
  const float* ar = a + size_t(blockIdx.x) * width;
  const float* gr = da + size_t(blockIdx.x) * width;
  float dot = 0;
  for (int i = threadIdx.x; i < width; i += blockDim.x) dot += ar[i] * gr[i];
  red[threadIdx.x] = dot;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  dot = red[0];
  for (int i = threadIdx.x; i < width; i += blockDim.x)
    dz[size_t(blockIdx.x) * width + i] = ar[i] * (gr[i] - dot);
}

__global__ void k_bias_grad(const float* dz, float* db, int rows, int width) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= width) return;
  float s = 0;
  for (int r = 0; r < rows; ++r) s += dz[size_t(r) * width + c];
  db[c] += s;
}

__global__ void k_merge(MergeOp op, const float* u, const float* v, float* y, size_t n) {
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  y[i] = op == MergeOp::Additive ? u[i] + v[i]
       : op == MergeOp::Multiplicative ? u[i] * v[i] : 0.5f * (u[i] + v[i]);
}

__global__ void k_merge_backward(MergeOp op, const float* u, const float* v, const float* dy,
                                 float* du, float* dv, size_t n) {
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float g = dy[i];
  const float gu = op == MergeOp::Additive ? g : op == MergeOp::Multiplicative ? g * v[i] : 0.5f * g;
  const float gv = op == MergeOp::Additive ? g : op == MergeOp::Multiplicative ? g * u[i] : 0.5f * g;
  du[i] += gu;
  if (dv) dv[i] += gv;
}

__global__ void k_sgd(float* p, const float* g, float lr, float wd, size_t n) {
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  if (i < n) p[i] -= lr * (g[i] + wd * p[i]);
}

__global__ void k_momentum(float* p, const float* g, float* m, float lr, float wd, float mu,
                           bool first, size_t n) {
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float d = g[i] + wd * p[i];
  m[i] = first ? d : mu * m[i] + d;
  p[i] -= lr * m[i];
}

__global__ void k_adam(float* p, const float* g, float* m, float* v, float step, float sbc2,
                       float b1, float b2, float eps, float lr_wd, bool decoupled, float wd,
                       size_t n) {
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  if (decoupled) p[i] *= 1.f - lr_wd;
  const float d = decoupled ? g[i] : g[i] + wd * p[i];
  m[i] = b1 * m[i] + (1.f - b1) * d;
  v[i] = b2 * v[i] + (1.f - b2) * d * d;
  p[i] -= step * m[i] / (sqrtf(v[i]) / sbc2 + eps);
}

__global__ void k_scale(float* x, const float* coef, size_t n) {
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  if (i < n) x[i] *= *coef;
}

// block partial sums of squares (or plain sums) into work[blockIdx]
__global__ void k_partial(const float* x, float* work, size_t n, bool square) {
  __shared__ float red[kThreads];
  float s = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    s += square ? x[i] * x[i] : x[i];
  red[threadIdx.x] = s;
  __syncthreads();
  for (int k = blockDim.x / 2; k > 0; k >>= 1) {
    if (threadIdx.x < k) red[threadIdx.x] += red[threadIdx.x + k];
    __syncthreads();
  }
  if (threadIdx.x == 0) work[blockIdx.x] = red[0];
}

__global__ void k_finish(const float* work, int parts, float* out, float clip) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  float s = 0;
  for (int i = 0; i < parts; ++i) s += work[i];
  if (clip > 0) {
    const float coef = clip / (sqrtf(s) + 1e-6f);
    *out = coef < 1.f ? coef : 1.f;
  } else {
    *out = s;
  }
}

constexpr int kParts = 64;

}  // namespace

void bias_act_forward(Act f, float p, const float* alpha, float* z, const float* b, float* a,
                      int rows, int width) {
  if (f == Act::Softmax) {
    k_bias_softmax<<<rows, kThreads>>>(z, b, a, width);
  } else {
    const size_t n = size_t(rows) * width;
    k_bias_act<<<blocks(n), kThreads>>>(f, p, alpha, z, b, a, n, width);
  }
  NM_CUDA_LAUNCHED();
}

void act_backward(Act f, float p, const float* alpha, const float* z, const float* a,
                  const float* da, float* dz, float* dalpha, int rows, int width) {
  if (f == Act::Softmax) {
    k_softmax_backward<<<rows, kThreads>>>(a, da, dz, width);
  } else {
    const size_t n = size_t(rows) * width;
    k_act_backward<<<blocks(n), kThreads>>>(f, p, alpha, z, a, da, dz,
                                            f == Act::ReluParametric ? dalpha : nullptr, n);
  }
  NM_CUDA_LAUNCHED();
}

void bias_grad(const float* dz, float* db, int rows, int width) {
  k_bias_grad<<<blocks(size_t(width)), kThreads>>>(dz, db, rows, width);
  NM_CUDA_LAUNCHED();
}

void merge_forward(MergeOp op, const float* u, const float* v, float* y, size_t n) {
  k_merge<<<blocks(n), kThreads>>>(op, u, v, y, n);
  NM_CUDA_LAUNCHED();
}

void merge_backward(MergeOp op, const float* u, const float* v, const float* dy, float* du,
                    float* dv, size_t n) {
  k_merge_backward<<<blocks(n), kThreads>>>(op, u, v, dy, du, dv, n);
  NM_CUDA_LAUNCHED();
}

void sgd(float* p, const float* g, float lr, float wd, size_t n) {
  k_sgd<<<blocks(n), kThreads>>>(p, g, lr, wd, n);
  NM_CUDA_LAUNCHED();
}

void momentum(float* p, const float* g, float* m, float lr, float wd, float mu, bool first, size_t n) {
  k_momentum<<<blocks(n), kThreads>>>(p, g, m, lr, wd, mu, first, n);
  NM_CUDA_LAUNCHED();
}

void adam(float* p, const float* g, float* m, float* v, float lr_over_bc1, float sqrt_bc2,
          float b1, float b2, float eps, float lr_wd, bool decoupled, float wd, size_t n) {
  k_adam<<<blocks(n), kThreads>>>(p, g, m, v, lr_over_bc1, sqrt_bc2, b1, b2, eps, lr_wd, decoupled,
                                  wd, n);
  NM_CUDA_LAUNCHED();
}

void scale(float* x, const float* coef, size_t n) {
  k_scale<<<blocks(n), kThreads>>>(x, coef, n);
  NM_CUDA_LAUNCHED();
}

void clip_coef(const float* g, float* work, float* coef, float clip, size_t n) {
  k_partial<<<kParts, kThreads>>>(g, work, n, true);
  NM_CUDA_LAUNCHED();
  k_finish<<<1, 1>>>(work, kParts, coef, clip);
  NM_CUDA_LAUNCHED();
}

void reduce_sum(const float* x, float* out, int n) {
  // work space: the first kParts floats after `out` are reserved by the caller
  k_partial<<<kParts, kThreads>>>(x, out + 1, size_t(n), false);
  NM_CUDA_LAUNCHED();
  k_finish<<<1, 1>>>(out + 1, kParts, out, 0.f);
  NM_CUDA_LAUNCHED();
}

}  // namespace nm::cuda
