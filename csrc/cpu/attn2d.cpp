// The attn2d node: pre-norm blocks of local 2D window attention (RoPE, optional raster mask)
// and a per-cell MLP, `depth` untied blocks repeated `iterations` times with tied weights
// (extensions-math.md 2e; decisions in docs/extensions.md). Forward and exact backward.
#include "attn2d.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "../core/struct_node.h"
#include "neuromorph/errors.h"
#include "nn.h"
#include "simd.h"
#include "threads.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NM_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))  // see simd.cpp
#else
#define NM_CLONES
#endif
#define NM_INLINE inline __attribute__((always_inline))

namespace nm {
namespace attn2d {

Grid::Grid(int h, int w, int nheads, int hdim, int radius, bool mask)
    : H(h), W(w), heads(nheads), dh(hdim), r(radius), Wn((2 * radius + 1) * (2 * radius + 1)),
      raster(mask) {
  const int S = H * W, span = 2 * r + 1;
  nb.assign(size_t(S) * Wn, -1);
  for (int s = 0; s < S; ++s)
    for (int slot = 0; slot < Wn; ++slot) {
      const int i2 = s / W + slot / span - r, j2 = s % W + slot % span - r, s2 = i2 * W + j2;
      if (i2 >= 0 && i2 < H && j2 >= 0 && j2 < W && !(raster && s2 > s)) nb[size_t(s) * Wn + slot] = s2;
    }
  inb.assign(size_t(S) * Wn, -1);  // each (cell, slot) sees one cell: the inverse is a function
  for (int s = 0; s < S; ++s)
    for (int slot = 0; slot < Wn; ++slot)
      if (nb[size_t(s) * Wn + slot] >= 0) inb[size_t(nb[size_t(s) * Wn + slot]) * Wn + slot] = s;
  const int used = raster ? r * span + r + 1 : Wn;
  if ((heads == 2 || heads == 4 || heads == 8) && used <= 16) {
    const int spr = 8 / heads;
    fWv = (used + spr - 1) / spr * spr, fnvec = fWv / spr;
    fsrc.assign(size_t(S) * fWv, -1);
    fvalid.assign(size_t(S) * fnvec * 8, 0);
    for (int s = 0; s < S; ++s) {
      for (int w = 0; w < std::min(fWv, Wn); ++w) fsrc[size_t(s) * fWv + w] = nb[size_t(s) * Wn + w];
      for (int l = 0; l < fnvec * 8; ++l)
        fvalid[size_t(s) * fnvec * 8 + l] = fsrc[size_t(s) * fWv + l / heads] >= 0 ? -1 : 0;
    }
  }
  const int m = dh / 4, P = std::max(H, W);
  if (m == 0 || dh % 4) return;  // no RoPE for this head size
  cs.resize(size_t(P) * m);
  sn.resize(size_t(P) * m);
  for (int p = 0; p < P; ++p)
    for (int kk = 0; kk < m; ++kk) {
      const double ang = p * std::pow(10000.0, -double(kk) / m);
      cs[size_t(p) * m + kk] = std::cos(ang);
      sn[size_t(p) * m + kk] = std::sin(ang);
    }
  csf.assign(cs.begin(), cs.end());
  snf.assign(sn.begin(), sn.end());
  if (dh != 16) return;
  rope16.resize(size_t(S) * 32);
  for (int s = 0; s < S; ++s)
    for (int half = 0; half < 2; ++half) {
      const int pos = half ? s % W : s / W;
      float* t = rope16.data() + size_t(s) * 32 + half * 16;
      for (int l = 0; l < 8; ++l) {
        t[l] = csf[size_t(pos) * 4 + l % 4];
        t[8 + l] = l < 4 ? -snf[size_t(pos) * 4 + l] : snf[size_t(pos) * 4 + l - 4];
      }
    }
}

template <> const double* Grid::cosines<double>() const { return cs.data(); }
template <> const double* Grid::sines<double>() const { return sn.data(); }
template <> const float* Grid::cosines<float>() const { return csf.data(); }
template <> const float* Grid::sines<float>() const { return snf.data(); }

// a · b over n values in 8 independent lanes: vectorises without reassociating a float sum
template <class T>
NM_INLINE T dot(const T* a, const T* b, int n) {
  T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int c = 0;
  for (; c + 8 <= n; c += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[c + l] * b[c + l];
  T s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; c < n; ++c) s += a[c] * b[c];
  return s;
}

// Per query cell, slot by slot with the heads innermost: a window cell's row of q/k/v is read
// once per slot, front to back, and the heads' dot products are independent work. P holds
// (cell, slot, head): the layout of the vector kernels in attn2d_avx2.cpp.
template <class T>
NM_INLINE void window_forward_impl(const Grid& g, const T* q, const T* k, const T* v, int ld, T* P,
                                   T* out, int rows) {
  const int S = g.H * g.W, dh = g.dh, heads = g.heads, d = heads * dh, Wn = g.Wn;
  const T scale = T(1.0 / std::sqrt(double(dh)));
  for (int b = 0; b < rows; ++b)
    for (int s = 0; s < S; ++s) {
      const int* win = &g.nb[size_t(s) * Wn];
      const size_t cell = size_t(b) * S;
      const T* qs = q + (cell + s) * ld;
      T* p = P + (cell + s) * Wn * heads;  // p[w * heads + h]
      for (int w = 0; w < Wn; ++w) {
        if (win[w] < 0) continue;
        const T* ks = k + (cell + win[w]) * ld;
        for (int h = 0; h < heads; ++h) p[w * heads + h] = dot(qs + h * dh, ks + h * dh, dh) * scale;
      }
      for (int h = 0; h < heads; ++h) {
        T m = -INFINITY;
        for (int w = 0; w < Wn; ++w)
          if (win[w] >= 0) m = std::max(m, p[w * heads + h]);
        T sum = 0;
        for (int w = 0; w < Wn; ++w) {
          T& pw = p[w * heads + h];
          pw = win[w] < 0 ? T(0) : std::exp(pw - m);
          sum += pw;
        }
        const T inv = T(1) / sum;
        for (int w = 0; w < Wn; ++w) p[w * heads + h] *= inv;
      }
      T* o = out + (cell + s) * d;
      for (int c = 0; c < d; ++c) o[c] = 0;
      for (int w = 0; w < Wn; ++w) {
        if (win[w] < 0) continue;
        const T* vs = v + (cell + win[w]) * ld;
        for (int h = 0; h < heads; ++h) {
          const T pw = p[w * heads + h];
          T* oh = o + h * dh;
          const T* vh = vs + h * dh;
          for (int c = 0; c < dh; ++c) oh[c] += pw * vh[c];
        }
      }
    }
}

template <class T>
NM_INLINE void window_backward_impl(const Grid& g, const T* q, const T* k, const T* v, int ld,
                                    const T* P, const T* dout, T* dq, T* dk, T* dv, int rows) {
  const int S = g.H * g.W, dh = g.dh, heads = g.heads, d = heads * dh, Wn = g.Wn;
  const T scale = T(1.0 / std::sqrt(double(dh)));
  thread_local std::vector<T> buf;  // dout · v per (slot, head), then Σ_w p dp per head
  if (buf.size() < size_t(heads) * (Wn + 1)) buf.resize(size_t(heads) * (Wn + 1));
  T *dp = buf.data(), *dot_pv = buf.data() + size_t(heads) * Wn;
  for (size_t c = 0; c < size_t(rows) * S; ++c)  // the gradients are sums over the queries
    for (T* r : {dq + c * ld, dk + c * ld, dv + c * ld}) std::fill(r, r + d, T(0));
  for (int b = 0; b < rows; ++b)
    for (int s = 0; s < S; ++s) {
      const int* win = &g.nb[size_t(s) * Wn];
      const size_t cell = size_t(b) * S;
      const T* p = P + (cell + s) * Wn * heads;
      const T* go = dout + (cell + s) * d;
      for (int h = 0; h < heads; ++h) dot_pv[h] = 0;
      for (int w = 0; w < Wn; ++w) {
        if (win[w] < 0) continue;
        const size_t ko = (cell + win[w]) * ld;
        const T* vs = v + ko;
        T* dvs = dv + ko;
        for (int h = 0; h < heads; ++h) {
          const T pw = p[w * heads + h], g2 = dot(go + h * dh, vs + h * dh, dh);
          dp[w * heads + h] = g2;
          dot_pv[h] += pw * g2;
          T* dvh = dvs + h * dh;
          const T* goh = go + h * dh;
          for (int c = 0; c < dh; ++c) dvh[c] += pw * goh[c];
        }
      }
      const size_t qo = (cell + s) * ld;
      const T* qs = q + qo;
      T* dqs = dq + qo;
      for (int w = 0; w < Wn; ++w) {
        if (win[w] < 0) continue;
        const size_t ko = (cell + win[w]) * ld;
        const T* ks = k + ko;
        T* dks = dk + ko;
        for (int h = 0; h < heads; ++h) {
          const T ds = p[w * heads + h] * (dp[w * heads + h] - dot_pv[h]) * scale;
          T* dqh = dqs + h * dh;
          T* dkh = dks + h * dh;
          const T *kh = ks + h * dh, *qh = qs + h * dh;
          for (int c = 0; c < dh; ++c) {
            dqh[c] += ds * kh[c];
            dkh[c] += ds * qh[c];
          }
        }
      }
    }
}

// Float heads of a multiple of 8 features on an AVX2+FMA CPU take the vector kernels.
static bool vector_heads(const Grid& g) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  return g.dh % 8 == 0 && g.Wn <= kAvx2MaxSlots && simd::has_avx2();
#else
  (void)g;
  return false;
#endif
}

template <>
NM_CLONES void window_forward<float>(const Grid& g, const float* q, const float* k, const float* v,
                                     int ld, float* P, float* out, int rows) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))  // the kernels of attn2d_avx2.cpp
  if (vector_heads(g)) return window_forward_avx2(g, q, k, v, ld, P, out, rows);
