// The energy block's token synapses: attention, mixer, conv (+ pooling) (cpu/energy_synapse.h).
// Included by cpu/energy.cpp only.
#pragma once
#include "energy_synapse.h"

namespace nm::energy_cpu {

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
  // f(x offset, y offset, u, v) for every kernel tap (u, v) of every output cell whose input cell
  // lies inside the input: the iteration conv, its adjoint and its kernel gradient share
  template <class F>
  void for_taps(F&& f) const {
    for (int i = 0; i < Hc; ++i)
      for (int j = 0; j < Wc; ++j)
        for (int u = 0; u < k; ++u)
          for (int v = 0; v < k; ++v) {
            const int a = i * st + u - pad, b = j * st + v - pad;
            if (a < 0 || a >= H1 || b < 0 || b >= W1) continue;
            f((size_t(a) * W1 + b) * C1, (size_t(i) * Wc + j) * C2, u, v);
          }
  }
  // y (Hc x Wc x C2) += conv_K(x)   [or its adjoint: x += convᵀ(y)]
  void conv(const T* Kp, const T* x, T* y) const {
    for_taps([&](size_t xo, size_t yo, int u, int v) {
      const T* xp = x + xo;
      T* yp = y + yo;
      for (int c2 = 0; c2 < C2; ++c2) {
        const T* kp = Kp + (size_t(c2) * C1 * k + u) * k + v;
        T acc = 0;
        for (int c1 = 0; c1 < C1; ++c1) acc += kp[size_t(c1) * k * k] * xp[c1];
        yp[c2] += acc;
      }
    });
  }
  void conv_adj(const T* Kp, const T* y, T* x) const {
    for_taps([&](size_t xo, size_t yo, int u, int v) {
      T* xp = x + xo;
      const T* yp = y + yo;
      for (int c2 = 0; c2 < C2; ++c2)
        for (int c1 = 0; c1 < C1; ++c1) xp[c1] += Kp[((size_t(c2) * C1 + c1) * k + u) * k + v] * yp[c2];
    });
  }
  // Kbar += Σ y[i,j,c2] x[window, c1] (the kernel gradient of <y, conv_K(x)>)
  void conv_kgrad(const T* y, const T* x, T* Kb) const {
    for_taps([&](size_t xo, size_t yo, int u, int v) {
      const T* xp = x + xo;
      const T* yp = y + yo;
      for (int c2 = 0; c2 < C2; ++c2)
        for (int c1 = 0; c1 < C1; ++c1) Kb[((size_t(c2) * C1 + c1) * k + u) * k + v] += yp[c2] * xp[c1];
    });
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

}  // namespace nm::energy_cpu
