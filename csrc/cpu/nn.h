// Building blocks of the structured node kinds (attn2d, column): layer norm, linear maps over
// many rows, per-column (untied) linear maps, elementwise activations, row softmax. Each has its
// forward and backward side by side. Templates: float takes the BLAS / SIMD paths, double (the
// reference the float engine is tested against) plain loops. Backward functions ADD into their
// gradient outputs, as the engine's value gradients accumulate over fan-out.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>
#include <vector>

#include "../core/ir.h"
#include "gemm.h"
#include "ops.h"
#include "simd.h"
#include "threads.h"

namespace nm::nn {

constexpr double kLnEps = 1e-5;
// Elementwise and per-row work runs on the engine's worker threads (cpu/threads.h) in chunks cut
// by index alone, so the results do not depend on the thread count; below these sizes it stays
// on the calling thread.
constexpr size_t kElemGrain = size_t(1) << 14;
inline size_t row_grain(int d) { return kElemGrain / size_t(std::max(d, 1)) + 1; }

// y[rows, d] = g ⊙ LN(x) + b; g, b hold G groups of d (row r uses group r % G; G = 1: shared).
// Saves xhat[rows, d] and rstd[rows]. y null: xhat and rstd only (the gain and bias folded into
// the product that reads xhat: fold_weights).
template <class T>
void ln_forward(const T* x, const T* g, const T* b, T* xhat, T* rstd, T* y, int rows, int d, int G) {
  if constexpr (std::is_same_v<T, float>) {
    // chunks start at a multiple of G, so each chunk's rows use the groups from the first
    const size_t units = (size_t(rows) + G - 1) / G;
    cpu::parallel_for(units, row_grain(d * G), [&](int, size_t u0, size_t u1) {
      const size_t r0 = u0 * G, r1 = std::min(size_t(rows), u1 * G), o = r0 * d;
      simd::ln_forward(x + o, g, b, xhat + o, rstd + r0, y ? y + o : nullptr, int(r1 - r0), d, G);
    });
    return;
  }
  for (int r = 0; r < rows; ++r) {
    const T* xr = x + size_t(r) * d;
    T mean = 0, var = 0;  // T sums: the float engine's rows are short (a cell's features)
    for (int c = 0; c < d; ++c) mean += xr[c];
    mean /= T(d);
    for (int c = 0; c < d; ++c) var += (xr[c] - mean) * (xr[c] - mean);
    const T rs = T(1) / std::sqrt(var / T(d) + T(kLnEps));
    rstd[r] = rs;
    T* h = xhat + size_t(r) * d;
    for (int c = 0; c < d; ++c) h[c] = T((xr[c] - mean) * rs);
    if (!y) continue;
    const T* gr = g + size_t(r % G) * d;
    const T* br = b + size_t(r % G) * d;
    for (int c = 0; c < d; ++c) y[size_t(r) * d + c] = gr[c] * h[c] + br[c];
  }
}

// u = g ⊙ xhat + b again (backward recomputes instead of storing u)
template <class T>
void ln_apply(const T* xhat, const T* g, const T* b, T* y, int rows, int d, int G) {
  if constexpr (std::is_same_v<T, float>)
    if (G == 1) return simd::ln_apply(xhat, g, b, y, rows, d);
  for (int r = 0; r < rows; ++r) {
    const T* gr = g + size_t(r % G) * d;
    const T* br = b + size_t(r % G) * d;
    for (int c = 0; c < d; ++c) y[size_t(r) * d + c] = gr[c] * xhat[size_t(r) * d + c] + br[c];
  }
}

// dx += dLN/dx . dy ; dg += Σ dy ⊙ xhat ; db += Σ dy (per group)
template <class T>
void ln_backward(const T* xhat, const T* rstd, const T* g, const T* dy, T* dx, T* dg, T* db,
                 int rows, int d, int G) {
  if constexpr (std::is_same_v<T, float>) return simd::ln_backward(xhat, rstd, g, dy, dx, dg, db, rows, d, G);
  for (int r = 0; r < rows; ++r) {
    const T* h = xhat + size_t(r) * d;
    const T* dyr = dy + size_t(r) * d;
    const T* gr = g + size_t(r % G) * d;
    T* dgr = dg + size_t(r % G) * d;
    T* dbr = db + size_t(r % G) * d;
    T m1 = 0, m2 = 0;
    for (int c = 0; c < d; ++c) {
      const T dh = dyr[c] * gr[c];
      m1 += dh;
      m2 += dh * h[c];
      dgr[c] += dyr[c] * h[c];
      dbr[c] += dyr[c];
    }
    m1 /= T(d);
    m2 /= T(d);
    T* dxr = dx + size_t(r) * d;
    for (int c = 0; c < d; ++c) dxr[c] += rstd[r] * (dyr[c] * gr[c] - m1 - h[c] * m2);
  }
}

// y[rows, out] = x[rows, in] W[out, in]^T (+ b); accumulate: y += that (a residual stream).
// With a bias, y's rows start as b and the product adds to them: no zeroing pass and no
// separate bias pass (BLAS zeroes C first when asked to overwrite it).
template <class T>
void linear_forward(const T* x, const T* W, const T* b, T* y, int rows, int in, int out,
                    bool accumulate = false) {
  if constexpr (std::is_same_v<T, float>)
    if (cpu::rows_product(true, rows, out, in, x, in, W, in, b, accumulate, y, out)) return;
  if (b && !accumulate)
    for (int r = 0; r < rows; ++r) std::copy(b, b + out, y + size_t(r) * out);
  cpu::gemm<T>(false, true, rows, out, in, T(1), x, in, W, in, T(b || accumulate ? 1 : 0), y, out);
  if (b && accumulate) {
    if constexpr (std::is_same_v<T, float>) return simd::add_rows(b, rows, out, y);
    for (int r = 0; r < rows; ++r)
      for (int o = 0; o < out; ++o) y[size_t(r) * out + o] += b[o];
  }
}

// out[j] += Σ_r x[r, j], row by row
template <class T>
void col_sums(const T* x, int rows, int n, T* out) {
  if constexpr (std::is_same_v<T, float>) return simd::col_sums(x, rows, n, out);
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < n; ++j) out[j] += x[size_t(r) * n + j];
}