#endif
  window_forward_impl(g, q, k, v, ld, P, out, rows);
}
template <>
void window_forward<double>(const Grid& g, const double* q, const double* k, const double* v,
                            int ld, double* P, double* out, int rows) {
  window_forward_impl(g, q, k, v, ld, P, out, rows);
}
template <>
NM_CLONES void window_backward<float>(const Grid& g, const float* q, const float* k, const float* v,
                                      int ld, const float* P, const float* dout, float* dq,
                                      float* dk, float* dv, int rows) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))  // the kernels of attn2d_avx2.cpp
  if (vector_heads(g)) return window_backward_avx2(g, q, k, v, ld, P, dout, dq, dk, dv, rows);
#endif
  window_backward_impl(g, q, k, v, ld, P, dout, dq, dk, dv, rows);
}
template <>
void window_backward<double>(const Grid& g, const double* q, const double* k, const double* v,
                             int ld, const double* P, const double* dout, double* dq, double* dk,
                             double* dv, int rows) {
  window_backward_impl(g, q, k, v, ld, P, dout, dq, dk, dv, rows);
}

// The pairs (lo[k], hi[k]) rotated by the angles of (c, s): four separate arrays (restrict),
// so the loop is whole vector operations.
template <int M, class T>
NM_INLINE void rotate(T* __restrict lo, T* __restrict hi, const T* __restrict c,
                      const T* __restrict s, T sign, int m) {
  for (int kk = 0; kk < (M ? M : m); ++kk) {
    const T a = lo[kk], bb = hi[kk], cc = c[kk], ss = sign * s[kk];
    lo[kk] = a * cc - bb * ss;
    hi[kk] = a * ss + bb * cc;
  }
}

