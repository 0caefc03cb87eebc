// The column node on the GPU (Columnformer sheet, extensions-math.md 3e; CPU reference:
// cpu/column.cpp): N untied columns, attention between all columns with a learned N x N bias,
// a per-column MLP, `depth` steps with shared weights, and the wiring cost as an auxiliary loss.
// Same parameters, layout and saved tensors as the CPU node. Every per-column map is one strided
// batched product over the N columns; the attention is one batched product per head over the
// samples, with the bias, softmax and wiring term fused in one row kernel.
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "../core/formulas.h"
#include "../core/struct_node.h"
#include "device_node.cuh"
#include "nn.cuh"
#include "neuromorph/errors.h"

namespace nm::cuda {
namespace {

// ------------------------------------------------------------------ sheet input and output

// X[b] = [x[b], 0...] (+ pe): the input fills the first nin entries of each sample's nd
__global__ void k_load(const float* x, const float* pe, float* X, int rows, int nd, int nin) {
  NM_FOR(i, size_t(rows) * nd) {
    const size_t b = i / nd, j = i % nd;
    const float v = j < size_t(nin) ? x[b * nin + j] : 0.0f;
    X[i] = pe ? v + pe[j] : v;
  }
}

// X[b, 0..nin) += x[b] (re-injection)
__global__ void k_inject(const float* x, float* X, int rows, int nd, int nin) {
  NM_FOR(i, size_t(rows) * nin) X[(i / nin) * nd + i % nin] += x[i];
}

// dx[b] += gX[b, 0..nin)
__global__ void k_input_grad(const float* gX, float* dx, int rows, int nd, int nin) {
  NM_FOR(i, size_t(rows) * nin) dx[i] += gX[(i / nin) * nd + i % nin];
}

// ------------------------------------------------------------------ attention rows

// One warp per row (sample, head, column i) of A (rows of N scaled scores q_i·k_j / √kh):
// A = softmax(A + bias[i]); with wire, wrow[row] = Σ_j wire[i, j] A[j] (the wiring cost's terms)
__global__ void k_softmax_bias(float* A, const float* bias, const float* wire, float* wrow,
                               int rows, int N) {
  const int row = blockIdx.x * kWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int i = row % N;
  float* a = A + size_t(row) * N;
  const float* br = bias + size_t(i) * N;
  float mx = -INFINITY;
  for (int j = lane; j < N; j += 32) {
    a[j] += br[j];
    mx = fmaxf(mx, a[j]);
  }
  mx = warp_max(mx);
  float sum = 0;
  for (int j = lane; j < N; j += 32) {
    a[j] = expf(a[j] - mx);
    sum += a[j];
  }
  const float inv = 1.0f / warp_sum(sum);
  float wsum = 0;
  for (int j = lane; j < N; j += 32) {
    a[j] *= inv;
    if (wire) wsum += wire[size_t(i) * N + j] * a[j];
  }
  if (!wire) return;
  wsum = warp_sum(wsum);
  if (lane == 0) wrow[row] = wsum;
}

// one block per sample: aux[b] += wscale Σ wrow[b, 0..per) (fixed order)
__global__ void k_wiring_aux(const float* wrow, float* aux, int per, float wscale) {
  __shared__ float part[kThreads];
  float s = 0;
  for (int k = threadIdx.x; k < per; k += blockDim.x) s += wrow[size_t(blockIdx.x) * per + k];
  part[threadIdx.x] = s;
  __syncthreads();
  for (int k = blockDim.x / 2; k > 0; k >>= 1) {
    if (threadIdx.x < k) part[threadIdx.x] += part[threadIdx.x + k];
    __syncthreads();
  }
  if (threadIdx.x == 0) aux[blockIdx.x] += wscale * part[0];
}

// One warp per row of dS (dL/dA on entry): dS = A ⊙ (dS + wscale wire[i] - Σ A (dS + wscale wire[i]))
__global__ void k_softmax_backward(const float* A, float* dS, const float* wire, float wscale,
                                   int rows, int N) {
  const int row = blockIdx.x * kWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int i = row % N;
  const float* a = A + size_t(row) * N;
  float* g = dS + size_t(row) * N;
  float dot = 0;
  for (int j = lane; j < N; j += 32) {
    if (wire) g[j] += wscale * wire[size_t(i) * N + j];
    dot += a[j] * g[j];
  }
  dot = warp_sum(dot);
  for (int j = lane; j < N; j += 32) g[j] = a[j] * (g[j] - dot);
}

// ------------------------------------------------------------------ the node

class ColumnDevice final : public DeviceNode {
 public:
  ColumnDevice(const IrNode& nd, const ParamOffset& offset, Ctx ctx)
      : name_(nd.name), act_(nd.act), act_p_(float(nd.act_param)), ctx_(ctx) {
    const StructSpec& st = nd.st;
    N_ = 1;
    for (int s : st.shape) N_ *= s;
    d_ = st.geti("dim"), T_ = st.geti("depth"), kq_ = st.geti("qk"), m_ = st.geti("mlp");
    heads_ = st.geti("heads");
    vproj_ = st.str("value") == "proj", skip_ = st.geti("skip") != 0;
    pos_ = st.geti("pos") != 0, inject_ = st.geti("inject") != 0;
    nin_ = st.geti("in"), nout_ = st.geti("out");
    lambda_ = st.get("wiring");
    if (heads_ <= 0 || d_ % heads_ || kq_ % heads_ || nin_ > N_ || nout_ > N_ || lambda_ < 0)
      throw IRError("IR: inconsistent column options at '" + name_ + "'");
    kh_ = kq_ / heads_, dvh_ = d_ / heads_;
    g1_ = offset("norm1.weight"), b1_ = offset("norm1.bias");
    wq_ = offset("query.weight"), bq_ = offset("query.bias"), wk_ = offset("key.weight");
    if (vproj_) wv_ = offset("value.weight"), wo_ = offset("out.weight");
    bias_ = offset("attn_bias");
    g2_ = offset("norm2.weight"), b2_ = offset("norm2.bias");
    w1_ = offset("mlp1.weight"), c1_ = offset("mlp1.bias"), w2_ = offset("mlp2.weight");
    if (pos_) pe_ = offset("pos");
    if (lambda_ > 0) {  // w = D^p / mean(D^p), as the CPU node computes it
      const std::vector<double> D = column_distances(st);
      const double pw = st.get("power");
      std::vector<double> w(D.size());
      double mean = 0;
      for (size_t i = 0; i < D.size(); ++i) mean += (w[i] = std::pow(D[i], pw));
      mean /= double(D.size());
      wire_host_.resize(D.size());
      for (size_t i = 0; i < D.size(); ++i) wire_host_[i] = float(mean > 0 ? w[i] / mean : 0.0);
      wire_.resize(wire_host_.size());
      NM_CUDA_CHECK(cudaMemcpyAsync(wire_.ptr, wire_host_.data(), sizeof(float) * wire_host_.size(),
                                    cudaMemcpyHostToDevice, ctx_.stream));
    }
  }