// dW += dy^T x ; db += Σ dy ; dx += dy W (dW, db, dx may be null; set_dx: dx = dy W, no zeroing first)
template <class T>
void linear_backward(const T* x, const T* W, const T* dy, T* dW, T* db, T* dx, int rows, int in,
                     int out, bool set_dx = false) {
  bool own = !dW;
  if constexpr (std::is_same_v<T, float>)
    if (!own) own = cpu::tn_product(out, in, rows, dy, out, x, in, dW, in);
  if (!own) cpu::gemm<T>(true, false, out, in, rows, T(1), dy, out, x, in, T(1), dW, in);
  if (db) col_sums(dy, rows, out, db);
  if (!dx) return;
  if constexpr (std::is_same_v<T, float>)
    if (cpu::rows_product(false, rows, in, out, dy, out, W, in, nullptr, !set_dx, dx, in)) return;
  cpu::gemm<T>(false, false, rows, in, out, T(1), dy, out, W, in, T(set_dx ? 0 : 1), dx, in);
}

// Untied per-column linear map: x (rows, N, in), W (N, out, in), b (N, out) or null -> y (rows,
// N, out). One product per column over all rows (the batched per-column GEMM); the columns run
// in contiguous ranges on the engine's worker threads (each writes only its own columns of y,
// dW, db and dx), each product whole on its thread. Too few columns to share: the columns in
// order on the caller, where a large product may be cut (gemm.cpp; equal to rounding).
template <class F>
void per_column(int N, size_t work_per_column, F&& fn) {
  const size_t grain = std::max<size_t>(1, (size_t(1) << 17) / std::max<size_t>(1, work_per_column));
  if (cpu::pool_threads() < 2 || size_t(N) < 2 * grain) {
    fn(0, N);
    return;
  }
  cpu::parallel_for(size_t(N), grain, [&](int, size_t n0, size_t n1) { fn(int(n0), int(n1)); });
}

