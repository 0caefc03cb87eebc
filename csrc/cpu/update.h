// The arena's parameter updates and the verdicts on a training step (docs/engine.md
// "Divergence"): the gradients must be finite, and so must the new parameters and optimizer
// state, which are written aside, looked at, and kept by swapping buffers, so a refused step
// leaves the model as it was. Used by the CPU executor (model.cpp) for every update that is not
// the fused SGD step, and by that step where its bounds fail.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/optim.h"
#include "aligned.h"
#include "neuromorph/engine.h"
#include "neuromorph/errors.h"
#include "simd.h"
#include "threads.h"

namespace nm::cpu {

// Whether v[0..n) is all finite: x * 0 is 0 for finite x and NaN for inf/NaN; 8 independent
// lanes, so the pass vectorises without reassociation flags (one serial chain ran at 1 add per
// 4 cycles).
template <class T>
bool all_finite(const T* v, size_t n) {
  T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += v[i + size_t(k)] * T(0);
  for (; i < n; ++i) acc[0] += v[i] * T(0);
  T all = 0;
  for (int k = 0; k < 8; ++k) all += acc[k];
  return all == T(0);
}

// The sum of |v_i|: inf or NaN when a value is (or the sums overflow).
template <class T>
double abs_sum(const T* v, size_t n) {
  if constexpr (std::is_same_v<T, float>) return simd::abs_sum(v, n);
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += std::fabs(double(v[i]));
  return s;
}

// The bounds of the in-place updates (model.cpp's fused SGD step, deferred.h's products): every
// entry of a gradient dW = Aᵀ B, and every partial sum of it, is at most G = S(A) max(1, S(B))
// (S: the sum of magnitudes; the max covers a bias, Σ A), and M bounds every |W_ij| (S(W) when
// first needed or near the edge, then raised by rate G each step, which is at least any
// entry's change; reset when parameters are set), so G and M + rate G below the float range
// (with room for rounding) mean no product, sum or new weight can overflow: G as well, since
// BLAS forms Aᵀ B before scaling it by the rate (below 1, rate G alone would not see it). NaN
// or inf in A or B makes G NaN or inf, and a rate past the float range is inf in the kernels:
// not safe.
constexpr double kUpdateRange = 3e38;  // below FLT_MAX by more than the float sums' rounding
template <class T>
double product_bound(const T* A, size_t na, const T* B, size_t nb) {
  const double sb = abs_sum(B, nb);
  return abs_sum(A, na) * (sb < 1 ? 1.0 : sb);  // NaN stays NaN
}
template <class F>
bool update_bounded(double rate, double G, double& M, const F& weight_sum) {
  if (!(G < kUpdateRange)) return false;  // false for NaN
  if (rate * G < kUpdateRange && (M < 0 || M + rate * G >= kUpdateRange)) M = weight_sum();
  return M + rate * G < kUpdateRange;  // false for NaN
}

template <class T>
class Updater {
 public:
  Updater(const std::vector<ParamInfo>& info, const OptimConfig& opt) : info_(info), opt_(opt) {}

  void allocate(size_t n_params) {
    n_ = n_params;
    next_.assign(n_, T(0));
    state_next_.assign(size_t(opt_.buffers()) * n_, T(0));
  }

  // Plain SGD: p - rate g, kept when every value is finite (or `check` is off). A gradient
  // that is not finite makes its update not finite (a finite rate times inf or NaN, or 0 times
  // inf, is not finite, and so is p minus it), so the gradients are looked at only when an
  // update is refused, to name the right cause: one pass over them less per step.
  void sgd(LineVector<T>& p, const T* g, double rate, bool check, int batch) {
    keep(sgd_range(p, g, rate, 0, n_), p, nullptr, g, check, batch);
  }

  // Plain SGD outside the `skip` ranges (offset, size; sorted, disjoint), whose weights the
  // executor updates itself (model.cpp, deferred products): the new values written aside and
  // looked at as in sgd, then copied into p (no swap: p keeps the skipped weights). The skipped
  // parameters' gradients are not looked at.
  void sgd_outside(LineVector<T>& p, const T* g, double rate, bool check, int batch,
                   const std::vector<std::pair<size_t, size_t>>& skip) {
    parts_.clear();  // [begin, end) outside skip (capacity kept: no allocation per step)
    size_t at = 0;
    for (const auto& [o, n] : skip) {
      if (o > at) parts_.emplace_back(at, o);
      at = o + n;
    }
    if (at < n_) parts_.emplace_back(at, n_);
    bool all = true;
    for (const auto& [b0, e0] : parts_) all = sgd_range(p, g, rate, b0, e0) && all;
    if (check && !all)
      refuse(g, false, batch, [&](const ParamInfo& q) {
        for (const auto& [o, n] : skip)
          if (q.offset >= o && q.offset < o + n) return false;
        return true;
      });
    for (const auto& [b0, e0] : parts_)
      parallel_for(e0 - b0, kChunk, [&](int, size_t b, size_t e) {
        std::copy(next_.data() + b0 + b, next_.data() + b0 + e, p.data() + b0 + b);
      });
  }

