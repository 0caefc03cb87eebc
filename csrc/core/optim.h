// Optimizers and learning-rate schedules over the flat parameter arena. Formulas follow
// torch.optim (SGD with L2 weight decay and momentum; Adam with L2; AdamW decoupled), with
// global-norm gradient clipping as torch.nn.utils.clip_grad_norm_. Documented in docs/engine.md.
#pragma once
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "neuromorph/optim.h"

namespace nm {

// One optimizer step on n parameters. state holds buffers() * n values; t is the number of
// steps taken before this one. Gradients may be rescaled in place (clipping).
template <class T>
void optim_step(const OptimConfig& c, double lr, long t, T* p, T* g, T* state, size_t n) {
  if (c.grad_clip > 0) {
    double sq = 0;
    for (size_t i = 0; i < n; ++i) sq += double(g[i]) * double(g[i]);
    double coef = c.grad_clip / (std::sqrt(sq) + 1e-6);
    if (coef < 1)
      for (size_t i = 0; i < n; ++i) g[i] = T(g[i] * coef);
  }
  const T rate = T(c.rate(lr, t)), wd = T(c.weight_decay);
  switch (c.kind) {
    case OptimConfig::Sgd:
      for (size_t i = 0; i < n; ++i) p[i] -= rate * (g[i] + wd * p[i]);
      break;
    case OptimConfig::Momentum: {
      const T mu = T(c.momentum);
      for (size_t i = 0; i < n; ++i) {
        T d = g[i] + wd * p[i];
        state[i] = t == 0 ? d : mu * state[i] + d;
        p[i] -= rate * state[i];
      }
      break;
    }
    case OptimConfig::Adam:
    case OptimConfig::AdamW: {
      const bool decoupled = c.kind == OptimConfig::AdamW;
      const T b1 = T(c.beta1), b2 = T(c.beta2), eps = T(c.eps);
      const double bc1 = 1 - std::pow(c.beta1, double(t + 1));
      const double bc2 = 1 - std::pow(c.beta2, double(t + 1));
      const T step = T(double(rate) / bc1), sbc2 = T(std::sqrt(bc2));
      T* m = state;
      T* v = state + n;
      for (size_t i = 0; i < n; ++i) {
        if (decoupled) p[i] *= T(1) - rate * wd;
        T d = decoupled ? g[i] : g[i] + wd * p[i];
        m[i] = b1 * m[i] + (T(1) - b1) * d;
        v[i] = b2 * v[i] + (T(1) - b2) * d * d;
        p[i] -= step * m[i] / (std::sqrt(v[i]) / sbc2 + eps);
      }
      break;
    }
  }
}

}  // namespace nm
