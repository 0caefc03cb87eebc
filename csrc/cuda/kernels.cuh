// Launchers of the CUDA backend's elementwise, row-wise and reduction kernels (elementwise.cu,
// loss.cu). All pointers are device pointers; shapes are row-major (rows, width) like the CPU
// backend; every launch goes to the given stream and is checked. The formulas are those of
// core/formulas.h, shared with the CPU backend.
#pragma once
#include <cstddef>

#include <cuda_runtime.h>

#include "../core/ir.h"

namespace nm::cuda {

// a = f(z + b) with z updated to z + b in place (bias + activation fused); softmax per row.
void bias_act_forward(cudaStream_t s, Act f, float p, const float* alpha, float* z,
                      const float* b, float* a, int rows, int width);
// dz = da * f'(z) (softmax: the Jacobian-vector product); PReLU slope gradient into *dalpha
void act_backward(cudaStream_t s, Act f, float p, const float* alpha, const float* z,
                  const float* a, const float* da, float* dz, float* dalpha, int rows, int width);
// db[width] += column sums of dz[rows, width], spread over the whole GPU
void bias_grad(cudaStream_t s, const float* dz, float* db, int rows, int width);
void merge_forward(cudaStream_t s, MergeOp op, const float* u, const float* v, float* y, size_t n);
void merge_backward(cudaStream_t s, MergeOp op, const float* u, const float* v, const float* dy,
                    float* du, float* dv, size_t n);
// Per-group losses into row_loss[rows * cells]; with dr, dr = scale * dloss/dr (fused softmax+CE: dL/dz).
// A row of `width` entries; with cells C > 1 each row holds C groups of width/C (the loss of
// each group, mean over groups). With class ids (ids non-null: rows x C class indices as
// floats), e is ignored; a bad id sets *bad (device flag) to 1 + the flat index of the id.
void loss_forward_backward(cudaStream_t s, Loss l, float p, bool fused_softmax_xent,
                           const float* r, const float* e, const float* ids, int* bad,
                           float* row_loss, float* dr, int rows, int width, int cells,
                           float scale);
// out[0] = sum(group_loss[0..groups)) / groups + sum over a of mean(aux[a*stride .. +rows));
// out[1 + a] = the mean of aux part a. One small launch; nothing comes back to the host.
void batch_loss(cudaStream_t s, const float* group_loss, int groups, const float* aux, int n_aux,
                int stride, int rows, float* out);
// Optimizer steps over the whole arena (formulas of core/formulas.h). With halt (device), the
// step does nothing once *halt is non-zero (a diverged batch: the model keeps its state).
void sgd(cudaStream_t s, float* p, const float* g, float rate, float wd, size_t n, const int* halt);
void momentum(cudaStream_t s, float* p, const float* g, float* m, float rate, float wd, float mu,
              bool first, size_t n, const int* halt);
void adam(cudaStream_t s, float* p, const float* g, float* m, float* v, float rate, float wd,
          float b1, float b2, float eps, float step, float sbc2, bool decoupled, size_t n,
          const int* halt);
// global-norm clipping: g *= min(1, clip / (||g|| + 1e-6)), work holds kReduceParts floats
constexpr int kReduceParts = 256;
void clip_grad(cudaStream_t s, float* g, double* work, float clip, size_t n);  // work: kReduceParts
// *flag = 1 when any of x[0..n) is not finite (flag zeroed by the caller)
void check_finite(cudaStream_t s, const float* x, size_t n, int* flag);
// x[0..n) = v
void fill(cudaStream_t s, float* x, float v, size_t n);

}  // namespace nm::cuda