  void allocate(int batch) override {
    const size_t nd = size_t(N_) * d_, NN = size_t(N_) * N_;
    const size_t sizes[kTensors] = {nd, size_t(N_), nd, size_t(N_) * kq_, size_t(N_) * kq_,
                                    vproj_ ? nd : 0, size_t(heads_) * NN, vproj_ ? nd : 0, nd,
                                    size_t(N_), size_t(N_) * m_, size_t(N_) * m_};
    saved_stride_ = 0;  // one step's tensors, each for the whole batch
    for (int t = 0; t < kTensors; ++t) {
      size_[t] = sizes[t];
      base_[t] = saved_stride_;
      saved_stride_ += sizes[t] * size_t(batch);
    }
    saved_.resize(saved_stride_ * size_t(T_));
    for (auto* v : {&x_, &gx_, &spare_, &u_, &du_, &da_}) v->resize(size_t(batch) * nd);
    for (auto* v : {&dq_, &dk_}) v->resize(size_t(batch) * N_ * kq_);
    dh_.resize(size_t(batch) * N_ * m_);
    ds_.resize(size_t(batch) * heads_ * NN);
    if (lambda_ > 0) wrow_.resize(size_t(batch) * heads_ * N_);
  }

  void forward(const float* P, const float* x, float* y, int row, int rows, float* aux) override {
    if (rows <= 0) return;
    const int nd = N_ * d_, nin = nin_ * d_, nout = nout_ * d_;
    float* X = x_.ptr;
    k_load<<<grid_for(size_t(rows) * nd), kThreads, 0, st()>>>(x, pos_ ? P + pe_ : nullptr, X, rows,
                                                                nd, nin);
    NM_CUDA_LAUNCHED();
    for (int t = 0; t < T_; ++t) {
      if (inject_ && t > 0) {
        k_inject<<<grid_for(size_t(rows) * nin), kThreads, 0, st()>>>(x, X, rows, nd, nin);
        NM_CUDA_LAUNCHED();
      }
      step_forward(P, t, X, row, rows, aux);
    }
    NM_CUDA_CHECK(cudaMemcpy2DAsync(y, sizeof(float) * nout, X + (nd - nout), sizeof(float) * nd,
                                    sizeof(float) * nout, rows, cudaMemcpyDeviceToDevice, st()));
  }

