// Model<T>: the CPU executor of one compiled model's plan (core/plan.h): its train / predict
// loops over the plan's arenas.
//
// Values live in row buffers (batch_size x width, one sample per row). Split and tap nodes
// alias their producer's slot, so fan-out gradients accumulate in one buffer. Non-recurrent
// models run each node over all rows at once; recurrent models step row by row (row t is
// sample t of the stream) and a delayed read takes row t-1, or the carried state at t = 0:
// backpropagation runs through the whole window (truncated BPTT, carried state constant).
// Every buffer is sized at build; a step allocates nothing.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <numeric>
#include <type_traits>

#include "../core/ir.h"
#include "../core/optim.h"
#include "../core/plan.h"
#include "../core/struct_node.h"
#include "aligned.h"
#include "deferred.h"
#include "gemm.h"
#include "neuromorph/engine.h"
#include "ops.h"
#include "simd.h"
#include "threads.h"
#include "update.h"

namespace nm {
namespace {

using cpu::parallel_for;

template <class T>
class Model final : public ModelBase {
 public:
  Model(IrModel ir, int batch, double lr, const OptimConfig& opt)
      : plan_(std::move(ir), batch, opt), ir_(plan_.ir), B_(batch), R_(batch), lr_(lr), opt_(opt),
        slot_of_(plan_.slot_of), slots_(plan_.slots), layers_(plan_.layers), info_(plan_.params),
        state_info_(plan_.states), aux_nodes_(plan_.aux_nodes), n_params_(plan_.n_params),
        n_vals_(plan_.n_vals), n_z_(plan_.n_z), n_carry_(plan_.n_carry),
        max_width_(plan_.max_width), fused_xent_(plan_.fused_xent),
        has_structs_(plan_.has_structs) {
    structs_.resize(ir_.nodes.size());
    for (size_t idx = 0; idx < ir_.nodes.size(); ++idx)
      if (ir_.nodes[idx].is_struct()) {  // this executor's instance, on the plan's layout
        structs_[idx] = make_struct<T>(ir_.nodes[idx]);
        structs_[idx]->declare([this](const std::string& name, std::vector<int64_t> shape) {
          return plan_.declared(name, shape);
        });
      }
    if (kFast && !ir_.recurrent) deferred_.declare(structs_);  // one backward per step
  }

  DType dtype() const override { return sizeof(T) == 4 ? DType::F32 : DType::F64; }
  int batch_size() const override { return B_; }
  int input_width() const override { return ir_.nodes[ir_.input].width; }
  int output_width() const override { return ir_.nodes[ir_.output].width; }
  bool recurrent() const override { return ir_.recurrent; }
  bool built() const override { return built_; }
  const std::string& ir_json() const override { return ir_.json; }
  double learning_rate() const override { return lr_; }
  const std::vector<ParamInfo>& params() const override { return info_; }
  const OptimConfig& optimizer() const override { return opt_; }
  long steps() const override { return steps_; }
  void set_steps(long steps) override { steps_ = steps; }

  uint64_t build_seed() const override { return seed_; }
  void build(uint64_t seed) override {
    seed_ = seed;
    params_.assign(n_params_, T(0));
    grads_.assign(n_params_, T(0));
    vals_.assign(n_vals_, T(0));
    vgrads_.assign(n_vals_, T(0));
    zbuf_.assign(n_z_, T(0));
    scratch_.assign(size_t(B_) * max_width_, T(0));
    upd_.allocate(n_params_);
    if (fusable()) fdz_.assign(n_z_, T(0));
    wmax_.assign(ir_.nodes.size(), -1.0);
    gbound_.assign(ir_.nodes.size(), 0.0);
    carry_.assign(n_carry_, T(0));
    opt_state_.assign(opt_.buffers() * n_params_, T(0));
    aux_.assign(aux_nodes_.size() * size_t(B_), 0.0);
    for (auto& sn : structs_)
      if (sn) sn->allocate(B_);
    for (size_t i = 0; i < ir_.nodes.size(); ++i)  // neuron nodes' counts of the last forward
      if (ir_.nodes[i].kind == NodeKind::Neuron) stats_[int(i)].assign(size_t(B_), 0.0);
    steps_ = 0;
    initialise(seed);
    built_ = true;
  }

  std::vector<std::string> loss_parts() const override {
    std::vector<std::string> names{"output"};
    names.insert(names.end(), plan_.aux_names.begin(), plan_.aux_names.end());
    return names;
  }

  std::vector<std::pair<std::string, std::vector<double>>> node_stats() override {
    std::vector<std::pair<std::string, std::vector<double>>> out;
    for (size_t i = 0; i < ir_.nodes.size(); ++i)
      if (ir_.nodes[i].kind == NodeKind::Neuron) {
        std::vector<double> c = stats_[i];
        out.emplace_back(ir_.nodes[i].name + ".count", c);
      }
    return out;
  }

