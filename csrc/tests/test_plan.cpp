// The IR validator and the plan: a valid IR loads and plans to the documented layout; hostile
// variants of it are IRErrors naming what is wrong; the initialisation is reproducible.
#include <cmath>
#include <string>

#include "../core/ir.h"
#include "../core/plan.h"
#include "../core/struct_node.h"
#include "check.h"
#include "neuromorph/engine.h"

using namespace nm;

namespace {

// mdlc compile of: /xavier, zero/ (x, 3) (h, 4, <tanh>) (y, 2, <softmax>, <cross_entropy>)
const std::string kIr = R"IR({"format":"neuromorph-ir","version":3,"source":{"file":"mlp.mdl","text":"/xavier, zero/ (x, 3) (h, 4, <tanh>) (y, 2, <softmax>, <cross_entropy>)","sha256":"c156add334cff260009cdbed4dd426e3c10c4a250949d3671fa6b4dae6682b4f"},"header":{"weight_init":{"name":"xavier","params":[]},"bias_init":{"name":"zero","params":[]}},"input":"x","output":"y","recurrent":false,"nodes":[{"name":"x","kind":"input","width":3,"loc":{"line":1,"col":17},"inputs":[]},{"name":"h","kind":"layer","width":4,"loc":{"line":1,"col":24},"inputs":[{"node":"x","delayed":false}],"activation":{"name":"tanh","params":[]}},{"name":"y","kind":"output","width":2,"loc":{"line":1,"col":39},"inputs":[{"node":"h","delayed":false}],"activation":{"name":"softmax","params":[]},"loss":{"name":"cross_entropy","params":[]}}],"edges":[{"from":"x","to":"h","kind":"chain","delayed":false},{"from":"h","to":"y","kind":"chain","delayed":false}],"order":["x","h","y"]})IR";

std::string with(const std::string& from, const std::string& to) {
  std::string s = kIr;
  const size_t at = s.find(from);
  if (at == std::string::npos) return "";
  return s.replace(at, from.size(), to);
}

void plan_of_a_valid_ir() {
  const Plan plan(load_ir(kIr), 4, OptimConfig{});
  CHECK(plan.params.size() == 4);  // h.weight h.bias y.weight y.bias, in source order
  CHECK(plan.params[0].name == "h.weight" && plan.params[0].shape == std::vector<int64_t>({4, 3}));
  CHECK(plan.params[3].name == "y.bias" && plan.params[3].offset == 12 + 4 + 8);
  CHECK(plan.n_params == 12 + 4 + 8 + 2);
  CHECK(plan.n_vals == size_t(4) * (3 + 4 + 2));  // one slot per node, B rows each
  CHECK(plan.fused_xent);
  CHECK(plan.states.empty());
  const std::vector<double> a = plan.initial_params(7), b = plan.initial_params(7);
  CHECK(a == b);
  const double bound = std::sqrt(6.0 / (3 + 4));  // xavier uniform of h
  for (int i = 0; i < 12; ++i) CHECK(std::abs(a[size_t(i)]) <= bound);
  for (int i = 12; i < 16; ++i) CHECK(a[size_t(i)] == 0.0);  // zero biases
  const Plan adam(load_ir(kIr), 4, [] { OptimConfig c; c.kind = OptimConfig::Adam; return c; }());
  CHECK(adam.states.size() == 1 && adam.states[0].size == 2 * adam.n_params);
}

void hostile_variants() {
  const char* cases[][2] = {
      {"\"width\":4", "\"width\":-4"},
      {"\"width\":4", "\"width\":1e30"},
      {"\"name\":\"tanh\"", "\"name\":\"tanhh\""},
      {"\"version\":3", "\"version\":99"},
      {"\"node\":\"h\"", "\"node\":\"nowhere\""},
      {"\"output\":\"y\"", "\"output\":\"h\""},
      {"\"order\":[\"x\",\"h\",\"y\"]", "\"order\":[\"y\",\"h\",\"x\"]"},
      {"\"name\":\"cross_entropy\"", "\"name\":\"entropy\""},
  };
  for (const auto& c : cases) {
    const std::string bad = with(c[0], c[1]);
    CHECK(!bad.empty());
    const bool rejected = test::throws<IRError>([&] { Plan(load_ir(bad), 4, OptimConfig{}); });
    if (!rejected) test::fail(__FILE__, __LINE__, std::string("accepted: ") + c[1]);
  }
  CHECK(test::throws<IRError>([] { load_ir("{"); }));
  CHECK(test::throws<IRError>([] { load_ir("[]"); }));
}

void every_kind_is_registered() {
  int structured = 0;
  for (int i = 0; i < int(NodeKind::kCount); ++i) {
    const NodeKind k = NodeKind(i);
    if (!is_struct_kind(k)) {
      CHECK(registered_kind(k) == nullptr);
      continue;
    }
    ++structured;
    const KindEntry* e = registered_kind(k);
    CHECK(e != nullptr);
    if (e) CHECK(e->kind == k && e->f32 && e->f64 && e->name && *e->name);
  }
  CHECK(structured == 6);  // attn2d, column, energy, neuron, embed, pool
}

}  // namespace

int main() {
  every_kind_is_registered();
  plan_of_a_valid_ir();
  hostile_variants();
  return TEST_MAIN_RESULT();
}
