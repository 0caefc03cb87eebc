// The static plan of one compiled model, shared by both executors (cpu/model.cpp and
// cuda/model.cu): where every value lives (slots in one value arena, B rows each), the
// parameter layout (one arena, source order, names "<node>.<part>"), the recurrent state and
// the optimizer state, and the documented initialisation. Made once per model; an executor
// allocates its arenas from the sizes here and never re-derives them. Backend-neutral: nothing
// here includes cpu/ or cuda/.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ir.h"
#include "neuromorph/engine.h"
#include "struct_node.h"

namespace nm {

struct LayerPlan {
  size_t W = 0, b = 0, alpha = 0;  // offsets in the parameter arena
  bool has_alpha = false;
  int in = 0, out = 0;             // per cell: a layer with `cells C` is C rows of (in -> out)
  int cells = 1;
  size_t z = 0;                    // offset of the pre-activation buffer (B x cells x out)
};

struct Slot {
  int width = 0;
  size_t off = 0;           // offset in the value and value-gradient arenas (B x width)
  size_t carry = SIZE_MAX;  // offset in the carry arena when read by a delayed edge
};

class Plan {
 public:
  Plan(IrModel ir, int batch, const OptimConfig& opt);

  IrModel ir;
  int batch;
  std::vector<int> slot_of;          // node -> slot (split / tap share their producer's)
  std::vector<Slot> slots;
  std::vector<LayerPlan> layers;     // by node index; meaningful for layer / output nodes
  std::vector<ParamInfo> params;     // the parameter arena, in source order
  std::vector<ParamInfo> states;     // "state.<node>" (carry arena), then "optimizer.state"
  std::vector<int> aux_nodes;        // nodes adding an auxiliary loss, in node order
  std::vector<std::string> aux_names;
  size_t n_params = 0, n_vals = 0, n_z = 0, n_carry = 0;
  int max_width = 1;                 // widest node (scratch rows)
  bool fused_xent = false;           // softmax output with cross-entropy: dL/dz in one step
  bool has_structs = false;

  const IrNode& node(int idx) const { return ir.nodes[size_t(idx)]; }
  const Slot& slot(int idx) const { return slots[size_t(slot_of[size_t(idx)])]; }
  const ParamInfo& param(const std::string& name) const;  // ShapeError if none
  const ParamInfo& state(const std::string& name) const;
  // The documented initialisation of every parameter (MDL.md section 4, each kind's own), in
  // double; both executors convert once to their element type. With drawn, also each node's
  // fixed drawn tensors (StructNode::drawn, by node index; empty for most).
  std::vector<double> initial_params(uint64_t seed,
                                     std::vector<std::vector<std::vector<double>>>* drawn = nullptr) const;
  // The schedule of a pass over the first `rows` samples, as f(node, first row, rows): every
  // node over all rows at once, or, for a recurrent model (row t of the batch is step t of the
  // stream), every node at row t for t = 0..rows-1, so a delayed read sees row t-1. Backward
  // visits the same (node, row) pairs in the reverse order.
  template <class F>
  void forward_order(int rows, F&& f) const {
    if (!ir.recurrent) {
      for (int idx : ir.order) f(idx, 0, rows);
      return;
    }
    for (int t = 0; t < rows; ++t)
      for (int idx : ir.order) f(idx, t, 1);
  }
  template <class F>
  void backward_order(int rows, F&& f) const {
    if (!ir.recurrent) {
      for (auto it = ir.order.rbegin(); it != ir.order.rend(); ++it) f(*it, 0, rows);
      return;
    }
    for (int t = rows - 1; t >= 0; --t)
      for (auto it = ir.order.rbegin(); it != ir.order.rend(); ++it) f(*it, t, 1);
  }
  // The parameter layout a structured node declared, for an executor's own instance of the
  // kind: returns the offset of "<node>.<part>", checking the shape.
  size_t declared(const std::string& name, const std::vector<int64_t>& shape) const;

 private:
  size_t add_param(const std::string& name, std::vector<int64_t> shape);
  std::vector<std::unique_ptr<StructNode<double>>> kinds_;  // layout and initialisation only
};

// Data-parallel training (docs/distributed.md) splits each batch across ranks: refused for a
// recurrent model (its samples are one stream); a rank's share of the batch lies in [0, 1].
// The check of both executors' set_grad_reducer.
void check_data_parallel(const IrModel& ir, double weight);

}  // namespace nm
