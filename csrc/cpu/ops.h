// Scalar reference ops: the oracle every fast path is tested against, and the fallback.
// Forward and backward sit side by side under the same names. Matrices are row-major;
// a "rows x n" buffer holds one sample per row. Not here: scheduling, memory, BLAS.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>

#include "../core/formulas.h"
#include "../core/ir.h"

namespace nm::ops {

template <class T> inline T sigmoid(T z) { return fm::StdMath::sigmoid(z); }

// dense_forward: z[rows, out] = u[rows, in] . W[out, in]^T + b[out]
template <class T>
void dense_forward(const T* u, const T* W, const T* b, T* z, int rows, int in, int out) {
  for (int r = 0; r < rows; ++r) {
    const T* ur = u + size_t(r) * in;
    T* zr = z + size_t(r) * out;
    for (int o = 0; o < out; ++o) {
      const T* w = W + size_t(o) * in;
      T acc = b[o];
      for (int i = 0; i < in; ++i) acc += w[i] * ur[i];
      zr[o] = acc;
    }
  }
}

// dense_backward: dW += dz^T . u ; db += sum_rows dz ; du += dz . W  (du, or dW and db, may be null)
template <class T>
void dense_backward(const T* u, const T* W, const T* dz, T* dW, T* db, T* du, int rows, int in,
                    int out) {
  for (int r = 0; r < rows; ++r) {
    const T* ur = u + size_t(r) * in;
    const T* dzr = dz + size_t(r) * out;
    T* dur = du ? du + size_t(r) * in : nullptr;
    for (int o = 0; o < out; ++o) {
      const T g = dzr[o];
      if (g == T(0)) continue;
      const T* w = W + size_t(o) * in;
      if (dW) {  // null dW/db: input gradient only
        db[o] += g;
        T* dw = dW + size_t(o) * in;
        for (int i = 0; i < in; ++i) dw[i] += g * ur[i];
      }
      if (dur)
        for (int i = 0; i < in; ++i) dur[i] += g * w[i];
    }
  }
}

template <class T> T act_scalar(Act f, T p, T alpha, T z) { return fm::act(f, p, alpha, z); }

// act_forward: a[rows, n] = f(z); alpha is the PReLU slope (learned) or unused.
template <class T>
void act_forward(Act f, T p, T alpha, const T* z, T* a, int rows, int n) {
  const size_t len = size_t(rows) * n;
  switch (f) {
    case Act::Softmax:
      for (int r = 0; r < rows; ++r) {
        const T* zr = z + size_t(r) * n;
        T* ar = a + size_t(r) * n;
        T m = *std::max_element(zr, zr + n), s = 0;
        for (int i = 0; i < n; ++i) s += (ar[i] = std::exp(zr[i] - m));
        for (int i = 0; i < n; ++i) ar[i] /= s;
      }
      return;
    case Act::Sigmoid: case Act::Tanh: case Act::Relu: case Act::Linear: case Act::BinaryStep:
    case Act::ReluLeaky: case Act::ReluParametric: case Act::Elu: case Act::Selu: case Act::Swish:
    case Act::Gelu: case Act::GeluErf: case Act::kCount:
      for (size_t i = 0; i < len; ++i) a[i] = act_scalar(f, p, alpha, z[i]);
  }
}

// Derivative f'(z) given z and a = f(z), for the elementwise activations.
template <class T> T act_deriv(Act f, T p, T alpha, T z, T a) { return fm::deriv(f, p, alpha, z, a); }

// act_backward: dz = da * f'(z) (softmax: the exact Jacobian-vector product);
// dalpha accumulates the PReLU slope gradient.
template <class T>
void act_backward(Act f, T p, T alpha, const T* z, const T* a, const T* da, T* dz, T* dalpha,
                  int rows, int n) {
  if (f == Act::Softmax) {
    for (int r = 0; r < rows; ++r) {
      const T* ar = a + size_t(r) * n;
      const T* gr = da + size_t(r) * n;
      T dot = 0;
      for (int i = 0; i < n; ++i) dot += gr[i] * ar[i];
      for (int i = 0; i < n; ++i) dz[size_t(r) * n + i] = ar[i] * (gr[i] - dot);
    }
    return;
  }
  const size_t len = size_t(rows) * n;
  for (size_t i = 0; i < len; ++i) dz[i] = da[i] * act_deriv(f, p, alpha, z[i], a[i]);
  if (f == Act::ReluParametric && dalpha)
    for (size_t i = 0; i < len; ++i)
      if (!(z[i] > 0)) *dalpha += da[i] * z[i];
}

// loss_forward: per-sample loss of one row r[n] against e[n] (MDL.md section 3), in double.
template <class T> double loss_forward(Loss l, double p, const T* r, const T* e, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += fm::loss_term(l, p, double(r[i]), double(e[i]));
  return fm::loss_sums(l) ? s : s / n;
}

// loss_backward: dr[n] = scale * d(per-sample loss)/dr  (scale = 1/batch for the mean).
template <class T> void loss_backward(Loss l, double p, const T* r, const T* e, T* dr, int n,
                                      double scale) {
  const double k = fm::loss_sums(l) ? scale : scale / n;
  for (int i = 0; i < n; ++i) dr[i] = T(k * fm::loss_grad(l, p, double(r[i]), double(e[i])));
}

// Cross-entropy of one row a[n] against class `id` (a one-hot target without building it):
// the loss -log a[id] (clamped as loss_term clamps), and with dz the gradient scaled by `scale`:
// softmax-fused dz = scale (a - onehot), else dL/da = -scale / a[id] at the class only.
template <class T> double xent_class(const T* a, int id, T* dz, int n, double scale, bool fused) {
  const double p = double(a[id]);
  const double loss = fm::loss_term(Loss::CrossEntropy, 0.0, p, 1.0);
  if (!dz) return loss;
  if (fused) {
    for (int i = 0; i < n; ++i) dz[i] = T(scale * double(a[i]));
    dz[id] = T(fm::softmax_xent_grad(p, 1.0, 1.0, scale));
  } else {
    for (int i = 0; i < n; ++i) dz[i] = T(0);
    dz[id] = T(scale * fm::loss_grad(Loss::CrossEntropy, 0.0, p, 1.0));
  }
  return loss;
}

// Softmax output with cross-entropy, fused: dz = scale * (a * sum(e) - e), exact for any e.
template <class T> void softmax_xent_backward(const T* a, const T* e, T* dz, int n, double scale) {
  double se = 0;
  for (int i = 0; i < n; ++i) se += e[i];
  for (int i = 0; i < n; ++i) dz[i] = T(fm::softmax_xent_grad(double(a[i]), double(e[i]), se, scale));
}

// merge_forward: y = op(u, v) over len elements
template <class T> void merge_forward(MergeOp op, const T* u, const T* v, T* y, size_t len) {
  for (size_t i = 0; i < len; ++i) y[i] = fm::merge(op, u[i], v[i]);
}

// merge_backward: du += dy * dy/du ; dv += dy * dy/dv  (dv may be null: a dropped delayed read)
template <class T> void merge_backward(MergeOp op, const T* u, const T* v, const T* dy, T* du,
                                       T* dv, size_t len) {
  for (size_t i = 0; i < len; ++i) {
    du[i] += dy[i] * fm::merge_partial(op, v[i]);
    if (dv) dv[i] += dy[i] * fm::merge_partial(op, u[i]);
  }
}

}  // namespace nm::ops
