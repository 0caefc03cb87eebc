// The neuron node (Genesis section, extensions-math.md 4e): neurons with a dendrite router and
// soma voltage, an axon (attention for attentive neurons, a cell for plain ones) and synapse
// cells, an entry choice among the attentive neurons and a hand-off chain to neighbours whose
// voltage exceeds the threshold. Routing per sample (default), per batch (faithful) or per sample
// with voltage-scaled contributions (`gate`, differentiable router). Samples that sit at the same
// neuron at the same depth run together (one GEMM over their tokens). Decisions: docs/neuron.md.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <vector>

#include "../core/struct_node.h"
#include "neuromorph/errors.h"
#include "nn.h"

namespace nm {
namespace {

template <class T>
T sigm(T z) { return T(1) / (T(1) + std::exp(-z)); }

// f(h) = act(γ ⊙ LN(h Wᵀ)): the dendrite / axon / synapse "cell" (no biases)
struct Cell {
  size_t W = 0, g = 0;
  int in = 0, out = 0;
};

template <class T>
struct CellSave {  // one application of a cell to R rows
  std::vector<T> xhat, rstd, z, a;
  std::vector<T> y, mask;  // the output after dropout and its scaled keep-mask (training only)
  const T* out() const { return mask.empty() ? a.data() : y.data(); }
};

template <class T>
struct BodySave {  // one application of a neuron body to a group of samples
  std::vector<int> samples;
  int depth = 0;  // position of the neuron in the samples' chains
  std::vector<T> x, q, k, v, P, ctx, u, z;
  CellSave<T> fc;
  std::vector<CellSave<T>> syn;
};

struct Neuron {
  bool attentive = false;
  std::vector<Cell> dend, syn;
  Cell fc;
  size_t soma = 0, wq = 0, wk = 0, wv = 0, norm = 0;
  std::vector<int> nbrs;
};

template <class T>
class NeuronNode final : public StructNode<T> {
 public:
  explicit NeuronNode(const IrNode& nd) : name_(nd.name), act_(nd.act), act_p_(nd.act_param) {
    const StructSpec& st = nd.st;
    T_ = st.shape.at(0);
    D_ = st.geti("dim"), S_ = st.geti("sections"), Ds_ = D_ / S_;
    N_ = st.geti("neurons"), A_ = st.geti("attentive"), H_ = st.geti("heads");
    Dd_ = st.geti("dendrites"), Sy_ = st.geti("synapses"), K_ = st.geti("neighbors");
    theta_ = st.get("threshold"), seed_ = uint64_t(st.get("seed"));
    causal_ = st.geti("causal") != 0;
    dropout_ = st.has("dropout") ? st.get("dropout") : 0.0;
    const std::string& r = st.str("route");
    route_ = r == "batch" ? kBatch : r == "gate" ? kGate : kSample;
    if (D_ % S_ || A_ > N_ || K_ > N_ - 1 || (A_ && Ds_ % H_))
      throw IRError("IR: inconsistent neuron options at '" + name_ + "'");
  }

  void declare(const typename StructNode<T>::AddParam& add) override {
    const int64_t d = Ds_;
    auto cell = [&](const std::string& p, int in, int out) {
      Cell c;
      c.in = in, c.out = out;
      c.W = add(p + ".weight", {out, in});
      c.g = add(p + ".gamma", {out});
      cells_.push_back(c);
      return c;
    };
    Rng nb(seed_);  // neighbours: a Fisher-Yates draw over the other neurons, first K
    sec_.resize(S_);
    for (int s = 0; s < S_; ++s) {
      const std::string ps = name_ + (S_ > 1 ? ".s" + std::to_string(s) : std::string()) + ".";
      if (S_ > 1) {
        sec_[s].in_w = add(ps + "in.weight", {d, D_});
        sec_[s].in_b = add(ps + "in.bias", {d});
        linears_.push_back({sec_[s].in_w, size_t(D_), size_t(Ds_) * D_});
      }
      for (int n = 0; n < N_; ++n) {
        const std::string p = ps + "n" + std::to_string(n) + ".";
        Neuron u;
        u.attentive = n < A_;
        for (int j = 0; j < Dd_; ++j) u.dend.push_back(cell(p + "dend" + std::to_string(j), Ds_, Ds_));
        u.soma = add(p + "soma", {d});
        linears_.push_back({u.soma, size_t(Ds_), size_t(Ds_)});
        if (u.attentive) {
          u.wq = add(p + "query", {d, d});
          u.wk = add(p + "key", {d, d});
          u.wv = add(p + "value", {d, d});
          for (size_t w : {u.wq, u.wk, u.wv}) linears_.push_back({w, size_t(Ds_), size_t(Ds_) * Ds_});
        }
        u.fc = cell(p + "axon", Ds_, Ds_);
        for (int j = 0; j < Sy_; ++j) u.syn.push_back(cell(p + "syn" + std::to_string(j), Ds_, Ds_));
        u.norm = add(p + "norm", {d});
        gammas_.push_back({u.norm, size_t(Ds_)});
        std::vector<int> others;
        for (int m = 0; m < N_; ++m)
          if (m != n) others.push_back(m);
        for (int i = int(others.size()) - 1; i > 0; --i)
          std::swap(others[i], others[size_t(nb.next() % uint64_t(i + 1))]);
        u.nbrs.assign(others.begin(), others.begin() + K_);
        sec_[s].neurons.push_back(u);
      }
    }
    if (S_ > 1) {
      comb_w_ = add(name_ + ".combine.weight", {D_, D_});
      comb_b_ = add(name_ + ".combine.bias", {D_});
      comb_g_ = add(name_ + ".combine.norm.weight", {D_});
      comb_be_ = add(name_ + ".combine.norm.bias", {D_});
      linears_.push_back({comb_w_, size_t(D_), size_t(D_) * D_});
    }
  }