template <class T>
void columns_forward(const T* x, const T* W, const T* b, T* y, int rows, int N, int in, int out) {
  per_column(N, size_t(rows) * in * out, [&](int n0, int n1) {
    for (int n = n0; n < n1; ++n) {
      T* yn = y + size_t(n) * out;
      if (b)  // the bias as the product's start (beta 1): no zeroing pass, no bias pass
        for (int r = 0; r < rows; ++r) std::copy(b + size_t(n) * out, b + size_t(n + 1) * out, yn + size_t(r) * N * out);
      cpu::gemm<T>(false, true, rows, out, in, T(1), x + size_t(n) * in, N * in,
                   W + size_t(n) * out * in, in, T(b ? 1 : 0), yn, N * out);
    }
  });
}

template <class T>
void columns_backward(const T* x, const T* W, const T* dy, T* dW, T* db, T* dx, int rows, int N,
                      int in, int out) {
  per_column(N, size_t(rows) * in * out * 2, [&](int n0, int n1) {
    for (int n = n0; n < n1; ++n) {
      cpu::gemm<T>(true, false, out, in, rows, T(1), dy + size_t(n) * out, N * out,
                   x + size_t(n) * in, N * in, T(1), dW + size_t(n) * out * in, in);
      if (dx)
        cpu::gemm<T>(false, false, rows, in, out, T(1), dy + size_t(n) * out, N * out,
                     W + size_t(n) * out * in, in, T(1), dx + size_t(n) * in, N * in);
      if (db)
        for (int r = 0; r < rows; ++r)
          for (int o = 0; o < out; ++o) db[size_t(n) * out + o] += dy[(size_t(r) * N + n) * out + o];
    }
  });
}

// Elementwise activation (never softmax / PReLU here: the compiler rejects them in an MLP).
template <class T>
void act_forward(Act f, double p, const T* z, T* a, size_t n) {
  if constexpr (std::is_same_v<T, float>)
    cpu::parallel_for(n, f == Act::Softmax ? n : kElemGrain, [&](int, size_t b, size_t e) {
      simd::act_forward(f, float(p), 0.0f, z + b, a + b, e - b);
    });
  else ops::act_forward<T>(f, T(p), T(0), z, a, 1, int(n));
}

// dz = da ⊙ f'(z) (overwrites dz)
template <class T>
void act_backward(Act f, double p, const T* z, const T* a, const T* da, T* dz, size_t n) {
  if constexpr (std::is_same_v<T, float>)
    cpu::parallel_for(n, f == Act::Softmax ? n : kElemGrain, [&](int, size_t b, size_t e) {
      simd::act_backward(f, float(p), 0.0f, z + b, a + b, da + b, dz + b, nullptr, e - b);
    });
  else ops::act_backward<T>(f, T(p), T(0), z, a, da, dz, nullptr, 1, int(n));
}

// a = f(z), and z becomes f'(z): the backward (act_backward_deriv) is then one product, and
// terms shared by f and f' (GELU's sigmoid) are evaluated once. Not softmax.
template <class T>
void act_forward_deriv(Act f, double p, T* z, T* a, size_t n) {
  if constexpr (std::is_same_v<T, float>) {
    cpu::parallel_for(n, kElemGrain, [&](int, size_t b, size_t e) {
      simd::act_forward_deriv(f, float(p), 0.0f, z + b, a + b, e - b);
    });
  } else {
    fm::with_act(f, [&](auto tag) {
      constexpr Act A = decltype(tag)::value;
      for (size_t i = 0; i < n; ++i) {
        T ai, di;
        fm::act_deriv<A>(T(p), T(0), z[i], ai, di);
        a[i] = ai;
        z[i] = di;
      }
    });
  }
}

