// The attn2d node: pre-norm blocks of local 2D window attention (RoPE, optional raster mask)
// and a per-cell MLP, `depth` untied blocks repeated `iterations` times with tied weights
// (extensions-math.md 2e; decisions in docs/extensions.md). Forward and exact backward.
#include "attn2d.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "../core/struct_node.h"
#include "neuromorph/errors.h"
#include "nn.h"

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
}

template <class T>
NM_INLINE void window_forward_impl(const Grid& g, const T* q, const T* k, const T* v, T* P, T* out,
                                   int rows) {
  const int S = g.H * g.W, dh = g.dh, heads = g.heads, d = heads * dh, Wn = g.Wn;
  const T scale = T(1.0 / std::sqrt(double(dh)));
  for (int b = 0; b < rows; ++b)
    for (int s = 0; s < S; ++s) {
      const int* win = &g.nb[size_t(s) * Wn];
      for (int h = 0; h < heads; ++h) {
        const T* qs = q + (size_t(b) * S + s) * d + h * dh;
        T* p = P + ((size_t(b) * S + s) * heads + h) * Wn;
        T m = -INFINITY;
        for (int w = 0; w < Wn; ++w) {
          if (win[w] < 0) continue;
          const T* ks = k + (size_t(b) * S + win[w]) * d + h * dh;
          T acc = 0;
          for (int c = 0; c < dh; ++c) acc += qs[c] * ks[c];
          p[w] = acc * scale;
          m = std::max(m, p[w]);
        }
        T sum = 0;
        for (int w = 0; w < Wn; ++w) {
          p[w] = win[w] < 0 ? T(0) : std::exp(p[w] - m);
          sum += p[w];
        }
        const T inv = T(1) / sum;
        T* o = out + (size_t(b) * S + s) * d + h * dh;
        for (int c = 0; c < dh; ++c) o[c] = 0;
        for (int w = 0; w < Wn; ++w) {
          if (win[w] < 0) continue;
          p[w] *= inv;
          const T* vs = v + (size_t(b) * S + win[w]) * d + h * dh;
          for (int c = 0; c < dh; ++c) o[c] += p[w] * vs[c];
        }
      }
    }
}

template <class T>
NM_INLINE void window_backward_impl(const Grid& g, const T* q, const T* k, const T* v, const T* P,
                                    const T* dout, T* dq, T* dk, T* dv, int rows) {
  const int S = g.H * g.W, dh = g.dh, heads = g.heads, d = heads * dh, Wn = g.Wn;
  const T scale = T(1.0 / std::sqrt(double(dh)));
  thread_local std::vector<T> dp_buf;  // dout · v per slot; grows once, then reused
  if (dp_buf.size() < size_t(Wn)) dp_buf.resize(Wn);
  T* dp = dp_buf.data();
  for (int b = 0; b < rows; ++b)
    for (int s = 0; s < S; ++s) {
      const int* win = &g.nb[size_t(s) * Wn];
      for (int h = 0; h < heads; ++h) {
        const size_t qo = (size_t(b) * S + s) * d + h * dh;
        const T* p = P + ((size_t(b) * S + s) * heads + h) * Wn;
        const T* go = dout + qo;
        T dot = 0;
        for (int w = 0; w < Wn; ++w) {
          if (win[w] < 0) continue;
          const size_t ko = (size_t(b) * S + win[w]) * d + h * dh;
          T acc = 0;
          for (int c = 0; c < dh; ++c) {
            acc += go[c] * v[ko + c];
            dv[ko + c] += p[w] * go[c];
          }
          dp[w] = acc;
          dot += p[w] * acc;
        }
        for (int w = 0; w < Wn; ++w) {
          if (win[w] < 0) continue;
          const size_t ko = (size_t(b) * S + win[w]) * d + h * dh;
          const T ds = p[w] * (dp[w] - dot) * scale;
          for (int c = 0; c < dh; ++c) {
            dq[qo + c] += ds * k[ko + c];
            dk[ko + c] += ds * q[qo + c];
          }
        }
      }
    }
}