  // Clipping (when set; g is rescaled in place), then the optimizer's update of the parameters
  // and its state at step t, kept when every new value is finite (or `check` is off). As in
  // sgd, a gradient that is not finite leaves its new parameter or state not finite (each
  // optimizer adds a finite multiple of g, or of g squared, to them; clipping scales a finite
  // g to a finite one), so the gradients are looked at only when the update is refused.
  void step(LineVector<T>& p, T* g, LineVector<T>& state, double lr, long t, bool check,
            int batch) {
    if (opt_.grad_clip > 0) {
      const int chunks = parallel_for(n_, kChunk, [&](int c, size_t b, size_t e) {
        double sq = 0;
        for (size_t i = b; i < e; ++i) sq += double(g[i]) * double(g[i]);
        part_[size_t(c)] = sq;
      });
      double sq = 0;
      for (int c = 0; c < chunks; ++c) sq += part_[size_t(c)];
      clip_gradients(opt_, g, n_, sq);
    }
    char finite[256];
    std::fill(finite, finite + 256, char(1));  // no parameters: no chunk runs
    const int chunks = parallel_for(n_, kChunk, [&](int c, size_t b, size_t e) {
      optim_update(opt_, lr, t, p.data(), g, state.data(), n_, b, e, next_.data(),
                   state_next_.data());
      bool ok = all_finite(next_.data() + b, e - b);
      for (size_t k = 0; ok && k < size_t(opt_.buffers()); ++k)
        ok = all_finite(state_next_.data() + k * n_ + b, e - b);
      finite[c] = ok;
    });
    keep(all_of(finite, chunks), p, &state, g, check, batch);
  }

 private:
  [[noreturn]] void gradient_not_finite(size_t offset, int batch) const {
    throw Diverged("training diverged at batch " + std::to_string(batch) + ": the gradient of '" +
                   name_at(offset) + "' is not finite. The model holds its state from before "
                   "this batch (try a smaller learning rate, or grad_clip)");
  }

  [[noreturn]] void update_not_finite(size_t offset, bool state, int batch) const {
    throw Diverged("training diverged at batch " + std::to_string(batch) + ": " +
                   (state ? "the optimizer state of '" + name_at(offset) + "' is not finite (a "
                            "gradient's square leaves the float range; try grad_clip)"
                          : "the update of '" + name_at(offset) + "' is not finite (the "
                            "learning rate times a finite gradient leaves the float range; try a "
                            "smaller learning rate, or grad_clip)") +
                   ". The model holds its state from before this batch");
  }

  static constexpr size_t kChunk = size_t(1) << 14;

  static bool all_of(const char* finite, int chunks) {
    for (int c = 0; c < chunks; ++c)
      if (!finite[c]) return false;
    return true;
  }

  // p - rate g over [b0, e0) into next_: whether every new value is finite.
  bool sgd_range(const LineVector<T>& p, const T* g, double rate, size_t b0, size_t e0) {
    char finite[256];
    std::fill(finite, finite + 256, char(1));  // no parameters: no chunk runs
    const int chunks = parallel_for(e0 - b0, kChunk, [&](int c, size_t b, size_t e) {
      b += b0, e += b0;
      if constexpr (std::is_same_v<T, float>) {
        finite[c] = simd::sgd_step(p.data() + b, g + b, float(rate), next_.data() + b, e - b);
      } else {
        for (size_t i = b; i < e; ++i) next_[i] = p[i] - T(rate) * g[i];
        finite[c] = all_finite(next_.data() + b, e - b);
      }
    });
    return all_of(finite, chunks);
  }

  // Swap the new values in, or (checking, one not finite) refuse the step.
  void keep(bool all, LineVector<T>& p, LineVector<T>* state, const T* g, bool check, int batch) {
    if (check && !all) refuse(g, state != nullptr, batch, [](const ParamInfo&) { return true; });
    p.swap(next_);
    if (state) state->swap(state_next_);
  }

  // A refused step (rare): name, among the parameters `updated` says were, the first whose
  // gradient is not finite, else the first whose update (or optimizer state) is not.
  template <class F>
  void refuse(const T* g, bool state, int batch, const F& updated) const {
    for (const ParamInfo& q : info_)
      if (updated(q) && !all_finite(g + q.offset, q.size)) gradient_not_finite(q.offset, batch);
    for (const ParamInfo& q : info_) {
      if (!updated(q)) continue;
      if (!all_finite(&next_[q.offset], q.size)) update_not_finite(q.offset, false, batch);
      for (size_t k = 0; state && k < size_t(opt_.buffers()); ++k)
        if (!all_finite(&state_next_[k * n_ + q.offset], q.size))
          update_not_finite(q.offset, true, batch);
    }
  }

  std::string name_at(size_t offset) const {
    for (const ParamInfo& q : info_)
      if (q.offset == offset) return q.name;
    return "?";
  }

  const std::vector<ParamInfo>& info_;
  const OptimConfig& opt_;
  size_t n_ = 0;
  LineVector<T> next_, state_next_;  // the new values before they are kept
  std::vector<std::pair<size_t, size_t>> parts_;  // sgd_outside's ranges
  double part_[256] = {};            // per-chunk sums of squares (clipping)
};

}  // namespace nm::cpu