  void allocate(int batch) override {
    B_ = batch;
    zeros_.assign(std::max(D_, Ds_), T(0));
    counts_.assign(batch, 0.0);
    calls_.assign(batch, Call{});
    for (auto& c : calls_) c.sec.resize(S_);
  }

  void init(Rng& rng, T* P) const override {
    for (const Cell& c : cells_) {
      const double a = 1 / std::sqrt(double(c.in));
      for (size_t i = 0; i < size_t(c.in) * c.out; ++i) P[c.W + i] = T(rng.uniform(-a, a));
      std::fill(P + c.g, P + c.g + c.out, T(1));
    }
    for (const Linear& l : linears_) {
      const double a = 1 / std::sqrt(double(l.fan_in));
      for (size_t i = 0; i < l.n; ++i) P[l.off + i] = T(rng.uniform(-a, a));
    }
    for (const auto& g : gammas_) std::fill(P + g.first, P + g.first + g.second, T(1));
    drop_rng_.reseed(rng.next());  // last: the weights are the same with or without dropout
    if (S_ > 1) {
      for (const auto& s : sec_) std::fill(P + s.in_b, P + s.in_b + Ds_, T(0));
      std::fill(P + comb_b_, P + comb_b_ + D_, T(0));
      std::fill(P + comb_g_, P + comb_g_ + D_, T(1));
      std::fill(P + comb_be_, P + comb_be_ + D_, T(0));
    }
  }

  void forward(const T* P, const T* x, T* y, int row, int rows, double* /*aux*/) override {
    const size_t sd = size_t(T_) * Ds_, td = size_t(T_) * D_;
    std::fill(counts_.begin() + row, counts_.begin() + row + rows, 0.0);
    row_ = row, rows_ = rows;
    Call& call = calls_[row];
    if (S_ == 1) {
      section_forward(P, sec_[0], call.sec[0], x, y, row, rows);
      if (this->probe_) record(P, call, row, rows);
      return;
    }
    call.cat.assign(size_t(rows) * td, T(0));
    for (int s = 0; s < S_; ++s) {
      SecCall& sc = call.sec[s];
      sc.a.assign(size_t(rows) * sd, T(0));
      nn::linear_forward(x, P + sec_[s].in_w, P + sec_[s].in_b, sc.a.data(), rows * T_, D_, Ds_);
      sc.y.assign(size_t(rows) * sd, T(0));
      section_forward(P, sec_[s], sc, sc.a.data(), sc.y.data(), row, rows);
      for (int r = 0; r < rows * T_; ++r)
        std::memcpy(&call.cat[size_t(r) * D_ + s * Ds_], &sc.y[size_t(r) * Ds_], sizeof(T) * Ds_);
    }
    // combiner: act(LN_aff(W_c cat + b_c))
    call.comb_z.assign(size_t(rows) * td, T(0));
    nn::linear_forward(call.cat.data(), P + comb_w_, P + comb_b_, call.comb_z.data(), rows * T_, D_, D_);
    call.comb_xhat.assign(call.comb_z.size(), T(0));
    call.comb_rstd.assign(size_t(rows) * T_, T(0));
    call.comb_n.assign(call.comb_z.size(), T(0));
    nn::ln_forward(call.comb_z.data(), P + comb_g_, P + comb_be_, call.comb_xhat.data(), call.comb_rstd.data(),
                   call.comb_n.data(), rows * T_, D_, 1);
    nn::act_forward(act_, act_p_, call.comb_n.data(), y, size_t(rows) * td);
    call.comb_y.assign(y, y + size_t(rows) * td);
    if (this->probe_) record(P, call, row, rows);
  }