// M = dh/4 as a compile-time constant for the common head sizes (the pair loop then becomes
// whole vector operations); 0: read from the grid.
template <int M, class T>
NM_INLINE void rope_impl(const Grid& g, T* x, int ld, int rows, bool inverse) {
  const int S = g.H * g.W, dh = g.dh, m = M ? M : dh / 4;
  const T sign = inverse ? T(-1) : T(1);
  const T *cosv = g.cosines<T>(), *sinv = g.sines<T>();
  for (int b = 0; b < rows; ++b)
    for (int s = 0; s < S; ++s) {
      const int pos[2] = {s / g.W, s % g.W};
      for (int h = 0; h < g.heads; ++h)
        for (int half = 0; half < 2; ++half) {
          T* e = x + (size_t(b) * S + s) * ld + h * dh + half * (dh / 2);
          rotate<M>(e, e + m, cosv + size_t(pos[half]) * m, sinv + size_t(pos[half]) * m, sign, m);
        }
    }
}

template <class T>
NM_INLINE void rope_dispatch(const Grid& g, T* x, int ld, int rows, bool inverse) {
  switch (g.dh / 4) {
    case 2: return rope_impl<2>(g, x, ld, rows, inverse);
    case 4: return rope_impl<4>(g, x, ld, rows, inverse);
    case 8: return rope_impl<8>(g, x, ld, rows, inverse);
    case 16: return rope_impl<16>(g, x, ld, rows, inverse);
    default: return rope_impl<0>(g, x, ld, rows, inverse);
  }
}

