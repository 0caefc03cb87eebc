// The energy block (HAMUX, extensions-math.md 1): neuron layers with convex Lagrangians joined
// by synapses; the state descends the energy by `steps` explicit Euler steps, and training runs
// reverse mode through the unrolled steps. Every synapse writes its currents I = ∂F/∂g in closed
// form and their vector-Jacobian product (a Hessian-vector product of the synapse energy, so no
// double backprop). Decisions and parameter names: docs/energy.md.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../core/lagrangian.h"
#include "../core/struct_node.h"
#include "gemm.h"
#include "neuromorph/errors.h"
#include "simd.h"
#include "threads.h"

namespace nm {
namespace {

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
  virtual bool sparse() const { return false; }
  virtual void prepare(const T* P) { (void)P; }
  virtual void begin_vjp(int rows, At at) { (void)rows, (void)at; }
  // the deferred products of the fixed refs (g: every ref at step 0)
  virtual void end_vjp(const T* P, T* G, const CPtrs<T>& g, const Ptrs<T>& gbar, int rows, At at) {
    (void)P, (void)G, (void)g, (void)gbar, (void)rows, (void)at;
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

// ------------------------------------------------------------------ hidden (integrated-out layer)
// h = Σ_j g_j Ŵ_j (rows x M), s = ∇L_h(h), I_j = s Ŵ_jᵀ, E = −L_h(h); Ŵ = W or column-normalised W.
// The forward keeps h and s of every step for the backward. The fixed refs' part of h is taken
// once per forward (step 0), and their weight gradient Σ_t g_jᵀ h̄_t = g_jᵀ Σ_t h̄_t is one
// product at the end of the backward.
template <class T>
struct Hidden final : Synapse<T> {
  int M = 0;
  bool norm = false;
  Lagrangian lag;
  std::vector<size_t> W;
  std::vector<std::vector<T>> What;          // norm 1: the normalised weights
  std::vector<std::vector<std::vector<T>>> Wb;  // norm 1: their gradient, per chunk
  std::vector<T> hs, ss;                 // h, s of every step (steps x batch x M)
  std::vector<T> hfix, hbfix;            // batch x M: Σ_fixed g Ŵ; Σ_t h̄_t
  std::vector<T> sb, hb, he;             // batch x M scratch (he: energies)
  int B = 0;
  bool sparse() const override { return true; }
  bool any_fixed() const {
    for (char f : this->fixed)
      if (f) return true;
    return false;
  }
  void declare(const typename StructNode<T>::AddParam& add) override {
    for (size_t j = 0; j < this->sizes.size(); ++j) {
      // a fixed ref's weight gradient is end_vjp's one product; with norm, every weight's is
      // end_vjp's unnormalise
      this->whole_batch_param = norm || this->fixed[j];
      W.push_back(add(this->name + ".weight" + std::to_string(j), {this->sizes[j], M}));
    }
    this->whole_batch_param = false;
  }
  void init(Rng& rng, T* P) const override {
    for (size_t j = 0; j < W.size(); ++j) normal_fill(rng, P + W[j], size_t(this->sizes[j]) * M, 0.02);
  }
  void allocate(int batch, int steps) override {
    B = batch;
    const size_t n = size_t(batch) * M;
    hs.assign(size_t(steps) * n, T(0));
    ss.assign(size_t(steps) * n, T(0));
    for (auto* v : {&hfix, &hbfix, &sb, &hb, &he}) v->assign(n, T(0));
    What.assign(norm ? W.size() : 0, {});
    for (size_t j = 0; j < What.size(); ++j) What[j].assign(size_t(this->sizes[j]) * M, T(0));
    Wb.clear();
    chunks(1);
  }
  void chunks(int n) override {
    if (!norm) return;
    while (Wb.size() < size_t(n)) {
      Wb.emplace_back(W.size());
      for (size_t j = 0; j < W.size(); ++j) Wb.back()[j].assign(size_t(this->sizes[j]) * M, T(0));
    }
  }
  void fold_chunks(int n) override {
    if (!norm) return;
    for (int c = 1; c < n; ++c)
      for (size_t j = 0; j < W.size(); ++j)
        for (size_t i = 0; i < Wb[0][j].size(); ++i) Wb[0][j][i] += Wb[size_t(c)][j][i];
  }
  void prepare(const T* P) override {
    if (!norm) return;
    for (size_t j = 0; j < W.size(); ++j) {
      const int n = this->sizes[j];
      const T* Wj = P + W[j];
      for (int m = 0; m < M; ++m) {
        double ss2 = 0;
        for (int i = 0; i < n; ++i) ss2 += double(Wj[size_t(i) * M + m]) * Wj[size_t(i) * M + m];
        const double inv = ss2 > 0 ? 1 / std::sqrt(ss2) : 0.0;
        for (int i = 0; i < n; ++i) What[j][size_t(i) * M + m] = T(Wj[size_t(i) * M + m] * inv);
      }
    }
  }
  const T* w(const T* P, size_t j) const { return norm ? What[j].data() : P + W[j]; }
  T* wgrad(T* G, size_t j, At at) { return norm ? Wb[size_t(at.chunk)][j].data() : G + W[j]; }
  // rows from `row` of a (batch x M) buffer, or of its step `step` (steps x batch x M)
  T* at(std::vector<T>& v, int row, int step = 0) { return v.data() + (size_t(step) * B + row) * M; }

  void current(const T* P, const CPtrs<T>& g, const Ptrs<T>& I, int rows, At a) override {
    const size_t n = size_t(rows) * M;
    T *h = at(hs, a.row, a.t), *s = at(ss, a.row, a.t);
    if (any_fixed()) {
      T* hf = at(hfix, a.row);
      if (a.t == 0) {
        std::fill(hf, hf + n, T(0));
        for (size_t j = 0; j < W.size(); ++j)
          if (this->fixed[j])
            mm<T>(false, false, rows, M, this->sizes[j], g[j], this->sizes[j], w(P, j), M, hf, M);
      }
      std::copy(hf, hf + n, h);
    } else {
      std::fill(h, h + n, T(0));
    }
    for (size_t j = 0; j < W.size(); ++j)
      if (!this->fixed[j])
        mm<T>(false, false, rows, M, this->sizes[j], g[j], this->sizes[j], w(P, j), M, h, M);
    lg_grad(lag, h, s, n);
    for (size_t j = 0; j < W.size(); ++j)
      if (I[j]) mm<T>(false, true, rows, this->sizes[j], M, s, M, w(P, j), M, I[j], this->sizes[j]);
  }
  void begin_vjp(int rows, At a) override {
    T* hf = at(hbfix, a.row);
    std::fill(hf, hf + size_t(rows) * M, T(0));
    if (norm)
      for (auto& v : Wb[size_t(a.chunk)]) std::fill(v.begin(), v.end(), T(0));
  }
  void vjp(const T* P, T* G, const CPtrs<T>& g, const CPtrs<T>& Ib, const Ptrs<T>& gb, int rows,
           At a) override {
    const size_t n = size_t(rows) * M;
    const T *h = at(hs, a.row, a.t), *s = at(ss, a.row, a.t);
    T *sbr = at(sb, a.row), *hbr = at(hb, a.row);
    bool any = false;
    for (size_t j = 0; j < W.size(); ++j) {
      if (!Ib[j]) continue;
      const int nj = this->sizes[j];
      if (!any) std::fill(sbr, sbr + n, T(0));
      any = true;
      mm<T>(true, false, nj, M, rows, Ib[j], nj, s, M, wgrad(G, j, a), M);  // Ŵ̄ += Īᵀ s
      mm<T>(false, false, rows, M, nj, Ib[j], nj, w(P, j), M, sbr, M);      // s̄ += Ī Ŵ
    }
    if (!any) return;
    std::fill(hbr, hbr + n, T(0));
    lg_jvp(lag, h, s, sbr, hbr, n);  // h̄ = J s̄
    if (any_fixed()) {
      T* hf = at(hbfix, a.row);
      for (size_t i = 0; i < n; ++i) hf[i] += hbr[i];
    }
    for (size_t j = 0; j < W.size(); ++j) {
      if (this->fixed[j]) continue;
      const int nj = this->sizes[j];
      mm<T>(true, false, nj, M, rows, g[j], nj, hbr, M, wgrad(G, j, a), M);        // Ŵ̄ += gᵀ h̄
      if (gb[j]) mm<T>(false, true, rows, nj, M, hbr, M, w(P, j), M, gb[j], nj);  // ḡ += h̄ Ŵᵀ
    }
  }
  void end_vjp(const T* P, T* G, const CPtrs<T>& g, const Ptrs<T>& gb, int rows, At a) override {
    const T* hf = at(hbfix, a.row);
    for (size_t j = 0; j < W.size(); ++j) {
      if (!this->fixed[j]) continue;
      const int nj = this->sizes[j];
      mm<T>(true, false, nj, M, rows, g[j], nj, hf, M, wgrad(G, j, a), M);
      if (gb[j]) mm<T>(false, true, rows, nj, M, hf, M, w(P, j), M, gb[j], nj);
    }
    if (norm)
      for (size_t j = 0; j < W.size(); ++j) unnormalise(P, j, Wb[size_t(a.chunk)][j].data(), G + W[j]);
  }
  // G += the gradient of W given Ŵ̄ = Wbj (through the column normalisation; linear in Ŵ̄, so
  // each chunk adds its own part)
  void unnormalise(const T* P, size_t j, const T* Wbj, T* G) const {
    const int n = this->sizes[j];
    const T *Wj = P + W[j], *Wh = What[j].data();
    for (int m = 0; m < M; ++m) {
      double ss2 = 0, dot = 0;
      for (int i = 0; i < n; ++i) {
        const double v = Wj[size_t(i) * M + m];
        ss2 += v * v;
        dot += double(Wh[size_t(i) * M + m]) * Wbj[size_t(i) * M + m];
      }
      if (ss2 <= 0) continue;
      const double inv = 1 / std::sqrt(ss2);
      for (int i = 0; i < n; ++i)
        G[size_t(i) * M + m] += T(inv * (Wbj[size_t(i) * M + m] - Wh[size_t(i) * M + m] * dot));
    }
  }
  void energy(const T* P, const CPtrs<T>& g, double* E, int rows, At a) override {
    const size_t n = size_t(rows) * M;
    T* e = at(he, a.row);
    std::fill(e, e + n, T(0));
    for (size_t j = 0; j < W.size(); ++j)
      mm<T>(false, false, rows, M, this->sizes[j], g[j], this->sizes[j], w(P, j), M, e, M);
    for (int r = 0; r < rows; ++r) E[r] -= lag.value(e + size_t(r) * M, size_t(M));
  }
};

// ------------------------------------------------------------------ tensor
// h_{y,m} = W_{y,m} contracted with g_1..g_k; E = −Σ_y L_h(h_y); I_j = W contracted with s, g≠j.
// Implemented as a multilinear map whose slot 0 is the (Y·M) hidden vector.
template <class T>
struct Tensor final : Synapse<T> {
  int M = 0, Y = 1;
  Lagrangian lag;
  size_t W = 0;
  Multilinear<T> ml;
  void declare(const typename StructNode<T>::AddParam& add) override {
    std::vector<int64_t> shape{Y, M};
    ml.dims = {Y * M};
    for (int n : this->sizes) shape.push_back(n), ml.dims.push_back(n);
    W = add(this->name + ".weight", shape);
  }
  void init(Rng& rng, T* P) const override { normal_fill(rng, P + W, ml.total(), 0.02); }
  CPtrs<T> slots(const T* s, const CPtrs<T>& g, int r) const {
    CPtrs<T> v{s};
    for (size_t j = 0; j < g.size(); ++j) v.push_back(g[j] + size_t(r) * this->sizes[j]);
    return v;
  }
  void hidden(const T* P, const CPtrs<T>& v, std::vector<T>& h, std::vector<T>& s) const {
    h.assign(size_t(Y) * M, T(0));
    ml.contract(P + W, v, 0, h.data());
    s.assign(h.size(), T(0));
    lg_grad(lag, h.data(), s.data(), h.size());
  }
  void current(const T* P, const CPtrs<T>& g, const Ptrs<T>& I, int rows, At) override {
    std::vector<T> h, s;
    for (int r = 0; r < rows; ++r) {
      CPtrs<T> v = slots(nullptr, g, r);
      hidden(P, v, h, s);
      v[0] = s.data();
      for (size_t j = 0; j < g.size(); ++j)
        ml.contract(P + W, v, int(j) + 1, I[j] + size_t(r) * this->sizes[j]);
    }
  }
  void vjp(const T* P, T* G, const CPtrs<T>& g, const CPtrs<T>& Ib, const Ptrs<T>& gb, int rows,
           At) override {
    std::vector<T> h, s, sb, hb;
    for (int r = 0; r < rows; ++r) {
      CPtrs<T> v = slots(nullptr, g, r);
      hidden(P, v, h, s);
      v[0] = s.data();
      sb.assign(h.size(), T(0));
      CPtrs<T> c{nullptr};
      Ptrs<T> vb{sb.data()};
      for (size_t j = 0; j < g.size(); ++j) {
        c.push_back(Ib[j] + size_t(r) * this->sizes[j]);
        vb.push_back(gb[j] + size_t(r) * this->sizes[j]);
      }
      ml.vjp(P + W, v, c, G + W, vb);  // through I_j = contract(W, s, g≠j)
      hb.assign(h.size(), T(0));
      lg_jvp(lag, h.data(), s.data(), sb.data(), hb.data(), h.size());
      CPtrs<T> c0(c.size(), nullptr);
      c0[0] = hb.data();
      vb[0] = nullptr;
      ml.vjp(P + W, v, c0, G + W, vb);  // through h = contract(W, g)
    }
  }
  void energy(const T* P, const CPtrs<T>& g, double* E, int rows, At) override {
    std::vector<T> h, s;
    for (int r = 0; r < rows; ++r) {
      hidden(P, slots(nullptr, g, r), h, s);
      E[r] -= lag.value(h.data(), h.size());
    }
  }
};

// ------------------------------------------------------------------ attention
// Q = g_q W_Q, K = g_k W_K (tokens x H·Z); S_h = Q_h K_hᵀ; E = −Σ_{h,q} L_h(S_hq,:);
// A = ∇L_h(S); I_q = Σ_h A_h K_h W_Q,hᵀ, I_k = Σ_h A_hᵀ Q_h W_K,hᵀ. The projections and the
// currents are products over every sample at once (tokens of all rows); only the scores and
// contexts (Nq x Nk per sample and head) are per-sample products. Null I / Ī / ḡ: skipped.
template <class T>
struct Attention final : Synapse<T> {
  int H = 0, Z = 0, Nq = 1, Dq = 1, Nk = 1, Dk = 1;  // H, Z: from the IR
  Lagrangian lag;  // row = Nk
  size_t WQ = 0, WK = 0;
  std::vector<T> Q, K, S, A, Cq, Ck, Cqb, Ckb, Ab, Sb, Qb, Kb;  // batch-sized
  void declare(const typename StructNode<T>::AddParam& add) override {
    WQ = add(this->name + ".query", {Dq, H, Z});
    WK = add(this->name + ".key", {Dk, H, Z});
  }
  void init(Rng& rng, T* P) const override {
    normal_fill(rng, P + WQ, size_t(Dq) * H * Z, 0.02);
    normal_fill(rng, P + WK, size_t(Dk) * H * Z, 0.02);
  }
  bool sparse() const override { return true; }
  int HZ() const { return H * Z; }
  size_t sQ() const { return size_t(Nq) * HZ(); }      // Q of one sample
  size_t sK() const { return size_t(Nk) * HZ(); }
  size_t sS() const { return size_t(H) * Nq * Nk; }    // scores of one sample
  void allocate(int batch, int) override {
    const size_t B = size_t(batch);
    for (auto* v : {&Q, &Cq, &Cqb, &Qb}) v->assign(B * sQ(), T(0));
    for (auto* v : {&K, &Ck, &Ckb, &Kb}) v->assign(B * sK(), T(0));
    for (auto* v : {&S, &A, &Ab, &Sb}) v->assign(B * sS(), T(0));
  }
  // operands of batch row r, head h: its scores (Nq x Nk) or its slice (N x Z, ld H·Z) of a
  // token matrix; the buffers' rows from batch row r (whole: h = 0)
  T* sc(std::vector<T>& v, int r, int h = 0) { return v.data() + r * sS() + size_t(h) * Nq * Nk; }
  T* tq(std::vector<T>& v, int r, int h = 0) { return v.data() + r * sQ() + size_t(h) * Z; }
  T* tk(std::vector<T>& v, int r, int h = 0) { return v.data() + r * sK() + size_t(h) * Z; }
  void scores(const T* P, const T* gq, const T* gk, int r0, int rows) {
    const int hz = HZ();
    mm<T>(false, false, rows * Nq, hz, Dq, gq, Dq, P + WQ, hz, tq(Q, r0), hz, T(0));
    mm<T>(false, false, rows * Nk, hz, Dk, gk, Dk, P + WK, hz, tk(K, r0), hz, T(0));
    for (int r = r0; r < r0 + rows; ++r)
      for (int h = 0; h < H; ++h)
        mm<T>(false, true, Nq, Nk, Z, tq(Q, r, h), hz, tk(K, r, h), hz, sc(S, r, h), Nk, T(0));
    lg_grad(lag, sc(S, r0), sc(A, r0), size_t(rows) * sS());
  }
  // Cq_h = A_h K_h, Ck_h = A_hᵀ Q_h (every sample and head)
  void contexts(int r0, int rows) {
    const int hz = HZ();
    for (int r = r0; r < r0 + rows; ++r)
      for (int h = 0; h < H; ++h) {
        mm<T>(false, false, Nq, Z, Nk, sc(A, r, h), Nk, tk(K, r, h), hz, tq(Cq, r, h), hz, T(0));
        mm<T>(true, false, Nk, Z, Nq, sc(A, r, h), Nk, tq(Q, r, h), hz, tk(Ck, r, h), hz, T(0));
      }
  }
  void current(const T* P, const CPtrs<T>& g, const Ptrs<T>& I, int rows, At a) override {
    if (!I[0] && !I[1]) return;
    const int hz = HZ(), r0 = a.row;
    scores(P, g[0], g[1], r0, rows);
    contexts(r0, rows);
    if (I[0]) mm<T>(false, true, rows * Nq, Dq, hz, tq(Cq, r0), hz, P + WQ, hz, I[0], Dq);
    if (I[1]) mm<T>(false, true, rows * Nk, Dk, hz, tk(Ck, r0), hz, P + WK, hz, I[1], Dk);
  }
  void vjp(const T* P, T* G, const CPtrs<T>& g, const CPtrs<T>& Ib, const Ptrs<T>& gb, int rows,
           At a) override {
    if (!Ib[0] && !Ib[1]) return;
    const int hz = HZ(), r0 = a.row;
    const T *Iq = Ib[0], *Ik = Ib[1];
    scores(P, g[0], g[1], r0, rows);
    contexts(r0, rows);
    if (Iq) {
      mm<T>(true, false, Dq, hz, rows * Nq, Iq, Dq, tq(Cq, r0), hz, G + WQ, hz);          // W̄_Q += Iqᵀ Cq
      mm<T>(false, false, rows * Nq, hz, Dq, Iq, Dq, P + WQ, hz, tq(Cqb, r0), hz, T(0));  // C̄q = Iq W_Q
    } else {
      std::fill(tq(Cqb, r0), tq(Cqb, r0 + rows), T(0));
    }
    if (Ik) {
      mm<T>(true, false, Dk, hz, rows * Nk, Ik, Dk, tk(Ck, r0), hz, G + WK, hz);          // W̄_K += Ikᵀ Ck
      mm<T>(false, false, rows * Nk, hz, Dk, Ik, Dk, P + WK, hz, tk(Ckb, r0), hz, T(0));  // C̄k = Ik W_K
    } else {
      std::fill(tk(Ckb, r0), tk(Ckb, r0 + rows), T(0));
    }
    for (int r = r0; r < r0 + rows; ++r)
      for (int h = 0; h < H; ++h) {
        mm<T>(false, true, Nq, Nk, Z, tq(Cqb, r, h), hz, tk(K, r, h), hz, sc(Ab, r, h), Nk, T(0));  // Ā = C̄q Kᵀ
        mm<T>(false, true, Nq, Nk, Z, tq(Q, r, h), hz, tk(Ckb, r, h), hz, sc(Ab, r, h), Nk);        // Ā += Q C̄kᵀ
        mm<T>(true, false, Nk, Z, Nq, sc(A, r, h), Nk, tq(Cqb, r, h), hz, tk(Kb, r, h), hz, T(0));  // K̄ = Aᵀ C̄q
        mm<T>(false, false, Nq, Z, Nk, sc(A, r, h), Nk, tk(Ckb, r, h), hz, tq(Qb, r, h), hz, T(0)); // Q̄ = A C̄k
      }
    const size_t ns = size_t(rows) * sS();
    std::fill(sc(Sb, r0), sc(Sb, r0) + ns, T(0));
    lg_jvp(lag, sc(S, r0), sc(A, r0), sc(Ab, r0), sc(Sb, r0), ns);  // S̄ = J Ā
    for (int r = r0; r < r0 + rows; ++r)
      for (int h = 0; h < H; ++h) {
        mm<T>(false, false, Nq, Z, Nk, sc(Sb, r, h), Nk, tk(K, r, h), hz, tq(Qb, r, h), hz);  // Q̄ += S̄ K
        mm<T>(true, false, Nk, Z, Nq, sc(Sb, r, h), Nk, tq(Q, r, h), hz, tk(Kb, r, h), hz);   // K̄ += S̄ᵀ Q
      }
    mm<T>(true, false, Dq, hz, rows * Nq, g[0], Dq, tq(Qb, r0), hz, G + WQ, hz);          // W̄_Q += g_qᵀ Q̄
    if (gb[0]) mm<T>(false, true, rows * Nq, Dq, hz, tq(Qb, r0), hz, P + WQ, hz, gb[0], Dq);  // ḡ_q += Q̄ W_Qᵀ
    mm<T>(true, false, Dk, hz, rows * Nk, g[1], Dk, tk(Kb, r0), hz, G + WK, hz);          // W̄_K += g_kᵀ K̄
    if (gb[1]) mm<T>(false, true, rows * Nk, Dk, hz, tk(Kb, r0), hz, P + WK, hz, gb[1], Dk);  // ḡ_k += K̄ W_Kᵀ
  }
  void energy(const T* P, const CPtrs<T>& g, double* E, int rows, At a) override {
    scores(P, g[0], g[1], a.row, rows);
    for (int r = 0; r < rows; ++r) E[r] -= lag.value(sc(S, a.row + r), sS());
  }
};

// ------------------------------------------------------------------ mixer
// G = g_aᵀ g_b (Da x Db, summed over the shared tokens); M_yz = <W_yz, G>; E = −Σ_y L_h(M_y);
// V = Σ_yz s_yz W_yz with s = ∇L_h(M); I_a = g_b Vᵀ, I_b = g_a V. The maps between G, V and
// M, s are products over every sample at once; G and the currents are per-sample products.
// Null I / Ī / ḡ: skipped.
template <class T>
struct Mixer final : Synapse<T> {
  int Y = 0, Z = 0, N = 1, Da = 1, Db = 1;  // Y, Z: from the IR
  Lagrangian lag;  // row = Z
  size_t W = 0;
  std::vector<T> Gm, Mv, s, sb, Mb, V, Vb, Gb;  // batch-sized
  void declare(const typename StructNode<T>::AddParam& add) override {
    W = add(this->name + ".weight", {Y, Z, Da, Db});
  }
  void init(Rng& rng, T* P) const override { normal_fill(rng, P + W, size_t(Y) * Z * Da * Db, 0.02); }
  bool sparse() const override { return true; }
  int AB() const { return Da * Db; }
  int YZ() const { return Y * Z; }
  void allocate(int batch, int) override {
    for (auto* v : {&Gm, &V, &Vb, &Gb}) v->assign(size_t(batch) * AB(), T(0));
    for (auto* v : {&Mv, &s, &sb, &Mb}) v->assign(size_t(batch) * YZ(), T(0));
  }
  size_t na() const { return size_t(N) * Da; }  // one sample of layer a
  size_t nb() const { return size_t(N) * Db; }
  // rows from batch row r of a (batch x Da·Db) or (batch x Y·Z) buffer
  T* ab(std::vector<T>& v, int r) { return v.data() + size_t(r) * AB(); }
  T* yz(std::vector<T>& v, int r) { return v.data() + size_t(r) * YZ(); }
  void mix(const T* P, const T* ga, const T* gb, int r0, int rows) {
    for (int r = 0; r < rows; ++r)  // Gm = g_aᵀ g_b
      mm<T>(true, false, Da, Db, N, ga + r * na(), Da, gb + r * nb(), Db, ab(Gm, r0 + r), Db, T(0));
    mm<T>(false, true, rows, YZ(), AB(), ab(Gm, r0), AB(), P + W, AB(), yz(Mv, r0), YZ(), T(0));  // M = Gm Wᵀ
    lg_grad(lag, yz(Mv, r0), yz(s, r0), size_t(rows) * YZ());
    mm<T>(false, false, rows, AB(), YZ(), yz(s, r0), YZ(), P + W, AB(), ab(V, r0), AB(), T(0));  // V = s W
  }
  // per sample, with a (N x Da), b (N x Db), X (Da x Db): oa += b Xᵀ, ob += a X (null: skipped)
  void spread(const T* a, const T* b, const T* X, T* oa, T* ob, int rows) const {
    for (int r = 0; r < rows; ++r) {
      const T* x = X + size_t(r) * AB();
      if (oa && b) mm<T>(false, true, N, Da, Db, b + r * nb(), Db, x, Db, oa + r * na(), Da);
      if (ob && a) mm<T>(false, false, N, Db, Da, a + r * na(), Da, x, Db, ob + r * nb(), Db);
    }
  }
  void current(const T* P, const CPtrs<T>& g, const Ptrs<T>& I, int rows, At a) override {
    if (!I[0] && !I[1]) return;
    mix(P, g[0], g[1], a.row, rows);
    spread(g[0], g[1], ab(V, a.row), I[0], I[1], rows);
  }
  void vjp(const T* P, T* G, const CPtrs<T>& g, const CPtrs<T>& Ib, const Ptrs<T>& gbar, int rows,
           At a) override {
    const T *ga = g[0], *gb = g[1], *Ia = Ib[0], *Ibb = Ib[1];
    if (!Ia && !Ibb) return;
    const int r0 = a.row;
    mix(P, ga, gb, r0, rows);
    for (int r = 0; r < rows; ++r) {  // V̄ = Iaᵀ g_b + g_aᵀ Ib
      T* vb = ab(Vb, r0 + r);
      std::fill(vb, vb + AB(), T(0));
      if (Ia) mm<T>(true, false, Da, Db, N, Ia + r * na(), Da, gb + r * nb(), Db, vb, Db);
      if (Ibb) mm<T>(true, false, Da, Db, N, ga + r * na(), Da, Ibb + r * nb(), Db, vb, Db);
    }
    spread(Ia, Ibb, ab(V, r0), gbar[0], gbar[1], rows);  // ḡ_a += Ib Vᵀ, ḡ_b += Ia V
    mm<T>(false, true, rows, YZ(), AB(), ab(Vb, r0), AB(), P + W, AB(), yz(sb, r0), YZ(), T(0));  // s̄ = V̄ Wᵀ
    mm<T>(true, false, YZ(), AB(), rows, yz(s, r0), YZ(), ab(Vb, r0), AB(), G + W, AB());         // W̄ += sᵀ V̄
    const size_t n = size_t(rows) * YZ();
    std::fill(yz(Mb, r0), yz(Mb, r0) + n, T(0));
    lg_jvp(lag, yz(Mv, r0), yz(s, r0), yz(sb, r0), yz(Mb, r0), n);                                    // M̄ = J s̄
    mm<T>(true, false, YZ(), AB(), rows, yz(Mb, r0), YZ(), ab(Gm, r0), AB(), G + W, AB());        // W̄ += M̄ᵀ Gm
    mm<T>(false, false, rows, AB(), YZ(), yz(Mb, r0), YZ(), P + W, AB(), ab(Gb, r0), AB(), T(0)); // Ḡ = M̄ W
    spread(ga, gb, ab(Gb, r0), gbar[0], gbar[1], rows);  // ḡ_a += g_b Ḡᵀ, ḡ_b += g_a Ḡ
  }
  void energy(const T* P, const CPtrs<T>& g, double* E, int rows, At a) override {
    mix(P, g[0], g[1], a.row, rows);
    for (int r = 0; r < rows; ++r) E[r] -= lag.value(yz(Mv, a.row + r), size_t(YZ()));
  }
};

// ------------------------------------------------------------------ conv (+ pooling)
// E = −<g2, pool(conv(g1))>; I2 = pool(conv(g1)); I1 = convᵀ(poolᵀ(g2)). Layers are HxWxC,
// channel-minor; K is (C2, C1, k, k). Max pooling routes through the argmax of conv(g1).
template <class T>
struct Conv final : Synapse<T> {
  int H1 = 1, W1 = 1, C1 = 1, H2 = 1, W2 = 1, C2 = 1, k = 1, st = 1, pad = 0;
  int pool = 0, win = 0, pst = 0, Hc = 1, Wc = 1;  // pool: 0 none, 1 avg, 2 max; Hc x Wc conv map
  size_t K = 0;
  struct Scratch {  // one sample's conv map, adjoint map and max-pooling argmax, per chunk
    std::vector<T> cmap, tmp;
    std::vector<int> arg;
  };
  std::vector<Scratch> scr;
  void chunks(int n) override {
    if (scr.size() < size_t(n)) scr.resize(size_t(n));
  }
  void declare(const typename StructNode<T>::AddParam& add) override {
    K = add(this->name + ".kernel", {C2, C1, k, k});
  }
  void init(Rng& rng, T* P) const override { normal_fill(rng, P + K, size_t(C2) * C1 * k * k, 0.02); }
  // y (Hc x Wc x C2) += conv_K(x)   [or its adjoint: x += convᵀ(y)]
  void conv(const T* Kp, const T* x, T* y) const {
    for (int i = 0; i < Hc; ++i)
      for (int j = 0; j < Wc; ++j)
        for (int u = 0; u < k; ++u)
          for (int v = 0; v < k; ++v) {
            const int a = i * st + u - pad, b = j * st + v - pad;
            if (a < 0 || a >= H1 || b < 0 || b >= W1) continue;
            const T* xp = x + (size_t(a) * W1 + b) * C1;
            T* yp = y + (size_t(i) * Wc + j) * C2;
            for (int c2 = 0; c2 < C2; ++c2) {
              const T* kp = Kp + (size_t(c2) * C1 * k + u) * k + v;
              T acc = 0;
              for (int c1 = 0; c1 < C1; ++c1) acc += kp[size_t(c1) * k * k] * xp[c1];
              yp[c2] += acc;
            }
          }
  }
  void conv_adj(const T* Kp, const T* y, T* x) const {
    for (int i = 0; i < Hc; ++i)
      for (int j = 0; j < Wc; ++j)
        for (int u = 0; u < k; ++u)
          for (int v = 0; v < k; ++v) {
            const int a = i * st + u - pad, b = j * st + v - pad;
            if (a < 0 || a >= H1 || b < 0 || b >= W1) continue;
            T* xp = x + (size_t(a) * W1 + b) * C1;
            const T* yp = y + (size_t(i) * Wc + j) * C2;
            for (int c2 = 0; c2 < C2; ++c2)
              for (int c1 = 0; c1 < C1; ++c1) xp[c1] += Kp[((size_t(c2) * C1 + c1) * k + u) * k + v] * yp[c2];
          }
  }
  // Kbar += Σ y[i,j,c2] x[window, c1] (the kernel gradient of <y, conv_K(x)>)
  void conv_kgrad(const T* y, const T* x, T* Kb) const {
    for (int i = 0; i < Hc; ++i)
      for (int j = 0; j < Wc; ++j)
        for (int u = 0; u < k; ++u)
          for (int v = 0; v < k; ++v) {
            const int a = i * st + u - pad, b = j * st + v - pad;
            if (a < 0 || a >= H1 || b < 0 || b >= W1) continue;
            const T* xp = x + (size_t(a) * W1 + b) * C1;
            const T* yp = y + (size_t(i) * Wc + j) * C2;
            for (int c2 = 0; c2 < C2; ++c2)
              for (int c1 = 0; c1 < C1; ++c1) Kb[((size_t(c2) * C1 + c1) * k + u) * k + v] += yp[c2] * xp[c1];
          }
  }
  size_t csize() const { return size_t(Hc) * Wc * C2; }
  // conv map of g1 (and, for max pooling, its argmax per pooled cell)
  void map(const T* P, const T* g1, Scratch& w) const {
    auto& cmap = w.cmap;
    auto& arg = w.arg;
    cmap.assign(csize(), T(0));
    conv(P + K, g1, cmap.data());
    if (pool != 2) return;
    arg.assign(size_t(H2) * W2 * C2, 0);
    for (int i = 0; i < H2; ++i)
      for (int j = 0; j < W2; ++j)
        for (int c = 0; c < C2; ++c) {
          int best = -1;
          for (int u = 0; u < win; ++u)
            for (int v = 0; v < win; ++v) {
              const int at = ((i * pst + u) * Wc + (j * pst + v)) * C2 + c;
              if (best < 0 || cmap[at] > cmap[best]) best = at;
            }
          arg[(size_t(i) * W2 + j) * C2 + c] = best;
        }
  }
  void pool_fwd(const T* m, T* out, const Scratch& w) const {
    const auto& arg = w.arg;  // out (H2 x W2 x C2) += pool(m)
    if (pool == 0) {
      for (size_t i = 0; i < csize(); ++i) out[i] += m[i];
      return;
    }
    for (int i = 0; i < H2; ++i)
      for (int j = 0; j < W2; ++j)
        for (int c = 0; c < C2; ++c) {
          const size_t o = (size_t(i) * W2 + j) * C2 + c;
          if (pool == 2) { out[o] += m[arg[o]]; continue; }
          T acc = 0;
          for (int u = 0; u < win; ++u)
            for (int v = 0; v < win; ++v) acc += m[((i * pst + u) * Wc + (j * pst + v)) * C2 + c];
          out[o] += acc / T(win * win);
        }
  }
  void pool_adj(const T* y, T* m, const Scratch& w) const {
    const auto& arg = w.arg;  // m (conv map) += poolᵀ(y)
    if (pool == 0) {
      for (size_t i = 0; i < csize(); ++i) m[i] += y[i];
      return;
    }
    for (int i = 0; i < H2; ++i)
      for (int j = 0; j < W2; ++j)
        for (int c = 0; c < C2; ++c) {
          const size_t o = (size_t(i) * W2 + j) * C2 + c;
          if (pool == 2) { m[arg[o]] += y[o]; continue; }
          for (int u = 0; u < win; ++u)
            for (int v = 0; v < win; ++v)
              m[((i * pst + u) * Wc + (j * pst + v)) * C2 + c] += y[o] / T(win * win);
        }
  }
  void current(const T* P, const CPtrs<T>& g, const Ptrs<T>& I, int rows, At a) override {
    const size_t n1 = this->sizes[0], n2 = this->sizes[1];
    Scratch& w = scr[size_t(a.chunk)];
    auto &cmap = w.cmap, &tmp = w.tmp;
    for (int r = 0; r < rows; ++r) {
      map(P, g[0] + r * n1, w);
      pool_fwd(cmap.data(), I[1] + r * n2, w);
      tmp.assign(csize(), T(0));
      pool_adj(g[1] + r * n2, tmp.data(), w);
      conv_adj(P + K, tmp.data(), I[0] + r * n1);
    }
  }
  void vjp(const T* P, T* G, const CPtrs<T>& g, const CPtrs<T>& Ib, const Ptrs<T>& gb, int rows,
           At a) override {
    const size_t n1 = this->sizes[0], n2 = this->sizes[1];
    Scratch& w = scr[size_t(a.chunk)];
    auto &cmap = w.cmap, &tmp = w.tmp;
    for (int r = 0; r < rows; ++r) {
      const T *g1 = g[0] + r * n1, *g2 = g[1] + r * n2, *I1 = Ib[0] + r * n1, *I2 = Ib[1] + r * n2;
      map(P, g1, w);
      // I2 = P C g1: ḡ1 += Cᵀ Pᵀ Ī2, K̄ += kgrad(Pᵀ Ī2, g1)
      tmp.assign(csize(), T(0));
      pool_adj(I2, tmp.data(), w);
      conv_adj(P + K, tmp.data(), gb[0] + r * n1);
      conv_kgrad(tmp.data(), g1, G + K);
      // I1 = Cᵀ Pᵀ g2: ḡ2 += P C Ī1, K̄ += kgrad(Pᵀ g2, Ī1)
      cmap.assign(csize(), T(0));  // reused: conv of Ī1 (the map of g1 is done with)
      conv(P + K, I1, cmap.data());
      pool_fwd(cmap.data(), gb[1] + r * n2, w);
      tmp.assign(csize(), T(0));
      pool_adj(g2, tmp.data(), w);
      conv_kgrad(tmp.data(), I1, G + K);
    }
  }
  void energy(const T* P, const CPtrs<T>& g, double* E, int rows, At a) override {
    const size_t n1 = this->sizes[0], n2 = this->sizes[1];
    Scratch& w = scr[size_t(a.chunk)];
    std::vector<T> pooled(n2);
    for (int r = 0; r < rows; ++r) {
      map(P, g[0] + r * n1, w);
      std::fill(pooled.begin(), pooled.end(), T(0));
      pool_fwd(w.cmap.data(), pooled.data(), w);
      double F = 0;
      for (size_t i = 0; i < n2; ++i) F += double(pooled[i]) * g[1][r * n2 + i];
      E[r] -= F;
    }
  }
};

// ------------------------------------------------------------------ the block
template <class T>
class EnergyNode final : public StructNode<T> {
 public:
  explicit EnergyNode(const IrNode& nd)
      : name_(nd.name), spec_(nd.en), in_w_(nd.st.in_width), out_w_(nd.width) {
    for (const EnergyLayer& l : spec_.layers) {
      const int row = l.shape.back();
      lags_.push_back(Lagrangian::make(l.lag.kind, l.lag.p, row));
      if (l.learn_beta && !energy::lg_has_beta(lags_.back().k))
        throw IRError("IR: layer '" + l.name + "' learns beta, but its Lagrangian '" + l.lag.name +
                      "' has none");
    }
    for (const EnergySynapse& s : spec_.synapses) {
      syns_.push_back(make_synapse(s));
      for (int ref : s.refs) syns_.back()->fixed.push_back(spec_.layers[size_t(ref)].clamp);
    }
  }

  void declare(const typename StructNode<T>::AddParam& add0) override {
    // every parameter is noted for the chunks' gradient copies, but those only the whole-batch
    // end of backward writes (Synapse::whole_batch_param)
    Synapse<T>* declaring = nullptr;
    const typename StructNode<T>::AddParam add = [&](const std::string& name, std::vector<int64_t> shape) {
      size_t n = 1;
      for (int64_t e : shape) n *= size_t(e);
      return gs_.track(add0(name, shape), n, !(declaring && declaring->whole_batch_param));
    };
    for (size_t l = 0; l < spec_.layers.size(); ++l)
      bias_.push_back(spec_.layers[l].bias ? add(spec_.layers[l].name + ".bias", {spec_.layers[l].size})
                                           : SIZE_MAX);
    for (size_t l = 0; l < spec_.layers.size(); ++l)
      beta_.push_back(spec_.layers[l].learn_beta ? add(spec_.layers[l].name + ".beta", {}) : SIZE_MAX);
    for (auto& s : syns_) {
      declaring = s.get();
      s->declare(add);
    }
  }

  void allocate(int batch) override {
    const int L = int(spec_.layers.size()), Tn = spec_.steps;
    x_.assign(size_t(Tn + 1) * L, nn_saved());
    g_.assign(size_t(Tn + 1) * L, nn_saved());
    for (int t = 0; t <= Tn; ++t)
      for (int l = 0; l < L; ++l) {
        if (t > 0 && !moving(l)) continue;  // a clamped layer keeps step 0 (X, Gv)
        x_[t * L + l].assign(size_t(batch) * spec_.layers[l].size, T(0));
        g_[t * L + l].assign(size_t(batch) * spec_.layers[l].size, T(0));
      }
    wide_ = 0;
    for (auto* v : {&cur_, &bar_, &Ib_, &gb_, &zero_}) v->assign(L, {});
    for (int l = 0; l < L; ++l) {
      const size_t n = size_t(batch) * spec_.layers[l].size;
      wide_ = std::max(wide_, size_t(spec_.layers[l].size));
      for (auto* v : {&cur_, &bar_, &Ib_, &gb_}) (*v)[l].assign(n, T(0));
      if (!moving(l)) zero_[l].assign(n, T(0));  // Ī of a clamped layer, for non-sparse synapses
    }
    per_row_ = 0;
    for (int l = 0; l < L; ++l) per_row_ += double(spec_.layers[l].size) * std::max(1, Tn);
    tmp_.assign(size_t(batch) * wide_, T(0));  // by batch row, at the widest layer's stride
    jv_.assign(size_t(batch) * wide_, T(0));
    dyo_.assign(size_t(batch) * wide_, T(0));
    for (auto& s : syns_) s->allocate(batch, Tn);
    lanes_.clear();
    use_chunks(1);
  }

  void init(Rng& rng, T* P) const override {
    for (size_t l = 0; l < bias_.size(); ++l)
      if (bias_[l] != SIZE_MAX) normal_fill(rng, P + bias_[l], size_t(spec_.layers[l].size), 0.02);
    for (size_t l = 0; l < beta_.size(); ++l)  // a learned beta starts at the written value
      if (beta_[l] != SIZE_MAX) P[beta_[l]] = T(spec_.layers[l].lag.p);
    for (const auto& s : syns_) s->init(rng, P);
    init0_.clear();  // `init normal`: one fixed N(0,1) start state per layer, drawn at build
    if (spec_.normal_init)
      for (const EnergyLayer& l : spec_.layers) {
        std::vector<T> v(l.size);
        for (auto& e : v) e = T(rng.normal());
        init0_.push_back(v);
      }
  }

  std::vector<std::vector<double>> drawn() const override {
    std::vector<std::vector<double>> out;
    for (const auto& v : init0_) out.emplace_back(v.begin(), v.end());
    return out;
  }
  void set_drawn(const std::vector<std::vector<double>>& v) override {
    init0_.clear();
    for (const auto& s : v) init0_.emplace_back(s.begin(), s.end());
  }

  // Chunks of the samples run side by side on the worker threads (cpu/threads.h): every
  // operation of the descent and its reverse is per sample, and every scratch buffer is indexed
  // by batch row or by chunk; in backward the chunks' parameter gradients go to per-chunk
  // copies, added in chunk order. One chunk on one thread, and while inspect records.
  void forward(const T* P, const T* x, T* y, int row, int rows, double* /*aux*/) override {
    betas(P);
    for (auto& s : syns_) s->prepare(P);
    const int threads = cpu::pool_threads();  // read once: the scratch is sized for it
    use_chunks(threads);
    cpu::sample_chunks(rows, threads, this->probe_ != nullptr, [&](int b0, int n, int c) {
      forward_rows(P, x + size_t(b0) * in_w_, y + size_t(b0) * out_w_, row + b0, n, c);
    });
  }

  void backward(const T* P, T* G, const T* /*x*/, const T* dy, T* dx, int row, int rows,
                double /*aux_scale*/) override {
    const int L = int(spec_.layers.size());
    betas(P);
    for (auto& s : syns_) s->prepare(P);
    want_.assign(size_t(L), 0);  // a clamped layer's ḡ is read
    for (int l = 0; l < L; ++l)
      if (!moving(l))
        want_[l] = (dx && spec_.layers[l].in_offset >= 0) || bias_[l] != SIZE_MAX || beta_[l] != SIZE_MAX;
    const int threads = cpu::pool_threads();
    use_chunks(threads);
    // The steps by chunks where the chunks' gradient copies (zeroed, then added into G: a pass
    // over every parameter they hold, each call) cost less than the per-sample work they
    // spread; else the whole batch on the calling thread, its large products cut over the
    // workers and its Lagrangians on them. The end (end_vjp's deferred products of the clamped
    // layers, their adjoints, dx) always runs on the whole batch, its products cut: HAMUX at
    // MNIST size keeps no copy of its 784k clamped-layer weights (10k in the copies, against 16
    // samples of 3.2k state entries per chunk). Measured there on 2 threads: whole backward by
    // chunks with every weight copied 1.0-1.2x; the whole batch 1.45-1.8x.
    int n = 1;
    if (double(rows) / threads * per_row_ < double(gs_.size())) {
      backward_steps(P, G, dy, row, rows, 0);
    } else {
      gs_.reserve(threads);
      n = cpu::sample_chunks(rows, threads, this->probe_ != nullptr, [&](int b0, int m, int c) {
        backward_steps(P, gs_.get(G, c), dy + size_t(b0) * out_w_, row + b0, m, c);
      });
      gs_.fold(G, n);
    }
    for (auto& s : syns_) s->fold_chunks(n);
    backward_end(P, G, dx, row, rows);
  }

 private:
  using nn_saved = std::vector<T>;
  // the pointer lists one chunk hands its synapses
  struct Lane {
    CPtrs<T> g, ib;
    Ptrs<T> I, gb;
  };

  // per-chunk scratch for n chunks, on the calling thread before they run
  void use_chunks(int n) {
    if (lanes_.size() >= size_t(n)) return;
    lanes_.resize(size_t(n));
    for (auto& s : syns_) s->chunks(n);
  }

  // samples row..row+rows-1 of the batch (x, y: their rows), as chunk c
  void forward_rows(const T* P, const T* x, T* y, int row, int rows, int c) {
    const int L = int(spec_.layers.size());
    for (int l = 0; l < L; ++l) {  // x^0: input layers from their slice of x, others the start
      T* x0 = X(0, l, row);
      const size_t n = spec_.layers[l].size;
      const int off = spec_.layers[l].in_offset;
      for (int r = 0; r < rows; ++r) {
        if (off >= 0) std::memcpy(x0 + r * n, x + size_t(r) * in_w_ + off, sizeof(T) * n);
        else if (!init0_.empty()) std::memcpy(x0 + r * n, init0_[l].data(), sizeof(T) * n);
        else std::fill(x0 + r * n, x0 + (r + 1) * n, T(0));
      }
    }
    activations(P, 0, row, rows, true);
    for (int t = 0; t < spec_.steps; ++t) {
      currents(P, t, row, rows, c);
      for (int l = 0; l < L; ++l) {
        if (!moving(l)) continue;  // held: x^{t+1} = x^t (the same storage)
        const size_t n = size_t(rows) * spec_.layers[l].size;
        const T* xt = X(t, l, row);
        T* xn = X(t + 1, l, row);
        const T a = T(spec_.dt / spec_.layers[l].tau);
        const T* cur = at(cur_, l, row);
        if (bias_[l] == SIZE_MAX) {
          for (size_t i = 0; i < n; ++i) xn[i] = xt[i] + a * (cur[i] - xt[i]);
        } else {
          for (size_t i = 0; i < n; ++i) xn[i] = xt[i] + a * (cur[i] - (xt[i] - bias_at(P, l, i)));
        }
      }
      activations(P, t + 1, row, rows, false);
    }
    if (this->probe_) record(P, row, rows);
    size_t off = 0;  // y: the out layers' activations side by side
    for (int o : spec_.outs) {
      const size_t n = spec_.layers[o].size;
      const T* g = Gv(spec_.steps, o, row);
      for (int r = 0; r < rows; ++r) std::memcpy(y + size_t(r) * out_w_ + off, g + r * n, sizeof(T) * n);
      off += n;
    }
  }

  // Reverse mode through the unroll for samples row..row+rows-1 (dy: their rows), as chunk c,
  // with G the chunk's gradient target. A clamped layer's Ī is zero and its Jacobian J_g is
  // the same at every step, so its adjoint Σ_t J ḡ_t = J Σ_t ḡ_t is taken once, after the
  // loop (backward_end), and only when something reads it (want_: dx, its bias, its beta).
  void backward_steps(const T* P, T* G, const T* dy, int row, int rows, int c) {
    const int L = int(spec_.layers.size()), Tn = spec_.steps;
    const std::vector<char>& want = want_;
    Lane& ln = lanes_[size_t(c)];
    for (int l = 0; l < L; ++l) {
      const size_t n = size_t(rows) * spec_.layers[l].size;
      std::fill(at(bar_, l, row), at(bar_, l, row) + n, T(0));
      if (moving(l)) continue;
      std::fill(at(gb_, l, row), at(gb_, l, row) + n, T(0));  // accumulates over the steps
    }
    size_t off = 0;  // y = the out layers' g(x^T), side by side
    for (int o : spec_.outs) {
      const size_t n = spec_.layers[o].size;
      if (!moving(o)) {
        T* gb = at(gb_, o, row);
        if (want[o])
          for (int r = 0; r < rows; ++r)
            for (size_t i = 0; i < n; ++i) gb[r * n + i] += dy[size_t(r) * out_w_ + off + i];
      } else {
        T* dyo = wide(dyo_, row);
        for (int r = 0; r < rows; ++r) std::memcpy(dyo + r * n, dy + size_t(r) * out_w_ + off, sizeof(T) * n);
        through_g(P, G, Tn, o, dyo, row, rows);
      }
      off += n;
    }
    for (auto& s : syns_) s->begin_vjp(rows, At{row, 0, c});
    for (int t = Tn - 1; t >= 0; --t) {
      for (int l = 0; l < L; ++l) {
        if (!moving(l)) continue;
        const size_t n = size_t(rows) * spec_.layers[l].size;
        const T a = T(spec_.dt / spec_.layers[l].tau);
        T *Ib = at(Ib_, l, row), *bar = at(bar_, l, row);
        for (size_t i = 0; i < n; ++i) {
          Ib[i] = a * bar[i];
          bar[i] *= (T(1) - a);
        }
        if (bias_[l] != SIZE_MAX)
          for (size_t i = 0; i < n; ++i) G[bias_[l] + i % spec_.layers[l].size] += Ib[i];
        std::fill(at(gb_, l, row), at(gb_, l, row) + n, T(0));
      }
      for (size_t s = 0; s < syns_.size(); ++s) {
        Synapse<T>& sy = *syns_[s];
        ln.g.clear(), ln.ib.clear(), ln.gb.clear();
        for (int ref : spec_.synapses[s].refs) {
          ln.g.push_back(Gv(t, ref, row));
          const bool held = !moving(ref), skip = held && sy.sparse();
          ln.ib.push_back(!held ? at(Ib_, ref, row) : skip ? nullptr : at(zero_, ref, row));
          ln.gb.push_back(skip && !want[ref] ? nullptr : at(gb_, ref, row));
        }
        sy.vjp(P, G, ln.g, ln.ib, ln.gb, rows, At{row, t, c});
      }
      for (int l = 0; l < L; ++l)
        if (moving(l)) through_g(P, G, t, l, at(gb_, l, row), row, rows);
    }
  }

  // The end of the reverse pass for samples row..row+rows-1 (dx: their rows), on the calling
  // thread: the synapses' deferred products (end_vjp), the clamped layers' adjoints, dx.
  void backward_end(const T* P, T* G, T* dx, int row, int rows) {
    const int L = int(spec_.layers.size());
    const std::vector<char>& want = want_;
    Lane& ln = lanes_[0];
    for (size_t s = 0; s < syns_.size(); ++s) {
      Synapse<T>& sy = *syns_[s];
      ln.g.clear(), ln.gb.clear();
      for (int ref : spec_.synapses[s].refs) {
        ln.g.push_back(Gv(0, ref, row));
        ln.gb.push_back(!moving(ref) && sy.sparse() && !want[ref] ? nullptr : at(gb_, ref, row));
      }
      sy.end_vjp(P, G, ln.g, ln.gb, rows, At{row, 0, 0});
    }
    for (int l = 0; l < L; ++l)
      if (want[l]) through_g(P, G, 0, l, at(gb_, l, row), row, rows);
    if (!dx) return;
    for (int l = 0; l < L; ++l) {  // the input layers' adjoints (clamped: summed over the steps)
      const int o = spec_.layers[l].in_offset;
      const size_t n = spec_.layers[l].size;
      if (o < 0) continue;
      const T* bar = at(bar_, l, row);
      for (int r = 0; r < rows; ++r)
        for (size_t i = 0; i < n; ++i) dx[size_t(r) * in_w_ + o + i] += bar[r * n + i];
    }
  }

  bool moving(int l) const { return !spec_.layers[l].clamp; }
  // Learned betas: the Lagrangians read the current parameter values.
  void betas(const T* P) {
    for (size_t l = 0; l < beta_.size(); ++l)
      if (beta_[l] != SIZE_MAX) lags_[l].p = double(P[beta_[l]]);
  }
  T bias_at(const T* P, int l, size_t i) const {
    return bias_[l] == SIZE_MAX ? T(0) : P[bias_[l] + i % spec_.layers[l].size];
  }
  // x^t and g^t of layer l from batch row `row` (a clamped layer's: step 0 at every t)
  T* X(int t, int l, int row) {
    return x_[size_t(moving(l) ? t : 0) * spec_.layers.size() + l].data() + size_t(row) * spec_.layers[l].size;
  }
  T* Gv(int t, int l, int row) {
    return g_[size_t(moving(l) ? t : 0) * spec_.layers.size() + l].data() + size_t(row) * spec_.layers[l].size;
  }
  // layer l's per-layer scratch (batch x size) from batch row `row`
  T* at(std::vector<std::vector<T>>& v, int l, int row) {
    return v[l].data() + size_t(row) * spec_.layers[l].size;
  }
  // tmp_, jv_, dyo_ (any layer's rows) from batch row `row`: rows at the widest layer's stride,
  // so chunks working on layers of different sizes never overlap
  T* wide(std::vector<T>& v, int row) { return v.data() + size_t(row) * wide_; }

  // u = x − b (the Lagrangian's argument), into tmp_
  const T* shifted(const T* P, int t, int l, int row, int rows) {
    const size_t n = size_t(rows) * spec_.layers[l].size;
    const T* x = X(t, l, row);
    if (bias_[l] == SIZE_MAX) return x;
    T* u = wide(tmp_, row);
    for (size_t i = 0; i < n; ++i) u[i] = x[i] - bias_at(P, l, i);
    return u;
  }
  // g^t = ∇L(x^t − b) of the moving layers (and of the clamped ones when `all`)
  void activations(const T* P, int t, int row, int rows, bool all) {
    for (int l = 0; l < int(spec_.layers.size()); ++l)
      if (all || moving(l))
        lg_grad(lags_[l], shifted(P, t, l, row, rows), Gv(t, l, row), size_t(rows) * spec_.layers[l].size);
  }
  // the moving layers' currents at step t into cur_ (a clamped layer's are not wanted: sparse
  // synapses skip them, the others write them into cur_, unread)
  void currents(const T* P, int t, int row, int rows, int c) {
    Lane& ln = lanes_[size_t(c)];
    for (int l = 0; l < int(spec_.layers.size()); ++l)
      std::fill(at(cur_, l, row), at(cur_, l, row) + size_t(rows) * spec_.layers[l].size, T(0));
    for (size_t s = 0; s < syns_.size(); ++s) {
      Synapse<T>& sy = *syns_[s];
      ln.g.clear(), ln.I.clear();
      for (int ref : spec_.synapses[s].refs) {
        ln.g.push_back(Gv(t, ref, row));
        ln.I.push_back(moving(ref) || !sy.sparse() ? at(cur_, ref, row) : nullptr);
      }
      sy.current(P, ln.g, ln.I, rows, At{row, t, c});
    }
  }
  // gbar (upstream of g_l at step t) into bar_[l] (x) and the layer's bias (−J gbar)
  void through_g(const T* P, T* G, int t, int l, const T* gbar, int row, int rows) {
    const size_t n = size_t(rows) * spec_.layers[l].size;
    T* jv = wide(jv_, row);
    std::fill(jv, jv + n, T(0));
    const T* u = shifted(P, t, l, row, rows);
    lg_jvp(lags_[l], u, Gv(t, l, row), gbar, jv, n);
    if (beta_[l] != SIZE_MAX) G[beta_[l]] += T(lags_[l].dbeta(u, Gv(t, l, row), gbar, n));
    T* bar = at(bar_, l, row);
    for (size_t i = 0; i < n; ++i) {
      bar[i] += jv[i];
      if (bias_[l] != SIZE_MAX) G[bias_[l] + i % spec_.layers[l].size] -= jv[i];
    }
  }
  // nm.inspect (docs/inspect.md): every layer's state and activation and every energy term at
  // each step t = 0..T, per sample; the total is what nm.energy reports.
  void record(const T* P, int row, int rows) {
    Probe& pr = *this->probe_;
    const int Tn = spec_.steps;
    const int64_t K = Tn + 1;
    std::vector<double> E(rows), Es(rows);
    for (int t = 0; t <= Tn; ++t) {
      std::fill(E.begin(), E.end(), 0.0);
      for (size_t l = 0; l < spec_.layers.size(); ++l) {
        const EnergyLayer& ly = spec_.layers[l];
        const size_t n = ly.size;
        const T* u = shifted(P, t, int(l), row, rows);
        const T* g = Gv(t, int(l), row);
        const T* x = X(t, int(l), row);
        for (int r = 0; r < rows; ++r) {
          double* xs = pr.sample("state." + ly.name, {K, int64_t(n)}, row + r) + t * n;
          double* gs = pr.sample("activation." + ly.name, {K, int64_t(n)}, row + r) + t * n;
          double dot = 0;
          for (size_t i = 0; i < n; ++i) {
            xs[i] = double(x[r * n + i]), gs[i] = double(g[r * n + i]);
            dot += double(u[r * n + i]) * g[r * n + i];
          }
          const double e = dot - lags_[l].value(u + r * n, n);
          pr.sample("energy." + ly.name, {K}, row + r)[t] = e;
          E[r] += e;
        }
      }
      for (size_t s = 0; s < syns_.size(); ++s) {
        CPtrs<T> g;
        for (int ref : spec_.synapses[s].refs) g.push_back(Gv(t, ref, row));
        std::fill(Es.begin(), Es.end(), 0.0);
        syns_[s]->energy(P, g, Es.data(), rows, At{row, t, 0});
        for (int r = 0; r < rows; ++r) {
          pr.sample("energy." + spec_.synapses[s].name, {K}, row + r)[t] = Es[r];
          E[r] += Es[r];
        }
      }
      for (int r = 0; r < rows; ++r) pr.sample("energy", {K}, row + r)[t] = E[r];
    }
  }

  std::unique_ptr<Synapse<T>> make_synapse(const EnergySynapse& s) const {
    // every option is in the IR (core/validate.cpp checked it): no defaults here
    auto num = [&](const char* key) { return s.num.at(key); };
    std::vector<int> sizes;
    for (int r : s.refs) sizes.push_back(spec_.layers[r].size);
    auto tokens = [&](int ref, int* N, int* D) {
      const auto& sh = spec_.layers[ref].shape;
      *D = sh.back();
      *N = spec_.layers[ref].size / *D;
    };
    std::unique_ptr<Synapse<T>> out;
    switch (s.kind) {
    case SynKind::Dense: {
      auto d = std::make_unique<Dense<T>>();
      d->has_bias = num("bias") != 0;
      out = std::move(d);
      break;
    }
    case SynKind::Bias: {
      out = std::make_unique<BiasSyn<T>>();
      break;
    }
    case SynKind::Hidden: {
      auto h = std::make_unique<Hidden<T>>();
      h->M = int(num("units"));
      h->norm = num("norm") != 0;
      h->lag = Lagrangian::make(s.hidden.kind, s.hidden.p, h->M);
      out = std::move(h);
      break;
    }
    case SynKind::Tensor: {
      auto h = std::make_unique<Tensor<T>>();
      h->M = int(num("units"));
      h->Y = int(num("heads"));
      h->lag = Lagrangian::make(s.hidden.kind, s.hidden.p, h->M);
      out = std::move(h);
      break;
    }
    case SynKind::Attention: {
      auto a = std::make_unique<Attention<T>>();
      a->H = int(num("heads"));
      a->Z = int(num("qk"));
      tokens(s.refs[0], &a->Nq, &a->Dq);
      tokens(s.refs[1], &a->Nk, &a->Dk);
      a->lag = Lagrangian::make(s.hidden.kind, s.hidden.p, a->Nk);
      out = std::move(a);
      break;
    }
    case SynKind::Mixer: {
      auto m = std::make_unique<Mixer<T>>();
      m->Y = int(num("heads"));
      m->Z = int(num("qk"));
      int Nb;
      tokens(s.refs[0], &m->N, &m->Da);
      tokens(s.refs[1], &Nb, &m->Db);
      if (Nb != m->N) throw IRError("IR: mixer '" + s.name + "' joins layers of unequal token counts");
      m->lag = Lagrangian::make(s.hidden.kind, s.hidden.p, m->Z);
      out = std::move(m);
      break;
    }
    case SynKind::Conv: {
      auto c = std::make_unique<Conv<T>>();
      const auto &a = spec_.layers[s.refs[0]].shape, &b = spec_.layers[s.refs[1]].shape;
      if (a.size() != 3 || b.size() != 3) throw IRError("IR: conv '" + s.name + "' needs HxWxC layers");
      c->H1 = a[0], c->W1 = a[1], c->C1 = a[2], c->H2 = b[0], c->W2 = b[1], c->C2 = b[2];
      c->k = int(num("kernel")), c->st = int(num("stride")), c->pad = int(num("pad"));
      c->pool = s.pool == PoolOp::Avg ? 1 : s.pool == PoolOp::Max ? 2 : 0;
      c->win = c->pool ? int(num("window")) : 0;  // read with pooling only
      c->pst = c->pool ? int(num("pstride")) : 0;
      c->Hc = (c->H1 + 2 * c->pad - c->k) / c->st + 1;
      c->Wc = (c->W1 + 2 * c->pad - c->k) / c->st + 1;
      const int ph = c->pool ? (c->Hc - c->win) / c->pst + 1 : c->Hc;
      const int pw = c->pool ? (c->Wc - c->win) / c->pst + 1 : c->Wc;
      if (ph != c->H2 || pw != c->W2) throw IRError("IR: conv '" + s.name + "' does not fit its layers");
      out = std::move(c);
      break;
    }
    case SynKind::kCount:
      throw IRError("IR: synapse '" + s.name + "' of no known kind");
    }
    out->name = s.name;
    out->sizes = sizes;
    return out;
  }

  std::string name_;
  EnergySpec spec_;
  std::vector<Lagrangian> lags_;
  std::vector<std::unique_ptr<Synapse<T>>> syns_;
  std::vector<size_t> bias_, beta_;
  int in_w_, out_w_;
  std::vector<T> dyo_;
  mutable std::vector<std::vector<T>> init0_;
  std::vector<std::vector<T>> x_, g_, cur_, bar_;
  std::vector<T> tmp_, jv_;
  std::vector<std::vector<T>> Ib_, gb_;  // backward: per-layer currents' and activations' adjoints
  std::vector<std::vector<T>> zero_;     // zeros: Ī of a clamped layer for non-sparse synapses
  std::vector<char> want_;
  size_t wide_ = 0;          // the widest layer's size
  double per_row_ = 0;       // state entries of one sample over the steps
  std::vector<Lane> lanes_;  // per chunk
  cpu::ChunkGrads<T> gs_;    // the chunks' parameter gradients
};

}  // namespace

// The energy kind, registered for the plan and the CPU executor (core/struct_node.h).
NM_REGISTER_KIND(NodeKind::Energy, "energy", EnergyNode);

}  // namespace nm