template <>
NM_CLONES void window_forward<float>(const Grid& g, const float* q, const float* k, const float* v,
                                     float* P, float* out, int rows) {
  window_forward_impl(g, q, k, v, P, out, rows);
}
template <>
void window_forward<double>(const Grid& g, const double* q, const double* k, const double* v,
                            double* P, double* out, int rows) {
  window_forward_impl(g, q, k, v, P, out, rows);
}
template <>
NM_CLONES void window_backward<float>(const Grid& g, const float* q, const float* k, const float* v,
                                      const float* P, const float* dout, float* dq, float* dk,
                                      float* dv, int rows) {
  window_backward_impl(g, q, k, v, P, dout, dq, dk, dv, rows);
}
template <>
void window_backward<double>(const Grid& g, const double* q, const double* k, const double* v,
                             const double* P, const double* dout, double* dq, double* dk,
                             double* dv, int rows) {
  window_backward_impl(g, q, k, v, P, dout, dq, dk, dv, rows);
}

template <class T>
void rope(const Grid& g, T* x, int rows, bool inverse) {
  const int S = g.H * g.W, dh = g.dh, d = g.heads * dh, m = dh / 4;
  const T sign = inverse ? T(-1) : T(1);
  for (int b = 0; b < rows; ++b)
    for (int s = 0; s < S; ++s) {
      const int pos[2] = {s / g.W, s % g.W};
      for (int h = 0; h < g.heads; ++h)
        for (int half = 0; half < 2; ++half) {
          T* e = x + (size_t(b) * S + s) * d + h * dh + half * (dh / 2);
          const double* c = &g.cs[size_t(pos[half]) * m];
          const double* si = &g.sn[size_t(pos[half]) * m];
          for (int kk = 0; kk < m; ++kk) {
            const T a = e[kk], bb = e[kk + m], cc = T(c[kk]), ss = sign * T(si[kk]);
            e[kk] = a * cc - bb * ss;
            e[kk + m] = a * ss + bb * cc;
          }
        }
    }
}