  std::vector<double> energy_trajectory(const std::string& block, const void* x, int n,
                                        int* steps) override {
    int idx = -1;
    for (size_t i = 0; i < ir_.nodes.size(); ++i)
      if (ir_.nodes[i].name == block && ir_.nodes[i].kind == NodeKind::Energy) idx = int(i);
    if (idx < 0) throw ShapeError("the model has no energy block named '" + block + "'");
    for (InspectArray& a : inspect({block}, x, n, 0))
      if (a.name == block + ".energy") {
        *steps = int(a.shape.at(1)) - 1;
        return std::move(a.data);
      }
    throw StateError("energy block '" + block + "' recorded no energy");
  }

  std::vector<InspectArray> inspect(const std::vector<std::string>& names, const void* x,
                                    int n, int last) override {
    need_built();
    std::vector<int> idx;
    for (const std::string& name : names) {
      int found = -1;
      for (size_t i = 0; i < ir_.nodes.size(); ++i)
        if (ir_.nodes[i].name == name) found = int(i);
      if (found < 0) throw ShapeError("the model has no node named '" + name + "'");
      idx.push_back(found);
    }
    if (names.empty())
      for (size_t i = 0; i < ir_.nodes.size(); ++i) idx.push_back(int(i));
    std::vector<Probe> probes(idx.size());
    std::vector<InspectArray> out;
    std::map<std::string, size_t> at;  // name -> index in out
    auto append = [&](const std::string& name, const Probe::Array& a) {
      auto [it, fresh] = at.try_emplace(name, out.size());
      if (fresh) {
        InspectArray r{name, a.shape, a.type, a.per_sample, {}};
        if (a.per_sample) r.shape.insert(r.shape.begin(), 0);
        out.push_back(std::move(r));
      }
      InspectArray& r = out[it->second];
      if (!a.per_sample) {
        r.data = a.data;
        return;
      }
      r.shape[0] += B_;
      r.data.insert(r.data.end(), a.data.begin(), a.data.end());
    };
    training(false);
    const cpu::LineVector<T> carry = carry_;  // the model is not changed: state and stats restored
    const std::map<int, std::vector<double>> stats = stats_;
    auto detach = [&] {
      for (int i : idx)
        if (structs_[i]) structs_[i]->set_probe(nullptr);
      carry_ = carry;
      stats_ = stats;
    };
    try {
      for (int k = 0; k < n; ++k) {
        for (size_t p = 0; p < idx.size(); ++p) {
          probes[p] = Probe{};
          probes[p].batch = B_;
          if (structs_[idx[p]]) structs_[idx[p]]->set_probe(&probes[p]);
        }
        const int rows = k == n - 1 && last > 0 && last < B_ ? last : B_;
        load_input(batch_ptr(x, k, in_w()), rows);
        forward_all(rows);
        for (size_t p = 0; p < idx.size(); ++p) {
          const std::string& name = ir_.nodes[idx[p]].name;
          const Slot& s = slots_[slot_of_[idx[p]]];
          Probe::Array y{{int64_t(s.width)}, true, 'f', {}};
          y.data.assign(&vals_[s.off], &vals_[s.off] + size_t(B_) * s.width);
          append(name + ".output", y);
          for (const auto& [key, a] : probes[p].arrays) append(name + "." + key, a);
        }
        commit_carry(rows);
      }
    } catch (...) {
      detach();
      throw;
    }
    detach();
    return out;
  }

  int train(const void* x, const void* e, int n, double* losses, const std::atomic<bool>* stop,
            double* parts) override {
    need_built();
    // SGD fused into backward (dense layers only); never distributed: the update needs the
    // summed gradient (and clipping / weight decay the global one)
    const bool fuse = fusable() && !reducer_;
    stop_ = stop;
    for (int k = 0; k < n; ++k) {
      rate_ = opt_.rate(lr_, steps_);
      batch_ = k;
      if (fuse) {
        losses[k] = fused_step(batch_ptr(x, k, in_w()), batch_ptr(e, k, tgt_w()));
      } else if (defers()) {
        losses[k] = deferred_step(batch_ptr(x, k, in_w()), batch_ptr(e, k, tgt_w()));
      } else {
        losses[k] = step(batch_ptr(x, k, in_w()), batch_ptr(e, k, tgt_w()), true);
        if (reducer_) losses[k] = all_reduce(losses[k]);  // distributed: global loss, gradient
        update_arena();  // checks the gradients too (cpu/update.h)
      }
      if (parts) {
        const size_t np = 1 + aux_nodes_.size();
        parts[k * np] = losses[k] - aux_total_;
        for (size_t a = 0; a < aux_nodes_.size(); ++a)
          parts[k * np + 1 + a] = reducer_ ? reduced_[2 + a] : aux_mean(a);
      }
      ++steps_;
      commit_carry();
      if (reducer_ ? stop_all_ : (stop && stop->load(std::memory_order_relaxed))) return k + 1;
    }
    return n;
  }

  void evaluate(const void* x, const void* e, int n, double* losses) override {
    need_built();
    training(false);
    for (int k = 0; k < n; ++k) {
      batch_ = k;
      load_input(batch_ptr(x, k, in_w()));
      forward_all();
      losses[k] = loss_and_grad(batch_ptr(e, k, tgt_w()), false);
      commit_carry();
    }
  }

