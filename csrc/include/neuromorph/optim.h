// Optimizer and learning-rate schedule settings of a model (public: embedders set them too).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>

namespace nm {

struct OptimConfig {
  enum Kind { Sgd, Momentum, Adam, AdamW } kind = Sgd;
  double momentum = 0.9, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  double grad_clip = 0.0;  // 0: off
  enum Sched { Constant, Step, Cosine } schedule = Constant;
  long warmup = 0;          // linear warm-up steps (applied on top of any schedule)
  long step_size = 1;       // Step: multiply by gamma every step_size steps
  double gamma = 0.1;
  long total_steps = 1;     // Cosine: steps from the base rate down to min_lr
  double min_lr = 0.0;

  bool plain_sgd() const { return kind == Sgd && weight_decay == 0 && grad_clip == 0; }
  size_t buffers() const { return kind == Sgd ? 0 : kind == Momentum ? 1 : 2; }

  // Learning rate of optimizer step t (0-based) for base rate lr.
  double rate(double lr, long t) const {
    double r = lr;
    if (schedule == Step) r = lr * std::pow(gamma, double(t / (step_size > 0 ? step_size : 1)));
    if (schedule == Cosine) {
      double f = std::min(1.0, double(t) / double(total_steps > 0 ? total_steps : 1));
      r = min_lr + (lr - min_lr) * 0.5 * (1 + std::cos(3.141592653589793 * f));
    }
    if (warmup > 0 && t < warmup) r *= double(t + 1) / double(warmup);
    return r;
  }
};

}  // namespace nm