  void backward(const float* P, float* G, const float* /*x*/, const float* dy, float* dx, int row,
                int rows, float aux_scale) override {
    if (rows <= 0) return;
    const int nd = N_ * d_, nout = nout_ * d_;
    float *gX = gx_.ptr, *spare = spare_.ptr;
    NM_CUDA_CHECK(cudaMemsetAsync(gX, 0, sizeof(float) * size_t(rows) * nd, st()));
    NM_CUDA_CHECK(cudaMemcpy2DAsync(gX + (nd - nout), sizeof(float) * nd, dy, sizeof(float) * nout,
                                    sizeof(float) * nout, rows, cudaMemcpyDeviceToDevice, st()));
    for (int t = T_ - 1; t >= 0; --t) {
      step_backward(P, G, t, gX, spare, row, rows, aux_scale);
      if (inject_ && t > 0 && dx) input_grad(gX, dx, rows);
    }
    if (dx) input_grad(gX, dx, rows);
    if (pos_) colsum(gX, nullptr, nullptr, G + pe_, rows, nd);
  }

 private:
  enum { kXhat1, kRstd1, kU1, kQ, kK, kV, kA, kCtx, kXhat2, kRstd2, kZ1, kA1, kTensors };
  float* sv(int t, int k, int row) {
    return saved_.ptr + saved_stride_ * size_t(t) + base_[k] + size_[k] * size_t(row);
  }

  cudaStream_t st() const { return ctx_.stream; }
  Blas& blas() { return *ctx_.blas; }
  float scale() const { return float(1.0 / std::sqrt(double(kh_))); }

  // Untied per-column maps over x (rows, N, in), W (N, out, in) -> y (rows, N, out):
  // y_n = x_n W_n^T (+ beta y_n), one strided batched product over the N columns
  void cols_forward(const float* x, const float* W, float* y, int rows, int in, int out, float beta) {
    blas().gemm_batched(false, true, rows, out, in, 1.0f, x, N_ * in, in, W, in, (long long)out * in,
                        beta, y, N_ * out, out, N_);
  }
  // dW_n += dy_n^T x_n
  void cols_grad_w(const float* x, const float* dy, float* dW, int rows, int in, int out) {
    blas().gemm_batched(true, false, out, in, rows, 1.0f, dy, N_ * out, out, x, N_ * in, in, 1.0f,
                        dW, in, (long long)out * in, N_);
  }
  // dx_n = dy_n W_n (+ beta dx_n)
  void cols_grad_x(const float* dy, const float* W, float* dx, int rows, int in, int out, float beta) {
    blas().gemm_batched(false, false, rows, in, out, 1.0f, dy, N_ * out, out, W, in,
                        (long long)out * in, beta, dx, N_ * in, in, N_);
  }