  // Any number of samples: whole batches, then one partial batch of the remaining rows.
  void predict_rows(const void* x, int n, void* y) override {
    need_built();
    training(false);
    const Slot& out = slots_[slot_of_[ir_.output]];
    const T* src = static_cast<const T*>(x);
    T* dst = static_cast<T*>(y);
    for (int done = 0; done < n; done += B_) {
      const int rows = std::min(B_, n - done);
      load_input(src + size_t(done) * in_w(), rows);
      forward_all(rows);
      std::memcpy(dst + size_t(done) * out.width, &vals_[out.off], sizeof(T) * rows * out.width);
      commit_carry(rows);
    }
  }

  int target_width() const override {
    return class_ids_ ? ir_.nodes[ir_.output].cells : output_width();
  }
  void set_rows(int rows) override {
    if (rows < 1 || rows > B_)
      throw ShapeError("a batch holds 1 to " + std::to_string(B_) + " samples, got " +
                       std::to_string(rows));
    R_ = rows;
  }
  void set_check_finite(bool on) override { check_finite_ = on; }
  void set_grad_reducer(std::shared_ptr<GradReducer> reducer, double weight) override {
    if (reducer) check_data_parallel(ir_, weight);
    reducer_ = std::move(reducer);
    weight_ = weight;
    reduced_.assign(3 + aux_nodes_.size(), 0.0);  // + the stop flag, last
  }

  void set_class_targets(bool on) override {
    const IrNode& o = ir_.nodes[ir_.output];
    if (on && (o.loss != Loss::CrossEntropy || o.cells < 2))
      throw ShapeError("class-id targets need an output with `cells C` (C > 1) and cross_entropy");
    class_ids_ = on;
  }

  void predict(const void* x, int n, void* y) override {
    need_built();
    training(false);
    const Slot& out = slots_[slot_of_[ir_.output]];
    T* dst = static_cast<T*>(y);
    for (int k = 0; k < n; ++k) {
      load_input(batch_ptr(x, k, in_w()));
      forward_all();
      std::memcpy(dst + size_t(k) * B_ * out.width, &vals_[out.off], sizeof(T) * B_ * out.width);
      commit_carry();
    }
  }

  double compute_gradients(const void* x, const void* e) override {
    need_built();
    batch_ = 0;
    return step(static_cast<const T*>(x), static_cast<const T*>(e), true);
  }

  void reset_state() override { std::fill(carry_.begin(), carry_.end(), T(0)); }

  const std::vector<ParamInfo>& state_tensors() const override { return state_info_; }

  void get_state(const std::string& name, void* out) const override {
    const ParamInfo& p = find_in(state_info_, name);
    const auto& src = name == "optimizer.state" ? opt_state_ : carry_;
    std::memcpy(out, &src[p.offset], sizeof(T) * p.size);
  }

  void set_state(const std::string& name, const void* in) override {
    const ParamInfo& p = find_in(state_info_, name);
    auto& dst = name == "optimizer.state" ? opt_state_ : carry_;
    std::memcpy(&dst[p.offset], in, sizeof(T) * p.size);
  }

  void write_tensor(const std::string& name, bool state, size_t offset, size_t count,
                    const void* in) override {
    const ParamInfo& p = state ? find_in(state_info_, name) : find(name);
    if (offset + count > p.size) throw ShapeError("tensor '" + name + "' is smaller than written");
    if (!built_) throw StateError("model is not built: call build() first");
    auto& dst = !state ? params_ : name == "optimizer.state" ? opt_state_ : carry_;
    std::memcpy(&dst[p.offset + offset], in, sizeof(T) * count);
    forget_bounds();
  }

  void get_param(const std::string& name, void* out, bool grad) const override {
    const ParamInfo& p = find(name);
    if (!built_) throw StateError("model is not built: call build() before reading parameters");
    const auto& src = grad ? grads_ : params_;
    std::memcpy(out, &src[p.offset], sizeof(T) * p.size);
  }

  void set_param(const std::string& name, const void* in) override {
    const ParamInfo& p = find(name);
    if (!built_) throw StateError("model is not built: call build() before setting parameters");
    std::memcpy(&params_[p.offset], in, sizeof(T) * p.size);
    forget_bounds();
  }

 private:
  int in_w() const { return input_width(); }
  int out_w() const { return output_width(); }
  int tgt_w() const { return target_width(); }
  const T* batch_ptr(const void* base, int k, int width) const {
    return static_cast<const T*>(base) + size_t(k) * B_ * width;
  }
  void need_built() const {
    if (!built_) throw StateError("model is not built: call build() first");
  }
  const ParamInfo& find(const std::string& name) const { return find_in(info_, name); }
  static const ParamInfo& find_in(const std::vector<ParamInfo>& list, const std::string& name) {
    for (const auto& p : list)
      if (p.name == name) return p;
    throw ShapeError("unknown tensor '" + name + "'");
  }

