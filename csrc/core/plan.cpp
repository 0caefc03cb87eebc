// The plan (plan.h): slots, parameter layout, states and initialisation, once per model.
#include "plan.h"

#include <cmath>

#include "rng.h"

namespace nm {
namespace {

void orthogonal_fill(Rng& rng, double gain, int rows, int cols, std::vector<double>& out) {
  // Semi-orthogonal rows x cols matrix: modified Gram-Schmidt (twice) on a normal matrix of the
  // taller orientation, columns signed so the diagonal of R is positive (as QR would give).
  const bool tall = rows >= cols;
  const int m = tall ? rows : cols, n = tall ? cols : rows;  // m x n, m >= n
  std::vector<double> a(size_t(m) * n);
  for (auto& x : a) x = rng.normal();
  for (int j = 0; j < n; ++j) {
    for (int pass = 0; pass < 2; ++pass)
      for (int k = 0; k < j; ++k) {
        double d = 0;
        for (int i = 0; i < m; ++i) d += a[size_t(i) * n + k] * a[size_t(i) * n + j];
        for (int i = 0; i < m; ++i) a[size_t(i) * n + j] -= d * a[size_t(i) * n + k];
      }
    double norm = 0;
    for (int i = 0; i < m; ++i) norm += a[size_t(i) * n + j] * a[size_t(i) * n + j];
    norm = std::sqrt(norm);
    for (int i = 0; i < m; ++i) a[size_t(i) * n + j] /= norm;
  }
  out.assign(size_t(rows) * cols, 0.0);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c)
      out[size_t(r) * cols + c] = gain * (tall ? a[size_t(r) * n + c] : a[size_t(c) * n + r]);
}

const ParamInfo& find_in(const std::vector<ParamInfo>& list, const std::string& name) {
  for (const auto& p : list)
    if (p.name == name) return p;
  throw ShapeError("unknown tensor '" + name + "'");
}

}  // namespace

Plan::Plan(IrModel ir_, int batch_, const OptimConfig& opt) : ir(std::move(ir_)), batch(batch_) {
  const int n = int(ir.nodes.size());
  const size_t B = size_t(batch);
  slot_of.assign(size_t(n), -1);
  layers.assign(size_t(n), LayerPlan{});
  for (int idx : ir.order) {
    const IrNode& nd = node(idx);
    max_width = std::max(max_width, nd.width);
    if (nd.kind == NodeKind::Split || nd.kind == NodeKind::Tap) {
      slot_of[size_t(idx)] = slot_of[size_t(nd.inputs[0].node)];  // identity: the producer's slot
      continue;
    }
    slot_of[size_t(idx)] = int(slots.size());
    slots.push_back(Slot{nd.width, n_vals});
    n_vals += B * size_t(nd.width);
  }
  kinds_.resize(size_t(n));
  for (int idx = 0; idx < n; ++idx) {  // parameters in source order
    const IrNode& nd = node(idx);
    if (nd.is_struct()) {
      kinds_[size_t(idx)] = make_struct<double>(nd);
      kinds_[size_t(idx)]->declare([this](const std::string& name, std::vector<int64_t> shape) {
        return add_param(name, std::move(shape));
      });
      const std::string aux = kinds_[size_t(idx)]->aux_name();
      if (!aux.empty()) {
        aux_nodes.push_back(idx);
        aux_names.push_back(aux);
      }
      has_structs = true;
      continue;
    }
    if (nd.kind != NodeKind::Layer && nd.kind != NodeKind::Output) continue;
    LayerPlan& L = layers[size_t(idx)];
    L.cells = nd.cells;
    L.in = node(nd.inputs[0].node).width / L.cells;
    L.out = nd.width / L.cells;
    L.W = add_param(nd.name + ".weight", {L.out, L.in});
    L.b = add_param(nd.name + ".bias", {L.out});
    if (nd.act == Act::ReluParametric) {
      L.has_alpha = true;
      L.alpha = add_param(nd.name + ".alpha", {});
    }
    L.z = n_z;
    n_z += B * size_t(L.cells) * size_t(L.out);
  }
  for (const IrNode& nd : ir.nodes)
    for (const IrInput& in : nd.inputs)
      if (in.delayed && slots[size_t(slot_of[size_t(in.node)])].carry == SIZE_MAX) {
        Slot& s = slots[size_t(slot_of[size_t(in.node)])];
        s.carry = n_carry;
        states.push_back(ParamInfo{"state." + node(in.node).name, {s.width}, n_carry, size_t(s.width)});
        n_carry += size_t(s.width);
      }
  if (opt.buffers())
    states.push_back(ParamInfo{"optimizer.state", {int64_t(opt.buffers()), int64_t(n_params)}, 0,
                               opt.buffers() * n_params});
  const IrNode& out = node(ir.output);
  fused_xent = out.act == Act::Softmax && out.loss == Loss::CrossEntropy;
}

