// Vectorised float kernels for the elementwise work of a step (activations, their
// derivatives, the SGD update). Dispatched at run time (AVX2+FMA or baseline x86-64; plain
// code elsewhere). Each matches the scalar oracle in ops.h to ~1e-6 relative (tested).
#pragma once
#include <cstddef>

#include "../core/ir.h"

namespace nm::simd {

// a[n] = f(z) for the elementwise activations (not softmax)
void act_forward(Act f, float p, float alpha, const float* z, float* a, size_t n);
// a[n] = f(z) and, over z, f'(z): what the backward needs, in z's memory (one evaluation of the
// shared terms, e.g. GELU's sigmoid, instead of one in each pass). Not softmax.
void act_forward_deriv(Act f, float p, float alpha, float* z, float* a, size_t n);
// out[n] = x ⊙ y (out may alias either)
void mul(const float* x, const float* y, float* out, size_t n);
// dz[n] = da * f'(z); PReLU slope gradient accumulates into *dalpha when given
void act_backward(Act f, float p, float alpha, const float* z, const float* a, const float* da,
                  float* dz, float* dalpha, size_t n);
// layer norm over rows of d (gain/bias group r % G) and its backward; the float paths of
// nn::ln_forward (y null: xhat and rstd only, g and b unread) / nn::ln_backward
void ln_forward(const float* x, const float* g, const float* b, float* xhat, float* rstd, float* y,
                int rows, int d, int G);
void ln_backward(const float* xhat, const float* rstd, const float* g, const float* dy, float* dx,
                 float* dg, float* db, int rows, int d, int G);
// dx += rstd (dh - mean(dh) - xhat mean(dh xhat)): layer norm's input gradient from the gradient
// dh at xhat (the gain and bias folded into the next product: nn::fold_backward)
void ln_backward_hat(const float* xhat, const float* rstd, const float* dh, float* dx, int rows,
                     int d);
// y = g ⊙ xhat + b per row (one group): nn::ln_apply's float path
void ln_apply(const float* xhat, const float* g, const float* b, float* y, int rows, int d);
// the gradients of W (out x d) and of a layer norm's gain g and bias b from M = dy^T xhat and
// cs = dy's column sums, where y = (xhat g + b) W^T: dW += M diag(g) + cs b^T,
// dg += sum_j W[j, :] ⊙ M[j, :], db += sum_j cs[j] W[j, :]
void fold_grads(const float* W, const float* g, const float* b, const float* M, const float* cs,
                int out, int d, float* dW, float* dg, float* db);
// out[j] += sum over the rows of x[r, j], row by row (a bias gradient)
void col_sums(const float* x, int rows, int n, float* out);
// x (rows, n) *= d elementwise and out[j] += the new x's column sums, in one pass (row order)
void mul_col_sums(const float* d, float* x, int rows, int n, float* out);
// y[r, j] += b[j] for every row
void add_rows(const float* b, int rows, int n, float* y);
// each row of n becomes its softmax (entries at -inf: exactly 0)
void softmax_rows(float* s, int rows, int n);
// the same after adding bias (rows x n, row-major; none when null) to s
void softmax_rows_bias(float* s, const float* bias, int rows, int n);
// dp = p ⊙ (dp - Σ p dp) per row, in place; acc (rows x n, when given) += the result
void softmax_rows_backward(const float* p, float* dp, int rows, int n, float* acc);
// sum of |v_i| in 32 float lanes: inf or NaN when a value is (or the float sums overflow)
double abs_sum(const float* v, size_t n);
// out = p - lr * g; whether every value of out is finite
bool sgd_step(const float* p, const float* g, float lr, float* out, size_t n);
// The CPU has AVX2 and FMA and NEUROMORPH_NO_AVX2 is unset: the hand-vectorised kernels may run.
bool has_avx2();

}  // namespace nm::simd

namespace nm::simd {
// Dense products for few rows (a small batch, or one recurrent step): z = u W^T + b and its
// backward, as in ops::dense_forward / ops::dense_backward.
void dense_forward_small(const float* u, const float* W, const float* b, float* z, int rows,
                         int in, int out);
void dense_backward_small(const float* u, const float* W, const float* dz, float* dW, float* db,
                          float* du, int rows, int in, int out);
// W -= lr dz^T u, b -= lr sum_rows dz for few rows; false when this CPU has no vector path.
bool dense_sgd_update_small(const float* u, float* W, const float* dz, float* b, int rows, int in,
                            int out, float lr);
}  // namespace nm::simd