template <>
NM_CLONES void rope<float>(const Grid& g, float* x, int ld, int rows, bool inverse) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))  // the kernels of attn2d_avx2.cpp
  if (g.dh == 16 && vector_heads(g)) return rope16_avx2(g, x, ld, rows, inverse);
#endif
  rope_dispatch(g, x, ld, rows, inverse);
}
template <>
void rope<double>(const Grid& g, double* x, int ld, int rows, bool inverse) {
  rope_dispatch(g, x, ld, rows, inverse);
}

template <class T>
void qkv_forward(const Grid& g, T* qkv, bool rope_on, T* P, T* out, int rows) {
  const int d = g.heads * g.dh, ld = 3 * d;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if constexpr (std::is_same_v<T, float>)
    if (rope_on && vector_heads(g) && qkv_forward_flat_rope(g, qkv, P, out, rows)) return;
#endif
  if (rope_on) {
    rope(g, qkv, ld, rows, false);
    rope(g, qkv + d, ld, rows, false);
  }
  window_forward(g, qkv, qkv + d, qkv + 2 * d, ld, P, out, rows);
}

template <class T>
void qkv_backward(const Grid& g, const T* qkv, bool rope_on, const T* P, const T* dout, T* dqkv,
                  int rows) {
  const int d = g.heads * g.dh, ld = 3 * d;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if constexpr (std::is_same_v<T, float>)
    if (rope_on && vector_heads(g) && qkv_backward_flat_rope(g, qkv, P, dout, dqkv, rows)) return;
#endif
  window_backward(g, qkv, qkv + d, qkv + 2 * d, ld, P, dout, dqkv, dqkv + d, dqkv + 2 * d, rows);
  if (rope_on) {
    rope(g, dqkv, ld, rows, true);
    rope(g, dqkv + d, ld, rows, true);
  }
}

template void qkv_forward<float>(const Grid&, float*, bool, float*, float*, int);
template void qkv_forward<double>(const Grid&, double*, bool, double*, double*, int);
template void qkv_backward<float>(const Grid&, const float*, bool, const float*, const float*,
                                  float*, int);
template void qkv_backward<double>(const Grid&, const double*, bool, const double*, const double*,
                                   double*, int);

}  // namespace attn2d

namespace {

template <class T>
class Attn2dNode final : public StructNode<T> {
 public:
  explicit Attn2dNode(const IrNode& nd) : name_(nd.name), act_(nd.act), act_p_(nd.act_param) {
    const StructSpec& st = nd.st;
    H_ = st.shape.at(0), W_ = st.shape.at(1), S_ = H_ * W_;
    d_ = st.geti("dim"), heads_ = st.geti("heads"), dh_ = d_ / heads_;
    L_ = st.geti("depth"), I_ = st.geti("iterations");
    hid_ = st.geti("hidden");
    rope_ = st.geti("rope") != 0, proj_ = st.geti("proj") != 0;
    V_ = st.has("vocab") ? st.geti("vocab") : 0;
    grid_ = attn2d::Grid(H_, W_, heads_, dh_, st.geti("window"), st.str("mask") == "raster");
    if (d_ % heads_ || (rope_ && dh_ % 4) || (!proj_ && heads_ != 1))
      throw IRError("IR: inconsistent attn2d options at '" + name_ + "'");
  }

