// The column node (Columnformer sheet, extensions-math.md 3e): N untied columns, attention
// between all columns with a learned N x N bias initialised from the sheet's geometry, a
// per-column MLP, `depth` steps with shared weights, and the wiring cost as an auxiliary loss.
// Forward and exact backward (BPTT over the steps). Decisions: docs/extensions.md.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "../core/struct_node.h"
#include "neuromorph/errors.h"
#include "nn.h"

namespace nm {

// Where the columns of a sheet sit (extensions-math.md 3e): grid (0, i, j), stack
// (layer * offset, i, j), sphere a Fibonacci lattice of area 1 per column; none: empty.
std::vector<std::array<double, 3>> column_positions(const StructSpec& st) {
  const std::string& geo = st.str("geometry");
  const double off = st.get("offset");
  std::vector<std::array<double, 3>> p;
  if (geo == "grid") {
    for (int i = 0; i < st.shape[0]; ++i)
      for (int j = 0; j < st.shape[1]; ++j) p.push_back({0.0, double(i), double(j)});
  } else if (geo == "stack") {
    for (int l = 0; l < st.shape[0]; ++l)
      for (int i = 0; i < st.shape[1]; ++i)
        for (int j = 0; j < st.shape[2]; ++j) p.push_back({l * off, double(i), double(j)});
  } else if (geo == "sphere") {  // Fibonacci lattice, radius so that each column has area 1
    const int N = st.shape[0];
    const double R = std::sqrt(N / (4 * M_PI)), golden = M_PI * (3 - std::sqrt(5.0));
    for (int n = 0; n < N; ++n) {
      const double z = 1 - (2.0 * n + 1) / N, rho = std::sqrt(std::max(0.0, 1 - z * z));
      p.push_back({R * rho * std::cos(n * golden), R * rho * std::sin(n * golden), R * z});
    }
  }
  return p;
}

// Distances between the columns of a sheet (N x N, row-major), extensions-math.md 3e.
std::vector<double> column_distances(const StructSpec& st) {
  const std::string& geo = st.str("geometry");
  const double off = st.get("offset");
  const std::vector<std::array<double, 3>> p = column_positions(st);
  int N = 1;
  for (int s : st.shape) N *= s;
  std::vector<double> D(size_t(N) * N, 0.0);
  if (p.empty()) return D;  // geometry none
  const double add = geo == "stack" ? 0.0 : off * off;
  for (int i = 0; i < N; ++i)
    for (int j = 0; j < N; ++j) {
      double s = add;
      for (int c = 0; c < 3; ++c) s += (p[i][c] - p[j][c]) * (p[i][c] - p[j][c]);
      D[size_t(i) * N + j] = std::sqrt(s);
    }
  return D;
}

namespace {

template <class T>
class ColumnNode final : public StructNode<T> {
 public:
  explicit ColumnNode(const IrNode& nd) : name_(nd.name), act_(nd.act), act_p_(nd.act_param) {
    const StructSpec& st = nd.st;
    N_ = 1;
    for (int s : st.shape) N_ *= s;
    d_ = st.geti("dim"), T_ = st.geti("depth"), kq_ = st.geti("qk"), m_ = st.geti("mlp");
    heads_ = st.geti("heads"), kh_ = kq_ / heads_, dvh_ = d_ / heads_;
    vproj_ = st.str("value") == "proj", skip_ = st.geti("skip") != 0;
    pos_ = st.geti("pos") != 0, inject_ = st.geti("inject") != 0;
    nin_ = st.geti("in"), nout_ = st.geti("out");
    sigma_ = st.get("sigma"), lambda_ = st.get("wiring");
    blk_ = std::max(1, std::min(N_, (1 << 16) / std::max(1, N_)));
    if (d_ % heads_ || kq_ % heads_ || nin_ > N_ || nout_ > N_ || lambda_ < 0)
      throw IRError("IR: inconsistent column options at '" + name_ + "'");
    D_ = column_distances(st);
    place_ = column_positions(st);
    shape_ = st.shape;
    const double pw = st.get("power");
    double mean = 0;
    wire_.resize(D_.size());
    for (size_t i = 0; i < D_.size(); ++i) mean += (wire_[i] = std::pow(D_[i], pw));
    mean /= double(D_.size());
    for (auto& w : wire_) w = mean > 0 ? w / mean : 0.0;
  }

