// Optimizers and learning-rate schedules over the flat parameter arena. Formulas follow
// torch.optim (SGD with L2 weight decay and momentum; Adam with L2; AdamW decoupled), with
// global-norm gradient clipping as torch.nn.utils.clip_grad_norm_. Documented in docs/engine.md.
#pragma once
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

// One optimizer step on n parameters. state holds buffers() * n values; t is the number of
// steps taken before this one. Gradients may be rescaled in place (clipping).
// Global-norm clipping of g[0..n) (clip_grad_norm_): rescales in place.
template <class T>
void clip_gradients(const OptimConfig& c, T* g, size_t n, double sum_sq) {
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

// One optimizer step on n parameters: clipping (when set), then the update. Gradients may be
// rescaled in place (clipping).
template <class T>
void optim_step(const OptimConfig& c, double lr, long t, T* p, T* g, T* state, size_t n) {
  if (c.grad_clip > 0) {
    double sq = 0;
    for (size_t i = 0; i < n; ++i) sq += double(g[i]) * double(g[i]);
    clip_gradients(c, g, n, sq);
  }
  optim_update(c, lr, t, p, g, state, n, 0, n, p, state);
}

}  // namespace nm