  void declare(const typename StructNode<T>::AddParam& add) override {
    auto param = [&](const std::string& name, std::vector<int64_t> shape) {
      size_t n = 1;
      for (int64_t e : shape) n *= size_t(e);
      return gs_.track(add(name, shape), n);
    };
    if (V_) emb_ = param(name_ + ".embed", {V_, d_});
    for (int l = 0; l < L_; ++l) {
      const std::string p = name_ + "." + std::to_string(l) + ".";
      Block b;
      b.g1 = param(p + "norm1.weight", {d_});
      b.b1 = param(p + "norm1.bias", {d_});
      if (proj_) {
        b.wq = param(p + "query.weight", {d_, d_});
        b.wk = param(p + "key.weight", {d_, d_});
        b.wv = param(p + "value.weight", {d_, d_});
        b.wo = param(p + "out.weight", {d_, d_});
        if (b.wk != b.wq + size_t(d_) * d_ || b.wv != b.wk + size_t(d_) * d_)
          throw IRError("attn2d: query/key/value weights must be consecutive");
      }
      b.g2 = param(p + "norm2.weight", {d_});
      b.b2 = param(p + "norm2.bias", {d_});
      b.w1 = param(p + "mlp1.weight", {hid_, d_});
      b.c1 = param(p + "mlp1.bias", {hid_});
      b.w2 = param(p + "mlp2.weight", {d_, hid_});
      b.c2 = param(p + "mlp2.bias", {d_});
      blk_.push_back(b);
    }
  }

  void allocate(int batch) override {
    const size_t sd = size_t(S_) * d_, C = size_t(L_) * I_;
    sv_.assign(C * kTensors, nn::Saved<T>{});
    for (size_t c = 0; c < C; ++c) {
      const size_t sizes[kTensors] = {sd, size_t(S_), 3 * sd, size_t(S_) * heads_ * grid_.Wn, sd,
                                      sd, size_t(S_), size_t(S_) * hid_, size_t(S_) * hid_};
      for (int t = 0; t < kTensors; ++t) sv_[c * kTensors + t].allocate(batch, sizes[t]);
    }
    for (auto* v : {&gx_, &u_, &du_, &dctx_}) v->assign(size_t(batch) * sd, T(0));
    dhid_.assign(size_t(batch) * S_ * hid_, T(0));
    dqkv_.assign(size_t(batch) * 3 * sd, T(0));
  }

  void init(Rng& rng, T* P) const override {
    auto uni = [&](size_t off, size_t n, int fan_in) {
      const double a = 1.0 / std::sqrt(double(fan_in));
      for (size_t i = 0; i < n; ++i) P[off + i] = T(rng.uniform(-a, a));
    };
    if (V_)
      for (size_t i = 0; i < size_t(V_) * d_; ++i) P[emb_ + i] = T(rng.normal());
    const size_t dd = size_t(d_) * d_;
    for (const Block& b : blk_) {
      std::fill(P + b.g1, P + b.g1 + d_, T(1));
      std::fill(P + b.b1, P + b.b1 + d_, T(0));
      if (proj_)
        for (size_t off : {b.wq, b.wk, b.wv, b.wo}) uni(off, dd, d_);
      std::fill(P + b.g2, P + b.g2 + d_, T(1));
      std::fill(P + b.b2, P + b.b2 + d_, T(0));
      uni(b.w1, size_t(hid_) * d_, d_);
      std::fill(P + b.c1, P + b.c1 + hid_, T(0));
      uni(b.w2, size_t(d_) * hid_, hid_);
      std::fill(P + b.c2, P + b.c2 + d_, T(0));
    }
  }

  void forward(const T* P, const T* x, T* y, int row, int rows, double* /*aux*/) override {
    if (V_)  // every id checked first, in order: the error names the first bad cell
      for (int s = 0; s < rows * S_; ++s) token(x, s);
    cpu::sample_chunks(rows, cpu::pool_threads(), this->probe_ != nullptr, [&](int b0, int n, int) {
      forward_rows(P, x + size_t(b0) * S_ * (V_ ? 1 : d_), y + size_t(b0) * S_ * d_, row + b0, b0, n);
    });
  }