  // ---------------------------------------------------------------- initialisation
  void initialise(uint64_t seed) {
    std::vector<std::vector<std::vector<double>>> drawn;
    const std::vector<double> P = plan_.initial_params(seed, &drawn);
    for (size_t i = 0; i < n_params_; ++i) params_[i] = T(P[i]);
    forget_bounds();
    for (size_t idx = 0; idx < structs_.size(); ++idx)
      if (structs_[idx]) structs_[idx]->set_drawn(drawn[idx]);
  }

  // ---------------------------------------------------------------- one batch
  void training(bool on) {
    for (auto& sn : structs_)
      if (sn) sn->set_training(on);
  }

  double step(const T* x, const T* e, bool want_grad, bool skip_deferred = false) {
    training(want_grad);
    load_input(x);
    forward_all();
    // skip_deferred: a deferring step's backward leaves the deferred weights' part as the
    // last deferred update left it, zero
    deferred_.zero(grads_.data(), n_params_, skip_deferred);
    deferred_zero_ = false;
    std::fill(vgrads_.begin(), vgrads_.end(), T(0));
    double loss = loss_and_grad(e, want_grad);
    if (want_grad && check_finite_ && !reducer_) check_loss(loss);  // distributed: all_reduce
    if (want_grad) backward_all();
    return loss;
  }

  // ---- distributed (begin): data-parallel training, docs/distributed.md
  // This rank's weighted loss, its parts, then gradient arena summed over the ranks; returns
  // the global loss. The loss goes first, so a non-finite one stops every rank at the same
  // batch before anything else is exchanged (no rank is left waiting in a collective); so
  // does Ctrl-C on any rank (the stop flag travels with the loss).
  double all_reduce(double loss) {
    const double w = weight_;
    reduced_[0] = w * loss;
    reduced_[1] = w * aux_total_;
    for (size_t a = 0; a < aux_nodes_.size(); ++a) reduced_[2 + a] = w * aux_mean(a);
    reduced_.back() = stop_ && stop_->load(std::memory_order_relaxed) ? 1.0 : 0.0;
    reducer_->sum(reduced_.data(), reduced_.size(), DType::F64);
    stop_all_ = reduced_.back() > 0;
    if (check_finite_ && !std::isfinite(reduced_[0])) {
      if (!std::isfinite(loss)) check_loss(loss);  // names this rank's first non-finite node
      throw Diverged("training diverged at batch " + std::to_string(batch_) + ": the loss "
                     "summed over the ranks is " + fmt_num(reduced_[0]) + " (non-finite on "
                     "another rank). The model holds its state from before this batch");
    }
    if (w != 1)
      for (size_t i = 0; i < n_params_; ++i) grads_[i] *= T(w);
    reducer_->sum(grads_.data(), n_params_, dtype());
    aux_total_ = reduced_[1];
    return reduced_[0];
  }
  // ---- distributed (end)

  // One plain SGD step without a gradient arena: every layer's dL/dz (and, with the old
  // weights, its input gradient) first, kept in fdz_; then, when bounds say that no gradient
  // and no new weight can leave the float range (fused_safe), each layer's W -= lr dz^T u,
  // b -= lr sum dz straight from them. Where a bound fails, the step goes the arena's way
  // (careful_step). Only the PReLU slopes go through the arena otherwise.
  double fused_step(const T* x, const T* e) {
    load_input(x);
    forward_all();
    std::fill(vgrads_.begin(), vgrads_.end(), T(0));
    for (const LayerPlan& L : layers_)
      if (L.has_alpha) grads_[L.alpha] = T(0);
    double loss = loss_and_grad(e, true);
    if (check_finite_) check_loss(loss);
    fuse_ = Fuse::Grads;
    backward_all();
    fuse_ = Fuse::None;
    if (!check_finite_) {
      forget_bounds();  // unchecked: the weight bounds are not followed
    } else if (!fused_safe()) {
      careful_step();
      return loss;
    }
    fuse_ = Fuse::Update;
    backward_all();
    fuse_ = Fuse::None;
    for (const LayerPlan& L : layers_)
      if (L.has_alpha) params_[L.alpha] -= T(rate_) * grads_[L.alpha];
    return loss;
  }

  // Plain SGD with the deferred products (cpu/deferred.h) applied straight to their weights.
  // The other updates are looked at first (a refused step changes nothing); the deferred ones
  // are certainly finite by their bounds, else (or where the nodes kept other products than
  // declared) the step goes the arena's way.
  bool defers() const { return deferred_.worth(n_params_) && opt_.plain_sgd() && !reducer_; }
  void set_defer(bool on) {
    for (auto& sn : structs_)
      if (sn) sn->set_defer(on);
  }
  double deferred_step(const T* x, const T* e) {
    struct Guard {
      Model* m;
      ~Guard() { m->set_defer(false); }
    } guard{this};
    set_defer(true);
    const double loss = step(x, e, true, deferred_zero_);
    if (!check_finite_) forget_bounds();  // unchecked: the weight bounds are not followed
    if (!deferred_.collect(structs_) || (check_finite_ && !deferred_.safe(params_.data(), rate_))) {
      deferred_.into_gradients(grads_.data());  // zero before: the step zeroed them
      update_arena();
      return loss;
    }
    upd_.sgd_outside(params_, grads_.data(), rate_, check_finite_, batch_, deferred_.ranges());
    deferred_.apply(params_.data(), rate_);
    deferred_zero_ = true;  // this backward did not write them
    return loss;
  }

