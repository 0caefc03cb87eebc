// The energy block's synapses (cpu/energy.cpp; math: extensions-math.md 1, decisions:
// docs/energy.md): the Synapse interface, the Lagrangians' batched gradient and Jacobian-vector
// product, and the dense, bias synapses. Included by cpu/energy.cpp only.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/lagrangian.h"
#include "../core/rng.h"
#include "../core/struct_node.h"
#include "gemm.h"
#include "neuromorph/errors.h"
#include "simd.h"
#include "threads.h"

namespace nm::energy_cpu {

using energy::Lagrangian;
using energy::Lg;
template <class T> using Ptrs = std::vector<T*>;
template <class T> using CPtrs = std::vector<const T*>;

// A Lagrangian's g = ∇L(x) and out += ∇²L(x) v over n entries on the engine's worker threads,
// cut at whole rows (row kinds) or entries; nothing is summed across a cut, so the results are
// the same for every thread count.
constexpr size_t kLgGrain = size_t(1) << 14;
template <class T>
void lg_grad(const Lagrangian& lag, const T* x, T* g, size_t n) {
  const size_t w = lag.rows() ? size_t(lag.row) : 1;
  // float tanh / sigmoid layers: g = f(beta x) through the vectorised activations (the generic
  // loop evaluates them in double, one libm call per entry)
  const bool simd_act = std::is_same_v<T, float> && (lag.k == Lg::Tanh || lag.k == Lg::Sigmoid);
  cpu::parallel_for(n / w, kLgGrain / w + 1, [&](int, size_t b, size_t e) {
    if constexpr (std::is_same_v<T, float>) {
      if (simd_act) {
        const float beta = float(lag.p);
        for (size_t i = b; i < e; ++i) g[i] = beta * x[i];
        simd::act_forward(lag.k == Lg::Tanh ? Act::Tanh : Act::Sigmoid, 0.0f, 0.0f, g + b, g + b, e - b);
        return;
      }
    }
    lag.grad(x + b * w, g + b * w, (e - b) * w);
  });
}
template <class T>
void lg_jvp(const Lagrangian& lag, const T* x, const T* g, const T* v, T* out, size_t n) {
  const size_t w = lag.rows() ? size_t(lag.row) : 1;
  cpu::parallel_for(n / w, kLgGrain / w + 1, [&](int, size_t b, size_t e) {
    lag.jvp(x + b * w, g + b * w, v + b * w, out + b * w, (e - b) * w);
  });
}

// C = op(A) op(B) + beta C (large float products are cut over the worker threads: cpu/gemm.h)
template <class T>
void mm(bool ta, bool tb, int m, int n, int k, const T* A, int lda, const T* B, int ldb, T* C,
        int ldc, T beta = T(1)) {
  cpu::gemm<T>(ta, tb, m, n, k, T(1), A, lda, B, ldb, beta, C, ldc);
}

// A synapse: currents into its layers, their vector-Jacobian product, and its energy.
// g[j], I[j], Ibar[j], gbar[j]: (rows, size of ref j); currents and gradients accumulate.
// A ref is `fixed` when its layer is clamped: its g is the same at every step, its current is
// discarded and its Ī is zero. A synapse that says sparse() takes null pointers there (I[j]:
// no current wanted, Ibar[j]: zero, gbar[j]: no gradient wanted) and skips that work; the
// others always get buffers. The block calls, per forward: prepare, then current for steps
// t = 0..T-1 in order; per backward: prepare, begin_vjp, vjp for t = T-1..0, end_vjp. A synapse
// may keep per-step state of its forward, by batch row, for its backward.
//
// The block runs chunks of its samples side by side on the worker threads (cpu/threads.h):
// `At` says where a call works, and a synapse's scratch is indexed by batch row (each chunk its
// own rows) or by chunk (sized by chunks(n), on the calling thread, before the chunks run);
// prepare runs once, before the chunks. G is the chunk's own gradient target. begin_vjp and
// vjp run per chunk; end_vjp once, on the whole batch, after the chunks (fold_chunks first).
struct At {
  int row = 0;    // the batch row of the call's first sample
  int t = 0;      // the step (current, vjp)
  int chunk = 0;  // the chunk running the call
};
template <class T>
struct Synapse {
  std::string name;
  std::vector<int> sizes;   // per ref
  std::vector<char> fixed;  // per ref
  virtual ~Synapse() = default;
  virtual void declare(const typename StructNode<T>::AddParam& add) = 0;
  virtual void init(Rng& rng, T* P) const = 0;
  virtual void allocate(int batch, int steps) { (void)batch, (void)steps; }
  virtual void chunks(int n) { (void)n; }
  // after the chunks of a backward, before end_vjp: per-chunk accumulators of chunks 1..n-1
  // into chunk 0's, in chunk order
  virtual void fold_chunks(int n) { (void)n; }
  // true while declare() adds a parameter whose gradient only end_vjp writes (end_vjp runs on
  // the whole batch after the chunks, into G itself: no per-chunk copy is kept for it)
  bool whole_batch_param = false;
  // Plain SGD straight into the weights (StructNode::set_defer): while `defer`, end_vjp keeps
  // the operands of the weight gradients it alone forms instead of adding them to G.
  bool defer = false;
  virtual void deferrable(std::vector<std::pair<size_t, size_t>>& out) const { (void)out; }
  virtual void deferred(std::vector<typename StructNode<T>::Deferred>& out) const { (void)out; }
  virtual bool sparse() const { return false; }
  virtual void prepare(const T* P) { (void)P; }
  virtual void begin_vjp(int rows, At at) { (void)rows, (void)at; }
  // the deferred products of the fixed refs (g: every ref at step 0)
  virtual void end_vjp(const T* P, T* G, const CPtrs<T>& g, const Ptrs<T>& gbar, int rows, At at) {
    (void)P, (void)G, (void)g, (void)gbar, (void)rows, (void)at;
  }
  // Before the chunks of a forward, on the whole batch (g: every ref at step 0): the part of
  // the current that the fixed refs give, which no step changes, as one product cut over the
  // threads rather than one per chunk; false when the synapse keeps no such part. current()
  // then skips it until the next prepare() (every forward and backward starts there).
  virtual bool fixed_part(const T* P, const CPtrs<T>& g, int rows, At at) {
    (void)P, (void)g, (void)rows, (void)at;
    return false;
  }
  virtual void current(const T* P, const CPtrs<T>& g, const Ptrs<T>& I, int rows, At at) = 0;
  virtual void vjp(const T* P, T* G, const CPtrs<T>& g, const CPtrs<T>& Ibar, const Ptrs<T>& gbar,
                   int rows, At at) = 0;
  virtual void energy(const T* P, const CPtrs<T>& g, double* E, int rows, At at) = 0;  // E[b] += E_s
};

template <class T>
void normal_fill(Rng& rng, T* p, size_t n, double std) {
  for (size_t i = 0; i < n; ++i) p[i] = T(rng.normal(0.0, std));
}

// ------------------------------------------------------------------ multilinear contractions
// W has dims n_0 x ... x n_{k-1}; v[j] is a vector of n_j. Per sample, no batching.
template <class T>
struct Multilinear {
  std::vector<int> dims;
  size_t total() const {
    size_t t = 1;
    for (int d : dims) t *= size_t(d);
    return t;
  }
  // out += W contracted with every v[l], l != j (out has n_j entries)
  void contract(const T* W, const CPtrs<T>& v, int j, T* out) const {
    const int k = int(dims.size());
    std::vector<int> idx(k, 0);
    for (size_t f = 0, n = total(); f < n; ++f) {
      T prod = W[f];
      for (int l = 0; l < k && prod != T(0); ++l)
        if (l != j) prod *= v[l][idx[l]];
      out[idx[j]] += prod;
      next(idx);
    }
  }
  // value of the full contraction
  double full(const T* W, const CPtrs<T>& v) const {
    const int k = int(dims.size());
    std::vector<int> idx(k, 0);
    double s = 0;
    for (size_t f = 0, n = total(); f < n; ++f) {
      double prod = W[f];
      for (int l = 0; l < k; ++l) prod *= v[l][idx[l]];
      s += prod;
      next(idx);
    }
    return s;
  }
  // For out_j = contract(W, v, j) with upstream c[j] (null: none): W̄ += Σ_j c_j ⊗ Π_{l≠j} v_l,
  // vbar[i] += Σ_{j≠i} W contracted with c_j in slot j and v elsewhere (slot i left open).
  void vjp(const T* W, const CPtrs<T>& v, const CPtrs<T>& c, T* Wbar, const Ptrs<T>& vbar) const {
    const int k = int(dims.size());
    std::vector<int> idx(k, 0);
    for (size_t f = 0, n = total(); f < n; ++f) {
      for (int j = 0; j < k; ++j) {
        if (!c[j]) continue;
        const T cj = c[j][idx[j]];
        if (cj == T(0)) continue;
        T others = cj;
        for (int l = 0; l < k; ++l)
          if (l != j) others *= v[l][idx[l]];
        if (Wbar) Wbar[f] += others;
        for (int i = 0; i < k; ++i) {
          if (i == j || !vbar[i]) continue;
          T pr = W[f] * cj;
          for (int l = 0; l < k; ++l)
            if (l != j && l != i) pr *= v[l][idx[l]];
          vbar[i][idx[i]] += pr;
        }
      }
      next(idx);
    }
  }