  void backward(const T* P, T* G, const T* x, const T* dy, T* dx, int row, int rows,
                double /*aux_scale*/) override {
    const int threads = cpu::pool_threads();  // read once: the gradient copies are sized for it
    gs_.reserve(threads);
    const int n = cpu::sample_chunks(rows, threads, this->probe_ != nullptr, [&](int b0, int m, int chunk) {
      backward_rows(P, gs_.get(G, chunk), x + size_t(b0) * S_ * (V_ ? 1 : d_),
                    dy + size_t(b0) * S_ * d_, dx ? dx + size_t(b0) * S_ * d_ : nullptr, row + b0,
                    b0, m);
    });
    gs_.fold(G, n);
  }

 private:
  struct Block {
    size_t g1 = 0, b1 = 0, wq = 0, wk = 0, wv = 0, wo = 0, g2 = 0, b2 = 0, w1 = 0, c1 = 0, w2 = 0,
           c2 = 0;
  };
  // What one block application keeps for backward, in this order. QKV: per cell q | k | v (after
  // RoPE); D1: the MLP activation's derivative at its input (nn::act_forward_deriv).
  enum { kXhat1, kRstd1, kQKV, kP, kCtx, kXhat2, kRstd2, kD1, kA1, kTensors };
  T* sv(int c, int t, int row) { return sv_[size_t(c) * kTensors + t].at(row); }

  static std::string fmt(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
  }

  int token(const T* x, int s) const {
    const double v = std::nearbyint(double(x[s]));
    if (!(v >= 0 && v < V_))
      throw DataError("attn2d `" + name_ + "`: token id " + fmt(double(x[s])) +
                      " at cell " + std::to_string(s % S_) + " is outside the vocabulary 0.." +
                      std::to_string(V_ - 1));
    return int(v);
  }

  // nm.inspect (docs/inspect.md): the attention of block application c, (heads, cells, slots)
  // per sample, and the grid's windows.
  void record(int c, const T* A, int row, int rows) {
    Probe& pr = *this->probe_;
    const int Wn = grid_.Wn;
    const std::vector<int64_t> shape{int64_t(L_) * I_, heads_, S_, Wn};
    for (int b = 0; b < rows; ++b) {
      double* out = pr.sample("attention", shape, row + b) + size_t(c) * heads_ * S_ * Wn;
      for (int s = 0; s < S_; ++s)
        for (int h = 0; h < heads_; ++h)
          for (int w = 0; w < Wn; ++w)
            out[(size_t(h) * S_ + s) * Wn + w] = double(A[((size_t(b) * S_ + s) * Wn + w) * heads_ + h]);
    }
    double* win = pr.fixed("window", {S_, Wn}, 'i');
    double* mask = pr.fixed("mask", {S_, Wn}, 'b');
    for (size_t i = 0; i < grid_.nb.size(); ++i) win[i] = grid_.nb[i], mask[i] = grid_.nb[i] >= 0;
    double* hw = pr.fixed("grid", {2}, 'i');
    hw[0] = H_, hw[1] = W_;
  }

  // Samples row..row+rows-1 of the batch; scratch buffers from sample `at` (their own part).
  void forward_rows(const T* P, const T* x, T* y, int row, int at, int rows) {
    const int R = rows * S_;
    T* X = y;  // the blocks update the state in place, in the output
    if (V_) {
      for (int s = 0; s < R; ++s)
        std::memcpy(X + size_t(s) * d_, P + emb_ + size_t(token(x, s)) * d_, sizeof(T) * d_);
    } else {
      if (X != x) std::memcpy(X, x, sizeof(T) * R * d_);
    }
    for (int it = 0; it < I_; ++it)
      for (int l = 0; l < L_; ++l) block_forward(P, blk_[l], it * L_ + l, X, row, at, rows);
  }

