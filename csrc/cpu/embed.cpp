// The embed node (MDL.md section 7): one token id per cell -> a learned vector per id, plus a
// learned vector per cell (`pos learned`). Input (rows, C) ids stored as numbers; output
// (rows, C*D), cell-major. Ids carry no gradient. Not here: tokenizers (python/neuromorph/text.py).
#include <cmath>
#include <cstring>
#include <string>

#include "../core/struct_node.h"
#include "neuromorph/errors.h"

namespace nm {
namespace {

template <class T>
class EmbedNode final : public StructNode<T> {
 public:
  explicit EmbedNode(const IrNode& nd) : name_(nd.name) {
    const StructSpec& st = nd.st;
    C_ = 1;
    for (int s : st.shape) C_ *= s;
    V_ = st.geti("vocab"), D_ = st.geti("dim");
    pos_ = st.str("pos") == "learned";
    if (V_ < 1 || D_ < 1 || st.in_width != C_ || nd.width != C_ * D_)
      throw IRError("IR: inconsistent embed options at '" + name_ + "'");
  }

  void declare(const typename StructNode<T>::AddParam& add) override {
    table_ = add(name_ + ".weight", {V_, D_});
    if (pos_) posp_ = add(name_ + ".pos", {C_, D_});
  }
  void allocate(int) override {}
  // Token vectors N(0, 1) (as torch.nn.Embedding); position vectors N(0, 0.02).
  void init(Rng& rng, T* P) const override {
    for (size_t i = 0; i < size_t(V_) * D_; ++i) P[table_ + i] = T(rng.normal());
    if (pos_)
      for (size_t i = 0; i < size_t(C_) * D_; ++i) P[posp_ + i] = T(rng.normal(0, 0.02));
  }

  // y[rows, C*D] = table[x] (+ pos)
  void forward(const T* P, const T* x, T* y, int row, int rows, double*) override {
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < C_; ++c) {
        const size_t id = token(x, r, c, row);
        T* yc = y + (size_t(r) * C_ + c) * D_;
        std::memcpy(yc, P + table_ + id * D_, sizeof(T) * D_);
        if (pos_) {
          const T* pc = P + posp_ + size_t(c) * D_;
          for (int k = 0; k < D_; ++k) yc[k] += pc[k];
        }
      }
  }
  // G[table[id]] += dy, G[pos] += dy; no gradient reaches the ids.
  void backward(const T*, T* G, const T* x, const T* dy, T*, int row, int rows, double) override {
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < C_; ++c) {
        const T* g = dy + (size_t(r) * C_ + c) * D_;
        T* dt = G + table_ + token(x, r, c, row) * D_;
        for (int k = 0; k < D_; ++k) dt[k] += g[k];
        if (pos_) {
          T* dp = G + posp_ + size_t(c) * D_;
          for (int k = 0; k < D_; ++k) dp[k] += g[k];
        }
      }
  }

 private:
  size_t token(const T* x, int r, int c, int row) const {
    const T v = x[size_t(r) * C_ + c];
    if (!(v >= 0 && v < V_) || v != std::floor(v))
      throw DataError("token id " + std::to_string(double(v)) + " of '" + name_ + "' at sample " +
                      std::to_string(row + r) + ", cell " + std::to_string(c) +
                      " is not an integer in 0.." + std::to_string(V_ - 1));
    return size_t(v);
  }

  std::string name_;
  int C_ = 1, V_ = 1, D_ = 1;
  bool pos_ = true;
  size_t table_ = 0, posp_ = 0;
};

}  // namespace

// The embed kind, registered for the plan and the CPU executor (core/struct_node.h).
NM_REGISTER_KIND(NodeKind::Embed, "embed", EmbedNode);

}  // namespace nm
