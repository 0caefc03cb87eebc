// The interface a structured node kind (attn2d, column) implements for the plan: it declares
// its parameters, allocates what it keeps for backward (sized for the batch, at build), and
// runs forward / backward over a block of samples. Flat vectors in and out (layout: token-major,
// feature-minor, extensions-math.md section 0). This file is not the math: see cpu/attn2d.cpp
// and cpu/column.cpp.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ir.h"
#include "neuromorph/errors.h"
#include "rng.h"

namespace nm {

// What nm.inspect asks a node to show (docs/inspect.md): named arrays in double, either one row
// per sample of the batch (`sample`) or one fixed array for the node (`fixed`). A node records
// only while a probe is set, so train / predict pay one pointer test per forward.
struct Probe {
  struct Array {
    std::vector<int64_t> shape;  // without the sample dimension for per-sample arrays
    bool per_sample = true;
    char type = 'f';            // the values' kind for numpy: 'f' real, 'i' integer, 'b' bool
    std::vector<double> data;   // per sample: batch rows of prod(shape) each
  };
  int batch = 0;
  std::map<std::string, Array> arrays;
  // The area of batch row `r` in per-sample array `key` (zero-filled at first use).
  double* sample(const std::string& key, const std::vector<int64_t>& shape, int r, char type = 'f') {
    return slot(key, shape, true, type) + size_t(r) * count(shape);
  }
  // The node's fixed array `key` (written once; later calls return the same area).
  double* fixed(const std::string& key, const std::vector<int64_t>& shape, char type = 'f') {
    return slot(key, shape, false, type);
  }
  static size_t count(const std::vector<int64_t>& shape) {
    size_t n = 1;
    for (int64_t s : shape) n *= size_t(s);
    return n;
  }

 private:
  double* slot(const std::string& key, const std::vector<int64_t>& shape, bool per_sample, char type) {
    auto [it, fresh] = arrays.try_emplace(key);
    Array& a = it->second;
    if (fresh) {
      a.shape = shape, a.per_sample = per_sample, a.type = type;
      a.data.assign(count(shape) * (per_sample ? size_t(batch) : 1), 0.0);
    } else if (a.shape != shape || a.per_sample != per_sample) {
      throw StateError("probe: array '" + key + "' recorded with two shapes");
    }
    return a.data.data();
  }
};

template <class T>
class StructNode {
 public:
  using AddParam = std::function<size_t(const std::string& name, std::vector<int64_t> shape)>;
  virtual ~StructNode() = default;
  // Once, at plan time: the node's parameters, named "<node>.<part>", and their arena offsets.
  virtual void declare(const AddParam& add) = 0;
  // At build: buffers for `batch` samples (forward saves, backward scratch).
  virtual void allocate(int batch) = 0;
  // At build: the node's documented initialisation into the parameter arena P.
  virtual void init(Rng& rng, T* P) const = 0;
  // y[rows, out] from x[rows, in] for samples row..row+rows-1 of the batch; keeps what backward
  // needs. Adds each sample's auxiliary loss (before any batch mean) to aux[0..rows).
  virtual void forward(const T* P, const T* x, T* y, int row, int rows, double* aux) = 0;
  // With dy = dL/dy: G += dL/dP, dx += dL/dx (dx may be null: the model input). aux_scale is
  // dL/d(aux of one sample): the batch mean's 1/B.
  virtual void backward(const T* P, T* G, const T* x, const T* dy, T* dx, int row, int rows,
                        double aux_scale) = 0;
  // Training (train, gradients) or inference (predict, evaluate) for the next forwards: only
  // nodes with dropout behave differently.
  virtual void set_training(bool) {}
  // Fixed, untrained tensors the node draws in init() (an energy block's `init normal` start
  // states): the plan's instance draws them, every executor's instance receives a copy.
  virtual std::vector<std::vector<double>> drawn() const { return {}; }
  virtual void set_drawn(const std::vector<std::vector<double>>& v) { (void)v; }
  // Plain SGD straight into the weights (docs/engine.md, "Deferred weight updates"): a weight
  // whose whole gradient is one product formed at the end of backward, dW = Aᵀ B over the
  // batch, may be left out of G while the executor defers (set_defer), the node keeping A and
  // B until its next forward; the executor then applies W -= rate Aᵀ B itself once the step's
  // other updates are checked, with no pass over W's gradient. Only for plans with one
  // backward per step (not recurrent).
  struct Deferred {
    size_t w = 0;           // W's offset in the arena: m x n, row-major
    int m = 0, n = 0, k = 0;
    const T* A = nullptr;   // k x m, rows contiguous
    const T* B = nullptr;   // k x n, rows contiguous
  };
  // The arena ranges (offset, size) of the weights the node defers, fixed at plan time.
  virtual void deferrable(std::vector<std::pair<size_t, size_t>>& out) const { (void)out; }
  virtual void set_defer(bool on) { (void)on; }
  // The products the last backward left out of G (appended; none unless it deferred).
  virtual void deferred(std::vector<Deferred>& out) const { (void)out; }
  // Name of the auxiliary loss this node adds to the training loss, or "" for none.
  virtual std::string aux_name() const { return ""; }
  // nm.inspect: while set (non-null), forwards record what the node shows (docs/inspect.md).
  void set_probe(Probe* probe) { probe_ = probe; }

 protected:
  Probe* probe_ = nullptr;
};

// Distances between a column sheet's columns (N x N), from its shape, geometry and offset.
std::vector<double> column_distances(const StructSpec& st);

// The registry of structured kinds: each kind's CPU unit (cpu/<kind>.cpp) registers its node
// class once, at load, with NM_REGISTER_KIND; the plan and the CPU executor make nodes through
// it. tests (csrc/tests/test_plan.cpp) check that every structured NodeKind is registered.
template <class T>
using StructMaker = std::unique_ptr<StructNode<T>> (*)(const IrNode&);
struct KindEntry {
  NodeKind kind;
  const char* name;  // the IR's kind name
  StructMaker<float> f32;
  StructMaker<double> f64;
};
bool register_kind(const KindEntry& entry);  // true; for static initialisers
const KindEntry* registered_kind(NodeKind kind);  // null when none

#define NM_REGISTER_KIND(KIND, NAME, CLASS)                                                     \
  template <class T>                                                                            \
  std::unique_ptr<::nm::StructNode<T>> nm_make_##CLASS(const ::nm::IrNode& nd) {                \
    return std::make_unique<CLASS<T>>(nd);                                                      \
  }                                                                                             \
  const bool nm_registered_##CLASS =                                                            \
      ::nm::register_kind({KIND, NAME, &nm_make_##CLASS<float>, &nm_make_##CLASS<double>})

// The structured node of an IR node of a structured kind (IRError for any other kind, or a kind
// no unit registered).
template <class T>
std::unique_ptr<StructNode<T>> make_struct(const IrNode& nd) {
  const KindEntry* k = nd.is_struct() ? registered_kind(nd.kind) : nullptr;
  if (!k) throw IRError("IR: '" + nd.name + "' is not a structured node this engine implements");
  if constexpr (std::is_same_v<T, float>) return k->f32(nd);
  else return k->f64(nd);
}

// A neuron node's activation count per sample of its last forward call, into out[0..rows) (the
// rows of that call); node must be a neuron node. No allocation: it runs after every forward.
template <class T>
void neuron_counts(StructNode<T>* node, double* out);

}  // namespace nm