  void backward_rows(const T* P, T* G, const T* x, const T* dy, T* dx, int row, int at, int rows) {
    const int R = rows * S_;
    T* gX = gx_.data() + size_t(at) * S_ * d_;
    std::memcpy(gX, dy, sizeof(T) * R * d_);
    for (int it = I_ - 1; it >= 0; --it)
      for (int l = L_ - 1; l >= 0; --l)  // the first block's input gradient: only for dx or ids
        block_backward(P, G, blk_[l], it * L_ + l, gX, row, at, rows, it + l > 0 || V_ || dx);
    if (V_) {
      for (int s = 0; s < R; ++s) {
        T* dE = G + emb_ + size_t(token(x, s)) * d_;
        for (int c = 0; c < d_; ++c) dE[c] += gX[size_t(s) * d_ + c];
      }
    } else if (dx) {
      for (size_t i = 0; i < size_t(R) * d_; ++i) dx[i] += gX[i];
    }
  }

  void block_forward(const T* P, const Block& b, int c, T* X, int row, int at, int rows) {
    const int R = rows * S_, d = d_;
    const size_t sd = size_t(at) * S_ * d;
    T* u = u_.data() + sd;
    T *qkv = sv(c, kQKV, row), *ctx = sv(c, kCtx, row), *A = sv(c, kP, row);
    nn::ln_forward(X, P + b.g1, P + b.b1, sv(c, kXhat1, row), sv(c, kRstd1, row), u, R, d, 1);
    if (proj_) {  // W_Q, W_K, W_V are consecutive in the arena: one (3d x d) product
      nn::linear_forward(u, P + b.wq, (const T*)nullptr, qkv, R, d, 3 * d);
    } else {
      for (int r = 0; r < R; ++r)
        for (int t = 0; t < 3; ++t) std::memcpy(qkv + (size_t(r) * 3 + t) * d, u + size_t(r) * d, sizeof(T) * d);
    }
    attn2d::qkv_forward(grid_, qkv, rope_, A, ctx, rows);
    if (this->probe_) record(c, A, row, rows);
    if (proj_) nn::linear_forward(ctx, P + b.wo, (const T*)nullptr, X, R, d, d, true);
    else for (size_t i = 0; i < size_t(R) * d; ++i) X[i] += ctx[i];
    nn::ln_forward(X, P + b.g2, P + b.b2, sv(c, kXhat2, row), sv(c, kRstd2, row), u, R, d, 1);
    T *d1 = sv(c, kD1, row), *a1 = sv(c, kA1, row);
    nn::linear_forward(u, P + b.w1, P + b.c1, d1, R, d, hid_);
    nn::act_forward_deriv(act_, act_p_, d1, a1, size_t(R) * hid_);
    nn::linear_forward(a1, P + b.w2, P + b.c2, X, R, hid_, d, true);
  }