  void ln_forward(const float* x, const float* g, const float* b, float* xhat, float* rstd,
                  float* y, int R) {
    k_ln_forward<<<grid_warps(R), kThreads, 0, st()>>>(x, g, b, xhat, rstd, y, R, d_, N_);
    NM_CUDA_LAUNCHED();
  }
  void ln_apply(const float* xhat, const float* g, const float* b, float* y, int rows) {
    const size_t n = size_t(rows) * N_ * d_;
    k_ln_apply<<<grid_for(n), kThreads, 0, st()>>>(xhat, g, b, y, n, N_ * d_);
    NM_CUDA_LAUNCHED();
  }
  // gX += dLN/dx . du ; dg += Σ du ⊙ xhat ; db += Σ du (per column)
  void ln_backward(const float* xhat, const float* rstd, const float* g, const float* du,
                   float* gX, float* dg, float* db, int rows) {
    k_ln_backward<<<grid_warps(size_t(rows) * N_), kThreads, 0, st()>>>(xhat, rstd, g, du, gX,
                                                                        rows * N_, d_, N_);
    NM_CUDA_LAUNCHED();
    colsum(du, xhat, dg, db, rows, N_ * d_);
  }
  void colsum(const float* A, const float* B, float* sum_ab, float* sum_a, int rows, int w) {
    k_colsum<<<(w + 31) / 32, dim3(32, 32), 0, st()>>>(A, B, sum_ab, sum_a, rows, w);
    NM_CUDA_LAUNCHED();
  }
  void input_grad(const float* gX, float* dx, int rows) {
    k_input_grad<<<grid_for(size_t(rows) * nin_ * d_), kThreads, 0, st()>>>(gX, dx, rows, N_ * d_,
                                                                             nin_ * d_);
    NM_CUDA_LAUNCHED();
  }

  void step_forward(const float* P, int t, float* X, int row, int rows, float* aux) {
    const int R = rows * N_, d = d_, kq = kq_, nd = N_ * d_;
    const long long NN = (long long)N_ * N_, hNN = heads_ * NN;
    float *u = sv(t, kU1, row), *q = sv(t, kQ, row), *k = sv(t, kK, row), *A = sv(t, kA, row);
    // X' = [X +] O(A V), A = softmax(q kᵀ / √kh + bias) per head, q = Wq u + bq, k = Wk u
    ln_forward(X, P + g1_, P + b1_, sv(t, kXhat1, row), sv(t, kRstd1, row), u, R);
    cols_forward(u, P + wq_, q, rows, d, kq, 0.0f);
    k_add_bias<<<grid_for(size_t(R) * kq), kThreads, 0, st()>>>(q, P + bq_, size_t(R) * kq, N_ * kq);
    NM_CUDA_LAUNCHED();
    cols_forward(u, P + wk_, k, rows, d, kq, 0.0f);
    const float* v = u;
    if (vproj_) {
      cols_forward(u, P + wv_, sv(t, kV, row), rows, d, d, 0.0f);
      v = sv(t, kV, row);
    }
    for (int h = 0; h < heads_; ++h)
      blas().gemm_batched(false, true, N_, N_, kh_, scale(), q + h * kh_, kq, (long long)N_ * kq,
                          k + h * kh_, kq, (long long)N_ * kq, 0.0f, A + h * NN, N_, hNN, rows);
    const bool wiring = lambda_ > 0 && aux;
    k_softmax_bias<<<grid_warps(size_t(R) * heads_), kThreads, 0, st()>>>(
        A, P + bias_, wiring ? wire_.ptr : nullptr, wrow_.ptr, R * heads_, N_);
    NM_CUDA_LAUNCHED();
    if (wiring) {
      const float wscale = float(lambda_ / (double(T_) * heads_ * N_));
      k_wiring_aux<<<rows, kThreads, 0, st()>>>(wrow_.ptr, aux, heads_ * N_, wscale);
      NM_CUDA_LAUNCHED();
    }
    // the read-out: straight into X (skip adds, else replaces); through W_O with value proj
    float* ctx = vproj_ ? sv(t, kCtx, row) : X;
    const float beta = vproj_ || !skip_ ? 0.0f : 1.0f;
    for (int h = 0; h < heads_; ++h)
      blas().gemm_batched(false, false, N_, dvh_, N_, 1.0f, A + h * NN, N_, hNN, v + h * dvh_, d, nd,
                          beta, ctx + h * dvh_, d, nd, rows);
    if (vproj_) cols_forward(ctx, P + wo_, X, rows, d, d, skip_ ? 1.0f : 0.0f);
    // X'' = X' + W2 act(W1 LN2(X') + c1)
    float *z1 = sv(t, kZ1, row), *a1 = sv(t, kA1, row), *u2 = du_.ptr;
    ln_forward(X, P + g2_, P + b2_, sv(t, kXhat2, row), sv(t, kRstd2, row), u2, R);
    cols_forward(u2, P + w1_, z1, rows, d, m_, 0.0f);
    fm::with_act_host(act_, [&](auto tag) {
      k_bias_act<decltype(tag)::value><<<grid_for(size_t(R) * m_), kThreads, 0, st()>>>(
          act_p_, z1, P + c1_, a1, size_t(R) * m_, N_ * m_);
    });
    NM_CUDA_LAUNCHED();
    cols_forward(a1, P + w2_, X, rows, m_, d, 1.0f);
  }

