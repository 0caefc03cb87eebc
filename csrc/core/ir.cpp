// IR JSON -> IrModel, with validation (the only translation unit that includes nlohmann/json).
#include "ir.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>

#include "neuromorph/errors.h"
#include "neuromorph/version.h"

namespace nm {
namespace {

using json = nlohmann::json;

#define NM_IR_NAME(e, name) name,
const char* const kActNames[] = {NM_ACTIVATIONS(NM_IR_NAME)};
const char* const kLossNames[] = {NM_LOSSES(NM_IR_NAME)};
#undef NM_IR_NAME
const char* const kMergeNames[] = {"additive", "multiplicative", "average"};
const char* const kWeightNames[] = {"xavier", "he", "lecun", "uniform", "normal", "orthogonal"};
const char* const kBiasNames[] = {"zero", "const_flat", "const_uneven"};
const char* const kKindNames[] = {"input", "layer", "output", "merge", "split", "tap", "attn2d",
                                  "column", "energy", "neuron", "embed", "pool"};
static_assert(std::size(kKindNames) == size_t(NodeKind::kCount), "a node kind without its IR name");
const char* const kLgNames[] = {"linear", "relu", "repu", "exp", "rexp", "tanh", "sigmoid",
                                "softmax", "layernorm", "spherical", "ghostmax", "relu_leaky",
                                "elu", "selu"};
const char* const kSynNames[] = {"dense", "bias", "hidden", "tensor", "attention", "mixer", "conv"};
const char* const kPoolNames[] = {"none", "avg", "max"};
static_assert(std::size(kLgNames) == size_t(Lg::kCount), "a Lagrangian without its IR name");
static_assert(std::size(kSynNames) == size_t(SynKind::kCount), "a synapse kind without its IR name");
static_assert(std::size(kPoolNames) == size_t(PoolOp::kCount), "a pooling without its IR name");
static_assert(std::size(kActNames) == size_t(Act::kCount), "activation table misses an op");
static_assert(std::size(kLossNames) == size_t(Loss::kCount), "loss table misses an op");
static_assert(std::size(kMergeNames) == size_t(MergeOp::kCount), "merge table misses an op");
static_assert(std::size(kWeightNames) == size_t(WeightInit::kCount), "init table misses one");
static_assert(std::size(kBiasNames) == size_t(BiasInit::kCount), "bias table misses one");

template <class E, size_t N>
E lookup(const char* const (&names)[N], const std::string& s, const char* what) {
  std::string known;
  for (size_t i = 0; i < N; ++i) {
    if (s == names[i]) return E(i);
    known += (i ? ", " : "") + std::string(names[i]);
  }
  throw IRError(std::string("IR: unknown ") + what + " '" + s + "' (expected one of " + known + ")");
}

const json& need(const json& j, const char* key, const std::string& where) {
  if (!j.is_object() || !j.contains(key))
    throw IRError("IR: " + where + " lacks the field '" + key + "'");
  return j.at(key);
}

// A JSON integer (or integral float) in int32 range; anything else is an IRError, never a
// silent truncation (4294967304 is not 8).
int as_int(const json& v, const std::string& where) {
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() ? v.get<uint64_t>() <= uint64_t(INT32_MAX)
                               : v.get<int64_t>() >= INT32_MIN && v.get<int64_t>() <= INT32_MAX)
      return int(v.get<int64_t>());
  } else if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && d >= INT32_MIN && d <= INT32_MAX) return int(d);
  }
  throw IRError("IR: '" + where + "': expected an integer in int32 range, got " + v.dump());
}

std::vector<double> params_of(const json& fn, const std::string& where) {
  std::vector<double> p;
  for (const auto& v : need(fn, "params", where)) p.push_back(v.get<double>());
  return p;
}

NodeKind kind_of(const std::string& s) { return lookup<NodeKind>(kKindNames, s, "node kind"); }