  std::string aux_name() const override { return lambda_ > 0 ? name_ + ".wiring" : ""; }

  void declare(const typename StructNode<T>::AddParam& add) override {
    const int64_t N = N_, d = d_, kq = kq_, m = m_;
    const std::string p = name_ + ".";
    g1_ = add(p + "norm1.weight", {N, d});
    b1_ = add(p + "norm1.bias", {N, d});
    wq_ = add(p + "query.weight", {N, kq, d});
    bq_ = add(p + "query.bias", {N, kq});
    wk_ = add(p + "key.weight", {N, kq, d});
    if (vproj_) {
      wv_ = add(p + "value.weight", {N, d, d});
      wo_ = add(p + "out.weight", {N, d, d});
    }
    bias_ = add(p + "attn_bias", {N, N});
    g2_ = add(p + "norm2.weight", {N, d});
    b2_ = add(p + "norm2.bias", {N, d});
    w1_ = add(p + "mlp1.weight", {N, m, d});
    c1_ = add(p + "mlp1.bias", {N, m});
    w2_ = add(p + "mlp2.weight", {N, d, m});
    if (pos_) pe_ = add(p + "pos", {N, d});
  }

  void allocate(int batch) override {
    const size_t nd = size_t(N_) * d_;
    const size_t sizes[kTensors] = {nd, size_t(N_), nd, size_t(N_) * kq_, size_t(N_) * kq_,
                                    vproj_ ? nd : 0, size_t(heads_) * N_ * N_, vproj_ ? nd : 0, nd,
                                    size_t(N_), size_t(N_) * m_, size_t(N_) * m_};
    sv_.assign(size_t(T_) * kTensors, nn::Saved<T>{});
    for (int t = 0; t < T_; ++t)
      for (int k = 0; k < kTensors; ++k) sv_[size_t(t) * kTensors + k].allocate(batch, sizes[k]);
    for (auto* v : {&x_, &gx_, &u_, &du_, &da_, &do_}) v->assign(size_t(batch) * nd, T(0));
    for (auto* v : {&dq_, &dk_}) v->assign(size_t(batch) * N_ * kq_, T(0));
    dh_.assign(size_t(batch) * N_ * m_, T(0));
  }

  void init(Rng& rng, T* P) const override {
    auto uni = [&](size_t off, size_t n, int fan_in) {
      const double a = 1.0 / std::sqrt(double(fan_in));
      for (size_t i = 0; i < n; ++i) P[off + i] = T(rng.uniform(-a, a));
    };
    const size_t nd = size_t(N_) * d_;
    std::fill(P + g1_, P + g1_ + nd, T(1));
    std::fill(P + b1_, P + b1_ + nd, T(0));
    uni(wq_, nd * kq_, d_);
    std::fill(P + bq_, P + bq_ + size_t(N_) * kq_, T(0));
    uni(wk_, nd * kq_, d_);
    if (vproj_) {
      uni(wv_, nd * d_, d_);
      uni(wo_, nd * d_, d_);
    }
    for (size_t i = 0; i < D_.size(); ++i)
      P[bias_ + i] = sigma_ > 0 ? T(std::max(-D_[i] * D_[i] / (2 * sigma_ * sigma_), -8.0)) : T(0);
    std::fill(P + g2_, P + g2_ + nd, T(1));
    std::fill(P + b2_, P + b2_ + nd, T(0));
    uni(w1_, nd * m_, d_);
    std::fill(P + c1_, P + c1_ + size_t(N_) * m_, T(0));
    uni(w2_, nd * m_, m_);
    if (pos_)
      for (size_t i = 0; i < nd; ++i) {
        double v;
        do v = rng.normal(0.0, 0.02); while (std::abs(v) > 0.04);  // truncated at 2 sigma
        P[pe_ + i] = T(v);
      }
  }

