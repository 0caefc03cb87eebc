// The convex Lagrangians of energy-block neuron layers (extensions-math.md 1a), written once
// for the host and the device: per entry the value L(x), the activation g = ∇L(x), its
// derivative and ∂g/∂β; the row kinds (softmax, layernorm, spherical, ghostmax) over one row of
// D entries split across `nl` lanes (a warp on the device, whose reducer sums / maxes over the
// lanes; one lane and HostRed on the host). Arithmetic is in double on both sides; inputs and
// outputs are T (float or double). cpu/energy.cpp calls these through `Lagrangian` (whole
// arrays, host only), cuda/energy.cu from its kernels. Not here: which Lagrangian a layer has
// (the IR) and the checks of its parameter (core/validate.cpp).
//
// Switches over Lg list every enumerator and have no `default:` (-Werror=switch). Device code
// cannot throw: the host-only checks live in the host-only functions at the end.
#pragma once
#include <cmath>
#include <cstddef>
#include <iterator>
#include <string>
#include <type_traits>
#include <vector>

#include "formulas.h"  // NM_HD
#include "ir.h"
#include "neuromorph/errors.h"

namespace nm::energy {

using ::nm::Lg;  // the kinds are IR facts (core/ir.h)

constexpr double kEps = 1e-5;
constexpr double kSeluAlpha = 1.6732632423543772, kSeluScale = 1.0507009873554805;

// acts on rows of the last axis (else entry by entry)
NM_HD bool lg_rows(Lg k) {
  switch (k) {
    case Lg::Softmax: case Lg::LayerNorm: case Lg::Spherical: case Lg::Ghostmax: return true;
    case Lg::Linear: case Lg::Relu: case Lg::Repu: case Lg::Exp: case Lg::Rexp: case Lg::Tanh:
    case Lg::Sigmoid: case Lg::Leaky: case Lg::Elu: case Lg::Selu: case Lg::kCount: return false;
  }
  return false;
}

// its parameter is an inverse temperature β (`learn beta` may train it)
NM_HD bool lg_has_beta(Lg k) {
  switch (k) {
    case Lg::Exp: case Lg::Rexp: case Lg::Tanh: case Lg::Sigmoid: case Lg::Softmax: return true;
    case Lg::Linear: case Lg::Relu: case Lg::Repu: case Lg::LayerNorm: case Lg::Spherical:
    case Lg::Ghostmax: case Lg::Leaky: case Lg::Elu: case Lg::Selu: case Lg::kCount: return false;
  }
  return false;
}

// ------------------------------------------------------------------ entry-wise kinds
// (row kinds return 0 here: see the row functions)

// g(x) = L'(x)
NM_HD double lg_g1(Lg k, double p, double x) {
  switch (k) {
    case Lg::Linear: return x;
    case Lg::Relu: return x > 0 ? x : 0.0;
    case Lg::Repu: return x > 0 ? pow(x, p - 1) : 0.0;
    case Lg::Exp: return exp(p * x);
    case Lg::Rexp: return x > 0 ? expm1(p * x) : 0.0;
    case Lg::Tanh: return tanh(p * x);
    case Lg::Sigmoid: return 1 / (1 + exp(-p * x));
    case Lg::Leaky: return x > 0 ? x : p * x;
    case Lg::Elu: return x > 0 ? x : p * expm1(x);
    case Lg::Selu: return kSeluScale * (x > 0 ? x : kSeluAlpha * expm1(x));
    case Lg::Softmax: case Lg::LayerNorm: case Lg::Spherical: case Lg::Ghostmax: case Lg::kCount:
      return 0;
  }
  return 0;
}

// g'(x), given g = g(x)
NM_HD double lg_d1(Lg k, double p, double x, double g) {
  switch (k) {
    case Lg::Linear: return 1;
    case Lg::Relu: return x > 0 ? 1 : 0;
    case Lg::Repu: return x > 0 ? (p - 1) * pow(x, p - 2) : 0.0;
    case Lg::Exp: return p * g;
    case Lg::Rexp: return x > 0 ? p * exp(p * x) : 0.0;
    case Lg::Tanh: return p * (1 - g * g);
    case Lg::Sigmoid: return p * g * (1 - g);
    case Lg::Leaky: return x > 0 ? 1 : p;
    case Lg::Elu: return x > 0 ? 1 : p * exp(x);
    case Lg::Selu: return kSeluScale * (x > 0 ? 1 : kSeluAlpha * exp(x));
    case Lg::Softmax: case Lg::LayerNorm: case Lg::Spherical: case Lg::Ghostmax: case Lg::kCount:
      return 0;
  }
  return 0;
}

// L(x) of one entry
NM_HD double lg_l1(Lg k, double p, double x) {
  const double xp = x > 0 ? x : 0.0;
  switch (k) {
    case Lg::Linear: return 0.5 * x * x;
    case Lg::Relu: return 0.5 * xp * xp;
    case Lg::Repu: return pow(xp, p) / p;
    case Lg::Exp: return exp(p * x) / p;
    case Lg::Rexp: return exp(p * xp) / p - xp;
    case Lg::Tanh: {  // log cosh(βx) / β, stable
      const double a = fabs(p * x);
      return (a + log1p(exp(-2 * a)) - log(2.0)) / p;
    }
    case Lg::Sigmoid: {  // softplus(βx) / β, stable
      const double z = p * x;
      return ((z > 0 ? z : 0.0) + log1p(exp(-fabs(z)))) / p;
    }
    case Lg::Leaky: return x > 0 ? 0.5 * x * x : 0.5 * p * x * x;
    case Lg::Elu: return x > 0 ? 0.5 * x * x : p * (expm1(x) - x);
    case Lg::Selu: return kSeluScale * (x > 0 ? 0.5 * x * x : kSeluAlpha * (expm1(x) - x));
    case Lg::Softmax: case Lg::LayerNorm: case Lg::Spherical: case Lg::Ghostmax: case Lg::kCount:
      return 0;
  }
  return 0;
}

// ∂g/∂β of the entry-wise β kinds (0 for the others; softmax: row_jvp)
NM_HD double lg_db1(Lg k, double p, double x, double g) {
  switch (k) {
    case Lg::Exp: return x * g;
    case Lg::Rexp: return x > 0 ? x * exp(p * x) : 0.0;
    case Lg::Tanh: return x * (1 - g * g);
    case Lg::Sigmoid: return x * g * (1 - g);
    case Lg::Linear: case Lg::Relu: case Lg::Repu: case Lg::Softmax: case Lg::LayerNorm:
    case Lg::Spherical: case Lg::Ghostmax: case Lg::Leaky: case Lg::Elu: case Lg::Selu:
    case Lg::kCount:
      return 0;
  }
  return 0;
}

// ------------------------------------------------------------------ row kinds
// One row of D entries: lane `lane` of `nl` handles entries lane, lane + nl, ...; red.sum /
// red.max combine the lanes' partial values (every lane gets the result). x, b (null: no
// bias), g, v, out point at the row's first entry.
struct HostRed {
  NM_HD double sum(double v) const { return v; }
  NM_HD double max(double v) const { return v; }
};

// the Lagrangian's argument x − b, rounded to T as the state is
template <class T>
NM_HD T shifted(const T* x, const T* b, int i) {
  return b ? T(x[i] - b[i]) : x[i];
}

// the row's log-sum-exp pieces of softmax / ghostmax: β, the max m and Σ e^{βu − m} (ghostmax
// includes its ghost entry e^0)
template <class T, class R>
NM_HD void row_lse(Lg k, double p, const T* x, const T* b, int D, int lane, int nl, const R& red,
                   double* beta, double* m, double* s) {
  const bool ghost = k == Lg::Ghostmax;
  *beta = ghost ? 1.0 : p;
  double mx = ghost ? 0.0 : -INFINITY;
  for (int i = lane; i < D; i += nl) mx = fmax(mx, *beta * double(shifted(x, b, i)));
  mx = red.max(mx);
  double sum = 0;
  for (int i = lane; i < D; i += nl) sum += exp(*beta * double(shifted(x, b, i)) - mx);
  sum = red.sum(sum);
  if (ghost) sum += exp(-mx);
  *m = mx, *s = sum;
}

// mean and sd = sqrt(var + ε) of a layernorm row
template <class T, class R>
NM_HD void row_moments(const T* x, const T* b, int D, int lane, int nl, const R& red, double* mean,
                       double* sd) {
  double mu = 0, var = 0;
  for (int i = lane; i < D; i += nl) mu += double(shifted(x, b, i));
  mu = red.sum(mu) / D;
  for (int i = lane; i < D; i += nl) {
    const double d = double(shifted(x, b, i)) - mu;
    var += d * d;
  }
  var = red.sum(var);
  *mean = mu, *sd = sqrt(var / D + kEps);
}

// Σ u² + ε of a spherical row
template <class T, class R>
NM_HD double row_sq(const T* x, const T* b, int D, int lane, int nl, const R& red) {
  double ss = 0;
  for (int i = lane; i < D; i += nl) {
    const double u = double(shifted(x, b, i));
    ss += u * u;
  }
  return red.sum(ss) + kEps;
}

// g = ∇L(x − b) of one row
template <class T, class R>
NM_HD void row_grad(Lg k, double p, const T* x, const T* b, T* g, int D, int lane, int nl,
                    const R& red) {
  switch (k) {
    case Lg::Softmax:
    case Lg::Ghostmax: {
      double beta, m, s;
      row_lse(k, p, x, b, D, lane, nl, red, &beta, &m, &s);
      for (int i = lane; i < D; i += nl) g[i] = T(exp(beta * double(shifted(x, b, i)) - m) / s);
      return;
    }
    case Lg::LayerNorm: {
      double mean, sd;
      row_moments(x, b, D, lane, nl, red, &mean, &sd);
      for (int i = lane; i < D; i += nl) g[i] = T(p * (double(shifted(x, b, i)) - mean) / sd);
      return;
    }
    case Lg::Spherical: {
      const double r = sqrt(row_sq(x, b, D, lane, nl, red));
      for (int i = lane; i < D; i += nl) g[i] = T(p * double(shifted(x, b, i)) / r);
      return;
    }
    case Lg::Linear: case Lg::Relu: case Lg::Repu: case Lg::Exp: case Lg::Rexp: case Lg::Tanh:
    case Lg::Sigmoid: case Lg::Leaky: case Lg::Elu: case Lg::Selu: case Lg::kCount:
      return;
  }
}

// J v for one row (J = ∇²L at x − b, g = ∇L there): out[i] = (J v)_i as T (when out), acc[i] +=
// that T (when acc); dbeta[i] = v_i ∂g_i/∂β (softmax only, when dbeta).
template <class T, class R>
NM_HD void row_jvp(Lg k, double p, const T* x, const T* b, const T* g, const T* v, T* out, T* acc,
                   double* dbeta, int D, int lane, int nl, const R& red) {
  auto emit = [&](int i, double val) {
    const T f = T(val);
    if (out) out[i] = f;
    if (acc) acc[i] += f;
  };
  switch (k) {
    case Lg::Softmax:
    case Lg::Ghostmax: {  // β (diag g − g gᵀ) v
      const double beta = k == Lg::Softmax ? p : 1.0;
      double gv = 0, gx = 0;
      for (int i = lane; i < D; i += nl) {
        gv += double(g[i]) * double(v[i]);
        if (dbeta) gx += double(g[i]) * double(shifted(x, b, i));
      }
      gv = red.sum(gv);
      if (dbeta) gx = red.sum(gx);
      for (int i = lane; i < D; i += nl) {
        emit(i, beta * double(g[i]) * (double(v[i]) - gv));
        if (dbeta) dbeta[i] = double(v[i]) * double(g[i]) * (double(shifted(x, b, i)) - gx);
      }
      return;
    }
    case Lg::LayerNorm: {  // (γ/s)(v − mean v − û (û·v)/D), û = (x − x̄)/s
      double mean, sd, mv = 0, uv = 0;
      row_moments(x, b, D, lane, nl, red, &mean, &sd);
      for (int i = lane; i < D; i += nl) {
        mv += double(v[i]);
        uv += (double(shifted(x, b, i)) - mean) / sd * double(v[i]);
      }
      mv = red.sum(mv) / D;
      uv = red.sum(uv);
      for (int i = lane; i < D; i += nl)
        emit(i, p / sd * (double(v[i]) - mv - (double(shifted(x, b, i)) - mean) / sd * uv / D));
      return;
    }
    case Lg::Spherical: {  // (γ/r)(v − x (x·v)/r²)
      const double ss = row_sq(x, b, D, lane, nl, red);
      double xv = 0;
      for (int i = lane; i < D; i += nl) xv += double(shifted(x, b, i)) * double(v[i]);
      xv = red.sum(xv);
      const double r = sqrt(ss);
      for (int i = lane; i < D; i += nl)
        emit(i, p / r * (double(v[i]) - double(shifted(x, b, i)) * xv / ss));
      return;
    }
    case Lg::Linear: case Lg::Relu: case Lg::Repu: case Lg::Exp: case Lg::Rexp: case Lg::Tanh:
    case Lg::Sigmoid: case Lg::Leaky: case Lg::Elu: case Lg::Selu: case Lg::kCount:
      return;
  }
}

// L of one row (every lane gets it)
template <class T, class R>
NM_HD double row_value(Lg k, double p, const T* x, const T* b, int D, int lane, int nl,
                       const R& red) {
  switch (k) {
    case Lg::Softmax:
    case Lg::Ghostmax: {
      double beta, m, s;
      row_lse(k, p, x, b, D, lane, nl, red, &beta, &m, &s);
      return (m + log(s)) / beta;
    }
    case Lg::LayerNorm: {
      double mean, sd;
      row_moments(x, b, D, lane, nl, red, &mean, &sd);
      return D * p * sd;
    }
    case Lg::Spherical: return p * sqrt(row_sq(x, b, D, lane, nl, red));
    case Lg::Linear: case Lg::Relu: case Lg::Repu: case Lg::Exp: case Lg::Rexp: case Lg::Tanh:
    case Lg::Sigmoid: case Lg::Leaky: case Lg::Elu: case Lg::Selu: case Lg::kCount:
      return 0;
  }
  return 0;
}

template <Lg K>
using LgTag = std::integral_constant<Lg, K>;

// fn(LgTag<k>{}): the kind as a constant, so loops over entries see one branch-free formula
template <class Fn>
decltype(auto) with_lg(Lg k, Fn&& fn) {
  switch (k) {
    case Lg::Linear: return fn(LgTag<Lg::Linear>{});
    case Lg::Relu: return fn(LgTag<Lg::Relu>{});
    case Lg::Repu: return fn(LgTag<Lg::Repu>{});
    case Lg::Exp: return fn(LgTag<Lg::Exp>{});
    case Lg::Rexp: return fn(LgTag<Lg::Rexp>{});
    case Lg::Tanh: return fn(LgTag<Lg::Tanh>{});
    case Lg::Sigmoid: return fn(LgTag<Lg::Sigmoid>{});
    case Lg::Softmax: return fn(LgTag<Lg::Softmax>{});
    case Lg::LayerNorm: return fn(LgTag<Lg::LayerNorm>{});
    case Lg::Spherical: return fn(LgTag<Lg::Spherical>{});
    case Lg::Ghostmax: return fn(LgTag<Lg::Ghostmax>{});
    case Lg::Leaky: return fn(LgTag<Lg::Leaky>{});
    case Lg::Elu: return fn(LgTag<Lg::Elu>{});
    case Lg::Selu: return fn(LgTag<Lg::Selu>{});
    case Lg::kCount: break;
  }
  throw IRError("IR: bad Lagrangian kind");
}

// A Lagrangian applied to whole arrays on the host (the CPU backend).
struct Lagrangian {
  Lg k = Lg::Linear;
  double p = 0;  // beta | n | gamma | slope | alpha
  int row = 1;   // row width for row kinds

