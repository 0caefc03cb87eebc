// The energy block's hidden (integrated-out layer) and tensor synapses (cpu/energy_synapse.h).
// Included by cpu/energy.cpp only.
#pragma once
#include "energy_synapse.h"

namespace nm::energy_cpu {

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
    fixed_done = false;  // every forward and backward starts here: the last one's hoist ends
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

  // Σ_fixed g Ŵ for rows a.row.. into hfix
  void fixed_sum(const T* P, const CPtrs<T>& g, int rows, At a) {
    T* hf = at(hfix, a.row);
    std::fill(hf, hf + size_t(rows) * M, T(0));
    for (size_t j = 0; j < W.size(); ++j)
      if (this->fixed[j])
        mm<T>(false, false, rows, M, this->sizes[j], g[j], this->sizes[j], w(P, j), M, hf, M);
  }
  bool fixed_part(const T* P, const CPtrs<T>& g, int rows, At a) override {
    if (!any_fixed()) return false;
    fixed_sum(P, g, rows, a);
    fixed_done = true;
    return true;
  }
  bool fixed_done = false;  // hfix holds the whole batch's (fixed_part)
  // A fixed ref's weight gradient gᵀ Σ_t h̄_t is one product (without norm): deferrable.
  void deferrable(std::vector<std::pair<size_t, size_t>>& out) const override {
    for (size_t j = 0; j < W.size() && !norm; ++j)
      if (this->fixed[j]) out.emplace_back(W[j], size_t(this->sizes[j]) * M);
  }
  void deferred(std::vector<typename StructNode<T>::Deferred>& out) const override {
    out.insert(out.end(), kept.begin(), kept.end());
  }
  std::vector<typename StructNode<T>::Deferred> kept;  // the last end_vjp's, while deferring
  void current(const T* P, const CPtrs<T>& g, const Ptrs<T>& I, int rows, At a) override {
    const size_t n = size_t(rows) * M;
    T *h = at(hs, a.row, a.t), *s = at(ss, a.row, a.t);
    if (any_fixed()) {
      T* hf = at(hfix, a.row);
      if (a.t == 0 && !fixed_done) fixed_sum(P, g, rows, a);
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
    kept.clear();
    for (size_t j = 0; j < W.size(); ++j) {
      if (!this->fixed[j]) continue;
      const int nj = this->sizes[j];
      if (this->defer && !norm) kept.push_back({W[j], nj, M, rows, g[j], hf});
      else mm<T>(true, false, nj, M, rows, g[j], nj, hf, M, wgrad(G, j, a), M);
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

}  // namespace nm::energy_cpu
