// The op tables of core/formulas.h against independent references: every activation's
// derivative and every loss's gradient against central differences in double, softmax + cross-
// entropy against its definition, merges and optimizer updates against hand-computed steps.
#include <cmath>

#include "../core/formulas.h"
#include "../core/optim.h"
#include "check.h"

using namespace nm;

namespace {

double central(const std::function<double(double)>& f, double x, double h = 1e-6) {
  return (f(x + h) - f(x - h)) / (2 * h);
}

void activations() {
  const double zs[] = {-3.1, -0.7, -0.05, 0.05, 0.4, 2.3};
  int seen = 0;
  for (int i = 0; i < int(Act::kCount); ++i) {
    const Act a = Act(i);
    if (a == Act::Softmax) continue;  // a row operation: checked below
    ++seen;
    for (double z : zs) {
      const double p = 0.3, alpha = 0.2;
      const double y = fm::act(a, p, alpha, z);
      const double d = fm::deriv(a, p, alpha, z, y);
      if (a == Act::BinaryStep) {
        CHECK(d == 0.0);
        continue;
      }
      const double fd = central([&](double t) { return fm::act(a, p, alpha, t); }, z);
      CHECK_NEAR(d, fd, 1e-6 * (1 + std::abs(fd)));
    }
  }
  CHECK(seen == int(Act::kCount) - 1);
  // GELU (tanh form) and the exact one agree to 1e-3 and are z * Phi(z)-like at the ends
  CHECK_NEAR(fm::act(Act::Gelu, 0.0, 0.0, 1.0), 0.8411919906082768, 1e-12);
  CHECK_NEAR(fm::act(Act::GeluErf, 0.0, 0.0, 1.0), 0.8413447460685429, 1e-12);
  CHECK_NEAR(fm::act(Act::Selu, 0.0, 0.0, -1.0), -1.1113307378125628, 1e-12);
}

void losses() {
  const double rs[] = {0.15, 0.55, 0.9, -0.4};
  const double es[] = {0.0, 1.0, 0.3, -1.0};
  for (int i = 0; i < int(Loss::kCount); ++i) {
    const Loss l = Loss(i);
    for (double r : rs)
      for (double e : es) {
        if (l == Loss::CrossEntropy && r <= 0) continue;  // defined on probabilities
        const double p = 0.5;
        const double g = fm::loss_grad(l, p, r, e);
        const double fd = central([&](double t) { return fm::loss_term(l, p, t, e); }, r, 1e-7);
        // kinks (|r - e| = p, 1 - e r = 0) are avoided by the sample points
        CHECK_NEAR(g, fd, 1e-5 * (1 + std::abs(fd)));
      }
  }
  CHECK(fm::loss_sums(Loss::CrossEntropy) && !fm::loss_sums(Loss::Mse));
  // softmax + cross-entropy: dL/dz = a * sum(e) - e, against differences of the composed loss
  const double z[3] = {0.3, -1.2, 0.8}, e[3] = {0.2, 0.5, 0.3};
  auto loss = [&](int k, double dz) {
    double zz[3] = {z[0], z[1], z[2]};
    zz[k] += dz;
    double m = std::max(zz[0], std::max(zz[1], zz[2])), s = 0, out = 0;
    for (double v : zz) s += std::exp(v - m);
    for (int j = 0; j < 3; ++j) out += fm::loss_term(Loss::CrossEntropy, 0.0, std::exp(zz[j] - m) / s, e[j]);
    return out;
  };
  double m = std::max(z[0], std::max(z[1], z[2])), s = 0;
  for (double v : z) s += std::exp(v - m);
  for (int k = 0; k < 3; ++k) {
    const double a = std::exp(z[k] - m) / s;
    const double fd = (loss(k, 1e-6) - loss(k, -1e-6)) / 2e-6;
    CHECK_NEAR(fm::softmax_xent_grad(a, e[k], 1.0, 1.0), fd, 1e-6);
  }
}

void merges_and_optimizers() {
  CHECK(fm::merge(MergeOp::Additive, 2.0, 3.0) == 5.0);
  CHECK(fm::merge(MergeOp::Multiplicative, 2.0, 3.0) == 6.0);
  CHECK(fm::merge(MergeOp::Average, 2.0, 3.0) == 2.5);
  CHECK(fm::merge_partial(MergeOp::Multiplicative, 3.0) == 3.0);
  // SGD with L2: p -= rate (g + wd p)
  double p = 1.0;
  fm::sgd(p, 0.5, 0.1, 0.01);
  CHECK_NEAR(p, 1.0 - 0.1 * (0.5 + 0.01), 1e-15);
  // momentum: first step m = d, then m = mu m + d
  double q = 1.0, mom = 0.0;
  fm::momentum(q, 0.5, mom, 0.1, 0.0, 0.9, true);
  fm::momentum(q, 0.5, mom, 0.1, 0.0, 0.9, false);
  CHECK_NEAR(mom, 0.9 * 0.5 + 0.5, 1e-15);
  CHECK_NEAR(q, 1.0 - 0.1 * 0.5 - 0.1 * 0.95, 1e-15);
  // Adam, first step: m = (1-b1) g, v = (1-b2) g^2, p -= rate/(1-b1) m / (sqrt(v)/sqrt(1-b2) + eps)
  OptimConfig c;
  c.kind = OptimConfig::Adam;
  const AdamStep a = adam_step(c, 0.01, 0);
  double w = 0.5, m1 = 0, v1 = 0;
  fm::adam(w, 0.2, m1, v1, 0.01, 0.0, c.beta1, c.beta2, c.eps, a.step, a.sbc2, false);
  CHECK_NEAR(w, 0.5 - 0.01 * 0.2 / (0.2 + c.eps), 1e-12);
  CHECK_NEAR(fm::clip_coef(16.0, 2.0), 2.0 / (4.0 + 1e-6), 1e-15);
  CHECK(fm::clip_coef(1.0, 2.0) == 1.0);
}

}  // namespace

int main() {
  activations();
  losses();
  merges_and_optimizers();
  return TEST_MAIN_RESULT();
}