StructSpec struct_of(const json& j, const std::string& where) {
  StructSpec st;
  for (const auto& d : need(j, "shape", where)) st.shape.push_back(as_int(d, where));
  for (auto it = need(j, "options", where).begin(); it != j["options"].end(); ++it) {
    if (it->is_number()) st.num[it.key()] = it->get<double>();
    else if (it->is_string()) st.name[it.key()] = it->get<std::string>();
    else throw IRError("IR: option '" + it.key() + "' of '" + where + "' is neither a number nor a name");
  }
  st.in_width = as_int(need(j, "in_width", where), where);
  if (st.shape.empty() || st.in_width <= 0) throw IRError("IR: bad struct at '" + where + "'");
  for (int d : st.shape)
    if (d <= 0) throw IRError("IR: bad shape at '" + where + "'");
  return st;
}

LagSpec lag_of(const json& j, const std::string& where) {
  LagSpec l;
  l.name = need(j, "name", where).get<std::string>();
  // relu_parametric is the leaky form with its slope alpha
  l.kind = l.name == "relu_parametric" ? Lg::Leaky : lookup<Lg>(kLgNames, l.name, "Lagrangian");
  auto p = params_of(j, where);
  l.p = p.empty() ? 0.0 : p[0];
  return l;
}

EnergySpec energy_of(const json& j, const std::string& where, int* in_width) {
  EnergySpec e;
  const json& o = need(j, "options", where);
  e.steps = as_int(need(o, "steps", where), where);
  e.dt = need(o, "dt", where).get<double>();
  const bool block_clamp = as_int(need(o, "clamp", where), where) != 0;
  e.normal_init = need(o, "init", where).get<std::string>() == "normal";
  std::vector<std::string> outs;  // IR v3: a list of names; v2: one name
  const json& jo = need(o, "out", where);
  if (jo.is_string()) outs.push_back(jo.get<std::string>());
  else for (const auto& v : jo) outs.push_back(v.get<std::string>());
  for (const auto& jl : need(j, "layers", where)) {
    EnergyLayer l;
    l.name = need(jl, "name", where).get<std::string>();
    for (const auto& d : need(jl, "shape", l.name)) l.shape.push_back(as_int(d, l.name));
    l.size = as_int(need(jl, "size", l.name), l.name);
    l.tau = need(jl, "tau", l.name).get<double>();
    l.bias = as_int(need(jl, "bias", l.name), l.name) != 0;
    l.lag = lag_of(need(jl, "lagrangian", l.name), l.name);
    // v2 documents: only the first layer can be clamped, by the block's option
    l.clamp = jl.contains("clamp") ? as_int(jl["clamp"], l.name) != 0 : (e.layers.empty() && block_clamp);
    l.learn_beta = jl.value("learn_beta", 0) != 0;
    int prod = 1;
    for (int d : l.shape) prod *= d;
    if (l.shape.empty() || prod != l.size || l.size <= 0 || !(l.tau > 0))
      throw IRError("IR: bad neuron layer '" + l.name + "' in '" + where + "'");
    e.layers.push_back(l);
  }
  for (const std::string& name : outs) {
    int idx = -1;
    for (size_t l = 0; l < e.layers.size(); ++l)
      if (e.layers[l].name == name) idx = int(l);
    if (idx < 0) throw IRError("IR: energy block '" + where + "' outputs '" + name + "', not one of its layers");
    e.outs.push_back(idx);
  }
  int width = 0;  // the block's input: the first layer, then every other clamped layer
  for (size_t l = 0; l < e.layers.size(); ++l)
    if (l == 0 || e.layers[l].clamp) {
      e.layers[l].in_offset = width;
      width += e.layers[l].size;
    }
  for (const auto& js : need(j, "synapses", where)) {
    EnergySynapse s;
    s.name = need(js, "name", where).get<std::string>();
    s.kind = lookup<SynKind>(kSynNames, need(js, "kind", s.name).get<std::string>(), "synapse kind");
    for (const auto& r : need(js, "refs", s.name)) {
      int idx = as_int(r, s.name);
      if (idx < 0 || idx >= int(e.layers.size()))
        throw IRError("IR: synapse '" + s.name + "' refers to no layer of '" + where + "'");
      s.refs.push_back(idx);
    }
    for (auto it = need(js, "options", s.name).begin(); it != js["options"].end(); ++it) {
      if (it->is_number()) s.num[it.key()] = it->get<double>();
      else if (it.key() == "pool")
        s.pool = lookup<PoolOp>(kPoolNames, it->get<std::string>(),
                                ("synapse '" + s.name + "' option 'pool': value").c_str());
      else throw IRError("IR: synapse '" + s.name + "' has an unknown option '" + it.key() + "'");
    }
    if (js.contains("hidden")) {
      s.has_hidden = true;
      s.hidden = lag_of(js["hidden"], s.name);
    }
    e.synapses.push_back(s);
  }
  if (e.layers.empty() || e.outs.empty() || e.steps < 1 || !(e.dt > 0))
    throw IRError("IR: bad energy block '" + where + "'");
  *in_width = as_int(need(j, "in_width", where), where);
  if (*in_width != width) throw IRError("IR: bad energy block input width at '" + where + "'");
  return e;
}

