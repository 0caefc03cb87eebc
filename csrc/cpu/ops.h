// Scalar reference ops: the oracle every fast path is tested against, and the fallback.
// Forward and backward sit side by side under the same names. Matrices are row-major;
// a "rows x n" buffer holds one sample per row. Not here: scheduling, memory, BLAS.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>

#include "../core/ir.h"

namespace nm::ops {

constexpr double kSeluLambda = 1.0507009873554805, kSeluAlpha = 1.6732632423543772;
constexpr double kGeluC = 0.7978845608028654;  // sqrt(2/pi)
constexpr double kInvSqrt2 = 0.7071067811865476, kInvSqrt2Pi = 0.3989422804014327;

template <class T> inline T sigmoid(T z) {
  return z >= 0 ? T(1) / (T(1) + std::exp(-z)) : std::exp(z) / (T(1) + std::exp(z));
}

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

template <class T> T act_scalar(Act f, T p, T alpha, T z) {
  switch (f) {
    case Act::Sigmoid: return sigmoid(z);
    case Act::Tanh: return std::tanh(z);
    case Act::Relu: return z > 0 ? z : T(0);
    case Act::Linear: return z;
    case Act::BinaryStep: return z >= 0 ? T(1) : T(0);
    case Act::ReluLeaky: return z > 0 ? z : p * z;
    case Act::ReluParametric: return z > 0 ? z : alpha * z;
    case Act::Elu: return z > 0 ? z : p * (std::exp(z) - T(1));
    case Act::Selu: return T(kSeluLambda) * (z > 0 ? z : T(kSeluAlpha) * (std::exp(z) - T(1)));
    case Act::Swish: return z * sigmoid(p * z);
    case Act::Gelu: {  // 0.5 z (1 + tanh u) written as z * sigmoid(2u): exact, no cancellation
      T u = T(kGeluC) * (z + T(0.044715) * z * z * z);
      return z * sigmoid(T(2) * u);
    }
    case Act::GeluErf:  // z Phi(z), Phi through erfc: exact in the left tail
      return T(0.5) * z * std::erfc(-z * T(kInvSqrt2));
    default: return z;  // Softmax is handled per row by act_forward
  }
}

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
    default:
      for (size_t i = 0; i < len; ++i) a[i] = act_scalar(f, p, alpha, z[i]);
  }
}

// Derivative f'(z) given z and a = f(z), for the elementwise activations.
template <class T> T act_deriv(Act f, T p, T alpha, T z, T a) {
  switch (f) {
    case Act::Sigmoid: return a * (T(1) - a);
    case Act::Tanh: return T(1) - a * a;
    case Act::Relu: return z > 0 ? T(1) : T(0);
    case Act::Linear: return T(1);
    case Act::BinaryStep: return T(0);
    case Act::ReluLeaky: return z > 0 ? T(1) : p;
    case Act::ReluParametric: return z > 0 ? T(1) : alpha;
    case Act::Elu: return z > 0 ? T(1) : p * std::exp(z);
    case Act::Selu: return T(kSeluLambda) * (z > 0 ? T(1) : T(kSeluAlpha) * std::exp(z));
    case Act::Swish: {
      T s = sigmoid(p * z);
      return s + p * z * s * (T(1) - s);
    }
    case Act::Gelu: {  // with s = (1 + tanh u) / 2 = sigmoid(2u), 1 - tanh^2 u = 4 s (1 - s)
      T s = sigmoid(T(2) * T(kGeluC) * (z + T(0.044715) * z * z * z));
      return s + T(2) * z * s * (T(1) - s) * T(kGeluC) * (T(1) + T(3 * 0.044715) * z * z);
    }
    case Act::GeluErf:  // Phi(z) + z phi(z)
      return T(0.5) * std::erfc(-z * T(kInvSqrt2)) + z * T(kInvSqrt2Pi) * std::exp(T(-0.5) * z * z);
    default: return T(1);
  }
}

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