  void forward(const T* P, const T* x, T* y, int row, int rows, double* aux) override {
    const size_t nd = size_t(N_) * d_, nin = size_t(nin_) * d_;
    T* X = x_.data();
    std::fill(X, X + rows * nd, T(0));
    for (int b = 0; b < rows; ++b) {
      std::memcpy(X + b * nd, x + b * nin, sizeof(T) * nin);
      if (pos_)
        for (size_t i = 0; i < nd; ++i) X[b * nd + i] += P[pe_ + i];
    }
    for (int t = 0; t < T_; ++t) {
      if (inject_ && t > 0)
        for (int b = 0; b < rows; ++b)
          for (size_t i = 0; i < nin; ++i) X[b * nd + i] += x[b * nin + i];
      step_forward(P, t, X, row, rows, aux);
    }
    if (this->probe_) record_response(X, row, rows);
    const size_t nout = size_t(nout_) * d_;
    for (int b = 0; b < rows; ++b) std::memcpy(y + b * nout, X + b * nd + (nd - nout), sizeof(T) * nout);
  }

  void backward(const T* P, T* G, const T* /*x*/, const T* dy, T* dx, int row, int rows,
                double aux_scale) override {
    const size_t nd = size_t(N_) * d_, nin = size_t(nin_) * d_, nout = size_t(nout_) * d_;
    T* gX = gx_.data();
    std::fill(gX, gX + rows * nd, T(0));
    for (int b = 0; b < rows; ++b) std::memcpy(gX + b * nd + (nd - nout), dy + b * nout, sizeof(T) * nout);
    for (int t = T_ - 1; t >= 0; --t) {
      step_backward(P, G, t, gX, row, rows, aux_scale);
      if (inject_ && t > 0 && dx)
        for (int b = 0; b < rows; ++b)
          for (size_t i = 0; i < nin; ++i) dx[b * nin + i] += gX[b * nd + i];
    }
    for (int b = 0; b < rows; ++b) {
      if (dx)
        for (size_t i = 0; i < nin; ++i) dx[b * nin + i] += gX[b * nd + i];
      if (pos_)
        for (size_t i = 0; i < nd; ++i) G[pe_ + i] += gX[b * nd + i];
    }
  }

 private:
  // kZ1 holds the MLP activation's derivative at its input after the forward (nn::act_forward_deriv)
  enum { kXhat1, kRstd1, kU1, kQ, kK, kV, kA, kCtx, kXhat2, kRstd2, kZ1, kA1, kTensors };
  T* sv(int t, int k, int row) { return sv_[size_t(t) * kTensors + k].at(row); }

  // nm.inspect (docs/inspect.md): attention between columns and the wiring terms per step and
  // head, each column's final state, and the sheet's geometry.
  void record_attention(int t, int h, const T* A, int r) {
    Probe& pr = *this->probe_;
    const size_t NN = size_t(N_) * N_;
    double* out = pr.sample("attention", {T_, heads_, N_, N_}, r) + (size_t(t) * heads_ + h) * NN;
    double c = 0;
    for (size_t i = 0; i < NN; ++i) out[i] = double(A[i]), c += wire_[i] * double(A[i]);
    pr.sample("wiring", {T_, heads_}, r)[t * heads_ + h] = lambda_ / (double(T_) * heads_ * N_) * c;
  }
  void record_response(const T* X, int row, int rows) {
    Probe& pr = *this->probe_;
    const size_t nd = size_t(N_) * d_;
    for (int b = 0; b < rows; ++b) {
      double* out = pr.sample("response", {N_, d_}, row + b);
      for (size_t i = 0; i < nd; ++i) out[i] = double(X[b * nd + i]);
    }
    double* pos = pr.fixed("position", {N_, 3});
    if (place_.empty()) {  // geometry none: the columns in index order along a line
      for (int n = 0; n < N_; ++n) pos[3 * n + 2] = n;
    } else {
      for (int n = 0; n < N_; ++n)
        for (int c = 0; c < 3; ++c) pos[3 * n + c] = place_[n][c];
    }
    double* sh = pr.fixed("shape", {int64_t(shape_.size())}, 'i');
    for (size_t i = 0; i < shape_.size(); ++i) sh[i] = shape_[i];
    std::copy(D_.begin(), D_.end(), pr.fixed("distance", {N_, N_}));
    std::copy(wire_.begin(), wire_.end(), pr.fixed("wire", {N_, N_}));
  }