void check_graph(const IrModel& m) {
  const int n = int(m.nodes.size());
  if (m.input < 0 || m.output < 0) throw IRError("IR: input or output node missing");
  if (int(m.order.size()) != n) throw IRError("IR: 'order' must list every node once");
  std::vector<int> pos(n, -1);
  for (int i = 0; i < n; ++i) {
    if (m.order[i] < 0 || m.order[i] >= n || pos[m.order[i]] >= 0)
      throw IRError("IR: 'order' must list every node once");
    pos[m.order[i]] = i;
  }
  for (int i = 0; i < n; ++i) {
    const IrNode& nd = m.nodes[i];
    size_t want = nd.kind == NodeKind::Input ? 0 : nd.kind == NodeKind::Merge ? 2 : 1;
    if (nd.inputs.size() != want)
      throw IRError("IR: node '" + nd.name + "' has the wrong number of inputs");
    if (nd.width <= 0) throw IRError("IR: node '" + nd.name + "' has no positive width");
    for (size_t k = 0; k < nd.inputs.size(); ++k) {
      const IrInput& in = nd.inputs[k];
      if (in.delayed && k != 1) throw IRError("IR: only a merge's second input may be delayed");
      if (!in.delayed && pos[in.node] >= pos[i])
        throw IRError("IR: 'order' runs '" + nd.name + "' before its input");
      int w = m.nodes[in.node].width;
      if (nd.cells > 1 && w % nd.cells)
        throw IRError("IR: the input of '" + nd.name + "' does not split into its cells");
      if (nd.is_struct() && w != nd.st.in_width)
        throw IRError("IR: width mismatch at '" + nd.name + "'");
      if (nd.kind != NodeKind::Layer && nd.kind != NodeKind::Output && !nd.is_struct() && w != nd.width)
        throw IRError("IR: width mismatch at '" + nd.name + "'");
    }
  }
  if (m.nodes[m.output].kind != NodeKind::Output) throw IRError("IR: 'output' is not an output");
  if (m.nodes[m.input].kind != NodeKind::Input) throw IRError("IR: 'input' is not an input");
}

}  // namespace

double StructSpec::get(const std::string& key) const {
  auto it = num.find(key);
  if (it == num.end()) throw IRError("IR: struct option '" + key + "' is missing");
  return it->second;
}

const std::string& StructSpec::str(const std::string& key) const {
  auto it = name.find(key);
  if (it == name.end()) throw IRError("IR: struct option '" + key + "' is missing");
  return it->second;
}

