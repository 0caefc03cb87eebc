// Convex Lagrangians of energy-block neuron layers (extensions-math.md 1a): the value L(x),
// the activation g = ∇L(x), and the product with its (symmetric) Jacobian ∇²L. Row kinds
// (softmax, layernorm, spherical, ghostmax) act on each row of `row` entries (the last axis).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>

#include "neuromorph/errors.h"

namespace nm::energy {

enum class Lg { Linear, Relu, Repu, Exp, Rexp, Tanh, Sigmoid, Softmax, LayerNorm, Spherical,
                Ghostmax, Leaky, Elu, Selu, kCount };

constexpr double kEps = 1e-5;
constexpr double kSeluAlpha = 1.6732632423543772, kSeluScale = 1.0507009873554805;

struct Lagrangian {
  Lg k = Lg::Linear;
  double p = 0;  // beta | n | gamma | slope | alpha
  int row = 1;   // row width for row kinds

  static Lagrangian make(const std::string& name, double p, int row) {
    static const char* names[] = {"linear", "relu", "repu", "exp", "rexp", "tanh", "sigmoid",
                                  "softmax", "layernorm", "spherical", "ghostmax", "relu_leaky",
                                  "elu", "selu"};
    static_assert(std::size(names) == size_t(Lg::kCount), "Lagrangian table misses one");
    Lagrangian l;
    l.p = p, l.row = row;
    if (name == "relu_parametric") return l.k = Lg::Leaky, l;
    for (size_t i = 0; i < std::size(names); ++i)
      if (name == names[i]) return l.k = Lg(i), l;
    throw IRError("IR: unknown Lagrangian '" + name + "'");
  }
  bool rows() const {
    return k == Lg::Softmax || k == Lg::LayerNorm || k == Lg::Spherical || k == Lg::Ghostmax;
  }

  // g[n] = ∇L(x)
  template <class T>
  void grad(const T* x, T* g, size_t n) const {
    if (rows()) {
      for (size_t r = 0; r < n; r += row) grad_row(x + r, g + r);
      return;
    }
    for (size_t i = 0; i < n; ++i) g[i] = T(g1(double(x[i])));
  }

  // out[n] += ∇²L(x) v
  template <class T>
  void jvp(const T* x, const T* g, const T* v, T* out, size_t n) const {
    if (rows()) {
      for (size_t r = 0; r < n; r += row) jvp_row(x + r, g + r, v + r, out + r);
      return;
    }
    for (size_t i = 0; i < n; ++i) out[i] += T(d1(double(x[i]), double(g[i])) * double(v[i]));
  }

  // Σ v ⊙ ∂g/∂β: the gradient of a learned beta (exp, rexp, tanh, sigmoid, softmax), g = ∇L(x)
  template <class T>
  double dbeta(const T* x, const T* g, const T* v, size_t n) const {
    double s = 0;
    if (k == Lg::Softmax) {  // ∂g_i/∂β = g_i (x_i − Σ_j g_j x_j)
      for (size_t r = 0; r < n; r += row) {
        double gx = 0;
        for (int i = 0; i < row; ++i) gx += double(g[r + i]) * x[r + i];
        for (int i = 0; i < row; ++i) s += double(v[r + i]) * g[r + i] * (x[r + i] - gx);
      }
      return s;
    }
    for (size_t i = 0; i < n; ++i) {
      const double xi = x[i], gi = g[i];
      double d = 0;
      switch (k) {
        case Lg::Exp: d = xi * gi; break;
        case Lg::Rexp: d = xi > 0 ? xi * std::exp(p * xi) : 0.0; break;
        case Lg::Tanh: d = xi * (1 - gi * gi); break;
        case Lg::Sigmoid: d = xi * gi * (1 - gi); break;
        default: throw IRError("IR: this Lagrangian has no learnable beta");
      }
      s += double(v[i]) * d;
    }
    return s;
  }

  // L(x), summed over all entries (row kinds: over rows)
  template <class T>
  double value(const T* x, size_t n) const {
    double s = 0;
    if (rows()) {
      for (size_t r = 0; r < n; r += row) s += value_row(x + r);
      return s;
    }
    for (size_t i = 0; i < n; ++i) s += l1(double(x[i]));
    return s;
  }

 private:
  double g1(double x) const {
    switch (k) {
      case Lg::Linear: return x;
      case Lg::Relu: return std::max(x, 0.0);
      case Lg::Repu: return x > 0 ? std::pow(x, p - 1) : 0.0;
      case Lg::Exp: return std::exp(p * x);
      case Lg::Rexp: return x > 0 ? std::expm1(p * x) : 0.0;
      case Lg::Tanh: return std::tanh(p * x);
      case Lg::Sigmoid: return 1 / (1 + std::exp(-p * x));
      case Lg::Leaky: return x > 0 ? x : p * x;
      case Lg::Elu: return x > 0 ? x : p * std::expm1(x);
      case Lg::Selu: return kSeluScale * (x > 0 ? x : kSeluAlpha * std::expm1(x));
      default: return 0;
    }
  }
  double d1(double x, double g) const {  // g'(x), given g = g(x)
    switch (k) {
      case Lg::Linear: return 1;
      case Lg::Relu: return x > 0 ? 1 : 0;
      case Lg::Repu: return x > 0 ? (p - 1) * std::pow(x, p - 2) : 0.0;
      case Lg::Exp: return p * g;
      case Lg::Rexp: return x > 0 ? p * std::exp(p * x) : 0.0;
      case Lg::Tanh: return p * (1 - g * g);
      case Lg::Sigmoid: return p * g * (1 - g);
      case Lg::Leaky: return x > 0 ? 1 : p;
      case Lg::Elu: return x > 0 ? 1 : p * std::exp(x);
      case Lg::Selu: return kSeluScale * (x > 0 ? 1 : kSeluAlpha * std::exp(x));
      default: return 0;
    }
  }
  double l1(double x) const {
    const double xp = std::max(x, 0.0);
    switch (k) {
      case Lg::Linear: return 0.5 * x * x;
      case Lg::Relu: return 0.5 * xp * xp;
      case Lg::Repu: return std::pow(xp, p) / p;
      case Lg::Exp: return std::exp(p * x) / p;
      case Lg::Rexp: return std::exp(p * xp) / p - xp;
      case Lg::Tanh: {  // log cosh(βx) / β, stable
        const double a = std::abs(p * x);
        return (a + std::log1p(std::exp(-2 * a)) - std::log(2.0)) / p;
      }
      case Lg::Sigmoid: {  // softplus(βx) / β, stable
        const double z = p * x;
        return (std::max(z, 0.0) + std::log1p(std::exp(-std::abs(z)))) / p;
      }
      case Lg::Leaky: return x > 0 ? 0.5 * x * x : 0.5 * p * x * x;
      case Lg::Elu: return x > 0 ? 0.5 * x * x : p * (std::expm1(x) - x);
      case Lg::Selu: return kSeluScale * (x > 0 ? 0.5 * x * x : kSeluAlpha * (std::expm1(x) - x));
      default: return 0;
    }
  }