  void backward(const T* P, T* G, const T* x, const T* dy, T* dx, int row, int rows,
                double /*aux_scale*/) override {
    const size_t sd = size_t(T_) * Ds_, td = size_t(T_) * D_;
    Call& call = calls_[row];
    if (S_ == 1) {
      section_backward(P, G, sec_[0], call.sec[0], x, dy, dx, rows);
      return;
    }
    std::vector<T> dn(size_t(rows) * td), dz(size_t(rows) * td, T(0)), dcat(size_t(rows) * td, T(0));
    nn::act_backward(act_, act_p_, call.comb_n.data(), call.comb_y.data(), dy, dn.data(), dn.size());
    nn::ln_backward(call.comb_xhat.data(), call.comb_rstd.data(), P + comb_g_, dn.data(), dz.data(),
                    G + comb_g_, G + comb_be_, rows * T_, D_, 1);
    nn::linear_backward(call.cat.data(), P + comb_w_, dz.data(), G + comb_w_, G + comb_b_, dcat.data(),
                        rows * T_, D_, D_);
    for (int s = 0; s < S_; ++s) {
      SecCall& sc = call.sec[s];
      std::vector<T> dys(size_t(rows) * sd), das(size_t(rows) * sd, T(0));
      for (int r = 0; r < rows * T_; ++r)
        std::memcpy(&dys[size_t(r) * Ds_], &dcat[size_t(r) * D_ + s * Ds_], sizeof(T) * Ds_);
      section_backward(P, G, sec_[s], sc, sc.a.data(), dys.data(), das.data(), rows);
      nn::linear_backward(x, P + sec_[s].in_w, das.data(), G + sec_[s].in_w, G + sec_[s].in_b, dx,
                          rows * T_, D_, Ds_);
    }
  }

  void set_training(bool on) override { training_ = on; }

  // activation counts of the last forward, one per sample
  const std::vector<double>& counts() const { return counts_; }
  int last_row() const { return row_; }
  int last_rows() const { return rows_; }

 private:
  enum Route { kSample, kBatch, kGate };
  struct Section {
    size_t in_w = 0, in_b = 0;
    std::vector<Neuron> neurons;
  };
  // What one forward call of one section keeps for backward (recurrent models call the node
  // once per sample: one of these per call, indexed by the call's first row).
  struct SecCall {
    std::vector<T> a, y;  // split mode: the section's input and output
    // the routed forward of the last call
    std::vector<std::vector<int>> path;      // per sample: neurons by depth
    std::vector<std::vector<char>> fired;    // per sample, per depth: handed on to depth+1
    std::vector<std::vector<T>> volt;        // per sample, per depth: voltage of that depth's neuron at its input
    std::vector<std::vector<T>> z, o, in;    // per depth: (B, T, Ds)
    std::vector<BodySave<T>> run;
    size_t runs = 0;
    int depth = 0;
  };
  struct Call {
    std::vector<SecCall> sec;
    std::vector<T> cat, comb_z, comb_xhat, comb_rstd, comb_n, comb_y;
  };

  // nm.inspect (docs/inspect.md): each sample's route per section (neurons in visiting order,
  // -1 after the end), the voltage at each, the router's scores of the entry candidates, and
  // the neighbour lists.
  void record(const T* P, Call& call, int row, int rows) {
    Probe& pr = *this->probe_;
    const size_t sd = size_t(T_) * Ds_;
    const int nentry = A_ ? A_ : N_;
    for (int b = 0; b < rows; ++b) {
      double* route = pr.sample("route", {S_, N_}, row + b, 'i');
      double* volt = pr.sample("voltage", {S_, N_}, row + b);
      double* score = pr.sample("scores", {S_, nentry}, row + b);
      double* count = pr.sample("count", {}, row + b);
      *count = 0;
      for (int s = 0; s < S_; ++s) {
        const SecCall& sc = call.sec[s];
        const std::vector<int>& path = sc.path[b];
        for (int d = 0; d < N_; ++d) {
          const bool on = d < int(path.size());
          route[s * N_ + d] = on ? path[d] : -1;
          volt[s * N_ + d] = on && d < int(sc.volt[b].size()) ? double(sc.volt[b][d]) : NAN;
        }
        *count += double(route_ == kBatch ? sc.depth : int(path.size()));
        for (int n = 0; n < nentry; ++n)
          score[s * nentry + n] = double(voltage(P, sec_[s].neurons[n], &sc.in[0][b * sd]));
      }
    }
    double* nb = pr.fixed("neighbors", {S_, N_, K_}, 'i');
    double* att = pr.fixed("attentive", {N_}, 'b');
    for (int s = 0; s < S_; ++s)
      for (int n = 0; n < N_; ++n) {
        const std::vector<int>& v = sec_[s].neurons[n].nbrs;
        for (int k = 0; k < K_; ++k) nb[(size_t(s) * N_ + n) * K_ + k] = k < int(v.size()) ? v[k] : -1;
        att[n] = sec_[s].neurons[n].attentive;
      }
  }