IrModel load_ir(const std::string& text) {
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::exception& e) {
    throw IRError(std::string("IR: not valid JSON: ") + e.what());
  }
  IrModel m;
  try {
    if (!doc.is_object() || doc.value("format", "") != "neuromorph-ir")
      throw IRError("IR: not a Neuromorph IR document (format must be 'neuromorph-ir')");
    int version = as_int(need(doc, "version", "the document"), "the document");
    if (version < 1 || version > kIrVersion)
      throw IRError("IR: version " + std::to_string(version) + " is not supported (this engine "
                    "reads versions 1 to " + std::to_string(kIrVersion) + ")");
    const json& header = need(doc, "header", "the document");
    const json& wi = need(header, "weight_init", "the header");
    const json& bi = need(header, "bias_init", "the header");
    m.weight_init = lookup<WeightInit>(kWeightNames, need(wi, "name", "weight_init"), "weight init");
    m.weight_params = params_of(wi, "weight_init");
    m.bias_init = lookup<BiasInit>(kBiasNames, need(bi, "name", "bias_init"), "bias init");
    m.bias_params = params_of(bi, "bias_init");
    std::map<std::string, int> index;
    for (const auto& jn : need(doc, "nodes", "the document")) {
      IrNode nd;
      nd.name = need(jn, "name", "a node").get<std::string>();
      nd.kind = kind_of(need(jn, "kind", nd.name));
      nd.width = as_int(need(jn, "width", nd.name), nd.name);
      if (jn.contains("activation")) {
        nd.act = lookup<Act>(kActNames, need(jn["activation"], "name", nd.name), "activation");
        auto p = params_of(jn["activation"], nd.name);
        nd.act_param = p.empty() ? 0.0 : p[0];
      } else if (nd.kind == NodeKind::Layer || nd.kind == NodeKind::Output) {
        throw IRError("IR: layer '" + nd.name + "' has no activation");
      }
      if (jn.contains("loss")) {
        nd.loss = lookup<Loss>(kLossNames, need(jn["loss"], "name", nd.name), "loss");
        auto p = params_of(jn["loss"], nd.name);
        nd.loss_param = p.empty() ? 0.0 : p[0];
      }
      nd.cells = jn.contains("cells") ? as_int(jn["cells"], nd.name) : 1;
      if (jn.contains("loc") && jn["loc"].is_object()) {
        nd.line = as_int(jn["loc"].value("line", json(0)), nd.name);
        nd.col = as_int(jn["loc"].value("col", json(0)), nd.name);
      }
      if (nd.cells < 1 || (nd.cells > 1 && nd.kind != NodeKind::Layer && nd.kind != NodeKind::Output) ||
          nd.width % nd.cells)
        throw IRError("IR: bad 'cells' at '" + nd.name + "'");
      if (nd.kind == NodeKind::Energy)
        nd.en = energy_of(need(jn, "energy", nd.name), nd.name, &nd.st.in_width);
      else if (nd.is_struct())
        nd.st = struct_of(need(jn, "struct", nd.name), nd.name);
      if (nd.kind == NodeKind::Merge)
        nd.op = lookup<MergeOp>(kMergeNames, need(jn, "op", nd.name), "merge op");
      if (!index.emplace(nd.name, int(m.nodes.size())).second)
        throw IRError("IR: duplicate node name '" + nd.name + "'");
      m.nodes.push_back(nd);
    }
    size_t i = 0;
    for (const auto& jn : doc["nodes"]) {
      for (const auto& ji : need(jn, "inputs", m.nodes[i].name)) {
        auto it = index.find(need(ji, "node", m.nodes[i].name).get<std::string>());
        if (it == index.end()) throw IRError("IR: node '" + m.nodes[i].name + "' reads an unknown node");
        m.nodes[i].inputs.push_back({it->second, ji.value("delayed", false)});
      }
      ++i;
    }
    for (const auto& name : need(doc, "order", "the document")) {
      auto it = index.find(name.get<std::string>());
      if (it == index.end()) throw IRError("IR: 'order' names an unknown node");
      m.order.push_back(it->second);
    }
    auto in = index.find(need(doc, "input", "the document").get<std::string>());
    auto out = index.find(need(doc, "output", "the document").get<std::string>());
    m.input = in == index.end() ? -1 : in->second;
    m.output = out == index.end() ? -1 : out->second;
  } catch (const json::exception& e) {
    throw IRError(std::string("IR: malformed document: ") + e.what());
  }
  m.recurrent = std::any_of(m.nodes.begin(), m.nodes.end(), [](const IrNode& n) {
    return std::any_of(n.inputs.begin(), n.inputs.end(), [](const IrInput& i) { return i.delayed; });
  });
  check_graph(m);
  validate_ir(m);
  m.json = text;
  return m;
}

std::vector<std::pair<std::string, std::vector<std::string>>> ir_tables() {
  auto list = [](const auto& names) { return std::vector<std::string>(std::begin(names), std::end(names)); };
  return {{"node_kinds", list(kKindNames)},       {"activations", list(kActNames)},
          {"losses", list(kLossNames)},           {"merges", list(kMergeNames)},
          {"weight_inits", list(kWeightNames)},   {"bias_inits", list(kBiasNames)},
          {"lagrangians", list(kLgNames)},        {"synapses", list(kSynNames)},
          {"pools", list(kPoolNames)}};
}

}  // namespace nm