  // need_dx false: nothing reads gX after this block (the node's first block application, its
  // input gradient unwanted); the Q/K/V product's input gradient is then never formed (below).
  void block_backward(const T* P, T* G, const Block& b, int c, T* gX, int row, int at, int rows,
                      bool need_dx) {
    const int R = rows * S_, d = d_;
    const size_t n = size_t(R) * d, sd = size_t(at) * S_ * d;
    T *u = u_.data() + sd, *du = du_.data() + sd, *dh = dhid_.data() + size_t(at) * S_ * hid_;
    // MLP: X += W2 act(W1 LN2(X) + c1) + c2
    nn::linear_backward(sv(c, kA1, row), P + b.w2, gX, G + b.w2, G + b.c2, dh, R, hid_, d, true);
    nn::act_backward_deriv_sums(sv(c, kD1, row), dh, R, hid_, G + b.c1);  // and c1's gradient
    nn::ln_apply(sv(c, kXhat2, row), P + b.g2, P + b.b2, u, R, d, 1);
    nn::linear_backward(u, P + b.w1, dh, G + b.w1, (T*)nullptr, du, R, d, hid_, true);
    nn::ln_backward(sv(c, kXhat2, row), sv(c, kRstd2, row), P + b.g2, du, gX, G + b.g2, G + b.b2,
                    R, d, 1);
    // attention: X += Wo LA(rope(Wq u), rope(Wk u), Wv u), u = LN1(X)
    T* dctx = dctx_.data() + sd;
    if (proj_) {
      nn::linear_backward(sv(c, kCtx, row), P + b.wo, gX, G + b.wo, (T*)nullptr, dctx, R, d, d, true);
    } else {
      std::memcpy(dctx, gX, sizeof(T) * n);
    }
    T* dqkv = dqkv_.data() + 3 * sd;  // written whole by window_backward
    const T* qkv = sv(c, kQKV, row);
    attn2d::qkv_backward(grid_, qkv, rope_, sv(c, kP, row), dctx, dqkv, rows);
    if (proj_ && !need_dx) {
      qkv_weight_and_norm_grads(P, G, b, sv(c, kXhat1, row), dqkv, R);
      return;
    }
    if (proj_) {
      nn::ln_apply(sv(c, kXhat1, row), P + b.g1, P + b.b1, u, R, d, 1);
      nn::linear_backward(u, P + b.wq, dqkv, G + b.wq, (T*)nullptr, du, R, d, 3 * d, true);
    } else {
      for (int r = 0; r < R; ++r) {
        const T* g3 = dqkv + size_t(r) * 3 * d;
        for (int t = 0; t < d; ++t) du[size_t(r) * d + t] = g3[t] + g3[d + t] + g3[2 * d + t];
      }
    }
    nn::ln_backward(sv(c, kXhat1, row), sv(c, kRstd1, row), P + b.g1, du, gX, G + b.g1, G + b.b1,
                    R, d, 1);
  }

  // The Q/K/V weights' and LN1's gradients without the input gradient du = dQKV W (what
  // ln_backward's gain and bias sums read): with M = dQKV^T xhat (3d x d) and cs the column
  // sums of dQKV, u = xhat g + b gives dW += M diag(g) + cs b^T, and LN1's sums
  // dg = sum_r du xhat = sum_j W[j, :] M[j, :], db = sum_r du = sum_j cs[j] W[j, :].
  // One product of the same size as dW's instead of two.
  void qkv_weight_and_norm_grads(const T* P, T* G, const Block& b, const T* xhat, const T* dqkv,
                                 int R) {
    const int d = d_, n3 = 3 * d_;
    thread_local std::vector<T> buf;
    if (buf.size() < size_t(n3) * (d + 1)) buf.resize(size_t(n3) * (d + 1));
    T *M = buf.data(), *cs = buf.data() + size_t(n3) * d;
    cpu::gemm<T>(true, false, n3, d, R, T(1), dqkv, n3, xhat, d, T(0), M, d);
    std::fill(cs, cs + n3, T(0));
    nn::col_sums(dqkv, R, n3, cs);
    const T *W = P + b.wq, *g1 = P + b.g1, *b1 = P + b.b1;
    T *dW = G + b.wq, *dg = G + b.g1, *db = G + b.b1;
    for (int j = 0; j < n3; ++j) {
      const T* Mj = M + size_t(j) * d;
      const T* Wj = W + size_t(j) * d;
      T* dWj = dW + size_t(j) * d;
      for (int c = 0; c < d; ++c) {
        dWj[c] += Mj[c] * g1[c] + cs[j] * b1[c];
        dg[c] += Wj[c] * Mj[c];
        db[c] += cs[j] * Wj[c];
      }
    }
  }

  std::string name_;
  Act act_;
  double act_p_;
  int H_, W_, S_, d_, heads_, dh_, L_, I_, hid_, V_;
  bool rope_, proj_;
  attn2d::Grid grid_{1, 1, 1, 4, 0, false};  // window neighbours and RoPE tables, built once
  size_t emb_ = 0;
  std::vector<Block> blk_;
  std::vector<nn::Saved<T>> sv_;
  std::vector<T> gx_, u_, du_, dctx_, dhid_, dqkv_;
  cpu::ChunkGrads<T> gs_;  // the chunks' weight gradients (cpu/threads.h)
};

}  // namespace

// The attn2d kind, registered for the plan and the CPU executor (core/struct_node.h).
NM_REGISTER_KIND(NodeKind::Attn2d, "attn2d", Attn2dNode);

}  // namespace nm
