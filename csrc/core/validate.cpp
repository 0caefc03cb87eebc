// The one IR validator (issue 16): every IR the engine receives — from the compiler, a model
// file, the C API or compile_ir — passes here before anything is planned or allocated, with
// the compiler's rules: function arities and ranges, option ranges and integrality, shapes and
// sizes whose products fit, structured options consistent with widths. Errors are IRErrors
// located at the node (its name and source line:col). The ops may then trust the IR.
#include <cmath>
#include <cstdint>
#include <set>
#include <string>

#include "ir.h"
#include "neuromorph/errors.h"

namespace nm {
namespace {

constexpr int64_t kMaxValues = int64_t(1) << 26;  // widest value of one node (as the compiler)
constexpr int64_t kMaxCells = int64_t(1) << 20;
constexpr double kMaxInit = 1e6;                   // |initialiser parameter|

struct Check {
  const IrNode* nd = nullptr;
  std::string where() const {
    if (!nd) return "IR: ";
    std::string s = "IR: node '" + nd->name + "'";
    if (nd->line > 0) s += " (line " + std::to_string(nd->line) + ", col " + std::to_string(nd->col) + ")";
    return s + ": ";
  }
  [[noreturn]] void fail(const std::string& msg) const { throw IRError(where() + msg); }
  void need(bool ok, const std::string& msg) const {
    if (!ok) fail(msg);
  }
  // an integral number in [lo, hi]
  int64_t integer(double v, int64_t lo, int64_t hi, const std::string& what) const {
    need(std::isfinite(v) && v == std::floor(v) && v >= double(lo) && v <= double(hi),
         what + " must be an integer in " + std::to_string(lo) + ".." + std::to_string(hi) +
             ", got " + num(v));
    return int64_t(v);
  }
  double real(double v, double lo, double hi, bool lo_open, const std::string& what) const {
    need(std::isfinite(v) && (lo_open ? v > lo : v >= lo) && v <= hi,
         what + " must be a finite number " + (lo_open ? "> " : ">= ") + num(lo) + ", got " + num(v));
    return v;
  }
  static std::string num(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.17g", v);
    return b;
  }
};

int64_t product(const Check& c, const std::vector<int>& shape, int64_t cap, const std::string& what) {
  c.need(!shape.empty(), what + " has no shape");
  int64_t p = 1;
  for (int d : shape) {
    c.need(d >= 1, what + " has a non-positive dimension");
    p *= d;
    c.need(p <= cap, what + " has more than " + std::to_string(cap) + " entries");
  }
  return p;
}

// Options of a structured node: integral keys in ranges, flags 0/1, names from a set.
struct Opts {
  const Check& c;
  const StructSpec& st;
  int64_t i(const char* key, int64_t lo, int64_t hi) const {
    c.need(st.has(key), std::string("option '") + key + "' is missing");
    return c.integer(st.num.at(key), lo, hi, std::string("option '") + key + "'");
  }
  bool flag(const char* key) const { return i(key, 0, 1) != 0; }
  double r(const char* key, double lo, double hi, bool lo_open) const {
    c.need(st.has(key), std::string("option '") + key + "' is missing");
    return c.real(st.num.at(key), lo, hi, lo_open, std::string("option '") + key + "'");
  }
  std::string name(const char* key, std::initializer_list<const char*> allowed) const {
    auto it = st.name.find(key);
    c.need(it != st.name.end(), std::string("option '") + key + "' is missing");
    for (const char* a : allowed)
      if (it->second == a) return it->second;
    c.fail(std::string("option '") + key + "' has an unknown value '" + it->second + "'");
  }
};

void attn2d(const Check& c, const IrNode& nd) {
  const Opts o{c, nd.st};
  c.need(nd.st.shape.size() == 2, "an attn2d grid is HxW");
  const int64_t S = product(c, nd.st.shape, kMaxCells, "the grid");
  const int64_t d = o.i("dim", 1, 1 << 16), h = o.i("heads", 1, 1 << 16);
  o.i("window", 0, 64), o.i("depth", 1, 256), o.i("iterations", 1, 256), o.i("hidden", 1, 1 << 20);
  const bool rope = o.flag("rope"), proj = o.flag("proj");
  o.name("mask", {"none", "raster"});
  c.need(d % h == 0, "heads must divide dim");
  c.need(!rope || (d / h) % 4 == 0, "2D RoPE needs a head size divisible by 4");
  c.need(proj || h == 1, "proj 0 needs heads 1");
  const bool vocab = nd.st.has("vocab");
  if (vocab) o.i("vocab", 1, 1 << 24);
  c.need(S * d <= kMaxValues, "cells x dim is too large");
  c.need(nd.st.in_width == (vocab ? S : S * d) && nd.width == S * d, "widths do not match the grid");
}

void column(const Check& c, const IrNode& nd) {
  const Opts o{c, nd.st};
  const auto& sh = nd.st.shape;
  c.need(sh.size() >= 1 && sh.size() <= 3, "a column sheet is N, HxW or LxHxW");
  const int64_t N = product(c, sh, 1 << 15, "the sheet");  // N x N attention bias
  const int64_t d = o.i("dim", 1, 1 << 16), qk = o.i("qk", 1, 1 << 16), h = o.i("heads", 1, 1 << 16);
  o.i("depth", 1, 256), o.i("mlp", 1, 1 << 20);
  const int64_t in = o.i("in", 1, N), out = o.i("out", 1, N);
  c.need(d % h == 0 && qk % h == 0, "heads must divide dim and qk");
  o.name("value", {"input", "proj"});
  const std::string geo = o.name("geometry", {"grid", "stack", "sphere", "none"});
  c.need((geo == "grid" && sh.size() == 2) || (geo == "stack" && sh.size() == 3) ||
             ((geo == "sphere" || geo == "none") && sh.size() == 1),
         "geometry '" + geo + "' does not fit the shape's rank");
  o.flag("skip"), o.flag("pos"), o.flag("inject");
  o.r("sigma", 0, 1e6, false), o.r("wiring", 0, 1e6, false), o.r("power", 0, 64, true);
  o.r("offset", 0, 1e6, false);
  c.need(N * d <= kMaxValues, "columns x dim is too large");
  c.need(nd.st.in_width == in * d && nd.width == out * d, "widths do not match in/out x dim");
}

void neuron(const Check& c, const IrNode& nd) {
  const Opts o{c, nd.st};
  c.need(nd.st.shape.size() == 1, "a neuron section takes a length T");
  const int64_t T = product(c, nd.st.shape, kMaxCells, "the sequence");
  const int64_t d = o.i("dim", 1, 1 << 16), n = o.i("neurons", 1, 1 << 12);
  const int64_t a = o.i("attentive", 0, n), h = o.i("heads", 1, 1 << 12);
  o.i("dendrites", 0, 64), o.i("synapses", 0, 64), o.i("neighbors", 0, n - 1);
  o.i("seed", 0, int64_t(1) << 53);
  const int64_t s = o.i("sections", 1, 1 << 12);
  o.r("threshold", 0, 1, true);
  c.need(nd.st.num.at("threshold") < 1, "option 'threshold' must be below 1");
  o.flag("causal");
  o.name("route", {"sample", "batch", "gate"});
  if (nd.st.has("dropout")) {
    o.r("dropout", 0, 1, false);
    c.need(nd.st.num.at("dropout") < 1, "option 'dropout' must be below 1");
  }
  c.need(d % s == 0, "sections must divide dim");
  c.need(a == 0 || (d / s) % h == 0, "heads must divide the section width");
  c.need(T * d <= kMaxValues, "T x dim is too large");
  c.need(nd.st.in_width == T * d && nd.width == T * d, "widths do not match T x dim");
}

void embed(const Check& c, const IrNode& nd) {
  const Opts o{c, nd.st};
  const int64_t C = product(c, nd.st.shape, kMaxCells, "the embedding");
  o.i("vocab", 1, 1 << 24);
  const int64_t d = o.i("dim", 1, 1 << 16);
  o.name("pos", {"learned", "none"});
  c.need(C * d <= kMaxValues, "cells x dim is too large");
  c.need(nd.st.in_width == C && nd.width == C * d, "widths do not match cells x dim");
}

void pool(const Check& c, const IrNode& nd) {
  const Opts o{c, nd.st};
  const int64_t C = product(c, nd.st.shape, kMaxCells, "the pool");
  const int64_t d = o.i("dim", 1, 1 << 16);
  o.name("op", {"mean", "max", "first", "last"});
  c.need(C * d <= kMaxValues, "cells x dim is too large");
  c.need(nd.st.in_width == C * d && nd.width == d, "widths do not match cells x dim -> dim");
}

// The Lagrangians with a beta (a layer may learn it).
bool has_beta(Lg k) {
  return k == Lg::Exp || k == Lg::Rexp || k == Lg::Tanh || k == Lg::Sigmoid || k == Lg::Softmax;
}

void lagrangian(const Check& c, const LagSpec& l, const std::string& what) {
  switch (l.kind) {
    case Lg::Linear: case Lg::Relu: case Lg::Ghostmax: case Lg::Selu:
      return;
    case Lg::Repu:
      return void(c.real(l.p, 1, 64, true, what + " repu's n"));
    case Lg::Exp: case Lg::Rexp: case Lg::Tanh: case Lg::Sigmoid: case Lg::Softmax:
      return void(c.real(l.p, 0, 1e6, true, what + " beta"));
    case Lg::LayerNorm: case Lg::Spherical: case Lg::Leaky: case Lg::Elu:
      return void(c.real(l.p, 0, 1e6, false, what + " parameter"));
    case Lg::kCount:
      break;
  }
  c.fail(what + " has an unknown Lagrangian '" + l.name + "'");
}

// Every option the engine reads of a synapse is in the IR (the compiler writes them all; the
// backends apply no defaults): integers with their lower bound, flags, the pool's name; and
// the shapes the kind needs of its layers.
void synapse_options(const Check& c, const EnergySpec& e, const EnergySynapse& s, const std::string& w) {
  auto num = [&](const char* key, double lo, double hi) {
    auto it = s.num.find(key);
    c.need(it != s.num.end(), w + " has no option '" + key + "'");
    c.need(it->second >= lo && it->second <= hi,
           w + " option '" + key + "' must be in " + Check::num(lo) + ".." + Check::num(hi));
    return int(it->second);
  };
  constexpr double kBig = double(int64_t(1) << 24);
  auto tokens = [&](int ref) {
    const EnergyLayer& l = e.layers[size_t(ref)];
    return l.size / l.shape.back();
  };
  if (s.kind == SynKind::Dense) num("bias", 0, 1);
  if (s.kind == SynKind::Hidden) num("units", 1, kBig), num("norm", 0, 1);
  if (s.kind == SynKind::Tensor) num("units", 1, kBig), num("heads", 1, kBig);
  if (s.kind == SynKind::Attention || s.kind == SynKind::Mixer) num("heads", 1, kBig), num("qk", 1, kBig);
  if (s.kind == SynKind::Mixer && s.refs.size() == 2)
    c.need(tokens(s.refs[0]) == tokens(s.refs[1]), w + " joins layers of unequal token counts");
  if (s.kind != SynKind::Conv || s.refs.size() != 2) return;
  const int k = num("kernel", 1, kBig), st = num("stride", 1, kBig), pad = num("pad", 0, kBig);
  const bool pool = s.pool != PoolOp::None;  // window and pstride: read with pooling only
  const int win = pool ? num("window", 1, kBig) : 1, pst = pool ? num("pstride", 1, kBig) : 1;
  const auto &a = e.layers[size_t(s.refs[0])].shape, &b = e.layers[size_t(s.refs[1])].shape;
  c.need(a.size() == 3 && b.size() == 3, w + " needs HxWxC layers");
  c.need(pad < k, w + " has a pad not less than its kernel");
  const int64_t hc = (int64_t(a[0]) + 2 * pad - k) / st + 1, wc = (int64_t(a[1]) + 2 * pad - k) / st + 1;
  c.need(a[0] + 2 * int64_t(pad) >= k && a[1] + 2 * int64_t(pad) >= k, w + " has a kernel larger than its input");
  c.need(!pool || (hc >= win && wc >= win), w + " has a pooling window larger than its map");
  const int64_t ph = pool ? (hc - win) / pst + 1 : hc, pw = pool ? (wc - win) / pst + 1 : wc;
  c.need(ph == b[0] && pw == b[1] && a[2] >= 1 && b[2] >= 1, w + " does not fit its layers");
}

void energy(const Check& c, const IrNode& nd) {
  const EnergySpec& e = nd.en;
  c.need(e.steps >= 1 && e.steps <= 10000, "steps must be in 1..10000");
  c.real(e.dt, 0, 1e6, true, "dt");
  int64_t total = 0;
  for (const EnergyLayer& l : e.layers) {
    total += product(c, l.shape, kMaxValues, "layer '" + l.name + "'");
    c.need(total <= kMaxValues, "the layers are too large");
    c.real(l.tau, 0, 1e6, true, "layer '" + l.name + "' tau");
    lagrangian(c, l.lag, "layer '" + l.name + "'");
    c.need(!l.learn_beta || has_beta(l.lag.kind), "layer '" + l.name + "' learns a beta it does not have");
  }
  for (const EnergySynapse& s : e.synapses) {
    const std::string w = "synapse '" + s.name + "'";
    const size_t n = s.refs.size();
    const bool ok = s.kind == SynKind::Dense ? n >= 2 : s.kind == SynKind::Bias ? n == 1
                  : (s.kind == SynKind::Hidden || s.kind == SynKind::Tensor) ? n >= 1 : n == 2;
    c.need(ok, w + " joins the wrong number of layers (" + std::to_string(n) + ")");
    for (const auto& [key, v] : s.num)
      c.integer(v, 0, int64_t(1) << 24, w + " option '" + key + "'");
    synapse_options(c, e, s, w);
    const bool hidden = s.kind == SynKind::Hidden || s.kind == SynKind::Tensor ||
                        s.kind == SynKind::Attention || s.kind == SynKind::Mixer;
    c.need(hidden == s.has_hidden, w + (hidden ? " needs" : " takes no") + " hidden Lagrangian");
    if (s.has_hidden) lagrangian(c, s.hidden, w);
  }
}

void function_params(const Check& c, const IrNode& nd) {
  if (nd.kind != NodeKind::Layer && nd.kind != NodeKind::Output && !nd.is_struct()) return;
  c.real(nd.act_param, -1e6, 1e6, false, "the activation's parameter");
  if (nd.kind == NodeKind::Output && nd.loss == Loss::Huber)
    c.real(nd.loss_param, 0, 1e6, true, "huber's delta");
}

void header(const IrModel& m) {
  const Check c;
  const auto& w = m.weight_params;
  const size_t want_w = m.weight_init == WeightInit::Uniform || m.weight_init == WeightInit::Normal ? 2
                        : m.weight_init == WeightInit::Orthogonal ? 1 : 0;
  c.need(w.size() == want_w || (m.weight_init == WeightInit::Orthogonal && w.empty()),
         "the weight initialiser takes " + std::to_string(want_w) + " parameter(s), got " +
             std::to_string(w.size()));
  for (double v : w) c.real(v, -kMaxInit, kMaxInit, false, "a weight initialiser parameter");
  if (m.weight_init == WeightInit::Uniform) c.need(w[0] < w[1], "uniform needs a < b");
  if (m.weight_init == WeightInit::Normal) c.need(w[1] >= 0, "normal's std must not be negative");
  const auto& b = m.bias_params;
  const size_t want_b = m.bias_init == BiasInit::ConstFlat ? 1 : m.bias_init == BiasInit::ConstUneven ? 2 : 0;
  c.need(b.size() == want_b, "the bias initialiser takes " + std::to_string(want_b) +
                                 " parameter(s), got " + std::to_string(b.size()));
  for (double v : b) c.real(v, -kMaxInit, kMaxInit, false, "a bias initialiser parameter");
  if (m.bias_init == BiasInit::ConstUneven) c.need(b[1] >= 0, "const_uneven's std must not be negative");
}

}  // namespace

void validate_ir(const IrModel& m) {
  header(m);
  int64_t params = 0;
  for (const IrNode& nd : m.nodes) {
    const Check c{&nd};
    c.need(nd.width >= 1 && nd.width <= kMaxValues, "width must be in 1.." + std::to_string(kMaxValues));
    function_params(c, nd);
    if (nd.kind == NodeKind::Layer || nd.kind == NodeKind::Output) {
      const int64_t in = m.nodes[nd.inputs.at(0).node].width;
      params += (in / nd.cells + 1) * (nd.width / nd.cells);
      c.need(params <= (int64_t(1) << 31), "the model has more than 2^31 parameters");
    }
    switch (nd.kind) {
      case NodeKind::Attn2d: attn2d(c, nd); break;
      case NodeKind::Column: column(c, nd); break;
      case NodeKind::Neuron: neuron(c, nd); break;
      case NodeKind::Embed: embed(c, nd); break;
      case NodeKind::Pool: pool(c, nd); break;
      case NodeKind::Energy: energy(c, nd); break;
      NM_PLAIN_KIND_CASES: case NodeKind::kCount: break;
    }
  }
}

}  // namespace nm
