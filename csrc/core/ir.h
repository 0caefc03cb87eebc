// The IR (docs/ir.md) as the runtime sees it: nodes with enums instead of strings.
// Loading validates everything the plan relies on, so later code can trust it.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace nm {

enum class NodeKind { Input, Layer, Output, Merge, Split, Tap, Attn2d, Column, Energy, Neuron,
                      Embed, Pool, kCount };
// The structured kinds (each one unit per backend that registers itself: core/struct_node.h,
// cuda/device_node.cuh), as case labels for switches over NodeKind. A kind added to the enum
// and not here (or the reverse) fails the build through -Werror=switch.
#define NM_STRUCT_KIND_CASES                                                              \
  case NodeKind::Attn2d: case NodeKind::Column: case NodeKind::Energy: case NodeKind::Neuron: \
  case NodeKind::Embed: case NodeKind::Pool
#define NM_PLAIN_KIND_CASES                                                                \
  case NodeKind::Input: case NodeKind::Layer: case NodeKind::Output: case NodeKind::Merge:   \
  case NodeKind::Split: case NodeKind::Tap
constexpr bool is_struct_kind(NodeKind k) {
  switch (k) {
    NM_STRUCT_KIND_CASES: return true;
    NM_PLAIN_KIND_CASES: return false;
    case NodeKind::kCount: break;
  }
  return false;
}

// One op list each: every activation and loss as X(enumerator, IR name). The enums, the IR's
// name tables (core/ir.cpp) and the dispatch (core/formulas.h: with_act) are made from these
// lists, so a new op is one line here and its formula (docs/extending.md).
#define NM_ACTIVATIONS(X)                                                                      \
  X(Sigmoid, "sigmoid") X(Tanh, "tanh") X(Relu, "relu") X(Linear, "linear")                    \
  X(BinaryStep, "binary_step") X(ReluLeaky, "relu_leaky") X(ReluParametric, "relu_parametric") \
  X(Elu, "elu") X(Selu, "selu") X(Softmax, "softmax") X(Swish, "swish") X(Gelu, "gelu")         \
  X(GeluErf, "gelu_erf")
#define NM_LOSSES(X)                                                                           \
  X(Mse, "mse") X(Mae, "mae") X(Mape, "mape") X(Huber, "huber")                                 \
  X(HuberModified, "huber_modified") X(CrossEntropy, "cross_entropy") X(Hinge, "hinge")
#define NM_ENUMERATOR(e, name) e,
enum class Act { NM_ACTIVATIONS(NM_ENUMERATOR) kCount };
enum class Loss { NM_LOSSES(NM_ENUMERATOR) kCount };
#undef NM_ENUMERATOR
// Tables indexed by the enums below static_assert their size against kCount.
enum class MergeOp { Additive, Multiplicative, Average, kCount };
enum class WeightInit { Xavier, He, Lecun, Uniform, Normal, Orthogonal, kCount };
enum class BiasInit { Zero, ConstFlat, ConstUneven, kCount };

struct IrInput {
  int node = -1;        // index into IrModel::nodes
  bool delayed = false; // read the previous sample's value
};

// A structured node's shape and options (IR v2 "struct"): every option present, numbers as
// doubles, names (mask, value, geometry) as strings.
struct StructSpec {
  std::vector<int> shape;
  std::map<std::string, double> num;
  std::map<std::string, std::string> name;
  int in_width = 0;
  double get(const std::string& key) const;           // throws IRError when missing
  int geti(const std::string& key) const { return int(get(key)); }
  bool has(const std::string& key) const { return num.count(key) > 0; }
  const std::string& str(const std::string& key) const;
};

// An energy block (IR v2 "energy"): neuron layers and the synapses that join them.
// An energy layer's Lagrangian (extensions-math.md 1b; core/lagrangian.h), a synapse's kind and
// a conv synapse's pooling: parsed from the IR's names once, in core/ir.cpp (kLgNames,
// kSynNames, kPoolNames); the backends switch on them and never read a name.
enum class Lg { Linear, Relu, Repu, Exp, Rexp, Tanh, Sigmoid, Softmax, LayerNorm, Spherical,
                Ghostmax, Leaky, Elu, Selu, kCount };
enum class SynKind { Dense, Bias, Hidden, Tensor, Attention, Mixer, Conv, kCount };
enum class PoolOp { None, Avg, Max, kCount };

struct LagSpec {
  std::string name;  // as written in the IR (for messages)
  Lg kind = Lg::Linear;
  double p = 0;      // its parameter (beta, n, gamma, slope, alpha), when it has one
};
struct EnergyLayer {
  std::string name;
  std::vector<int> shape;
  int size = 0;
  double tau = 1;
  bool bias = false;
  bool clamp = false;       // held at its slice of the block's input
  bool learn_beta = false;  // the Lagrangian's beta is a parameter "<layer>.beta"
  int in_offset = -1;       // where its slice of the block's input starts; -1: not an input
  LagSpec lag;
};
struct EnergySynapse {
  std::string name;
  SynKind kind = SynKind::Dense;
  std::vector<int> refs;   // indices into EnergySpec::layers
  std::map<std::string, double> num;  // every numeric option (the compiler writes them all)
  PoolOp pool = PoolOp::None;         // conv only
  bool has_hidden = false;
  LagSpec hidden;
};
struct EnergySpec {
  int steps = 4;
  double dt = 0.4;
  bool normal_init = false;
  std::vector<int> outs;  // the output layers (indices); the output is their concatenation
  std::vector<EnergyLayer> layers;
  std::vector<EnergySynapse> synapses;
};

struct IrNode {
  std::string name;
  NodeKind kind = NodeKind::Layer;
  int width = 0;
  std::vector<IrInput> inputs;  // layer/output/split/tap: [u]; merge: [u, v]
  Act act = Act::Linear;
  double act_param = 0.0;
  int cells = 1;  // layer/output: position-wise over `cells` equal cells of the input
  int line = 0, col = 0;  // where the node is written in the MDL source (0: unknown)
  Loss loss = Loss::Mse;
  double loss_param = 0.0;
  MergeOp op = MergeOp::Additive;
  StructSpec st;  // Attn2d / Column only (Energy: in_width)
  EnergySpec en;  // Energy only
  bool is_struct() const { return is_struct_kind(kind); }
};

struct IrModel {
  std::vector<IrNode> nodes;
  std::vector<int> order;  // execution order (node indices)
  int input = -1, output = -1;
  bool recurrent = false;
  WeightInit weight_init = WeightInit::Xavier;
  std::vector<double> weight_params;
  BiasInit bias_init = BiasInit::Zero;
  std::vector<double> bias_params;
  std::string json;  // the document as loaded
};

// The IR names the engine reads, table by table (node_kinds, activations, losses, merges,
// weight_inits, bias_inits, lagrangians, synapses, pools), in enum order: for the test that the
// compiler's tables and the engine's agree (tests/test_registry.py).
std::vector<std::pair<std::string, std::vector<std::string>>> ir_tables();
IrModel load_ir(const std::string& json_text);  // throws IRError; validated (validate_ir)
// The one IR validator (core/validate.cpp): every rule the plan and the ops rely on.
void validate_ir(const IrModel& m);

}  // namespace nm