 private:
  void next(std::vector<int>& idx) const {
    for (int l = int(dims.size()) - 1; l >= 0; --l) {
      if (++idx[l] < dims[l]) return;
      idx[l] = 0;
    }
  }
};

// ------------------------------------------------------------------ dense (N-ary), bias
template <class T>
struct Dense final : Synapse<T> {
  bool has_bias = false;
  size_t W = 0, b = 0;
  Multilinear<T> ml;
  void declare(const typename StructNode<T>::AddParam& add) override {
    std::vector<int64_t> shape(this->sizes.begin(), this->sizes.end());
    ml.dims = this->sizes;
    W = add(this->name + ".weight", shape);
    if (has_bias) b = add(this->name + ".bias", {shape.back()});
  }
  void init(Rng& rng, T* P) const override {
    normal_fill(rng, P + W, ml.total(), 0.02);
    if (has_bias) normal_fill(rng, P + b, size_t(this->sizes.back()), 0.02);
  }
  int k() const { return int(this->sizes.size()); }
  bool sparse() const override { return k() == 2; }
  void current(const T* P, const CPtrs<T>& g, const Ptrs<T>& I, int rows, At) override {
    const int n0 = this->sizes[0], nl = this->sizes.back();
    if (k() == 2) {  // batched: I0 += g1 Wᵀ, I1 += g0 W
      if (I[0]) mm<T>(false, true, rows, n0, nl, g[1], nl, P + W, nl, I[0], n0);
      if (I[1]) mm<T>(false, false, rows, nl, n0, g[0], n0, P + W, nl, I[1], nl);
    } else {
      for (int r = 0; r < rows; ++r)
        for (int j = 0; j < k(); ++j) ml.contract(P + W, row(g, r), j, I[j] + size_t(r) * this->sizes[j]);
    }
    if (has_bias && I.back())
      for (int r = 0; r < rows; ++r)
        for (int i = 0; i < nl; ++i) I.back()[size_t(r) * nl + i] += P[b + i];
  }
  void vjp(const T* P, T* G, const CPtrs<T>& g, const CPtrs<T>& Ib, const Ptrs<T>& gb, int rows,
           At) override {
    const int n0 = this->sizes[0], nl = this->sizes.back();
    if (k() == 2) {
      if (Ib[0]) {
        if (gb[1]) mm<T>(false, false, rows, nl, n0, Ib[0], n0, P + W, nl, gb[1], nl);  // ḡ1 += Ī0 W
        mm<T>(true, false, n0, nl, rows, Ib[0], n0, g[1], nl, G + W, nl);              // W̄ += Ī0ᵀ g1
      }
      if (Ib[1]) {
        if (gb[0]) mm<T>(false, true, rows, n0, nl, Ib[1], nl, P + W, nl, gb[0], n0);  // ḡ0 += Ī1 Wᵀ
        mm<T>(true, false, n0, nl, rows, g[0], n0, Ib[1], nl, G + W, nl);              // W̄ += g0ᵀ Ī1
      }
    } else {
      for (int r = 0; r < rows; ++r) ml.vjp(P + W, row(g, r), row(Ib, r), G + W, row(gb, r));
    }
    if (has_bias && Ib.back())
      for (int r = 0; r < rows; ++r)
        for (int i = 0; i < nl; ++i) G[b + i] += Ib.back()[size_t(r) * nl + i];
  }
  void energy(const T* P, const CPtrs<T>& g, double* E, int rows, At) override {
    const int nl = this->sizes.back();
    for (int r = 0; r < rows; ++r) {
      double F = ml.full(P + W, row(g, r));
      if (has_bias)
        for (int i = 0; i < nl; ++i) F += double(P[b + i]) * g.back()[size_t(r) * nl + i];
      E[r] -= F;
    }
  }
  template <class V>
  std::vector<V*> row(const std::vector<V*>& v, int r) const {
    std::vector<V*> out(v.size());
    for (size_t j = 0; j < v.size(); ++j) out[j] = v[j] ? v[j] + size_t(r) * this->sizes[j] : nullptr;
    return out;
  }
};

template <class T>
struct BiasSyn final : Synapse<T> {
  size_t b = 0;
  void declare(const typename StructNode<T>::AddParam& add) override {
    b = add(this->name + ".bias", {this->sizes[0]});
  }
  void init(Rng& rng, T* P) const override { normal_fill(rng, P + b, size_t(this->sizes[0]), 0.02); }
  bool sparse() const override { return true; }
  void current(const T* P, const CPtrs<T>&, const Ptrs<T>& I, int rows, At) override {
    const int n = this->sizes[0];
    if (!I[0]) return;
    for (int r = 0; r < rows; ++r)
      for (int i = 0; i < n; ++i) I[0][size_t(r) * n + i] += P[b + i];
  }
  void vjp(const T*, T* G, const CPtrs<T>&, const CPtrs<T>& Ib, const Ptrs<T>&, int rows,
           At) override {
    const int n = this->sizes[0];
    if (!Ib[0]) return;
    for (int r = 0; r < rows; ++r)
      for (int i = 0; i < n; ++i) G[b + i] += Ib[0][size_t(r) * n + i];
  }
  void energy(const T* P, const CPtrs<T>& g, double* E, int rows, At) override {
    const int n = this->sizes[0];
    for (int r = 0; r < rows; ++r)
      for (int i = 0; i < n; ++i) E[r] -= double(P[b + i]) * g[0][size_t(r) * n + i];
  }
};

}  // namespace nm::energy_cpu
