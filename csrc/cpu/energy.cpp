// The energy block (HAMUX, extensions-math.md 1): neuron layers with convex Lagrangians joined
// by synapses; the state descends the energy by `steps` explicit Euler steps, and training runs
// reverse mode through the unrolled steps. Every synapse writes its currents I = ∂F/∂g in closed
// form and their vector-Jacobian product (a Hessian-vector product of the synapse energy, so no
// double backprop). Decisions and parameter names: docs/energy.md.
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "energy_hidden.h"
#include "energy_synapse.h"
#include "energy_tokens.h"
#include "neuromorph/errors.h"

namespace nm {
namespace {

using namespace energy_cpu;  // NOLINT: the block's own synapse types

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

  void deferrable(std::vector<std::pair<size_t, size_t>>& out) const override {
    for (const auto& s : syns_) s->deferrable(out);
  }
  void set_defer(bool on) override {
    for (auto& s : syns_) s->defer = on;
  }
  void deferred(std::vector<typename StructNode<T>::Deferred>& out) const override {
    for (const auto& s : syns_) s->deferred(out);
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
    if (threads > 1 && !this->probe_ && fixed_parts(P, x, row, rows, threads)) {
      cpu::sample_chunks(rows, threads, false, [&](int b0, int n, int c) {
        steps_rows(P, y + size_t(b0) * out_w_, row + b0, n, c);
      });
      return;
    }
    cpu::sample_chunks(rows, threads, this->probe_ != nullptr, [&](int b0, int n, int c) {
      start_rows(P, x + size_t(b0) * in_w_, row + b0, n);
      steps_rows(P, y + size_t(b0) * out_w_, row + b0, n, c);
    });
  }

  // With chunks on threads: every layer's start and step-0 activations by chunks, then each
  // synapse's fixed part of its current on the whole batch (one product cut over the threads:
  // HAMUX's 784 x 1000 clamped-layer weights were packed by every chunk's own product, 62
  // GFLOP/s per thread against 72-76 for a cut one). False (nothing done) when no synapse
  // refers to a clamped layer.
  bool fixed_parts(const T* P, const T* x, int row, int rows, int threads) {
    bool any = false;
    for (size_t s = 0; s < syns_.size(); ++s)
      for (int ref : spec_.synapses[s].refs) any = any || !moving(ref);
    if (!any) return false;
    cpu::sample_chunks(rows, threads, false, [&](int b0, int n, int) {
      start_rows(P, x + size_t(b0) * in_w_, row + b0, n);
    });
    CPtrs<T> g;  // a synapse that keeps no fixed part takes its refs in current() as before
    for (size_t s = 0; s < syns_.size(); ++s) {
      g.clear();
      for (int ref : spec_.synapses[s].refs) g.push_back(Gv(0, ref, row));
      syns_[s]->fixed_part(P, g, rows, At{row, 0, 0});
    }
    return true;
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
  // x^0 and the step-0 activations of every layer, rows row..row+rows-1
  void start_rows(const T* P, const T* x, int row, int rows) {
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
  }
  // the descent's steps from start_rows's state, and the outputs
  void steps_rows(const T* P, T* y, int row, int rows, int c) {
    const int L = int(spec_.layers.size());
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
