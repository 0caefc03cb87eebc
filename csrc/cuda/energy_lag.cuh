// The Lagrangians of an energy block on the device (the math of cpu/lagrangian.h, written once
// more as __host__ __device__ functions so it can be checked on the host): per-entry value,
// activation g = ∇L, derivative, ∂g/∂β, and the row kinds (softmax, layernorm, spherical,
// ghostmax) over one row of D entries split across `nl` lanes (a warp on the device: the
// reducer sums / maxes over the lanes; on the host one lane and plain values). Arithmetic is in
// double, as on the CPU; inputs and outputs are float.
#pragma once
#include <cuda_runtime.h>

#include <cmath>

#include "../cpu/lagrangian.h"

#define NM_HD __host__ __device__

namespace nm::cuda::energy {

using nm::energy::Lg;

// A Lagrangian as the kernels see it: kind, parameter, row width; `beta` (device) overrides p
// when the layer learns its beta.
struct DLag {
  Lg k = Lg::Linear;
  double p = 0;
  int row = 1;
  const float* beta = nullptr;
  NM_HD bool rows() const {
    return k == Lg::Softmax || k == Lg::LayerNorm || k == Lg::Spherical || k == Lg::Ghostmax;
  }
  NM_HD double param() const { return beta ? double(*beta) : p; }
};

inline DLag to_device(const nm::energy::Lagrangian& l, const float* beta = nullptr) {
  DLag d;
  d.k = l.k, d.p = l.p, d.row = l.row, d.beta = beta;
  return d;
}

constexpr double kEps = nm::energy::kEps;
constexpr double kSeluA = nm::energy::kSeluAlpha, kSeluL = nm::energy::kSeluScale;

// the Lagrangian's argument x − b, rounded to float as the CPU does
NM_HD inline float shifted(const float* x, const float* b, int i) {
  return b ? x[i] - b[i] : x[i];
}

// ------------------------------------------------------------------ entry-wise kinds
NM_HD inline double lg_g1(Lg k, double p, double x) {
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
    case Lg::Selu: return kSeluL * (x > 0 ? x : kSeluA * expm1(x));
    default: return 0;
  }
}

// g'(x), given g = g(x)
NM_HD inline double lg_d1(Lg k, double p, double x, double g) {
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
    case Lg::Selu: return kSeluL * (x > 0 ? 1 : kSeluA * exp(x));
    default: return 0;
  }
}

NM_HD inline double lg_l1(Lg k, double p, double x) {
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
    case Lg::Selu: return kSeluL * (x > 0 ? 0.5 * x * x : kSeluA * (expm1(x) - x));
    default: return 0;
  }
}

// ∂g/∂β of the entry-wise beta kinds (exp, rexp, tanh, sigmoid)
NM_HD inline double lg_db1(Lg k, double p, double x, double g) {
  switch (k) {
    case Lg::Exp: return x * g;
    case Lg::Rexp: return x > 0 ? x * exp(p * x) : 0.0;
    case Lg::Tanh: return x * (1 - g * g);
    case Lg::Sigmoid: return x * g * (1 - g);
    default: return 0;
  }
}

// ------------------------------------------------------------------ row kinds
// One row of D entries: lane `lane` of `nl` handles entries lane, lane + nl, ...; red.sum /
// red.max combine the lanes' partial values (every lane gets the result). x, b (null: no
// bias), g, v, out point at the row's first entry.
struct HostRed {
  NM_HD double sum(double v) const { return v; }
  NM_HD double max(double v) const { return v; }
};

template <class R>
NM_HD void row_grad(const DLag& L, const float* x, const float* b, float* g, int D, int lane,
                    int nl, const R& red) {
  const double p = L.param();
  switch (L.k) {
    case Lg::Softmax:
    case Lg::Ghostmax: {
      const bool ghost = L.k == Lg::Ghostmax;
      const double beta = ghost ? 1.0 : p;
      double m = ghost ? 0.0 : -INFINITY;
      for (int i = lane; i < D; i += nl) m = fmax(m, beta * shifted(x, b, i));
      m = red.max(m);
      double s = 0;
      for (int i = lane; i < D; i += nl) s += exp(beta * shifted(x, b, i) - m);
      s = red.sum(s);
      if (ghost) s += exp(-m);  // the ghost entry e^0
      for (int i = lane; i < D; i += nl) g[i] = float(exp(beta * shifted(x, b, i) - m) / s);
      return;
    }
    case Lg::LayerNorm: {
      double mean = 0, var = 0;
      for (int i = lane; i < D; i += nl) mean += shifted(x, b, i);
      mean = red.sum(mean) / D;
      for (int i = lane; i < D; i += nl) {
        const double d = shifted(x, b, i) - mean;
        var += d * d;
      }
      var = red.sum(var);
      const double sd = sqrt(var / D + kEps);
      for (int i = lane; i < D; i += nl) g[i] = float(p * (shifted(x, b, i) - mean) / sd);
      return;
    }
    case Lg::Spherical: {
      double ss = 0;
      for (int i = lane; i < D; i += nl) {
        const double u = shifted(x, b, i);
        ss += u * u;
      }
      ss = red.sum(ss) + kEps;
      const double r = sqrt(ss);
      for (int i = lane; i < D; i += nl) g[i] = float(p * shifted(x, b, i) / r);
      return;
    }
    default: return;
  }
}

