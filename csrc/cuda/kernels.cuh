// Launchers of the CUDA backend's kernels (kernels: elementwise.cu, loss.cu). All pointers are
// device pointers; shapes are row-major (rows, width) like the CPU backend. Each launcher checks
// its launch. The math is the CPU oracle's (cpu/ops.h), written once more for the device.
#pragma once
#include <cstddef>

#include "../core/ir.h"

namespace nm::cuda {

// a = f(z + b) with z updated to z + b in place (bias + activation fused); softmax per row
void bias_act_forward(Act f, float p, const float* alpha, float* z, const float* b, float* a,
                      int rows, int width);
// dz = da * f'(z) (softmax: the Jacobian-vector product); PReLU slope gradient into *dalpha
void act_backward(Act f, float p, const float* alpha, const float* z, const float* a,
                  const float* da, float* dz, float* dalpha, int rows, int width);
// db[width] += column sums of dz[rows, width]
void bias_grad(const float* dz, float* db, int rows, int width);
void merge_forward(MergeOp op, const float* u, const float* v, float* y, size_t n);
void merge_backward(MergeOp op, const float* u, const float* v, const float* dy, float* du,
                    float* dv, size_t n);
// per-row losses into row_loss[rows]; with dr, dr = scale * dloss/dr (fused softmax+CE: dL/dz)
void loss_forward_backward(Loss l, float p, bool fused_softmax_xent, const float* r,
                           const float* e, float* row_loss, float* dr, int rows, int width,
                           float scale);
// sum of n floats into *out (device)
void reduce_sum(const float* x, float* out, int n);
// optimizer steps over the whole arena (formulas of core/optim.h)
void sgd(float* p, const float* g, float lr, float wd, size_t n);
void momentum(float* p, const float* g, float* m, float lr, float wd, float mu, bool first, size_t n);
void adam(float* p, const float* g, float* m, float* v, float lr_over_bc1, float sqrt_bc2,
          float b1, float b2, float eps, float lr_wd, bool decoupled, float wd, size_t n);
void scale(float* x, const float* coef, size_t n);  // x *= *coef (device scalar)
// *coef = min(1, clip / (||g|| + 1e-6)) for global-norm clipping
void clip_coef(const float* g, float* work, float* coef, float clip, size_t n);

}  // namespace nm::cuda