  // Whether the fused updates are certainly finite, from bounds (update.h update_bounded):
  // a layer's dW = dzᵀ u and db = Σ dz are at most G = S(dz) max(1, S(u)) entry by entry, and
  // wmax_ bounds its |W_ij|, |b_i|.
  bool fused_safe() {
    if (!std::isfinite(float(rate_))) return false;
    std::vector<double>& G = gbound_;  // sized at build
    std::fill(G.begin(), G.end(), 0.0);
    bool safe = true;
    for (size_t idx = 0; idx < ir_.nodes.size() && safe; ++idx) {
      const NodeKind k = ir_.nodes[idx].kind;
      if (k != NodeKind::Layer && k != NodeKind::Output) continue;
      const LayerPlan& L = layers_[idx];
      const size_t R = size_t(R_) * L.cells;
      G[idx] = cpu::product_bound(&fdz_[L.z], R * L.out, val(ir_.nodes[idx].inputs[0].node, 0), R * L.in);
      safe = cpu::update_bounded(rate_, G[idx], wmax_[idx], [&] {
        return cpu::abs_sum(&params_[L.W], size_t(L.in) * L.out) + cpu::abs_sum(&params_[L.b], size_t(L.out));
      });
      if (L.has_alpha)
        safe = safe && std::fabs(double(params_[L.alpha])) +
                           rate_ * std::fabs(double(grads_[L.alpha])) < cpu::kUpdateRange;
    }
    if (!safe) return false;
    for (size_t idx = 0; idx < ir_.nodes.size(); ++idx) wmax_[idx] += rate_ * G[idx];
    return true;
  }

  // The fused step where a bound failed: the gradients formed in the arena from the kept dL/dz,
  // then the arena's verdicts and update (update.h: the new weights written aside, looked at,
  // kept by a swap), so a large but finite step trains, and one that is not finite changes
  // nothing, as on the unfused path. Rare: huge values only.
  void careful_step() {
    for (size_t idx = 0; idx < ir_.nodes.size(); ++idx) {
      const NodeKind k = ir_.nodes[idx].kind;
      if (k != NodeKind::Layer && k != NodeKind::Output) continue;
      const LayerPlan& L = layers_[idx];
      T *dW = &grads_[L.W], *db = &grads_[L.b];
      std::fill(dW, dW + size_t(L.in) * L.out, T(0));
      std::fill(db, db + L.out, T(0));
      cpu::dense_backward(val(ir_.nodes[idx].inputs[0].node, 0), &params_[L.W], &fdz_[L.z], dW, db,
                          static_cast<T*>(nullptr), R_ * L.cells, L.in, L.out);
    }
    update_arena();
  }

  void load_input(const T* x, int rows = -1) {
    if (rows < 0) rows = R_;
    std::memcpy(&vals_[slots_[slot_of_[ir_.input]].off], x, sizeof(T) * rows * in_w());
  }

  // The first `rows` samples of the batch buffers (all of them by default).
  void forward_all(int rows = -1) {
    if (rows < 0) rows = R_;
    std::fill(aux_.begin(), aux_.end(), 0.0);
    plan_.forward_order(rows, [this](int idx, int row, int n) { forward_node(idx, row, n); });
  }

  void backward_all() {
    plan_.backward_order(R_, [this](int idx, int row, int n) { backward_node(idx, row, n); });
  }

  T* val(int node, int row) { const Slot& s = slots_[slot_of_[node]]; return &vals_[s.off + size_t(row) * s.width]; }
  T* vgrad(int node, int row) { const Slot& s = slots_[slot_of_[node]]; return &vgrads_[s.off + size_t(row) * s.width]; }

  // Value read through input `in` at `row` (rows == 1 when delayed): row-1 or the carry.
  T* read(const IrInput& in, int row) {
    if (!in.delayed) return val(in.node, row);
    return row > 0 ? val(in.node, row - 1) : &carry_[slots_[slot_of_[in.node]].carry];
  }
  T* read_grad(const IrInput& in, int row) {  // null: the carried-in state is a constant
    if (!in.delayed) return vgrad(in.node, row);
    return row > 0 ? vgrad(in.node, row - 1) : nullptr;
  }