  // --------------------------------------------------------------- cells
  // drop: this cell is in a neuron body, where `dropout` applies while training
  void cell_forward(const T* P, const Cell& c, const T* h, CellSave<T>& s, T* out, int R,
                    bool drop = false) {
    thread_local std::vector<T> pre;  // per thread, grown once: no allocation per call
    pre.resize(size_t(R) * c.out);
    nn::linear_forward(h, P + c.W, (const T*)nullptr, pre.data(), R, c.in, c.out);
    s.xhat.assign(pre.size(), T(0));
    s.rstd.assign(R, T(0));
    s.z.assign(pre.size(), T(0));
    nn::ln_forward(pre.data(), P + c.g, zeros_.data(), s.xhat.data(), s.rstd.data(), s.z.data(), R,
                   c.out, 1);
    s.a.assign(pre.size(), T(0));
    nn::act_forward(act_, act_p_, s.z.data(), s.a.data(), pre.size());
    s.mask.clear();
    if (drop && training_ && dropout_ > 0) {  // inverted dropout: keep with 1-p, scale by 1/(1-p)
      s.mask.resize(pre.size());
      s.y.resize(pre.size());
      const T keep = T(1 / (1 - dropout_));
      for (size_t i = 0; i < pre.size(); ++i) {
        s.mask[i] = drop_rng_.uniform() < dropout_ ? T(0) : keep;
        s.y[i] = s.a[i] * s.mask[i];
      }
    }
    if (out) std::memcpy(out, s.out(), sizeof(T) * pre.size());
  }
  void cell_backward(const T* P, T* G, const Cell& c, const T* h, const CellSave<T>& s, const T* da,
                     T* dh, int R) {
    const size_t n = size_t(R) * c.out;
    thread_local std::vector<T> dz, dpre, dbeta, dm;  // per thread, grown once
    dz.resize(n);
    dpre.assign(n, T(0));
    dbeta.assign(size_t(c.out), T(0));
    if (!s.mask.empty()) {
      dm.assign(da, da + n);
      for (size_t i = 0; i < n; ++i) dm[i] *= s.mask[i];
      da = dm.data();
    }
    nn::act_backward(act_, act_p_, s.z.data(), s.a.data(), da, dz.data(), n);
    nn::ln_backward(s.xhat.data(), s.rstd.data(), P + c.g, dz.data(), dpre.data(), G + c.g,
                    dbeta.data(), R, c.out, 1);
    nn::linear_backward(h, P + c.W, dpre.data(), G + c.W, (T*)nullptr, dh, R, c.in, c.out);
  }

  // --------------------------------------------------------------- voltage
  // v = σ(w · mean_t dend(x)) for one sample (x: T x Ds)
  T voltage(const T* P, const Neuron& u, const T* x) {
    thread_local std::vector<T> h, nxt;  // per thread, grown once (called per sample and neuron)
    thread_local CellSave<T> cs;
    h.assign(x, x + size_t(T_) * Ds_);
    nxt.resize(h.size());
    for (const Cell& c : u.dend) {
      cell_forward(P, c, h.data(), cs, nxt.data(), T_);
      h.swap(nxt);
    }
    T acc = 0;
    for (int c = 0; c < Ds_; ++c) {
      T m = 0;
      for (int t = 0; t < T_; ++t) m += h[size_t(t) * Ds_ + c];
      acc += P[u.soma + c] * m / T(T_);
    }
    return sigm(acc);
  }
  // gradient of v·vbar for one sample (gate mode): into G (dendrites, soma) and dx
  void voltage_backward(const T* P, T* G, const Neuron& u, const T* x, T vbar, T* dx) {
    std::vector<std::vector<T>> hs{std::vector<T>(x, x + size_t(T_) * Ds_)};
    std::vector<CellSave<T>> saves(u.dend.size());
    for (size_t j = 0; j < u.dend.size(); ++j) {
      hs.emplace_back(size_t(T_) * Ds_);
      cell_forward(P, u.dend[j], hs[j].data(), saves[j], hs[j + 1].data(), T_);
    }
    const std::vector<T>& h = hs.back();
    T acc = 0;
    std::vector<T> m(Ds_, T(0));
    for (int c = 0; c < Ds_; ++c) {
      for (int t = 0; t < T_; ++t) m[c] += h[size_t(t) * Ds_ + c];
      m[c] /= T(T_);
      acc += P[u.soma + c] * m[c];
    }
    const T v = sigm(acc), dpre = vbar * v * (T(1) - v);
    std::vector<T> dh(size_t(T_) * Ds_);
    for (int c = 0; c < Ds_; ++c) {
      G[u.soma + c] += dpre * m[c];
      for (int t = 0; t < T_; ++t) dh[size_t(t) * Ds_ + c] = dpre * P[u.soma + c] / T(T_);
    }
    for (int j = int(u.dend.size()) - 1; j >= 0; --j) {
      std::vector<T> dprev(size_t(T_) * Ds_, T(0));
      cell_backward(P, G, u.dend[j], hs[j].data(), saves[j], dh.data(), dprev.data(), T_);
      dh.swap(dprev);
    }
    for (size_t i = 0; i < dh.size(); ++i) dx[i] += dh[i];
  }