  // gX: dL/dX after step t on entry, before it on return (without skip, a fresh buffer: the
  // two buffers gX / spare swap)
  void step_backward(const float* P, float* G, int t, float*& gX, float*& spare, int row, int rows,
                     float aux_scale) {
    const int R = rows * N_, d = d_, kq = kq_, nd = N_ * d_;
    const long long NN = (long long)N_ * N_, hNN = heads_ * NN;
    float *dh = dh_.ptr, *u2 = u_.ptr, *du = du_.ptr;
    // MLP: X'' = X' + W2 act(W1 LN2(X') + c1)
    const float *z1 = sv(t, kZ1, row), *a1 = sv(t, kA1, row);
    cols_grad_x(gX, P + w2_, dh, rows, m_, d, 0.0f);
    cols_grad_w(a1, gX, G + w2_, rows, m_, d);
    fm::with_act_host(act_, [&](auto tag) {
      k_act_backward<decltype(tag)::value><<<grid_for(size_t(R) * m_), kThreads, 0, st()>>>(
          act_p_, z1, a1, dh, size_t(R) * m_);
    });
    NM_CUDA_LAUNCHED();
    ln_apply(sv(t, kXhat2, row), P + g2_, P + b2_, u2, rows);
    cols_grad_w(u2, dh, G + w1_, rows, d, m_);
    colsum(dh, nullptr, nullptr, G + c1_, rows, N_ * m_);
    cols_grad_x(dh, P + w1_, du, rows, d, m_, 0.0f);
    ln_backward(sv(t, kXhat2, row), sv(t, kRstd2, row), P + g2_, du, gX, G + g2_, G + b2_, rows);
    // X' = [X +] O(A V): the read-out's gradient dout, then the state's own (skip) or none
    const float* dout = gX;
    if (!skip_) {
      std::swap(gX, spare);
      dout = spare;
      NM_CUDA_CHECK(cudaMemsetAsync(gX, 0, sizeof(float) * size_t(rows) * nd, st()));
    }
    const float* dctx = dout;
    if (vproj_) {
      cols_grad_x(dout, P + wo_, da_.ptr, rows, d, d, 0.0f);
      cols_grad_w(sv(t, kCtx, row), dout, G + wo_, rows, d, d);
      dctx = da_.ptr;
    }
    const float *u = sv(t, kU1, row), *q = sv(t, kQ, row), *k = sv(t, kK, row), *A = sv(t, kA, row);
    const float* v = vproj_ ? sv(t, kV, row) : u;
    float* dv = vproj_ ? u2 : du;  // value = input: dv is du's first term
    float *dq = dq_.ptr, *dk = dk_.ptr, *dS = ds_.ptr;
    for (int h = 0; h < heads_; ++h) {
      blas().gemm_batched(false, true, N_, N_, dvh_, 1.0f, dctx + h * dvh_, d, nd, v + h * dvh_, d, nd,
                          0.0f, dS + h * NN, N_, hNN, rows);
      blas().gemm_batched(true, false, N_, dvh_, N_, 1.0f, A + h * NN, N_, hNN, dctx + h * dvh_, d, nd,
                          0.0f, dv + h * dvh_, d, nd, rows);
    }
    const bool wiring = lambda_ > 0;
    const float wscale = float(double(aux_scale) * lambda_ / (double(T_) * heads_ * N_));
    k_softmax_backward<<<grid_warps(size_t(R) * heads_), kThreads, 0, st()>>>(
        A, dS, wiring ? wire_.ptr : nullptr, wscale, R * heads_, N_);
    NM_CUDA_LAUNCHED();
    colsum(dS, nullptr, nullptr, G + bias_, rows * heads_, int(NN));
    for (int h = 0; h < heads_; ++h) {
      blas().gemm_batched(false, false, N_, kh_, N_, scale(), dS + h * NN, N_, hNN, k + h * kh_, kq,
                          (long long)N_ * kq, 0.0f, dq + h * kh_, kq, (long long)N_ * kq, rows);
      blas().gemm_batched(true, false, N_, kh_, N_, scale(), dS + h * NN, N_, hNN, q + h * kh_, kq,
                          (long long)N_ * kq, 0.0f, dk + h * kh_, kq, (long long)N_ * kq, rows);
    }
    if (vproj_) {
      cols_grad_x(dv, P + wv_, du, rows, d, d, 0.0f);
      cols_grad_w(u, dv, G + wv_, rows, d, d);
    }
    cols_grad_w(u, dq, G + wq_, rows, d, kq);
    colsum(dq, nullptr, nullptr, G + bq_, rows, N_ * kq);
    cols_grad_x(dq, P + wq_, du, rows, d, kq, 1.0f);
    cols_grad_w(u, dk, G + wk_, rows, d, kq);
    cols_grad_x(dk, P + wk_, du, rows, d, kq, 1.0f);
    ln_backward(sv(t, kXhat1, row), sv(t, kRstd1, row), P + g1_, du, gX, G + g1_, G + b1_, rows);
  }

