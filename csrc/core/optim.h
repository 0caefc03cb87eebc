// Optimizers and learning-rate schedules over the flat parameter arena. Formulas follow
// torch.optim (SGD with L2 weight decay and momentum; Adam with L2; AdamW decoupled), with
// global-norm gradient clipping as torch.nn.utils.clip_grad_norm_. Documented in docs/engine.md.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "formulas.h"
#include "neuromorph/optim.h"

namespace nm {

// The bias-corrected Adam step of step t (t steps taken before): step = rate / (1 - b1^(t+1)),
// sbc2 = sqrt(1 - b2^(t+1)). Computed once per step on the host, for either backend.
struct AdamStep {
  double step, sbc2;
  bool decoupled;
};
inline AdamStep adam_step(const OptimConfig& c, double lr, long t) {
  const double bc1 = 1 - std::pow(c.beta1, double(t + 1));
  const double bc2 = 1 - std::pow(c.beta2, double(t + 1));
  return AdamStep{c.rate(lr, t) / bc1, std::sqrt(bc2), c.kind == OptimConfig::AdamW};
}

// Global-norm clipping of g[0..n) (clip_grad_norm_) given the sum of squares: rescales in place.
// Where that sum overflows (float64 gradients past 1e154) the norm is max|g| times the norm of
// g / max|g| (clip / inf would zero the step), and each entry becomes (g / max|g|) times
// clip / that norm of g / max|g|: the norm itself may overflow too (entries near 1.8e308), and
// clip / max|g| may underflow. The 1e-6 of the usual formula is far below such norms.
template <class T>
void clip_gradients(const OptimConfig& c, T* g, size_t n, double sum_sq) {
  if (!std::isfinite(sum_sq)) {
    double m = 0, s = 0;
    for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(double(g[i])));
    for (size_t i = 0; i < n; ++i) s += (double(g[i]) / m) * (double(g[i]) / m);
    if (!(m * std::sqrt(s) > c.grad_clip)) return;  // also NaN (a gradient that is: left as is)
    const double per = c.grad_clip / std::sqrt(s);
    for (size_t i = 0; i < n; ++i) g[i] = T(double(g[i]) / m * per);
    return;
  }
  const double coef = fm::clip_coef(sum_sq, c.grad_clip);
  if (coef < 1)
    for (size_t i = 0; i < n; ++i) g[i] = T(g[i] * coef);
}

// The update of parameters [begin, end) of an arena of n (state holds buffers() * n values:
// momentum m, or Adam's m then v); t is the number of steps taken before this one. Chunks of one
// arena may run on different threads. The new values go to p_out and state_out (the same
// layout; they may be p and state themselves), so that a caller can look at them before it
// keeps them.
template <class T>
void optim_update(const OptimConfig& c, double lr, long t, const T* p, const T* g,
                  const T* state, size_t n, size_t begin, size_t end, T* p_out, T* state_out) {
  const T rate = T(c.rate(lr, t)), wd = T(c.weight_decay);
  switch (c.kind) {
    case OptimConfig::Sgd:
      for (size_t i = begin; i < end; ++i) {
        T pi = p[i];
        fm::sgd(pi, g[i], rate, wd);
        p_out[i] = pi;
      }
      break;
    case OptimConfig::Momentum:
      for (size_t i = begin; i < end; ++i) {
        T pi = p[i], mi = state[i];
        fm::momentum(pi, g[i], mi, rate, wd, T(c.momentum), t == 0);
        p_out[i] = pi;
        state_out[i] = mi;
      }
      break;
    case OptimConfig::Adam:
    case OptimConfig::AdamW: {
      const AdamStep a = adam_step(c, lr, t);
      for (size_t i = begin; i < end; ++i) {
        T pi = p[i], mi = state[i], vi = state[n + i];
        fm::adam(pi, g[i], mi, vi, rate, wd, T(c.beta1), T(c.beta2), T(c.eps), T(a.step),
                 T(a.sbc2), a.decoupled);
        p_out[i] = pi;
        state_out[i] = mi;
        state_out[n + i] = vi;
      }
      break;
    }
  }
}

}  // namespace nm
