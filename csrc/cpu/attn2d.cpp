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

namespace nm {
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
    fold(P);
    cpu::sample_chunks(rows, cpu::pool_threads(), this->probe_ != nullptr, [&](int b0, int n, int) {
      forward_rows(P, x + size_t(b0) * S_ * (V_ ? 1 : d_), y + size_t(b0) * S_ * d_, row + b0, b0, n);
    });
  }

  void backward(const T* P, T* G, const T* x, const T* dy, T* dx, int row, int rows,
                double /*aux_scale*/) override {
    const int threads = cpu::pool_threads();  // read once: the gradient copies are sized for it
    gs_.reserve(threads);
    fold(P);  // from the P given (the forward's, in training): never a stale or missing fold
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

  // Each block's LN2 folded into the MLP's first product (nn::fold_weights): W1 diag(g2)
  // (hid x d) then c1 + W1 b2 (hid), per block, formed from P by every forward and again by
  // every backward (from the P it is given). The normalised rows are never formed for the MLP.
  T* fw1(int l) { return fold_.data() + size_t(l) * hid_ * (d_ + 1); }
  T* fc1(int l) { return fw1(l) + size_t(hid_) * d_; }
  void fold(const T* P) {
    fold_.resize(size_t(L_) * hid_ * (d_ + 1));
    for (int l = 0; l < L_; ++l) {
      const Block& b = blk_[l];
      nn::fold_weights(P + b.w1, P + b.g2, P + b.b2, P + b.c1, fw1(l), fc1(l), hid_, d_);
    }
  }
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
    T* xhat2 = sv(c, kXhat2, row);
    nn::ln_forward(X, P + b.g2, P + b.b2, xhat2, sv(c, kRstd2, row), (T*)nullptr, R, d, 1);
    T *d1 = sv(c, kD1, row), *a1 = sv(c, kA1, row);
    nn::linear_forward(xhat2, (const T*)fw1(c % L_), (const T*)fc1(c % L_), d1, R, d, hid_);  // LN2 folded
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
    nn::linear_backward(sv(c, kA1, row), P + b.w2, gX, G + b.w2, G + b.c2, (T*)nullptr, R, hid_, d);
    thread_local std::vector<T> cs;  // c1's gradient: dh's column sums, which LN2's folded backward reads
    cs.assign(size_t(hid_), T(0));
    nn::linear_input_grad_gated(gX, P + b.w2, sv(c, kD1, row), dh, cs.data(), R, hid_, d);
    for (int j = 0; j < hid_; ++j) G[b.c1 + j] += cs[j];
    const T* xhat2 = sv(c, kXhat2, row);
    nn::fold_backward(P + b.w1, (const T*)fw1(c % L_), P + b.g2, P + b.b2, xhat2, dh, cs.data(), R,
                      d, hid_, G + b.w1, G + b.g2, G + b.b2, du);
    nn::ln_backward_hat(xhat2, sv(c, kRstd2, row), du, gX, R, d);
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
    if (proj_ && !need_dx) {  // the Q/K/V weights' and LN1's gradients without du = dQKV W:
      // u = xhat g1 + b1 read as LN1 folded (nn::fold_backward): one product of dW's size
      cs.assign(size_t(3 * d), T(0));
      nn::col_sums(dqkv, R, 3 * d, cs.data());
      nn::fold_backward(P + b.wq, (const T*)nullptr, P + b.g1, P + b.b1, sv(c, kXhat1, row), dqkv,
                        cs.data(), R, d, 3 * d, G + b.wq, G + b.g1, G + b.b1, (T*)nullptr);
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

  std::string name_;
  Act act_;
  double act_p_;
  int H_, W_, S_, d_, heads_, dh_, L_, I_, hid_, V_;
  bool rope_, proj_;
  attn2d::Grid grid_{1, 1, 1, 4, 0, false};  // window neighbours and RoPE tables, built once
  size_t emb_ = 0;
  std::vector<Block> blk_;
  std::vector<nn::Saved<T>> sv_;
  std::vector<T> gx_, u_, du_, dctx_, dhid_, dqkv_, fold_;
  cpu::ChunkGrads<T> gs_;  // the chunks' weight gradients (cpu/threads.h)
};

}  // namespace

// The attn2d kind, registered for the plan and the CPU executor (core/struct_node.h).
NM_REGISTER_KIND(NodeKind::Attn2d, "attn2d", Attn2dNode);

}  // namespace nm