  void forward_node(int idx, int row, int rows) {
    const IrNode& nd = ir_.nodes[idx];
    switch (nd.kind) {
      case NodeKind::Layer:
      case NodeKind::Output: {
        const LayerPlan& L = layers_[idx];
        const int R = rows * L.cells;  // a position-wise layer: every cell is a row
        T* z = &zbuf_[L.z + size_t(row) * L.cells * L.out];
        cpu::dense_forward(val(nd.inputs[0].node, row), &params_[L.W], &params_[L.b], z, R,
                           L.in, L.out);
        act_fwd(nd, L, z, val(idx, row), R);
        break;
      }
      NM_STRUCT_KIND_CASES: {
        double* aux = nullptr;
        for (size_t a = 0; a < aux_nodes_.size(); ++a)
          if (aux_nodes_[a] == idx) aux = &aux_[a * B_ + row];
        structs_[idx]->forward(params_.data(), val(nd.inputs[0].node, row), val(idx, row), row,
                               rows, aux);
        if (nd.kind == NodeKind::Neuron) neuron_counts(structs_[idx].get(), &stats_[idx][size_t(row)]);
        break;
      }
      case NodeKind::Merge:
        ops::merge_forward(nd.op, val(nd.inputs[0].node, row), read(nd.inputs[1], row),
                           val(idx, row), size_t(rows) * nd.width);
        break;
      case NodeKind::Input: case NodeKind::Split: case NodeKind::Tap: case NodeKind::kCount:
        break;  // input: loaded; split/tap: aliases
    }
  }

  void backward_node(int idx, int row, int rows) {
    const IrNode& nd = ir_.nodes[idx];
    if (fuse_ == Fuse::Update && nd.kind != NodeKind::Layer && nd.kind != NodeKind::Output) return;
    switch (nd.kind) {
      case NodeKind::Layer:
      case NodeKind::Output: {
        const LayerPlan& L = layers_[idx];
        const int R = rows * L.cells;
        const T* z = &zbuf_[L.z + size_t(row) * L.cells * L.out];
        const int src = nd.inputs[0].node;
        if constexpr (kFast)
          if (fuse_ == Fuse::Update) {
            cpu::dense_sgd_update(val(src, row), &params_[L.W],
                                  &fdz_[L.z + size_t(row) * L.cells * L.out], &params_[L.b], R,
                                  L.in, L.out, float(rate_));
            break;
          }
        T* dz = fuse_ == Fuse::Grads ? &fdz_[L.z + size_t(row) * L.cells * L.out]
                                     : &scratch_[size_t(row) * L.cells * L.out];
        if (idx == ir_.output && fused_xent_) {
          std::memcpy(dz, vgrad(idx, row), sizeof(T) * R * L.out);  // already dL/dz
        } else {
          act_bwd(nd, L, z, val(idx, row), vgrad(idx, row), dz, R);
        }
        T* du = ir_.nodes[src].kind == NodeKind::Input ? nullptr : vgrad(src, row);
        if constexpr (kFast)
          if (fuse_ == Fuse::Grads) {
            cpu::dense_input_grad(val(src, row), &params_[L.W], dz, du, R, L.in, L.out);
            break;
          }
        cpu::dense_backward(val(src, row), &params_[L.W], dz, &grads_[L.W], &grads_[L.b], du,
                            R, L.in, L.out);
        break;
      }
      NM_STRUCT_KIND_CASES: {
        const int src = nd.inputs[0].node;
        T* du = ir_.nodes[src].kind == NodeKind::Input ? nullptr : vgrad(src, row);
        structs_[idx]->backward(params_.data(), grads_.data(), val(src, row), vgrad(idx, row), du,
                                row, rows, 1.0 / R_);
        break;
      }
      case NodeKind::Merge:
        ops::merge_backward(nd.op, val(nd.inputs[0].node, row), read(nd.inputs[1], row),
                            vgrad(idx, row), vgrad(nd.inputs[0].node, row),
                            read_grad(nd.inputs[1], row), size_t(rows) * nd.width);
        break;
      case NodeKind::Input: case NodeKind::Split: case NodeKind::Tap: case NodeKind::kCount:
        break;
    }
  }

  T alpha(const LayerPlan& L) const { return L.has_alpha ? params_[L.alpha] : T(0); }

  // Float models take the vectorised kernels; double models (the reference) the scalar ops.
  static constexpr bool kFast = std::is_same_v<T, float>;

  // The elementwise work runs on the engine's worker threads (cpu/threads.h) in chunks of at
  // least this many values; reductions combine per-chunk partials in chunk order.
  static constexpr size_t kChunk = size_t(1) << 14;

  // Every update but the fused step's (update.h): written aside, looked at, kept by a swap.
  void update_arena() {
    if (opt_.plain_sgd()) upd_.sgd(params_, grads_.data(), rate_, check_finite_, batch_);
    else upd_.step(params_, grads_.data(), opt_state_, lr_, steps_, check_finite_, batch_);
    forget_bounds();
  }
  void forget_bounds() {  // fused_safe's and deferred_safe's
    std::fill(wmax_.begin(), wmax_.end(), -1.0);
    deferred_.forget();
  }
  // plain SGD on a float model of dense layers only, not recurrent: the fused step (when not
  // distributed)
  bool fusable() const { return kFast && !ir_.recurrent && opt_.plain_sgd() && !has_structs_; }