// dz = da ⊙ d, d as act_forward_deriv left it (dz may alias da)
template <class T>
void act_backward_deriv(const T* d, const T* da, T* dz, size_t n) {
  if constexpr (std::is_same_v<T, float>) {
    cpu::parallel_for(n, kElemGrain, [&](int, size_t b, size_t e) { simd::mul(d + b, da + b, dz + b, e - b); });
  } else {
    for (size_t i = 0; i < n; ++i) dz[i] = da[i] * d[i];
  }
}

// dz (rows, n) ⊙= d, then db += its column sums: act_backward_deriv and the bias gradient
// of the product that dz feeds, in one pass over dz (the same sums, in the same order)
template <class T>
void act_backward_deriv_sums(const T* d, T* dz, int rows, int n, T* db) {
  if constexpr (std::is_same_v<T, float>) return simd::mul_col_sums(d, dz, rows, n, db);
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < n; ++j) db[j] += (dz[size_t(r) * n + j] *= d[size_t(r) * n + j]);
}

// A layer norm's gain g and bias b folded into the linear map W (out x d, bias c) that reads
// it: (xhat g + b) W^T + c = xhat Wf^T + cf with Wf = W diag(g), cf = c + W b. The product
// then reads xhat (saved anyway) and the normalised rows are never formed.
template <class T>
void fold_weights(const T* W, const T* g, const T* b, const T* c, T* Wf, T* cf, int out, int d) {
  for (int j = 0; j < out; ++j) {
    for (int k = 0; k < d; ++k) Wf[size_t(j) * d + k] = W[size_t(j) * d + k] * g[k];
    cf[j] = c[j];
  }
  cpu::gemm<T>(false, true, 1, out, d, T(1), b, d, W, d, T(1), cf, out);  // cf += W b
}

// The backward of a folded map over the rows of one chunk: dy (rows x out) the gradient at its
// output, cs (out) dy's column sums. Adds dW = dy^T u = M diag(g) + cs b^T with M = dy^T xhat
// (one product of dW's size, u never formed), the gain's and bias's gradients dg = sum_r du ⊙
// xhat = sum_j W[j, :] ⊙ M[j, :] and db = sum_r du = sum_j cs[j] W[j, :] (du = dy W), and, when
// dxhat is given, sets dxhat = dy Wf, the gradient at xhat (for ln_backward_hat).
template <class T>
void fold_backward(const T* W, const T* Wf, const T* g, const T* b, const T* xhat, const T* dy,
                   const T* cs, int rows, int d, int out, T* dW, T* dg, T* db, T* dxhat) {
  thread_local std::vector<T> buf;
  buf.assign(size_t(out) * d, T(0));
  T* M = buf.data();
  bool own = false;
  if constexpr (std::is_same_v<T, float>) own = cpu::tn_product(out, d, rows, dy, out, xhat, d, M, d);
  if (!own) cpu::gemm<T>(true, false, out, d, rows, T(1), dy, out, xhat, d, T(0), M, d);
  if constexpr (std::is_same_v<T, float>) {
    simd::fold_grads(W, g, b, M, cs, out, d, dW, dg, db);
  } else {
    for (int j = 0; j < out; ++j)
      for (int c = 0; c < d; ++c) {
        const size_t i = size_t(j) * d + c;
        dW[i] += M[i] * g[c] + cs[j] * b[c];
        dg[c] += W[i] * M[i];
        db[c] += cs[j] * W[i];
      }
  }
  if (dxhat) linear_backward<T>(xhat, Wf, dy, nullptr, nullptr, dxhat, rows, d, out, true);
}