  template <class T>
  void grad_row(const T* x, T* g) const {
    const int D = row;
    switch (k) {
      case Lg::Softmax:
      case Lg::Ghostmax: {
        const double beta = k == Lg::Softmax ? p : 1.0;
        double m = k == Lg::Ghostmax ? 0.0 : -INFINITY, s = k == Lg::Ghostmax ? 1.0 : 0.0;
        for (int i = 0; i < D; ++i) m = std::max(m, beta * x[i]);
        if (k == Lg::Ghostmax) s = std::exp(-m);  // the ghost entry e^0
        for (int i = 0; i < D; ++i) s += std::exp(beta * x[i] - m);
        for (int i = 0; i < D; ++i) g[i] = T(std::exp(beta * x[i] - m) / s);
        return;
      }
      case Lg::LayerNorm: {
        double mean = 0, var = 0;
        for (int i = 0; i < D; ++i) mean += x[i];
        mean /= D;
        for (int i = 0; i < D; ++i) var += (x[i] - mean) * (x[i] - mean);
        const double sd = std::sqrt(var / D + kEps);
        for (int i = 0; i < D; ++i) g[i] = T(p * (x[i] - mean) / sd);
        return;
      }
      case Lg::Spherical: {
        double ss = kEps;
        for (int i = 0; i < D; ++i) ss += double(x[i]) * x[i];
        const double r = std::sqrt(ss);
        for (int i = 0; i < D; ++i) g[i] = T(p * x[i] / r);
        return;
      }
      default: return;
    }
  }

  template <class T>
  void jvp_row(const T* x, const T* g, const T* v, T* out) const {
    const int D = row;
    switch (k) {
      case Lg::Softmax:
      case Lg::Ghostmax: {  // β (diag g − g gᵀ) v
        const double beta = k == Lg::Softmax ? p : 1.0;
        double gv = 0;
        for (int i = 0; i < D; ++i) gv += double(g[i]) * v[i];
        for (int i = 0; i < D; ++i) out[i] += T(beta * g[i] * (v[i] - gv));
        return;
      }
      case Lg::LayerNorm: {  // (γ/s)(v − mean v − û (û·v)/D), û = (x − x̄)/s
        double mean = 0, var = 0, mv = 0, uv = 0;
        for (int i = 0; i < D; ++i) mean += x[i], mv += v[i];
        mean /= D, mv /= D;
        for (int i = 0; i < D; ++i) var += (x[i] - mean) * (x[i] - mean);
        const double sd = std::sqrt(var / D + kEps);
        for (int i = 0; i < D; ++i) uv += (x[i] - mean) / sd * v[i];
        for (int i = 0; i < D; ++i)
          out[i] += T(p / sd * (v[i] - mv - (x[i] - mean) / sd * uv / D));
        return;
      }
      case Lg::Spherical: {  // (γ/r)(v − x (x·v)/r²)
        double ss = kEps, xv = 0;
        for (int i = 0; i < D; ++i) ss += double(x[i]) * x[i], xv += double(x[i]) * v[i];
        const double r = std::sqrt(ss);
        for (int i = 0; i < D; ++i) out[i] += T(p / r * (v[i] - x[i] * xv / ss));
        return;
      }
      default: return;
    }
  }

  template <class T>
  double value_row(const T* x) const {
    const int D = row;
    switch (k) {
      case Lg::Softmax:
      case Lg::Ghostmax: {
        const double beta = k == Lg::Softmax ? p : 1.0;
        double m = k == Lg::Ghostmax ? 0.0 : -INFINITY;
        for (int i = 0; i < D; ++i) m = std::max(m, beta * x[i]);
        double s = k == Lg::Ghostmax ? std::exp(-m) : 0.0;
        for (int i = 0; i < D; ++i) s += std::exp(beta * x[i] - m);
        return (m + std::log(s)) / beta;
      }
      case Lg::LayerNorm: {
        double mean = 0, var = 0;
        for (int i = 0; i < D; ++i) mean += x[i];
        mean /= D;
        for (int i = 0; i < D; ++i) var += (x[i] - mean) * (x[i] - mean);
        return D * p * std::sqrt(var / D + kEps);
      }
      case Lg::Spherical: {
        double ss = kEps;
        for (int i = 0; i < D; ++i) ss += double(x[i]) * x[i];
        return p * std::sqrt(ss);
      }
      default: return 0;
    }
  }
};

}  // namespace nm::energy
