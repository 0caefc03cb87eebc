// The pool node (MDL.md section 7): C cells of D features -> D, by mean, max (gradient to the
// arg-max, the first one on ties, as torch.max), first or last cell (the readout of a causal
// model). No parameters. Input (rows, C*D) cell-major; output (rows, D).
#include <string>
#include <vector>

#include "../core/struct_node.h"
#include "neuromorph/errors.h"

namespace nm {
namespace {

enum class PoolOp { Mean, Max, First, Last };

template <class T>
class PoolNode final : public StructNode<T> {
 public:
  explicit PoolNode(const IrNode& nd) : name_(nd.name) {
    const StructSpec& st = nd.st;
    C_ = 1;
    for (int s : st.shape) C_ *= s;
    D_ = st.geti("dim");
    const std::string& op = st.str("op");
    op_ = op == "mean" ? PoolOp::Mean : op == "max" ? PoolOp::Max : op == "first" ? PoolOp::First
        : op == "last" ? PoolOp::Last : throw IRError("IR: unknown pool op '" + op + "' at '" + name_ + "'");
    if (st.in_width != C_ * D_ || nd.width != D_)
      throw IRError("IR: inconsistent pool options at '" + name_ + "'");
  }

  void declare(const typename StructNode<T>::AddParam&) override {}
  void allocate(int batch) override {
    if (op_ == PoolOp::Max) arg_.assign(size_t(batch) * D_, 0);
  }
  void init(Rng&, T*) const override {}

  void forward(const T*, const T* x, T* y, int row, int rows, double*) override {
    for (int r = 0; r < rows; ++r) {
      const T* xr = x + size_t(r) * C_ * D_;
      T* yr = y + size_t(r) * D_;
      switch (op_) {
        case PoolOp::Mean:
          for (int k = 0; k < D_; ++k) yr[k] = T(0);
          for (int c = 0; c < C_; ++c)
            for (int k = 0; k < D_; ++k) yr[k] += xr[size_t(c) * D_ + k];
          for (int k = 0; k < D_; ++k) yr[k] /= T(C_);
          break;
        case PoolOp::Max: {
          int* arg = &arg_[size_t(row + r) * D_];
          for (int k = 0; k < D_; ++k) {
            int best = 0;
            for (int c = 1; c < C_; ++c)
              if (xr[size_t(c) * D_ + k] > xr[size_t(best) * D_ + k]) best = c;
            arg[k] = best;
            yr[k] = xr[size_t(best) * D_ + k];
          }
          break;
        }
        case PoolOp::First:
        case PoolOp::Last: {
          const T* src = xr + size_t(op_ == PoolOp::First ? 0 : C_ - 1) * D_;
          for (int k = 0; k < D_; ++k) yr[k] = src[k];
          break;
        }
      }
    }
  }

  void backward(const T*, T*, const T*, const T* dy, T* dx, int row, int rows, double) override {
    if (!dx) return;
    for (int r = 0; r < rows; ++r) {
      const T* g = dy + size_t(r) * D_;
      T* dxr = dx + size_t(r) * C_ * D_;
      switch (op_) {
        case PoolOp::Mean:
          for (int c = 0; c < C_; ++c)
            for (int k = 0; k < D_; ++k) dxr[size_t(c) * D_ + k] += g[k] / T(C_);
          break;
        case PoolOp::Max: {
          const int* arg = &arg_[size_t(row + r) * D_];
          for (int k = 0; k < D_; ++k) dxr[size_t(arg[k]) * D_ + k] += g[k];
          break;
        }
        case PoolOp::First:
        case PoolOp::Last: {
          T* dst = dxr + size_t(op_ == PoolOp::First ? 0 : C_ - 1) * D_;
          for (int k = 0; k < D_; ++k) dst[k] += g[k];
          break;
        }
      }
    }
  }

 private:
  std::string name_;
  int C_ = 1, D_ = 1;
  PoolOp op_ = PoolOp::Mean;
  std::vector<int> arg_;  // max: the arg-max cell of each (sample, feature)
};

}  // namespace

// The pool kind, registered for the plan and the CPU executor (core/struct_node.h).
NM_REGISTER_KIND(NodeKind::Pool, "pool", PoolNode);

}  // namespace nm