  void act_fwd(const IrNode& nd, const LayerPlan& L, const T* z, T* a, int rows) {
    if (nd.act == Act::Softmax || !kFast) {  // rows
      parallel_for(size_t(rows), kChunk / size_t(L.out) + 1, [&](int, size_t b, size_t e) {
        if constexpr (kFast) {  // the vectorised softmax of the float engine
          std::memcpy(a + b * L.out, z + b * L.out, sizeof(T) * (e - b) * L.out);
          simd::softmax_rows(a + b * L.out, int(e - b), L.out);
        } else {
          ops::act_forward(nd.act, T(nd.act_param), alpha(L), z + b * L.out, a + b * L.out,
                           int(e - b), L.out);
        }
      });
      return;
    }
    if constexpr (kFast)
      parallel_for(size_t(rows) * L.out, kChunk, [&](int, size_t b, size_t e) {
        simd::act_forward(nd.act, float(nd.act_param), alpha(L), z + b, a + b, e - b);
      });
  }

  void act_bwd(const IrNode& nd, const LayerPlan& L, const T* z, const T* a, const T* da, T* dz,
               int rows) {
    T* dalpha = L.has_alpha ? &grads_[L.alpha] : nullptr;
    std::fill(part_.begin(), part_.end(), 0.0);  // the PReLU slope gradient per chunk
    int chunks;
    if (nd.act == Act::Softmax || !kFast) {
      chunks = parallel_for(size_t(rows), kChunk / size_t(L.out) + 1, [&](int c, size_t b, size_t e) {
        const size_t o = b * L.out;
        T slope = 0;
        ops::act_backward(nd.act, T(nd.act_param), alpha(L), z + o, a + o, da + o, dz + o,
                          dalpha ? &slope : nullptr, int(e - b), L.out);
        part_[size_t(c)] = double(slope);
      });
    } else {
      chunks = parallel_for(size_t(rows) * L.out, kChunk, [&](int c, size_t b, size_t e) {
        if constexpr (kFast) {
          float slope = 0;
          simd::act_backward(nd.act, float(nd.act_param), alpha(L), z + b, a + b, da + b, dz + b,
                             dalpha ? &slope : nullptr, e - b);
          part_[size_t(c)] = double(slope);
        }
      });
    }
    if (dalpha)
      for (int c = 0; c < chunks; ++c) *dalpha += T(part_[size_t(c)]);
  }

  // Mean per-sample loss over the batch; with want_grad, dL/d(output) into its value gradient
  // (dL/dz for the fused softmax + cross-entropy output).
  // A position-wise output (`cells C`) takes the loss per cell, then the mean over cells.
  double loss_and_grad(const T* e, bool want_grad) {
    const IrNode& out = ir_.nodes[ir_.output];
    const int C = out.cells, n = out.width / C;
    const double scale = 1.0 / (double(R_) * C);
    double total = 0;
    if (class_ids_ && out.loss == Loss::CrossEntropy)  // the class's entry only, no one-hot rows
      for (int r = 0; r < R_; ++r) {
        const T* a = val(ir_.output, r);
        double sample = 0;
        for (int c = 0; c < C; ++c)
          sample += ops::xent_class(a + size_t(c) * n, class_id(e[size_t(r) * C + c], r, c),
                                    want_grad ? vgrad(ir_.output, r) + size_t(c) * n : nullptr, n,
                                    scale, fused_xent_);
        total += sample / C;
      }
    else
    for (int r = 0; r < R_; ++r) {
      const T* a = val(ir_.output, r);
      const T* er = class_ids_ ? one_hot(e + size_t(r) * C, r) : e + size_t(r) * out.width;
      double sample = 0;
      for (int c = 0; c < C; ++c) {
        const size_t o = size_t(c) * n;
        sample += ops::loss_forward(out.loss, out.loss_param, a + o, er + o, n);
        if (!want_grad) continue;
        if (fused_xent_) ops::softmax_xent_backward(a + o, er + o, vgrad(ir_.output, r) + o, n, scale);
        else ops::loss_backward(out.loss, out.loss_param, a + o, er + o, vgrad(ir_.output, r) + o, n, scale);
      }
      total += sample / C;
    }
    aux_total_ = 0;
    for (size_t a = 0; a < aux_nodes_.size(); ++a) aux_total_ += aux_mean(a);
    return total / R_ + aux_total_;
  }

  // Divergence: a non-finite loss names the first node (in execution order) whose value holds
  // a non-finite number; nothing has been updated yet, so the model is as before the batch.
  void check_loss(double loss) {
    if (std::isfinite(loss)) return;
    std::string where = "the loss";
    for (int idx : ir_.order) {
      const IrNode& nd = ir_.nodes[idx];
      if (nd.kind == NodeKind::Split || nd.kind == NodeKind::Tap) continue;
      const Slot& s = slots_[slot_of_[idx]];
      if (!cpu::all_finite(&vals_[s.off], size_t(R_) * s.width)) {
        where = nd.kind == NodeKind::Input ? "the input" : "node '" + nd.name + "'";
        break;
      }
    }
    throw Diverged("training diverged at batch " + std::to_string(batch_) + ": the loss is " +
                   fmt_num(loss) + "; the first non-finite value is at " + where +
                   ". The model holds its state from before this batch (try a smaller "
                   "learning rate, or grad_clip)");
  }
  // Class ids (one per cell) of sample `r` as one-hot rows, checked: a bad id is a DataError.
  const T* one_hot(const T* ids, int r) {
    const IrNode& out = ir_.nodes[ir_.output];
    const int C = out.cells, n = out.width / C;
    onehot_.assign(size_t(out.width), T(0));
    for (int c = 0; c < C; ++c) onehot_[size_t(c) * n + size_t(class_id(ids[c], r, c))] = T(1);
    return onehot_.data();
  }
  int class_id(T v, int r, int c) const {  // an expected class id, checked
    const int n = ir_.nodes[ir_.output].width / ir_.nodes[ir_.output].cells;
    if (!(v >= 0 && v < n) || v != std::floor(v))
      throw DataError("expected class id " + fmt_num(double(v)) + " at batch " +
                      std::to_string(batch_) + ", sample " + std::to_string(r) + ", cell " +
                      std::to_string(c) + " is not an integer in 0.." + std::to_string(n - 1));
    return int(v);
  }
  static std::string fmt_num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
  }