template void rope<float>(const Grid&, float*, int, bool);
template void rope<double>(const Grid&, double*, int, bool);

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
    if (V_) emb_ = add(name_ + ".embed", {V_, d_});
    for (int l = 0; l < L_; ++l) {
      const std::string p = name_ + "." + std::to_string(l) + ".";
      Block b;
      b.g1 = add(p + "norm1.weight", {d_});
      b.b1 = add(p + "norm1.bias", {d_});
      if (proj_) {
        b.wq = add(p + "query.weight", {d_, d_});
        b.wk = add(p + "key.weight", {d_, d_});
        b.wv = add(p + "value.weight", {d_, d_});
        b.wo = add(p + "out.weight", {d_, d_});
        if (b.wk != b.wq + size_t(d_) * d_ || b.wv != b.wk + size_t(d_) * d_)
          throw IRError("attn2d: query/key/value weights must be consecutive");
      }
      b.g2 = add(p + "norm2.weight", {d_});
      b.b2 = add(p + "norm2.bias", {d_});
      b.w1 = add(p + "mlp1.weight", {hid_, d_});
      b.c1 = add(p + "mlp1.bias", {hid_});
      b.w2 = add(p + "mlp2.weight", {d_, hid_});
      b.c2 = add(p + "mlp2.bias", {d_});
      blk_.push_back(b);
    }
  }

  void allocate(int batch) override {
    const size_t sd = size_t(S_) * d_, C = size_t(L_) * I_;
    sv_.assign(C * kTensors, nn::Saved<T>{});
    for (size_t c = 0; c < C; ++c) {
      const size_t sizes[kTensors] = {sd, size_t(S_), sd, sd, sd, size_t(S_) * heads_ * grid_.Wn, sd, sd,
                                      size_t(S_), size_t(S_) * hid_, size_t(S_) * hid_};
      for (int t = 0; t < kTensors; ++t) sv_[c * kTensors + t].allocate(batch, sizes[t]);
    }
    for (auto* v : {&x_, &gx_, &u_, &du_, &dq_, &dk_, &dv_, &dctx_}) v->assign(size_t(batch) * sd, T(0));
    dhid_.assign(size_t(batch) * S_ * hid_, T(0));
    if (proj_) qkv_.assign(size_t(batch) * S_ * 3 * d_, T(0));
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
    const int R = rows * S_;
    T* X = x_.data();
    if (V_) {
      for (int s = 0; s < R; ++s)
        std::memcpy(X + size_t(s) * d_, P + emb_ + size_t(token(x, s)) * d_, sizeof(T) * d_);
    } else {
      std::memcpy(X, x, sizeof(T) * R * d_);
    }
    for (int it = 0; it < I_; ++it)
      for (int l = 0; l < L_; ++l) block_forward(P, blk_[l], it * L_ + l, X, row, rows);
    std::memcpy(y, X, sizeof(T) * R * d_);
  }

  void backward(const T* P, T* G, const T* x, const T* dy, T* dx, int row, int rows,
                double /*aux_scale*/) override {
    const int R = rows * S_;
    T* gX = gx_.data();
    std::memcpy(gX, dy, sizeof(T) * R * d_);
    for (int it = I_ - 1; it >= 0; --it)
      for (int l = L_ - 1; l >= 0; --l) block_backward(P, G, blk_[l], it * L_ + l, gX, row, rows);
    if (V_) {
      for (int s = 0; s < R; ++s) {
        T* dE = G + emb_ + size_t(token(x, s)) * d_;
        for (int c = 0; c < d_; ++c) dE[c] += gX[size_t(s) * d_ + c];
      }
    } else if (dx) {
      for (size_t i = 0; i < size_t(R) * d_; ++i) dx[i] += gX[i];
    }
  }

 private:
  struct Block {
    size_t g1 = 0, b1 = 0, wq = 0, wk = 0, wv = 0, wo = 0, g2 = 0, b2 = 0, w1 = 0, c1 = 0, w2 = 0,
           c2 = 0;
  };
  // What one block application keeps for backward, in this order.
  enum { kXhat1, kRstd1, kQ, kK, kV, kP, kCtx, kXhat2, kRstd2, kZ1, kA1, kTensors };
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
            out[(size_t(h) * S_ + s) * Wn + w] = double(A[((size_t(b) * S_ + s) * heads_ + h) * Wn + w]);
    }
    double* win = pr.fixed("window", {S_, Wn}, 'i');
    double* mask = pr.fixed("mask", {S_, Wn}, 'b');
    for (size_t i = 0; i < grid_.nb.size(); ++i) win[i] = grid_.nb[i], mask[i] = grid_.nb[i] >= 0;
    double* hw = pr.fixed("grid", {2}, 'i');
    hw[0] = H_, hw[1] = W_;
  }

  // fn(first sample, count) over chunks of the `rows` samples, on the engine's worker threads
  // (cpu/threads.h); the chunks depend on the thread count only, and samples never mix.
  template <class F>
  void per_sample(int rows, F&& fn) {
    cpu::parallel_for(size_t(rows), 1, [&](int, size_t b0, size_t b1) { fn(b0, int(b1 - b0)); });
  }

  void block_forward(const T* P, const Block& b, int c, T* X, int row, int rows) {
    const int R = rows * S_;
    T* u = u_.data();
    T *q = sv(c, kQ, row), *k = sv(c, kK, row), *v = sv(c, kV, row), *ctx = sv(c, kCtx, row);
    nn::ln_forward(X, P + b.g1, P + b.b1, sv(c, kXhat1, row), sv(c, kRstd1, row), u, R, d_, 1);
    if (proj_) {  // W_Q, W_K, W_V are consecutive in the arena: one (3d x d) product
      T* qkv = qkv_.data();
      nn::linear_forward(u, P + b.wq, (const T*)nullptr, qkv, R, d_, 3 * d_);
      for (int r = 0; r < R; ++r) {
        std::memcpy(q + size_t(r) * d_, qkv + size_t(r) * 3 * d_, sizeof(T) * d_);
        std::memcpy(k + size_t(r) * d_, qkv + size_t(r) * 3 * d_ + d_, sizeof(T) * d_);
        std::memcpy(v + size_t(r) * d_, qkv + size_t(r) * 3 * d_ + 2 * d_, sizeof(T) * d_);
      }
    } else {
      for (T* t : {q, k, v}) std::memcpy(t, u, sizeof(T) * R * d_);
    }
    T* A = sv(c, kP, row);
    per_sample(rows, [&](size_t b0, int n) {  // samples are independent: chunks of samples
      const size_t o = b0 * S_ * d_;
      if (rope_) {
        attn2d::rope(grid_, q + o, n, false);
        attn2d::rope(grid_, k + o, n, false);
      }
      attn2d::window_forward(grid_, q + o, k + o, v + o, A + b0 * S_ * heads_ * grid_.Wn, ctx + o, n);
    });
    if (this->probe_) record(c, sv(c, kP, row), row, rows);
    const T* add = ctx;
    if (proj_) {
      nn::linear_forward(ctx, P + b.wo, (const T*)nullptr, u, R, d_, d_);
      add = u;
    }
    for (size_t i = 0; i < size_t(R) * d_; ++i) X[i] += add[i];
    nn::ln_forward(X, P + b.g2, P + b.b2, sv(c, kXhat2, row), sv(c, kRstd2, row), u, R, d_, 1);
    T *z1 = sv(c, kZ1, row), *a1 = sv(c, kA1, row);
    nn::linear_forward(u, P + b.w1, P + b.c1, z1, R, d_, hid_);
    nn::act_forward(act_, act_p_, z1, a1, size_t(R) * hid_);
    nn::linear_forward(a1, P + b.w2, P + b.c2, u, R, hid_, d_);
    for (size_t i = 0; i < size_t(R) * d_; ++i) X[i] += u[i];
  }

  void block_backward(const T* P, T* G, const Block& b, int c, T* gX, int row, int rows) {
    const int R = rows * S_;
    const size_t n = size_t(R) * d_;
    T *u = u_.data(), *du = du_.data(), *dh = dhid_.data();
    // MLP: X += W2 act(W1 LN2(X) + c1) + c2
    nn::linear_backward(sv(c, kA1, row), P + b.w2, gX, G + b.w2, G + b.c2, dh, R, hid_, d_, true);
    nn::act_backward(act_, act_p_, sv(c, kZ1, row), sv(c, kA1, row), dh, dh, size_t(R) * hid_);
    nn::ln_apply(sv(c, kXhat2, row), P + b.g2, P + b.b2, u, R, d_, 1);
    nn::linear_backward(u, P + b.w1, dh, G + b.w1, G + b.c1, du, R, d_, hid_, true);
    nn::ln_backward(sv(c, kXhat2, row), sv(c, kRstd2, row), P + b.g2, du, gX, G + b.g2, G + b.b2,
                    R, d_, 1);
    // attention: X += Wo LA(rope(Wq u), rope(Wk u), Wv u), u = LN1(X)
    T* dctx = dctx_.data();
    if (proj_) {
      nn::linear_backward(sv(c, kCtx, row), P + b.wo, gX, G + b.wo, (T*)nullptr, dctx, R, d_, d_, true);
    } else {
      std::memcpy(dctx, gX, sizeof(T) * n);
    }
    T *dq = dq_.data(), *dk = dk_.data(), *dv = dv_.data();
    for (T* t : {dq, dk, dv}) std::fill(t, t + n, T(0));
    const T *q = sv(c, kQ, row), *k = sv(c, kK, row), *v = sv(c, kV, row), *A = sv(c, kP, row);
    per_sample(rows, [&](size_t b0, int m) {  // a sample's gradients come from that sample only
      const size_t o = b0 * S_ * d_;
      attn2d::window_backward(grid_, q + o, k + o, v + o, A + b0 * S_ * heads_ * grid_.Wn, dctx + o,
                              dq + o, dk + o, dv + o, m);
      if (rope_) {
        attn2d::rope(grid_, dq + o, m, true);
        attn2d::rope(grid_, dk + o, m, true);
      }
    });
    if (proj_) {
      nn::ln_apply(sv(c, kXhat1, row), P + b.g1, P + b.b1, u, R, d_, 1);
      T* dqkv = qkv_.data();
      for (int r = 0; r < R; ++r) {
        std::memcpy(dqkv + size_t(r) * 3 * d_, dq + size_t(r) * d_, sizeof(T) * d_);
        std::memcpy(dqkv + size_t(r) * 3 * d_ + d_, dk + size_t(r) * d_, sizeof(T) * d_);
        std::memcpy(dqkv + size_t(r) * 3 * d_ + 2 * d_, dv + size_t(r) * d_, sizeof(T) * d_);
      }
      nn::linear_backward(u, P + b.wq, dqkv, G + b.wq, (T*)nullptr, du, R, d_, 3 * d_, true);
    } else {
      for (size_t i = 0; i < n; ++i) du[i] = dq[i] + dk[i] + dv[i];
    }
    nn::ln_backward(sv(c, kXhat1, row), sv(c, kRstd1, row), P + b.g1, du, gX, G + b.g1, G + b.b1,
                    R, d_, 1);
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
  std::vector<T> x_, gx_, u_, du_, dq_, dk_, dv_, dctx_, dhid_, qkv_;
};

}  // namespace

// The attn2d kind, registered for the plan and the CPU executor (core/struct_node.h).
NM_REGISTER_KIND(NodeKind::Attn2d, "attn2d", Attn2dNode);

}  // namespace nm
