// The section 7 kinds on the GPU (the device twins of cpu/embed.cpp and cpu/pool.cpp): embed,
// a gather of one learned vector per token id (+ a learned vector per cell), and pool, the
// mean / max / first / last over a sample's cells. Token ids are checked on the host before a
// call runs (cuda/model.cu); here an id outside 0..vocab-1 contributes nothing.
#include <string>

#include "device_node.cuh"
#include "nn.cuh"

namespace nm::cuda {
namespace {

__device__ long token(float v, int V) {
  return v >= 0.f && v < float(V) && v == floorf(v) ? long(v) : -1;
}

// y[r, c, k] = table[x[r, c], k] (+ pos[c, k])
__global__ void k_embed(const float* table, const float* pos, const float* x, float* y, int rows,
                        int C, int D, int V) {
  NM_FOR(i, size_t(rows) * C * D) {
    const int k = int(i % D);
    const size_t rc = i / D;
    const long id = token(x[rc], V);
    float v = id >= 0 ? table[size_t(id) * D + k] : 0.f;
    if (pos) v += pos[(rc % C) * D + k];
    y[i] = v;
  }
}

__global__ void k_embed_backward(float* dtable, float* dpos, const float* x, const float* dy,
                                 int rows, int C, int D, int V) {
  NM_FOR(i, size_t(rows) * C * D) {
    const int k = int(i % D);
    const size_t rc = i / D;
    const long id = token(x[rc], V);
    if (id >= 0) atomicAdd(dtable + size_t(id) * D + k, dy[i]);
    if (dpos) atomicAdd(dpos + (rc % C) * D + k, dy[i]);
  }
}

class DeviceEmbed final : public DeviceNode {
 public:
  DeviceEmbed(const IrNode& nd, const ParamOffset& off, Ctx ctx) : ctx_(ctx) {
    const StructSpec& st = nd.st;
    for (int s : st.shape) C_ *= s;
    V_ = st.geti("vocab"), D_ = st.geti("dim");
    pos_ = st.str("pos") == "learned";
    table_ = off("weight");
    if (pos_) posp_ = off("pos");
  }
  void allocate(int) override {}
  void forward(const float* P, const float* x, float* y, int, int rows, float*) override {
    k_embed<<<grid_for(size_t(rows) * C_ * D_), kThreads, 0, ctx_.stream>>>(
        P + table_, pos_ ? P + posp_ : nullptr, x, y, rows, C_, D_, V_);
    NM_CUDA_LAUNCHED();
  }
  void backward(const float*, float* G, const float* x, const float* dy, float*, int, int rows,
                float) override {
    k_embed_backward<<<grid_for(size_t(rows) * C_ * D_), kThreads, 0, ctx_.stream>>>(
        G + table_, pos_ ? G + posp_ : nullptr, x, dy, rows, C_, D_, V_);
    NM_CUDA_LAUNCHED();
  }

 private:
  Ctx ctx_;
  int C_ = 1, V_ = 1, D_ = 1;
  bool pos_ = true;
  size_t table_ = 0, posp_ = 0;
};

enum class PoolOp { Mean, Max, First, Last };

// y[r, k] from x[r, c, k] over c; max keeps its arg-max (first on ties) in arg[row + r, k]
__global__ void k_pool(PoolOp op, const float* x, float* y, int* arg, int rows, int C, int D) {
  NM_FOR(i, size_t(rows) * D) {
    const size_t r = i / D;
    const int k = int(i % D);
    const float* xr = x + r * size_t(C) * D;
    switch (op) {
      case PoolOp::Mean: {
        float s = 0;
        for (int c = 0; c < C; ++c) s += xr[size_t(c) * D + k];
        y[i] = s / float(C);
        break;
      }
      case PoolOp::Max: {
        int best = 0;
        for (int c = 1; c < C; ++c)
          if (xr[size_t(c) * D + k] > xr[size_t(best) * D + k]) best = c;
        arg[i] = best;
        y[i] = xr[size_t(best) * D + k];
        break;
      }
      case PoolOp::First: y[i] = xr[k]; break;
      case PoolOp::Last: y[i] = xr[size_t(C - 1) * D + k]; break;
    }
  }
}

__global__ void k_pool_backward(PoolOp op, const float* dy, float* dx, const int* arg, int rows,
                                int C, int D) {
  NM_FOR(i, size_t(rows) * D) {
    const size_t r = i / D;
    const int k = int(i % D);
    float* dxr = dx + r * size_t(C) * D;
    switch (op) {
      case PoolOp::Mean:
        for (int c = 0; c < C; ++c) dxr[size_t(c) * D + k] += dy[i] / float(C);
        break;
      case PoolOp::Max: dxr[size_t(arg[i]) * D + k] += dy[i]; break;
      case PoolOp::First: dxr[k] += dy[i]; break;
      case PoolOp::Last: dxr[size_t(C - 1) * D + k] += dy[i]; break;
    }
  }
}

class DevicePool final : public DeviceNode {
 public:
  DevicePool(const IrNode& nd, Ctx ctx) : ctx_(ctx) {
    const StructSpec& st = nd.st;
    for (int s : st.shape) C_ *= s;
    D_ = st.geti("dim");
    const std::string& op = st.str("op");
    op_ = op == "mean" ? PoolOp::Mean : op == "max" ? PoolOp::Max : op == "first" ? PoolOp::First
        : op == "last" ? PoolOp::Last : throw IRError("IR: unknown pool op '" + op + "' at '" + nd.name + "'");
  }
  void allocate(int batch) override {
    if (op_ == PoolOp::Max) arg_.resize(size_t(batch) * D_);
  }
  void forward(const float*, const float* x, float* y, int row, int rows, float*) override {
    k_pool<<<grid_for(size_t(rows) * D_), kThreads, 0, ctx_.stream>>>(
        op_, x, y, arg_.ptr ? arg_.ptr + size_t(row) * D_ : nullptr, rows, C_, D_);
    NM_CUDA_LAUNCHED();
  }
  void backward(const float*, float*, const float*, const float* dy, float* dx, int row, int rows,
                float) override {
    if (!dx) return;
    k_pool_backward<<<grid_for(size_t(rows) * D_), kThreads, 0, ctx_.stream>>>(
        op_, dy, dx, arg_.ptr ? arg_.ptr + size_t(row) * D_ : nullptr, rows, C_, D_);
    NM_CUDA_LAUNCHED();
  }

 private:
  Ctx ctx_;
  int C_ = 1, D_ = 1;
  PoolOp op_ = PoolOp::Mean;
  DeviceBuffer<int> arg_;
};

}  // namespace

std::unique_ptr<DeviceNode> make_device_embed(const IrNode& nd, const ParamOffset& offset, Ctx ctx) {
  return std::make_unique<DeviceEmbed>(nd, offset, ctx);
}

std::unique_ptr<DeviceNode> make_device_pool(const IrNode& nd, const ParamOffset&, Ctx ctx) {
  return std::make_unique<DevicePool>(nd, ctx);
}

NM_REGISTER_DEVICE_KIND(NodeKind::Embed, make_device_embed);
NM_REGISTER_DEVICE_KIND(NodeKind::Pool, make_device_pool);

}  // namespace nm::cuda
