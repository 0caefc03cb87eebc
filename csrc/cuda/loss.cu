// Loss kernels of the CUDA backend: one warp per (row, cell) computes that group's loss and,
// when asked, its gradient; one small block then sums a step's loss on the device (read back
// once per call, never per step). Formulas: core/formulas.h.
#include "../core/formulas.h"
#include "common.cuh"
#include "kernels.cuh"
#include "nn.cuh"

namespace nm::cuda {
namespace {

// target entry i of a group: e[i], or the one-hot of the group's class id
__device__ float target(const float* e, float id, int i) { return e ? e[i] : float(i) == id ? 1.f : 0.f; }

__global__ void k_loss(Loss l, float p, bool fused, const float* r, const float* e,
                       const float* ids, int* bad, float* group_loss, float* dr, int groups,
                       int n, float scale) {
  const int g = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (g >= groups) return;
  const size_t off = size_t(g) * n;
  float id = -1.f;
  if (ids) {
    id = ids[g];
    if (!(id >= 0.f && id < float(n) && id == floorf(id))) {
      if (lane == 0) atomicCAS(bad, 0, g + 1);
      id = -1.f;
    }
  }
  const float* eg = ids ? nullptr : e + off;
  float s = 0, se = 0;
  for (int i = lane; i < n; i += 32) {
    const float t = target(eg, id, i);
    s += fm::loss_term(l, p, r[off + i], t);
    se += t;
  }
  s = warp_sum(s);
  se = warp_sum(se);
  if (lane == 0) group_loss[g] = fm::loss_sums(l) ? s : s / n;
  if (!dr) return;
  const float k = fm::loss_sums(l) ? scale : scale / n;
  for (int i = lane; i < n; i += 32) {
    const float t = target(eg, id, i);
    dr[off + i] = fused ? fm::softmax_xent_grad(r[off + i], t, se, scale)
                        : k * fm::loss_grad(l, p, r[off + i], t);
  }
}

// out[0] = sum(group_loss) / groups + sum_a mean(aux_a); out[1 + a] = mean(aux_a)
__global__ void k_batch_loss(const float* group_loss, int groups, const float* aux, int n_aux,
                             int stride, int rows, float* out) {
  __shared__ float red[32];
  float total = 0;
  for (int part = -1; part < n_aux; ++part) {
    const float* x = part < 0 ? group_loss : aux + size_t(part) * stride;
    const int n = part < 0 ? groups : rows;
    float s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += x[i];
    s = warp_sum(s);
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = s;
    __syncthreads();
    if (threadIdx.x < 32) {
      s = threadIdx.x < blockDim.x / 32 ? red[threadIdx.x] : 0.f;
      s = warp_sum(s);
      if (threadIdx.x == 0) {
        const float mean = s / n;
        total += mean;
        if (part >= 0) out[1 + part] = mean;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[0] = total;
}

}  // namespace

void loss_forward_backward(cudaStream_t s, Loss l, float p, bool fused_softmax_xent,
                           const float* r, const float* e, const float* ids, int* bad,
                           float* row_loss, float* dr, int rows, int width, int cells,
                           float scale) {
  const int groups = rows * cells, n = width / cells;
  if (groups <= 0) return;
  // per group; the row's loss is the mean over its cells: batch_loss averages over groups
  k_loss<<<(groups + 7) / 8, kThreads, 0, s>>>(l, p, fused_softmax_xent, r, e, ids, bad, row_loss,
                                               dr, groups, n, scale);
  NM_CUDA_LAUNCHED();
}

void batch_loss(cudaStream_t s, const float* group_loss, int groups, const float* aux, int n_aux,
                int stride, int rows, float* out) {
  k_batch_loss<<<1, 1024, 0, s>>>(group_loss, groups, aux, n_aux, stride, rows, out);
  NM_CUDA_LAUNCHED();
}

}  // namespace nm::cuda