// loss_forward: per-sample loss of one row r[n] against e[n] (MDL.md section 3).
template <class T> double loss_forward(Loss l, double p, const T* r, const T* e, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) {
    double x = double(r[i]) - double(e[i]);
    switch (l) {
      case Loss::Mse: s += x * x; break;
      case Loss::Mae: s += std::fabs(x); break;
      case Loss::Mape: s += std::fabs(x) / std::max(std::fabs(double(e[i])), 1e-8); break;
      case Loss::Huber: s += std::fabs(x) <= p ? 0.5 * x * x : p * (std::fabs(x) - 0.5 * p); break;
      case Loss::HuberModified: {
        double y = double(e[i]) * double(r[i]);
        s += y >= -1 ? std::pow(std::max(0.0, 1 - y), 2) : -4 * y;
        break;
      }
      case Loss::CrossEntropy: s -= double(e[i]) * std::log(std::max(double(r[i]), 1e-12)); break;
      case Loss::Hinge: s += std::max(0.0, 1 - double(e[i]) * double(r[i])); break;
      default: break;
    }
  }
  return l == Loss::CrossEntropy ? s : s / n;
}

// loss_backward: dr[n] = scale * d(per-sample loss)/dr  (scale = 1/batch for the mean).
template <class T> void loss_backward(Loss l, double p, const T* r, const T* e, T* dr, int n,
                                      double scale) {
  const double k = l == Loss::CrossEntropy ? scale : scale / n;
  for (int i = 0; i < n; ++i) {
    double ri = r[i], ei = e[i], x = ri - ei, g = 0;
    switch (l) {
      case Loss::Mse: g = 2 * x; break;
      case Loss::Mae: g = (x > 0) - (x < 0); break;
      case Loss::Mape: g = double((x > 0) - (x < 0)) / std::max(std::fabs(ei), 1e-8); break;
      case Loss::Huber: g = std::fabs(x) <= p ? x : p * double((x > 0) - (x < 0)); break;
      case Loss::HuberModified: {
        double y = ei * ri;
        g = y >= -1 ? -2 * std::max(0.0, 1 - y) * ei : -4 * ei;
        break;
      }
      case Loss::CrossEntropy: g = ri > 1e-12 ? -ei / ri : 0.0; break;
      case Loss::Hinge: g = 1 - ei * ri > 0 ? -ei : 0.0; break;
      default: break;
    }
    dr[i] = T(k * g);
  }
}

// Softmax output with cross-entropy, fused: dz = scale * (a * sum(e) - e), exact for any e.
template <class T> void softmax_xent_backward(const T* a, const T* e, T* dz, int n, double scale) {
  double se = 0;
  for (int i = 0; i < n; ++i) se += e[i];
  for (int i = 0; i < n; ++i) dz[i] = T(scale * (double(a[i]) * se - double(e[i])));
}

// merge_forward: y = op(u, v) over len elements
template <class T> void merge_forward(MergeOp op, const T* u, const T* v, T* y, size_t len) {
  for (size_t i = 0; i < len; ++i)
    y[i] = op == MergeOp::Additive ? u[i] + v[i]
         : op == MergeOp::Multiplicative ? u[i] * v[i] : T(0.5) * (u[i] + v[i]);
}

// merge_backward: du += dy * dy/du ; dv += dy * dy/dv  (dv may be null: a dropped delayed read)
template <class T> void merge_backward(MergeOp op, const T* u, const T* v, const T* dy, T* du,
                                       T* dv, size_t len) {
  for (size_t i = 0; i < len; ++i) {
    const T g = dy[i];
    switch (op) {
      case MergeOp::Additive: du[i] += g; if (dv) dv[i] += g; break;
      case MergeOp::Multiplicative: du[i] += g * v[i]; if (dv) dv[i] += g * u[i]; break;
      default: du[i] += T(0.5) * g; if (dv) dv[i] += T(0.5) * g; break;
    }
  }
}

}  // namespace nm::ops