size_t Plan::add_param(const std::string& name, std::vector<int64_t> shape) {
  size_t size = 1;
  for (auto d : shape) size *= size_t(d);
  params.push_back(ParamInfo{name, shape, n_params, size});
  n_params += size;
  return n_params - size;
}

const ParamInfo& Plan::param(const std::string& name) const { return find_in(params, name); }
const ParamInfo& Plan::state(const std::string& name) const { return find_in(states, name); }

size_t Plan::declared(const std::string& name, const std::vector<int64_t>& shape) const {
  const ParamInfo& p = param(name);
  if (p.shape != shape) throw IRError("IR: parameter '" + name + "' changed shape between plans");
  return p.offset;
}

std::vector<double> Plan::initial_params(uint64_t seed,
                                         std::vector<std::vector<std::vector<double>>>* drawn) const {
  std::vector<double> P(n_params, 0.0);
  Rng rng(seed);
  const auto& wp = ir.weight_params;
  const auto& bp = ir.bias_params;
  for (size_t idx = 0; idx < ir.nodes.size(); ++idx) {
    const IrNode& nd = ir.nodes[idx];
    if (kinds_[idx]) kinds_[idx]->init(rng, P.data());
    if (nd.kind != NodeKind::Layer && nd.kind != NodeKind::Output) continue;
    const LayerPlan& L = layers[idx];
    double* W = &P[L.W];
    const size_t nw = size_t(L.out) * size_t(L.in);
    switch (ir.weight_init) {
      case WeightInit::Xavier: {
        const double a = std::sqrt(6.0 / (L.in + L.out));
        for (size_t i = 0; i < nw; ++i) W[i] = rng.uniform(-a, a);
        break;
      }
      case WeightInit::He: {
        const double a = std::sqrt(6.0 / L.in);
        for (size_t i = 0; i < nw; ++i) W[i] = rng.uniform(-a, a);
        break;
      }
      case WeightInit::Lecun:
        for (size_t i = 0; i < nw; ++i) W[i] = rng.normal(0, std::sqrt(1.0 / L.in));
        break;
      case WeightInit::Uniform:
        for (size_t i = 0; i < nw; ++i) W[i] = rng.uniform(wp[0], wp[1]);
        break;
      case WeightInit::Normal:
        for (size_t i = 0; i < nw; ++i) W[i] = rng.normal(wp[0], wp[1]);
        break;
      case WeightInit::Orthogonal: {
        std::vector<double> q;
        orthogonal_fill(rng, wp.empty() ? 1.0 : wp[0], L.out, L.in, q);
        for (size_t i = 0; i < nw; ++i) W[i] = q[i];
        break;
      }
      case WeightInit::kCount: break;
    }
    double* b = &P[L.b];
    for (int o = 0; o < L.out; ++o)
      b[o] = ir.bias_init == BiasInit::Zero        ? 0.0
           : ir.bias_init == BiasInit::ConstFlat   ? bp[0]
                                                   : rng.normal(bp[0], bp[1]);
    if (L.has_alpha) P[L.alpha] = nd.act_param;
  }
  if (drawn) {
    drawn->assign(ir.nodes.size(), {});
    for (size_t idx = 0; idx < ir.nodes.size(); ++idx)
      if (kinds_[idx]) (*drawn)[idx] = kinds_[idx]->drawn();
  }
  return P;
}

void check_data_parallel(const IrModel& ir, double weight) {
  if (ir.recurrent)
    throw DataError("data-parallel training splits each batch across ranks, but this model is "
                    "recurrent: its samples form one time-ordered stream");
  if (!(weight >= 0 && weight <= 1))
    throw DataError("a rank's share of the global batch must be in [0, 1]");
}

}  // namespace nm