  static Lagrangian make(Lg kind, double p, int row) {
    Lagrangian l;
    l.k = kind, l.p = p, l.row = row;
    return l;
  }
  bool rows() const { return lg_rows(k); }

  // g[n] = ∇L(x)
  template <class T>
  void grad(const T* x, T* g, size_t n) const {
    if (rows()) {
      for (size_t r = 0; r < n; r += row) row_grad<T>(k, p, x + r, nullptr, g + r, row, 0, 1, HostRed{});
      return;
    }
    with_lg(k, [&](auto K) {
      for (size_t i = 0; i < n; ++i) g[i] = T(lg_g1(K, p, double(x[i])));
    });
  }

  // out[n] += ∇²L(x) v
  template <class T>
  void jvp(const T* x, const T* g, const T* v, T* out, size_t n) const {
    if (rows()) {
      for (size_t r = 0; r < n; r += row)
        row_jvp<T>(k, p, x + r, nullptr, g + r, v + r, nullptr, out + r, nullptr, row, 0, 1, HostRed{});
      return;
    }
    with_lg(k, [&](auto K) {
      for (size_t i = 0; i < n; ++i) out[i] += T(lg_d1(K, p, double(x[i]), double(g[i])) * double(v[i]));
    });
  }

  // Σ v ⊙ ∂g/∂β: the gradient of a learned beta, g = ∇L(x). IRError for a kind without one.
  template <class T>
  double dbeta(const T* x, const T* g, const T* v, size_t n) const {
    if (!lg_has_beta(k)) throw IRError("IR: this Lagrangian has no learnable beta");
    double s = 0;
    if (rows()) {  // softmax
      // one softmax row's dbeta terms; per thread (the energy block's chunks run side by side)
      thread_local std::vector<double> dscratch;
      dscratch.resize(size_t(row));
      for (size_t r = 0; r < n; r += row) {
        row_jvp<T>(k, p, x + r, nullptr, g + r, v + r, nullptr, nullptr, dscratch.data(), row, 0, 1,
                   HostRed{});
        for (int i = 0; i < row; ++i) s += dscratch[size_t(i)];
      }
      return s;
    }
    for (size_t i = 0; i < n; ++i) s += double(v[i]) * lg_db1(k, p, double(x[i]), double(g[i]));
    return s;
  }

  // L(x), summed over all entries (row kinds: over rows)
  template <class T>
  double value(const T* x, size_t n) const {
    double s = 0;
    if (rows()) {
      for (size_t r = 0; r < n; r += row) s += row_value<T>(k, p, x + r, nullptr, row, 0, 1, HostRed{});
      return s;
    }
    with_lg(k, [&](auto K) {
      for (size_t i = 0; i < n; ++i) s += lg_l1(K, p, double(x[i]));
    });
    return s;
  }

};

}  // namespace nm::energy