  // fn(sample, head, chunk) for every (sample, head) pair of the `rows` samples: on the engine's
  // worker threads in contiguous chunks (cpu/threads.h) when the attention is large enough to
  // pay, each product then on its own thread; in order on the caller while a probe records.
  // `chunks`: how many the caller sized its per-chunk scratch for (the pool may be resized by
  // another thread in between).
  template <class F>
  void per_head(int rows, int chunks, F&& fn) {
    const size_t pairs = size_t(rows) * heads_;
    const size_t work = size_t(N_) * N_ * size_t(kh_ + dvh_ + 4);
    const size_t grain = this->probe_ ? pairs : std::max<size_t>(1, (size_t(1) << 20) / work);
    auto run = [&](int chunk, size_t i0, size_t i1) {
      for (size_t i = i0; i < i1; ++i) fn(int(i / heads_), int(i % heads_), chunk);
    };
    if (pairs < 2 * grain || chunks < 2) return run(0, 0, pairs);
    cpu::parallel_for(pairs, grain, run, chunks);  // each pair's products whole on its thread
  }

  void step_forward(const T* P, int t, T* X, int row, int rows, double* aux) {
    const int R = rows * N_;
    const size_t nd = size_t(N_) * d_, NN = size_t(N_) * N_;
    const T scale = T(1.0 / std::sqrt(double(kh_)));
    T *u = sv(t, kU1, row), *q = sv(t, kQ, row), *k = sv(t, kK, row), *A = sv(t, kA, row);
    nn::ln_forward(X, P + g1_, P + b1_, sv(t, kXhat1, row), sv(t, kRstd1, row), u, R, d_, N_);
    nn::columns_forward(u, P + wq_, P + bq_, q, rows, N_, d_, kq_);
    nn::columns_forward(u, P + wk_, (const T*)nullptr, k, rows, N_, d_, kq_);
    const T* v = u;
    if (vproj_) {
      nn::columns_forward(u, P + wv_, (const T*)nullptr, sv(t, kV, row), rows, N_, d_, d_);
      v = sv(t, kV, row);
    }
    T* ctx = vproj_ ? sv(t, kCtx, row) : do_.data();
    const double wscale = lambda_ / (double(T_) * heads_ * N_);
    std::vector<double>& wire = wpart_;  // each (sample, head)'s wiring sum, added in order
    wire.assign(size_t(rows) * heads_, 0.0);
    // per (sample, head), by blocks of query rows (blk_ rows of the N x N map, ~256 KB): scores,
    // bias and softmax in place in the saved map, then the block's context rows while the block
    // is in cache; the map is written to memory once
    per_head(rows, cpu::pool_threads(), [&](int b, int h, int) {
      T* Ab = A + (size_t(b) * heads_ + h) * NN;
      const T* qb = q + b * size_t(N_) * kq_ + h * kh_;
      const T* kb = k + b * size_t(N_) * kq_ + h * kh_;
      double c = 0;
      for (int i0 = 0; i0 < N_; i0 += blk_) {
        const int r = std::min(blk_, N_ - i0);
        T* S = Ab + size_t(i0) * N_;
        cpu::gemm<T>(false, true, r, N_, kh_, scale, qb + size_t(i0) * kq_, kq_, kb, kq_, T(0), S, N_);
        nn::softmax_rows_bias(S, P + bias_ + size_t(i0) * N_, r, N_);
        if (lambda_ > 0)
          for (size_t i = 0; i < size_t(r) * N_; ++i) c += wire_[size_t(i0) * N_ + i] * double(S[i]);
        cpu::gemm<T>(false, false, r, dvh_, N_, T(1), S, N_, v + b * nd + h * dvh_, d_, T(0),
                     ctx + b * nd + (size_t(i0) * d_ + h * dvh_), d_);
      }
      if (this->probe_) record_attention(t, h, Ab, row + b);
      wire[size_t(b) * heads_ + h] = c;
    });
    if (lambda_ > 0)
      for (int b = 0; b < rows; ++b)
        for (int h = 0; h < heads_; ++h) aux[b] += wscale * wire[size_t(b) * heads_ + h];
    const T* o = ctx;
    if (vproj_) {
      nn::columns_forward(ctx, P + wo_, (const T*)nullptr, da_.data(), rows, N_, d_, d_);
      o = da_.data();
    }
    for (size_t i = 0; i < rows * nd; ++i) X[i] = skip_ ? X[i] + o[i] : o[i];
    T *z1 = sv(t, kZ1, row), *a1 = sv(t, kA1, row), *u2 = du_.data();
    nn::ln_forward(X, P + g2_, P + b2_, sv(t, kXhat2, row), sv(t, kRstd2, row), u2, R, d_, N_);
    nn::columns_forward(u2, P + w1_, P + c1_, z1, rows, N_, d_, m_);
    nn::act_forward_deriv(act_, act_p_, z1, a1, size_t(R) * m_);  // z1 becomes act'(z1)
    nn::columns_forward(a1, P + w2_, (const T*)nullptr, u2, rows, N_, m_, d_);
    for (size_t i = 0; i < rows * nd; ++i) X[i] += u2[i];
  }