  std::string name_;
  Act act_;
  float act_p_;
  Ctx ctx_;
  int N_ = 1, d_ = 0, T_ = 1, kq_ = 0, m_ = 0, heads_ = 1, kh_ = 0, dvh_ = 0, nin_ = 0, nout_ = 0;
  bool vproj_ = false, skip_ = false, pos_ = false, inject_ = false;
  double lambda_ = 0;
  size_t g1_ = 0, b1_ = 0, wq_ = 0, bq_ = 0, wk_ = 0, wv_ = 0, wo_ = 0, bias_ = 0, g2_ = 0, b2_ = 0,
         w1_ = 0, c1_ = 0, w2_ = 0, pe_ = 0;
  std::vector<float> wire_host_;  // the upload's source, kept alive with the node
  DeviceBuffer<float> wire_;      // w = D^p / mean(D^p) (N x N), with wiring only
  // saved tensors: step t, tensor k, sample row at saved_ + t*saved_stride_ + base_[k] + row*size_[k]
  DeviceBuffer<float> saved_;
  size_t saved_stride_ = 0, base_[kTensors] = {}, size_[kTensors] = {};
  DeviceBuffer<float> x_, gx_, spare_, u_, du_, da_, dq_, dk_, dh_, ds_, wrow_;
};

}  // namespace

std::unique_ptr<DeviceNode> make_device_column(const IrNode& nd, const ParamOffset& offset, Ctx ctx) {
  return std::make_unique<ColumnDevice>(nd, offset, ctx);
}

NM_REGISTER_DEVICE_KIND(NodeKind::Column, make_device_column);

}  // namespace nm::cuda