// J v for one row (J = ∇²L at x − b, g = ∇L there): out[i] = (J v)_i as float (when out),
// acc[i] += that float (when acc); dbeta[i] = v_i ∂g_i/∂β (softmax only, when dbeta).
template <class R>
NM_HD void row_jvp(const DLag& L, const float* x, const float* b, const float* g, const float* v,
                   float* out, float* acc, double* dbeta, int D, int lane, int nl, const R& red) {
  const double p = L.param();
  auto emit = [&](int i, double val) {
    const float f = float(val);
    if (out) out[i] = f;
    if (acc) acc[i] += f;
  };
  switch (L.k) {
    case Lg::Softmax:
    case Lg::Ghostmax: {  // β (diag g − g gᵀ) v
      const double beta = L.k == Lg::Softmax ? p : 1.0;
      double gv = 0, gx = 0;
      for (int i = lane; i < D; i += nl) {
        gv += double(g[i]) * v[i];
        if (dbeta) gx += double(g[i]) * shifted(x, b, i);
      }
      gv = red.sum(gv);
      if (dbeta) gx = red.sum(gx);
      for (int i = lane; i < D; i += nl) {
        emit(i, beta * g[i] * (v[i] - gv));
        if (dbeta) dbeta[i] = double(v[i]) * g[i] * (shifted(x, b, i) - gx);
      }
      return;
    }
    case Lg::LayerNorm: {  // (γ/s)(v − mean v − û (û·v)/D), û = (x − x̄)/s
      double mean = 0, mv = 0, var = 0, uv = 0;
      for (int i = lane; i < D; i += nl) mean += shifted(x, b, i), mv += v[i];
      mean = red.sum(mean) / D;
      mv = red.sum(mv) / D;
      for (int i = lane; i < D; i += nl) {
        const double d = shifted(x, b, i) - mean;
        var += d * d;
      }
      var = red.sum(var);
      const double sd = sqrt(var / D + kEps);
      for (int i = lane; i < D; i += nl) uv += (shifted(x, b, i) - mean) / sd * v[i];
      uv = red.sum(uv);
      for (int i = lane; i < D; i += nl)
        emit(i, p / sd * (v[i] - mv - (shifted(x, b, i) - mean) / sd * uv / D));
      return;
    }
    case Lg::Spherical: {  // (γ/r)(v − x (x·v)/r²)
      double ss = 0, xv = 0;
      for (int i = lane; i < D; i += nl) {
        const double u = shifted(x, b, i);
        ss += u * u, xv += u * v[i];
      }
      ss = red.sum(ss) + kEps;
      xv = red.sum(xv);
      const double r = sqrt(ss);
      for (int i = lane; i < D; i += nl) emit(i, p / r * (v[i] - shifted(x, b, i) * xv / ss));
      return;
    }
    default: return;
  }
}

// L of one row (every lane gets it)
template <class R>
NM_HD double row_value(const DLag& L, const float* x, const float* b, int D, int lane, int nl,
                       const R& red) {
  const double p = L.param();
  switch (L.k) {
    case Lg::Softmax:
    case Lg::Ghostmax: {
      const bool ghost = L.k == Lg::Ghostmax;
      const double beta = ghost ? 1.0 : p;
      double m = ghost ? 0.0 : -INFINITY;
      for (int i = lane; i < D; i += nl) m = fmax(m, beta * shifted(x, b, i));
      m = red.max(m);
      double s = 0;
      for (int i = lane; i < D; i += nl) s += exp(beta * shifted(x, b, i) - m);
      s = red.sum(s);
      if (ghost) s += exp(-m);
      return (m + log(s)) / beta;
    }
    case Lg::LayerNorm: {
      double mean = 0, var = 0;
      for (int i = lane; i < D; i += nl) mean += shifted(x, b, i);
      mean = red.sum(mean) / D;
      for (int i = lane; i < D; i += nl) {
        const double d = shifted(x, b, i) - mean;
        var += d * d;
      }
      var = red.sum(var);
      return D * p * sqrt(var / D + kEps);
    }
    case Lg::Spherical: {
      double ss = 0;
      for (int i = lane; i < D; i += nl) {
        const double u = shifted(x, b, i);
        ss += u * u;
      }
      return p * sqrt(red.sum(ss) + kEps);
    }
    default: return 0;
  }
}

}  // namespace nm::cuda::energy