  void step_backward(const T* P, T* G, int t, T* gX, int row, int rows, double aux_scale) {
    const int R = rows * N_;
    const size_t nd = size_t(N_) * d_, NN = size_t(N_) * N_, n = rows * nd;
    const T scale = T(1.0 / std::sqrt(double(kh_)));
    T *dh = dh_.data(), *u2 = u_.data(), *du = du_.data();
    // MLP: X'' = X' + W2 act(W1 LN2(X') + c1)
    std::fill(dh, dh + size_t(R) * m_, T(0));
    nn::columns_backward(sv(t, kA1, row), P + w2_, gX, G + w2_, (T*)nullptr, dh, rows, N_, m_, d_);
    nn::act_backward_deriv(sv(t, kZ1, row), dh, dh, size_t(R) * m_);
    nn::ln_apply(sv(t, kXhat2, row), P + g2_, P + b2_, u2, R, d_, N_);
    std::fill(du, du + n, T(0));
    nn::columns_backward(u2, P + w1_, dh, G + w1_, G + c1_, du, rows, N_, d_, m_);
    nn::ln_backward(sv(t, kXhat2, row), sv(t, kRstd2, row), P + g2_, du, gX, G + g2_, G + b2_, R,
                    d_, N_);
    // X' = [X +] O(A V): the read-out's gradient, then the state's own (skip) or none
    T* dout = do_.data();
    std::memcpy(dout, gX, sizeof(T) * n);
    if (!skip_) std::fill(gX, gX + n, T(0));
    T* dctx = dout;
    if (vproj_) {
      dctx = da_.data();
      std::fill(dctx, dctx + n, T(0));
      nn::columns_backward(sv(t, kCtx, row), P + wo_, dout, G + wo_, (T*)nullptr, dctx, rows, N_, d_, d_);
    }
    const T* u = sv(t, kU1, row);
    const T *q = sv(t, kQ, row), *k = sv(t, kK, row), *A = sv(t, kA, row);
    const T* v = vproj_ ? sv(t, kV, row) : u;
    // dv lands in du directly when value = input; in u2 (then projected) otherwise
    std::fill(du, du + n, T(0));
    T* dv = vproj_ ? u2 : du;
    if (vproj_) std::fill(dv, dv + n, T(0));
    T *dq = dq_.data(), *dk = dk_.data();
    std::fill(dq, dq + size_t(rows) * N_ * kq_, T(0));
    std::fill(dk, dk + size_t(rows) * N_ * kq_, T(0));
    const T wscale = T(aux_scale * lambda_ / (double(T_) * heads_ * N_));
    // per chunk of (sample, head) pairs: its own scratch (a block of score gradients, dv and dk
    // transposed) and its own sum of the bias gradient, added to G in chunk order (the same
    // result for a fixed thread count). Each pair by blocks of query rows as in the forward;
    // dv and dk are summed transposed, (features, N) += (features, rows) x (rows, N), which
    // reads the saved map and the score gradients along their rows
    const int chunks = std::max(1, cpu::pool_threads());
    const size_t blkN = size_t(blk_) * N_, trN = size_t(dvh_ + kh_) * N_;
    if (ds_.size() < chunks * (blkN + trN)) ds_.assign(chunks * (blkN + trN), T(0));
    if (gbias_.size() < size_t(chunks) * NN) gbias_.assign(size_t(chunks) * NN, T(0));
    std::vector<char>& used = used_;
    used.assign(size_t(chunks), 0);
    per_head(rows, chunks, [&](int b, int h, int chunk) {
      T* dS = ds_.data() + chunk * (blkN + trN);
      T *dvT = dS + blkN, *dkT = dvT + size_t(dvh_) * N_;
      T* gb_bias = gbias_.data() + size_t(chunk) * NN;
      if (!used[size_t(chunk)]) std::fill(gb_bias, gb_bias + NN, T(0)), used[size_t(chunk)] = 1;
      std::fill(dvT, dvT + trN, T(0));
      const T* Ab = A + (size_t(b) * heads_ + h) * NN;
      const T* gb = dctx + b * nd + h * dvh_;
      const T* vb = v + b * nd + h * dvh_;
      const size_t qo = b * size_t(N_) * kq_ + h * kh_;
      for (int i0 = 0; i0 < N_; i0 += blk_) {
        const int r = std::min(blk_, N_ - i0);
        const T *Ai = Ab + size_t(i0) * N_, *gi = gb + size_t(i0) * d_;
        cpu::gemm<T>(false, true, r, N_, dvh_, T(1), gi, d_, vb, d_, T(0), dS, N_);
        cpu::gemm<T>(true, false, dvh_, N_, r, T(1), gi, d_, Ai, N_, T(1), dvT, N_);
        if (lambda_ > 0)
          for (size_t i = 0; i < size_t(r) * N_; ++i) dS[i] += wscale * T(wire_[size_t(i0) * N_ + i]);
        nn::softmax_rows_backward(Ai, dS, r, N_, gb_bias + size_t(i0) * N_);
        cpu::gemm<T>(false, false, r, kh_, N_, scale, dS, N_, k + qo, kq_, T(1),
                     dq + qo + size_t(i0) * kq_, kq_);
        cpu::gemm<T>(true, false, kh_, N_, r, scale, q + qo + size_t(i0) * kq_, kq_, dS, N_, T(1), dkT, N_);
      }
      for (int j = 0; j < N_; ++j) {
        T* dvj = dv + b * nd + size_t(j) * d_ + h * dvh_;
        for (int c = 0; c < dvh_; ++c) dvj[c] += dvT[size_t(c) * N_ + j];
        T* dkj = dk + qo + size_t(j) * kq_;
        for (int c = 0; c < kh_; ++c) dkj[c] += dkT[size_t(c) * N_ + j];
      }
    });
    for (int c = 0; c < chunks; ++c)
      if (used[size_t(c)])
        for (size_t i = 0; i < NN; ++i) G[bias_ + i] += gbias_[size_t(c) * NN + i];
    if (vproj_) nn::columns_backward(u, P + wv_, dv, G + wv_, (T*)nullptr, du, rows, N_, d_, d_);
    nn::columns_backward(u, P + wq_, dq, G + wq_, G + bq_, du, rows, N_, d_, kq_);
    nn::columns_backward(u, P + wk_, dk, G + wk_, (T*)nullptr, du, rows, N_, d_, kq_);
    nn::ln_backward(sv(t, kXhat1, row), sv(t, kRstd1, row), P + g1_, du, gX, G + g1_, G + b1_, R,
                    d_, N_);
  }

  std::string name_;
  Act act_;
  double act_p_;
  int N_, d_, T_, kq_, m_, heads_, kh_, dvh_, nin_, nout_;
  int blk_;  // query rows per block of the attention maps: ~64K entries (256 KB in float)
  bool vproj_, skip_, pos_, inject_;
  double sigma_, lambda_;
  std::vector<double> D_, wire_;
  std::vector<std::array<double, 3>> place_;  // for nm.inspect
  std::vector<int> shape_;
  size_t g1_ = 0, b1_ = 0, wq_ = 0, bq_ = 0, wk_ = 0, wv_ = 0, wo_ = 0, bias_ = 0, g2_ = 0, b2_ = 0,
         w1_ = 0, c1_ = 0, w2_ = 0, pe_ = 0;
  std::vector<nn::Saved<T>> sv_;
  std::vector<T> x_, gx_, u_, du_, da_, do_, dq_, dk_, dh_, ds_, gbias_;
  std::vector<double> wpart_;
  std::vector<char> used_;  // backward: which chunks summed a bias gradient
};

}  // namespace

// The column kind, registered for the plan and the CPU executor (core/struct_node.h).
NM_REGISTER_KIND(NodeKind::Column, "column", ColumnNode);

}  // namespace nm