  double aux_mean(size_t a) const {  // one auxiliary loss, mean over the batch
    double s = 0;
    for (int r = 0; r < R_; ++r) s += aux_[a * B_ + r];
    return s / R_;
  }

  // The window's last sample (of `rows`) becomes the next window's "previous".
  void commit_carry(int rows = -1) {
    if (rows < 0) rows = R_;
    for (const Slot& s : slots_)
      if (s.carry != SIZE_MAX)
        std::memcpy(&carry_[s.carry], &vals_[s.off + size_t(rows - 1) * s.width], sizeof(T) * s.width);
  }

  const Plan plan_;
  const IrModel& ir_;
  int B_, R_;                // batch size; rows of the current batch (R_ < B_: a partial one)
  bool check_finite_ = true;  // train() refuses a non-finite loss or gradient (Diverged)
  double lr_, rate_ = 0;  // base rate; the scheduled rate of the current step
  OptimConfig opt_;
  long steps_ = 0;
  enum class Fuse { None, Grads, Update };  // the fused SGD step's two passes (fused_step)
  Fuse fuse_ = Fuse::None;
  bool built_ = false, class_ids_ = false;
  int batch_ = 0;            // index of the batch in the current call (for error messages)
  std::vector<T> onehot_;    // one sample's class-id targets as one-hot rows
  const std::vector<int>& slot_of_;
  const std::vector<Slot>& slots_;
  const std::vector<LayerPlan>& layers_;
  const std::vector<ParamInfo>& info_;
  const std::vector<ParamInfo>& state_info_;
  const std::vector<int>& aux_nodes_;  // nodes with an auxiliary loss
  const size_t n_params_, n_vals_, n_z_, n_carry_;
  const int max_width_;
  const bool fused_xent_, has_structs_;
  // 64-byte aligned (cpu/aligned.h): products write their rows from line boundaries
  cpu::LineVector<T> params_, grads_, vals_, vgrads_, zbuf_, scratch_, carry_, opt_state_;
  // deferred weight updates (deferred_step): what the nodes defer; whether the deferred
  // weights' gradients are zero (the last step was a deferred update)
  cpu::DeferredUpdates<T> deferred_;
  bool deferred_zero_ = false;
  cpu::LineVector<T> fdz_;  // the fused SGD step's dL/dz of every layer (zbuf_'s layout)
  std::vector<double> wmax_;  // per layer node: a bound on its |W_ij|, |b_i|, or -1 (fused_safe)
  std::vector<double> gbound_;  // per layer node: this step's G (fused_safe)
  std::vector<std::unique_ptr<StructNode<T>>> structs_;  // by node index; null for other kinds
  uint64_t seed_ = 0;                                    // of the last build (build_seed)
  std::map<int, std::vector<double>> stats_;             // neuron node -> counts, last forward
  std::vector<double> aux_;                              // (aux node, sample) this batch
  double aux_total_ = 0;
  std::shared_ptr<GradReducer> reducer_;  // distributed: sums loss and gradients over ranks
  double weight_ = 1;                     // this rank's rows / the global batch's rows
  std::vector<double> reduced_;           // weighted loss, aux total, each aux loss, stop
  const std::atomic<bool>* stop_ = nullptr;
  bool stop_all_ = false;                 // some rank asked to stop after this batch
  std::vector<double> part_ = std::vector<double>(256, 0.0);  // per-chunk partials (threads.h)
  cpu::Updater<T> upd_{info_, opt_};  // the arena's updates and the verdicts on them (update.h)
};

}  // namespace

std::unique_ptr<ModelBase> make_model(const std::string& ir_json, int batch, double lr,
                                      DType dtype, const OptimConfig& opt) {
  if (batch <= 0) throw ShapeError("batch_size must be a positive integer, got " + std::to_string(batch));
  if (!(lr > 0) || !std::isfinite(lr))
    throw DataError("learning_rate must be a positive finite number");
  IrModel ir = load_ir(ir_json);
  if (dtype == DType::F64) return std::make_unique<Model<double>>(std::move(ir), batch, lr, opt);
  return std::make_unique<Model<float>>(std::move(ir), batch, lr, opt);
}

}  // namespace nm
