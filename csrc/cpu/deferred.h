// Deferred weight updates (docs/engine.md, "Deferred weight updates"): plain SGD applied
// straight to the weights whose whole gradient is one product a structured node forms at the
// end of its backward (StructNode::Deferred: HAMUX's clamped-layer weights, dW = gᵀ Σ_t h̄_t),
// W -= rate Aᵀ B, with no pass over those weights' gradients (zeroing, update, the new values
// written aside). The CPU executor (model.cpp deferred_step) owns the step; this class keeps
// what the nodes defer, the bounds that make the in-place update certainly finite, and the two
// ways to apply it.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include "../core/struct_node.h"
#include "gemm.h"
#include "threads.h"
#include "update.h"

namespace nm::cpu {

template <class T>
class DeferredUpdates {
 public:
  using Product = typename StructNode<T>::Deferred;

  // At plan time, for a plan with one backward per step: every node's deferrable weights.
  void declare(const std::vector<std::unique_ptr<StructNode<T>>>& nodes) {
    for (const auto& sn : nodes)
      if (sn) sn->deferrable(ranges_);
    std::sort(ranges_.begin(), ranges_.end());
    for (const auto& r : ranges_) size_ += r.second;
  }
  // Worth it where those weights are at least half the parameters: the rest of the arena is
  // then updated aside and copied back instead of swapped (Updater::sgd_outside).
  bool worth(size_t n_params) const { return size_ > 0 && 2 * size_ >= n_params; }
  const std::vector<std::pair<size_t, size_t>>& ranges() const { return ranges_; }

  // The gradient arena G[0..n) zeroed before a backward (a few MB: both cores); with
  // `skip`, all but the deferrable weights' part.
  void zero(T* G, size_t n, bool skip) const {
    size_t at = 0;
    for (size_t r = 0; skip && r < ranges_.size(); ++r) {
      zero_part(G, at, ranges_[r].first);
      at = ranges_[r].first + ranges_[r].second;
    }
    zero_part(G, at, n);
  }

  // The products the last backward left out of the gradients; false where they are not
  // exactly the deferrable weights (the step must then go the arena's way).
  bool collect(const std::vector<std::unique_ptr<StructNode<T>>>& nodes) {
    kept_.clear();
    for (const auto& sn : nodes)
      if (sn) sn->deferred(kept_);
    size_t n = 0;
    for (const Product& d : kept_) n += size_t(d.m) * d.n;
    return n == size_;
  }

  // Whether every deferred update is certainly finite (update.h update_bounded; wmax_ bounds
  // the weights' entries).
  bool safe(const T* P, double rate) {
    if (!std::isfinite(float(rate))) return false;
    if (wmax_.size() != kept_.size()) wmax_.assign(kept_.size(), -1.0);
    gmax_.resize(kept_.size());
    for (size_t i = 0; i < kept_.size(); ++i) {
      const Product& d = kept_[i];
      gmax_[i] = product_bound(d.A, size_t(d.k) * d.m, d.B, size_t(d.k) * d.n);
      if (!update_bounded(rate, gmax_[i], wmax_[i], [&] { return abs_sum(P + d.w, size_t(d.m) * d.n); }))
        return false;
    }
    for (size_t i = 0; i < kept_.size(); ++i) wmax_[i] += rate * gmax_[i];
    return true;
  }
  void forget() { std::fill(wmax_.begin(), wmax_.end(), -1.0); }  // the weights were set

  // The arena's way: each product into its weight's gradient (zero before).
  void into_gradients(T* G) const {
    for (const Product& d : kept_)
      gemm<T>(true, false, d.m, d.n, d.k, T(1), d.A, d.m, d.B, d.n, T(1), G + d.w, d.n);
  }
  // The deferred update: W -= rate Aᵀ B in place (cut over the worker threads by gemm).
  void apply(T* P, double rate) const {
    for (const Product& d : kept_)
      gemm<T>(true, false, d.m, d.n, d.k, T(-rate), d.A, d.m, d.B, d.n, T(1), P + d.w, d.n);
  }

 private:
  static void zero_part(T* G, size_t b0, size_t e0) {
    if (e0 > b0)
      parallel_for(e0 - b0, size_t(1) << 14, [&](int, size_t b, size_t e) {
        std::fill(G + b0 + b, G + b0 + e, T(0));
      });
  }

  std::vector<std::pair<size_t, size_t>> ranges_;  // (offset, size), sorted
  size_t size_ = 0;
  std::vector<Product> kept_;
  std::vector<double> wmax_, gmax_;  // per kept product: |W_ij| bound (-1: unknown), its G
};

}  // namespace nm::cpu