  // --------------------------------------------------------------- body: z = u + syn(u), u = x + axon(x)
  void body_forward(const T* P, const Neuron& u, BodySave<T>& s, int rows) {
    const int R = rows * T_;
    const size_t n = size_t(R) * Ds_;
    const T* ax_in = s.x.data();
    if (u.attentive) {
      for (auto* t : {&s.q, &s.k, &s.v, &s.ctx}) t->assign(n, T(0));
      nn::linear_forward(s.x.data(), P + u.wq, (const T*)nullptr, s.q.data(), R, Ds_, Ds_);
      nn::linear_forward(s.x.data(), P + u.wk, (const T*)nullptr, s.k.data(), R, Ds_, Ds_);
      nn::linear_forward(s.x.data(), P + u.wv, (const T*)nullptr, s.v.data(), R, Ds_, Ds_);
      attention_forward(s, rows);
      ax_in = s.ctx.data();
    }
    s.u.assign(n, T(0));
    cell_forward(P, u.fc, ax_in, s.fc, s.u.data(), R, true);
    for (size_t i = 0; i < n; ++i) s.u[i] += s.x[i];
    s.syn.resize(u.syn.size());
    const T* h = s.u.data();
    for (size_t j = 0; j < u.syn.size(); ++j) {
      cell_forward(P, u.syn[j], h, s.syn[j], nullptr, R, true);
      h = s.syn[j].out();
    }
    s.z.assign(s.u.begin(), s.u.end());
    if (!u.syn.empty())
      for (size_t i = 0; i < n; ++i) s.z[i] += h[i];
  }
  void body_backward(const T* P, T* G, const Neuron& u, const BodySave<T>& s, const T* dz, T* dx,
                     int rows) {
    const int R = rows * T_;
    const size_t n = size_t(R) * Ds_;
    std::vector<T> du(dz, dz + n), dh(dz, dz + n);
    for (int j = int(u.syn.size()) - 1; j >= 0; --j) {
      std::vector<T> dprev(n, T(0));
      cell_backward(P, G, u.syn[j], j ? s.syn[j - 1].out() : s.u.data(), s.syn[j], dh.data(),
                    dprev.data(), R);
      dh.swap(dprev);
    }
    if (!u.syn.empty())
      for (size_t i = 0; i < n; ++i) du[i] += dh[i];
    for (size_t i = 0; i < n; ++i) dx[i] += du[i];  // u = x + axon(x)
    if (!u.attentive) {
      cell_backward(P, G, u.fc, s.x.data(), s.fc, du.data(), dx, R);
      return;
    }
    std::vector<T> dctx(n, T(0)), dq(n, T(0)), dk(n, T(0)), dv(n, T(0));
    cell_backward(P, G, u.fc, s.ctx.data(), s.fc, du.data(), dctx.data(), R);
    attention_backward(s, dctx.data(), dq.data(), dk.data(), dv.data(), rows);
    nn::linear_backward(s.x.data(), P + u.wq, dq.data(), G + u.wq, (T*)nullptr, dx, R, Ds_, Ds_);
    nn::linear_backward(s.x.data(), P + u.wk, dk.data(), G + u.wk, (T*)nullptr, dx, R, Ds_, Ds_);
    nn::linear_backward(s.x.data(), P + u.wv, dv.data(), G + u.wv, (T*)nullptr, dx, R, Ds_, Ds_);
  }