// dx += rstd (dh - mean(dh) - xhat mean(dh ⊙ xhat)) per row: layer norm's input gradient from
// dh, the gradient at xhat (fold_backward's dxhat)
template <class T>
void ln_backward_hat(const T* xhat, const T* rstd, const T* dh, T* dx, int rows, int d) {
  if constexpr (std::is_same_v<T, float>) return simd::ln_backward_hat(xhat, rstd, dh, dx, rows, d);
  for (int r = 0; r < rows; ++r) {
    const T* h = xhat + size_t(r) * d;
    const T* dhr = dh + size_t(r) * d;
    T m1 = 0, m2 = 0;
    for (int c = 0; c < d; ++c) {
      m1 += dhr[c];
      m2 += dhr[c] * h[c];
    }
    m1 /= T(d);
    m2 /= T(d);
    T* dxr = dx + size_t(r) * d;
    for (int c = 0; c < d; ++c) dxr[c] += rstd[r] * (dhr[c] - m1 - h[c] * m2);
  }
}

// dx = (dy W) ⊙ d and db += dx's column sums (dy rows x out, W out x in, d and dx rows x in):
// the input gradient of linear_backward when the map is read through an elementwise gate d (an
// activation's derivative, act_forward_deriv) and the gradient of the bias before it. Float:
// the gate and the sums in the product's own pass (cpu::rows_product) where it applies.
template <class T>
void linear_input_grad_gated(const T* dy, const T* W, const T* d, T* dx, T* db, int rows, int in,
                             int out) {
  if constexpr (std::is_same_v<T, float>)
    if (cpu::rows_product(false, rows, in, out, dy, out, W, in, nullptr, false, dx, in, d, db)) return;
  cpu::gemm<T>(false, false, rows, in, out, T(1), dy, out, W, in, T(0), dx, in);
  act_backward_deriv_sums(d, dx, rows, in, db);
}

// In place: each row of n becomes softmax(row); entries at -inf get probability 0.
template <class T>
void softmax_rows(T* s, int rows, int n) {
  if constexpr (std::is_same_v<T, float>) return simd::softmax_rows(s, rows, n);
  for (int r = 0; r < rows; ++r) {
    T* x = s + size_t(r) * n;
    T m = -INFINITY;
    for (int j = 0; j < n; ++j) m = std::max(m, x[j]);
    T sum = 0;
    for (int j = 0; j < n; ++j) {
      x[j] = x[j] == -INFINITY ? T(0) : std::exp(x[j] - m);
      sum += x[j];
    }
    const T inv = T(1) / sum;
    for (int j = 0; j < n; ++j) x[j] *= inv;
  }
}

// In place: each row of n becomes softmax(row + bias row), bias rows x n.
template <class T>
void softmax_rows_bias(T* s, const T* bias, int rows, int n) {
  if constexpr (std::is_same_v<T, float>) return simd::softmax_rows_bias(s, bias, rows, n);
  for (size_t i = 0; i < size_t(rows) * n; ++i) s[i] += bias[i];
  softmax_rows(s, rows, n);
}

// ds = p ⊙ (dp - Σ p dp) per row, in place in dp; acc (rows x n), when given, += ds
template <class T>
void softmax_rows_backward(const T* p, T* dp, int rows, int n, T* acc = nullptr) {
  if constexpr (std::is_same_v<T, float>) return simd::softmax_rows_backward(p, dp, rows, n, acc);
  for (int r = 0; r < rows; ++r) {
    const T* pr = p + size_t(r) * n;
    T* g = dp + size_t(r) * n;
    T dot = 0;
    for (int j = 0; j < n; ++j) dot += pr[j] * g[j];
    for (int j = 0; j < n; ++j) g[j] = pr[j] * (g[j] - dot);
    if (acc)
      for (int j = 0; j < n; ++j) acc[size_t(r) * n + j] += g[j];
  }
}

// A per-sample tensor kept for backward: `size` elements per sample, `batch` samples,
// contiguous over samples so rows row..row+rows-1 are one block.
template <class T>
struct Saved {
  std::vector<T> buf;
  size_t size = 0;
  void allocate(int batch, size_t per_sample) {
    size = per_sample;
    buf.assign(size_t(batch) * per_sample, T(0));
  }
  T* at(int row) { return buf.data() + size_t(row) * size; }
};

}  // namespace nm::nn
