// Loss kernels of the CUDA backend: one block per row computes the row's loss and, when asked,
// the gradient (formulas of cpu/ops.h loss_forward / loss_backward / softmax_xent_backward).
#include "common.cuh"
#include "kernels.cuh"

namespace nm::cuda {
namespace {

constexpr int kThreads = 128;

__device__ float term(Loss l, float p, float r, float e) {
  const float x = r - e;
  switch (l) {
    case Loss::Mse: return x * x;
    case Loss::Mae: return fabsf(x);
    case Loss::Mape: return fabsf(x) / fmaxf(fabsf(e), 1e-8f);
    case Loss::Huber: return fabsf(x) <= p ? 0.5f * x * x : p * (fabsf(x) - 0.5f * p);
    case Loss::HuberModified: {
      const float y = e * r;
      return y >= -1 ? fmaxf(0.f, 1 - y) * fmaxf(0.f, 1 - y) : -4 * y;
    }
    case Loss::CrossEntropy: return -e * logf(fmaxf(r, 1e-12f));
    case Loss::Hinge: return fmaxf(0.f, 1 - e * r);
    default: return 0.f;
  }
}

__device__ float grad(Loss l, float p, float r, float e) {
  const float x = r - e;
  const float sgn = float((x > 0) - (x < 0));
  switch (l) {
    case Loss::Mse: return 2 * x;
    case Loss::Mae: return sgn;
    case Loss::Mape: return sgn / fmaxf(fabsf(e), 1e-8f);
    case Loss::Huber: return fabsf(x) <= p ? x : p * sgn;
    case Loss::HuberModified: {
      const float y = e * r;
      return y >= -1 ? -2 * fmaxf(0.f, 1 - y) * e : -4 * e;
    }
    case Loss::CrossEntropy: return r > 1e-12f ? -e / r : 0.f;
    case Loss::Hinge: return 1 - e * r > 0 ? -e : 0.f;
    default: return 0.f;
  }
}

__device__ float block_sum(float v, float* red) {
  red[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  const float out = red[0];
  __syncthreads();
  return out;
}

__global__ void k_loss(Loss l, float p, bool fused, const float* r, const float* e, float* row_loss,
                       float* dr, int width, float scale) {
  __shared__ float red[kThreads];
  const size_t off = size_t(blockIdx.x) * width;
  float s = 0, se = 0;
  for (int i = threadIdx.x; i < width; i += blockDim.x) {
    s += term(l, p, r[off + i], e[off + i]);
    se += e[off + i];
  }
  s = block_sum(s, red);
  se = block_sum(se, red);
  if (threadIdx.x == 0) row_loss[blockIdx.x] = l == Loss::CrossEntropy ? s : s / width;
  if (!dr) return;
  const float k = l == Loss::CrossEntropy ? scale : scale / width;
  for (int i = threadIdx.x; i < width; i += blockDim.x)
    dr[off + i] = fused ? scale * (r[off + i] * se - e[off + i]) : k * grad(l, p, r[off + i], e[off + i]);
}

}  // namespace

void loss_forward_backward(Loss l, float p, bool fused_softmax_xent, const float* r,
                           const float* e, float* row_loss, float* dr, int rows, int width,
                           float scale) {
  k_loss<<<rows, kThreads>>>(l, p, fused_softmax_xent, r, e, row_loss, dr, width, scale);
  NM_CUDA_LAUNCHED();
}

}  // namespace nm::cuda