  // multi-head attention over the T tokens of each sample (scale dh^-1/2, optional causal mask)
  void attention_forward(BodySave<T>& s, int rows) {
    const int dh = Ds_ / H_;
    const T scale = T(1 / std::sqrt(double(dh)));
    s.P.assign(size_t(rows) * H_ * T_ * T_, T(0));
    for (int b = 0; b < rows; ++b)
      for (int h = 0; h < H_; ++h) {
        const size_t off = size_t(b) * T_ * Ds_ + h * dh;
        T* Pm = &s.P[(size_t(b) * H_ + h) * T_ * T_];
        cpu::gemm<T>(false, true, T_, T_, dh, scale, &s.q[off], Ds_, &s.k[off], Ds_, T(0), Pm, T_);
        if (causal_)
          for (int i = 0; i < T_; ++i)
            for (int j = i + 1; j < T_; ++j) Pm[size_t(i) * T_ + j] = -INFINITY;
        nn::softmax_rows(Pm, T_, T_);
        cpu::gemm<T>(false, false, T_, dh, T_, T(1), Pm, T_, &s.v[off], Ds_, T(0), &s.ctx[off], Ds_);
      }
  }
  void attention_backward(const BodySave<T>& s, const T* dctx, T* dq, T* dk, T* dv, int rows) {
    const int dh = Ds_ / H_;
    const T scale = T(1 / std::sqrt(double(dh)));
    std::vector<T> dP(size_t(T_) * T_);
    for (int b = 0; b < rows; ++b)
      for (int h = 0; h < H_; ++h) {
        const size_t off = size_t(b) * T_ * Ds_ + h * dh;
        const T* Pm = &s.P[(size_t(b) * H_ + h) * T_ * T_];
        cpu::gemm<T>(false, true, T_, T_, dh, T(1), dctx + off, Ds_, &s.v[off], Ds_, T(0), dP.data(), T_);
        cpu::gemm<T>(true, false, T_, dh, T_, T(1), Pm, T_, dctx + off, Ds_, T(1), dv + off, Ds_);
        nn::softmax_rows_backward(Pm, dP.data(), T_, T_);
        cpu::gemm<T>(false, false, T_, dh, T_, scale, dP.data(), T_, &s.k[off], Ds_, T(1), dq + off, Ds_);
        cpu::gemm<T>(true, false, T_, dh, T_, scale, dP.data(), T_, &s.q[off], Ds_, T(1), dk + off, Ds_);
      }
  }

  // --------------------------------------------------------------- the routed section
  BodySave<T>& new_run(SecCall& sc) {
    if (sc.runs == sc.run.size()) sc.run.emplace_back();
    return sc.run[sc.runs++];
  }

  void section_forward(const T* P, const Section& sec, SecCall& sc, const T* x, T* y, int row,
                       int rows) {
    const size_t sd = size_t(T_) * Ds_;
    sc.path.assign(rows, {});
    sc.fired.assign(rows, {});
    sc.volt.assign(rows, {});
    sc.z.clear();
    sc.o.clear();
    sc.in.assign(1, std::vector<T>(x, x + rows * sd));
    sc.runs = 0;
    std::vector<std::vector<char>> active(rows, std::vector<char>(N_, 0));
    // entry: argmax voltage over the attentive neurons (all, when there are none)
    const int nentry = A_ ? A_ : N_;
    std::vector<int> entry(rows, 0);
    std::vector<T> ventry(rows);
    if (route_ == kBatch) {
      int best = 0;
      T bs = -1;
      for (int n = 0; n < nentry; ++n) {
        T m = 0;
        for (int b = 0; b < rows; ++b) m += voltage(P, sec.neurons[n], x + b * sd);
        if (m / T(rows) > bs) bs = m / T(rows), best = n;
      }
      std::fill(entry.begin(), entry.end(), best);
    } else {
      for (int b = 0; b < rows; ++b) {
        T bs = -1;
        for (int n = 0; n < nentry; ++n) {
          const T v = voltage(P, sec.neurons[n], x + b * sd);
          if (v > bs) bs = v, entry[b] = n;
        }
        ventry[b] = bs;
      }
    }
    std::vector<int> cur = entry;  // -1: the sample's chain has ended
    for (int b = 0; b < rows; ++b) sc.volt[b].push_back(ventry[b]);
    int k = 0;
    for (;; ++k) {
      sc.z.emplace_back(rows * sd, T(0));
      // group the samples at each neuron; one body run per group
      std::map<int, std::vector<int>> groups;
      for (int b = 0; b < rows; ++b)
        if (cur[b] >= 0) groups[cur[b]].push_back(b);
      if (groups.empty()) break;
      for (auto& [n, members] : groups) {
        BodySave<T>& s = new_run(sc);
        s.samples = members;
        s.depth = k;
        s.x.resize(members.size() * sd);
        for (size_t i = 0; i < members.size(); ++i)
          std::memcpy(&s.x[i * sd], &sc.in[k][members[i] * sd], sizeof(T) * sd);
        body_forward(P, sec.neurons[n], s, int(members.size()));
        for (size_t i = 0; i < members.size(); ++i)
          std::memcpy(&sc.z[k][members[i] * sd], &s.z[i * sd], sizeof(T) * sd);
      }
      for (int b = 0; b < rows; ++b)
        if (cur[b] >= 0) {
          active[b][cur[b]] = 1;
          sc.path[b].push_back(cur[b]);
        }
      sc.in.emplace_back(rows * sd, T(0));
      std::vector<int> next(rows, -1);
      if (route_ == kBatch) hop_batch(P, sec, sc, active, cur, next, k, rows);
      else hop_sample(P, sec, sc, active, cur, next, k, rows);
      cur = next;
    }
    sc.depth = k;
    // outputs from the deepest level up: o_k = z_k + s·γ ⊙ LN(o_{k+1}) where the sample fired
    sc.o.assign(k, std::vector<T>(rows * sd, T(0)));
    for (int d = k - 1; d >= 0; --d)
      for (int b = 0; b < rows; ++b) {
        if (int(sc.path[b].size()) <= d) continue;
        T* o = &sc.o[d][b * sd];
        std::memcpy(o, &sc.z[d][b * sd], sizeof(T) * sd);
        if (!sc.fired[b][d]) continue;
        std::vector<T> xh(sd), rs(T_), ln(sd);
        const Neuron& u = sec.neurons[sc.path[b][d]];
        nn::ln_forward(&sc.o[d + 1][b * sd], P + u.norm, zeros_.data(), xh.data(), rs.data(), ln.data(),
                       T_, Ds_, 1);
        const T scale = route_ == kGate ? sc.volt[b][d + 1] : T(1);
        for (size_t i = 0; i < sd; ++i) o[i] += scale * ln[i];
      }
    for (int b = 0; b < rows; ++b) {
      counts_[row + b] += double(route_ == kBatch ? k : int(sc.path[b].size()));
      T* yb = y + b * sd;
      const T* o0 = &sc.o[0][b * sd];
      const T* xb = x + b * sd;
      if (route_ == kGate)
        for (size_t i = 0; i < sd; ++i) yb[i] = xb[i] + ventry[b] * (o0[i] - xb[i]);
      else
        std::memcpy(yb, o0, sizeof(T) * sd);
    }
  }

  // per-sample hand-off: the free non-attentive neighbour of highest voltage at z, if it fires
  void hop_sample(const T* P, const Section& sec, SecCall& sc, std::vector<std::vector<char>>& active,
                  const std::vector<int>& cur, std::vector<int>& next, int k, int rows) {
    const size_t sd = size_t(T_) * Ds_;
    for (int b = 0; b < rows; ++b) {
      if (cur[b] < 0) continue;
      int best = -1;
      T bv = -1;
      for (int m : sec.neurons[cur[b]].nbrs) {
        if (active[b][m] || sec.neurons[m].attentive) continue;
        const T v = voltage(P, sec.neurons[m], &sc.z[k][b * sd]);
        if (v > bv) bv = v, best = m;
      }
      const bool fire = best >= 0 && bv > T(theta_);
      sc.fired[b].push_back(fire);
      if (fire) {
        next[b] = best;
        sc.volt[b].push_back(bv);
        std::memcpy(&sc.in[k + 1][b * sd], &sc.z[k][b * sd], sizeof(T) * sd);
      }
    }
  }

  // faithful per-batch hand-off: the neighbour of highest batch-mean voltage; samples that do not
  // fire continue as zeros (their output is their z)
  void hop_batch(const T* P, const Section& sec, SecCall& sc, std::vector<std::vector<char>>& active,
                 const std::vector<int>& cur, std::vector<int>& next, int k, int rows) {
    const size_t sd = size_t(T_) * Ds_;
    const int n = cur[0];
    int best = -1;
    T bs = -1;
    std::vector<T> vb(rows), v(rows);
    for (int m : sec.neurons[n].nbrs) {
      if (active[0][m] || sec.neurons[m].attentive) continue;
      T mean = 0;
      for (int b = 0; b < rows; ++b) mean += (v[b] = voltage(P, sec.neurons[m], &sc.z[k][b * sd]));
      if (mean / T(rows) > bs) bs = mean / T(rows), best = m, vb = v;
    }
    bool any = false;
    for (int b = 0; b < rows; ++b) {
      const bool fire = best >= 0 && vb[b] > T(theta_);
      sc.fired[b].push_back(fire);
      any = any || fire;
    }
    if (!any) {
      for (int b = 0; b < rows; ++b) sc.fired[b].back() = 0;
      return;
    }
    for (int b = 0; b < rows; ++b) {
      next[b] = best;
      sc.volt[b].push_back(vb[b]);
      if (sc.fired[b].back()) std::memcpy(&sc.in[k + 1][b * sd], &sc.z[k][b * sd], sizeof(T) * sd);
    }
  }

  void section_backward(const T* P, T* G, const Section& sec, SecCall& sc, const T* x, const T* dy,
                        T* dx, int rows) {
    const size_t sd = size_t(T_) * Ds_;
    const int K = sc.depth;
    std::vector<std::vector<T>> dz(K, std::vector<T>(rows * sd, T(0)));
    std::vector<T> dob(rows * sd);
    for (int b = 0; b < rows; ++b) {
      const size_t off = b * sd;
      const Neuron& e = sec.neurons[sc.path[b][0]];
      if (route_ == kGate) {  // y = x + v_e (o_0 − x)
        const T ve = sc.volt[b][0];
        T vbar = 0;
        for (size_t i = 0; i < sd; ++i) {
          vbar += dy[off + i] * (sc.o[0][off + i] - x[off + i]);
          dob[i] = ve * dy[off + i];
          if (dx) dx[off + i] += (T(1) - ve) * dy[off + i];
        }
        std::vector<T> dxe(sd, T(0));
        voltage_backward(P, G, e, x + off, vbar, dxe.data());
        if (dx)
          for (size_t i = 0; i < sd; ++i) dx[off + i] += dxe[i];
      } else {
        std::memcpy(dob.data(), dy + off, sizeof(T) * sd);
      }
      // down the chain: ō_d feeds z̄_d, and through γ ⊙ LN (scaled by v in gate mode) ō_{d+1}
      for (int d = 0; d < int(sc.path[b].size()); ++d) {
        for (size_t i = 0; i < sd; ++i) dz[d][off + i] += dob[i];
        if (!sc.fired[b][d]) break;
        const Neuron& u = sec.neurons[sc.path[b][d]];
        const T* o1 = &sc.o[d + 1][off];
        std::vector<T> xh(sd), rs(T_), ln(sd), dln(sd), dnext(sd, T(0)), dbeta(Ds_, T(0));
        nn::ln_forward(o1, P + u.norm, zeros_.data(), xh.data(), rs.data(), ln.data(), T_, Ds_, 1);
        const T scale = route_ == kGate ? sc.volt[b][d + 1] : T(1);
        for (size_t i = 0; i < sd; ++i) dln[i] = scale * dob[i];
        nn::ln_backward(xh.data(), rs.data(), P + u.norm, dln.data(), dnext.data(), G + u.norm,
                        dbeta.data(), T_, Ds_, 1);
        if (route_ == kGate) {  // the hop's gate: v_{d+1}(z_d)
          T vbar = 0;
          for (size_t i = 0; i < sd; ++i) vbar += dob[i] * ln[i];
          voltage_backward(P, G, sec.neurons[sc.path[b][d + 1]], &sc.z[d][off], vbar, &dz[d][off]);
        }
        dob.swap(dnext);
      }
    }
    // bodies, deepest first: z̄_d also collects the gradient of in_{d+1} = z_d (fired samples)
    std::vector<std::vector<T>> din(K + 1, std::vector<T>(rows * sd, T(0)));
    for (size_t r = sc.runs; r-- > 0;) {
      const BodySave<T>& s = sc.run[r];
      const int d = s.depth;
      const size_t m = s.samples.size();
      std::vector<T> g(m * sd), gx(m * sd, T(0));
      for (size_t i = 0; i < m; ++i) {
        const int b = s.samples[i];
        for (size_t j = 0; j < sd; ++j) {
          T v = dz[d][b * sd + j];
          if (d < int(sc.fired[b].size()) && sc.fired[b][d]) v += din[d + 1][b * sd + j];
          g[i * sd + j] = v;
        }
      }
      body_backward(P, G, sec.neurons[sc.path[s.samples[0]][d]], s, g.data(), gx.data(), int(m));
      for (size_t i = 0; i < m; ++i)
        for (size_t j = 0; j < sd; ++j) din[d][s.samples[i] * sd + j] += gx[i * sd + j];
    }
    if (dx)
      for (size_t i = 0; i < size_t(rows) * sd; ++i) dx[i] += din[0][i];
  }



  std::string name_;
  Act act_;
  double act_p_;
  int T_, D_, S_, Ds_, N_, A_, H_, Dd_, Sy_, K_, B_ = 0, row_ = 0, rows_ = 0;
  double theta_;
  uint64_t seed_;
  bool causal_;
  double dropout_ = 0;
  bool training_ = false;
  mutable Rng drop_rng_{0};  // dropout masks; seeded at build after the weights
  Route route_;
  std::vector<Section> sec_;
  std::vector<Cell> cells_;
  struct Linear {
    size_t off, fan_in, n;
  };
  std::vector<Linear> linears_;                      // plain weights: U(±1/√fan_in)
  std::vector<std::pair<size_t, size_t>> gammas_;   // (offset, size) of LN gains
  size_t comb_w_ = 0, comb_b_ = 0, comb_g_ = 0, comb_be_ = 0;
  std::vector<T> zeros_;
  std::vector<Call> calls_;  // by the first row of each forward call
  std::vector<double> counts_;
};

}  // namespace

// The neuron kind, registered for the plan and the CPU executor (core/struct_node.h).
NM_REGISTER_KIND(NodeKind::Neuron, "neuron", NeuronNode);

template <class T>
void neuron_counts(StructNode<T>* node, double* out) {
  auto* n = static_cast<NeuronNode<T>*>(node);
  const auto first = n->counts().begin() + n->last_row();
  std::copy(first, first + n->last_rows(), out);
}
template void neuron_counts<float>(StructNode<float>*, double*);
template void neuron_counts<double>(StructNode<double>*, double*);

}  // namespace nm
