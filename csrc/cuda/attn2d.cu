// The attn2d node on the GPU (extensions-math.md 2e; CPU reference: cpu/attn2d.cpp): pre-norm
// blocks of local 2D window attention (2D axial RoPE, optional raster mask) and a per-cell MLP,
// `depth` untied blocks repeated `iterations` times with tied weights. Same parameters, layout
// and saved tensors as the CPU node. Products go through cuBLAS (ctx.blas); the window
// attention never materialises an S x S matrix: its probabilities are kept per (cell, head,
// window slot), and the key-side gradients are gathered over the reverse window (no atomics).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../core/formulas.h"
#include "device_node.cuh"
#include "nn.cuh"
#include "neuromorph/errors.h"

namespace nm::cuda {
namespace {

// ------------------------------------------------------------------ window geometry (host + device)

// What the kernels need of the grid.
struct Geo {
  int H, W, S, heads, dh, d, r, span, Wn, m;  // m = dh / 4 (RoPE pairs per half)
  bool raster;
};

// The cell in slot w of cell s's window, or -1 (outside the grid or masked).
__host__ __device__ inline int window_cell(const Geo& g, int s, int w) {
  const int i2 = s / g.W + w / g.span - g.r, j2 = s % g.W + w % g.span - g.r, s2 = i2 * g.W + j2;
  const bool in = i2 >= 0 && i2 < g.H && j2 >= 0 && j2 < g.W && !(g.raster && s2 > s);
  return in ? s2 : -1;
}

// The query cell whose slot w holds cell s2 (the reverse window), or -1.
__host__ __device__ inline int window_query(const Geo& g, int s2, int w) {
  const int i = s2 / g.W + g.r - w / g.span, j = s2 % g.W + g.r - w % g.span, s = i * g.W + j;
  const bool in = i >= 0 && i < g.H && j >= 0 && j < g.W && !(g.raster && s2 > s);
  return in ? s : -1;
}

// ------------------------------------------------------------------ embedding (vocab)

// X[s] = E[token(x[s])]; a token outside 0..V-1 gives a NaN row and sets *bad to 1 + s.
__global__ void k_embed(const float* x, const float* E, float* X, int R, int d, int V, int* bad) {
  NM_FOR(i, size_t(R) * d) {
    const size_t s = i / d;
    const float t = rintf(x[s]);
    if (t >= 0.0f && t < float(V)) {
      X[i] = E[size_t(t) * d + i % d];
    } else {
      X[i] = NAN;
      if (i % d == 0) atomicCAS(bad, 0, int(s) + 1);
    }
  }
}

// dE[token(x[s])] += gX[s] (tokens repeat: atomics)
__global__ void k_embed_backward(const float* x, const float* gX, float* dE, int R, int d, int V) {
  NM_FOR(i, size_t(R) * d) {
    const float t = rintf(x[i / d]);
    if (t >= 0.0f && t < float(V)) atomicAdd(dE + size_t(t) * d + i % d, gX[i]);
  }
}

// ------------------------------------------------------------------ attention pieces

// qkv[r] = [u[r], u[r], u[r]] (parameter-free attention: Q = K = V = LN X)
__global__ void k_tile3(const float* u, float* qkv, int R, int d) {
  NM_FOR(i, size_t(R) * 3 * d) qkv[i] = u[(i / (3 * d)) * d + i % d];
}

// du[r] = dq[r] + dk[r] + dv[r] from dqkv[r] = [dq, dk, dv]
__global__ void k_sum3(const float* dqkv, float* du, int R, int d) {
  NM_FOR(i, size_t(R) * d) {
    const float* t = dqkv + (i / d) * 3 * d + i % d;
    du[i] = t[0] + t[d] + t[2 * d];
  }
}

// RoPE tables: cs / sn[pos * m + k] = cos / sin(pos * 10000^(-k/m)), computed in double
__global__ void k_rope_table(float* cs, float* sn, int P, int m) {
  NM_FOR(i, size_t(P) * m) {
    const int p = int(i / m), k = int(i % m);
    const double ang = p * pow(10000.0, -double(k) / m);
    cs[i] = float(cos(ang));
    sn[i] = float(sin(ang));
  }
}

// In place on `parts` consecutive blocks of d in each row of x (row stride ld): per head, the
// first half rotated by the cell's row index, the second by its column index; sign -1 inverts.
__global__ void k_rope(float* x, int ld, int parts, const float* cs, const float* sn, int R, Geo g,
                       float sign) {
  const int m = g.m;
  NM_FOR(i, size_t(R) * parts * g.heads * 2 * m) {
    const int kk = int(i % m), half = int(i / m % 2), h = int(i / (2 * m) % g.heads);
    const int part = int(i / (size_t(2) * m * g.heads) % parts);
    const size_t r = i / (size_t(2) * m * g.heads * parts);
    const int s = int(r % g.S), pos = half ? s % g.W : s / g.W;
    float* e = x + r * ld + size_t(part) * g.d + h * g.dh + half * (g.dh / 2);
    const float a = e[kk], b = e[kk + m], c = cs[pos * m + kk], sg = sign * sn[pos * m + kk];
    e[kk] = a * c - b * sg;
    e[kk + m] = a * sg + b * c;
  }
}

// One warp per (cell row r, head h): P[r, h, w] = softmax over the window of q_r · k_w / √dh
// (0 for empty slots). q, k rows have stride ld.
__global__ void k_window_probs(const float* q, const float* k, int ld, float* P, int R, Geo g,
                               float scale) {
  const int item = blockIdx.x * kWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (item >= R * g.heads) return;
  const int r = item / g.heads, h = item % g.heads, s = r % g.S, base = r - s;
  const float* qs = q + size_t(r) * ld + h * g.dh;
  float* p = P + size_t(item) * g.Wn;
  float mx = -INFINITY;
  for (int w = lane; w < g.Wn; w += 32) {
    const int s2 = window_cell(g, s, w);
    if (s2 < 0) continue;
    const float* ks = k + size_t(base + s2) * ld + h * g.dh;
    float acc = 0;
    for (int c = 0; c < g.dh; ++c) acc += qs[c] * ks[c];
    p[w] = acc * scale;
    mx = fmaxf(mx, p[w]);
  }
  mx = warp_max(mx);
  float sum = 0;
  for (int w = lane; w < g.Wn; w += 32) {
    p[w] = window_cell(g, s, w) < 0 ? 0.0f : expf(p[w] - mx);
    sum += p[w];
  }
  const float inv = 1.0f / warp_sum(sum);  // the cell itself is always in its window
  for (int w = lane; w < g.Wn; w += 32) p[w] *= inv;
}

// One thread per output element (r, h, c): out[r, h*dh + c] = Σ_w P[r, h, w] v[cell w][h*dh + c]
__global__ void k_window_out(const float* P, const float* v, int ld, float* out, int R, Geo g) {
  NM_FOR(i, size_t(R) * g.d) {
    const int r = int(i / g.d), col = int(i % g.d), h = col / g.dh, s = r % g.S, base = r - s;
    const float* p = P + (size_t(r) * g.heads + h) * g.Wn;
    float acc = 0;
    for (int w = 0; w < g.Wn; ++w) {
      const int s2 = window_cell(g, s, w);
      if (s2 >= 0) acc += p[w] * v[size_t(base + s2) * ld + col];
    }
    out[i] = acc;
  }
}

// One warp per (cell row r, head h): dS[r, h, w] = P (dout·v_w - Σ P dout·v) / √dh, the score
// gradients of the window.
__global__ void k_window_dscore(const float* P, const float* v, int ld, const float* dout,
                                float* dS, int R, Geo g, float scale) {
  const int item = blockIdx.x * kWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (item >= R * g.heads) return;
  const int r = item / g.heads, h = item % g.heads, s = r % g.S, base = r - s;
  const float* go = dout + size_t(r) * g.d + h * g.dh;
  const float* p = P + size_t(item) * g.Wn;
  float* ds = dS + size_t(item) * g.Wn;
  float dot = 0;
  for (int w = lane; w < g.Wn; w += 32) {
    const int s2 = window_cell(g, s, w);
    float acc = 0;
    if (s2 >= 0) {
      const float* vs = v + size_t(base + s2) * ld + h * g.dh;
      for (int c = 0; c < g.dh; ++c) acc += go[c] * vs[c];
    }
    ds[w] = acc;
    dot += p[w] * acc;
  }
  dot = warp_sum(dot);
  for (int w = lane; w < g.Wn; w += 32) ds[w] = p[w] * (ds[w] - dot) * scale;
}

// One thread per element (r, h, c) of each of dq, dk, dv (rows of dqkv = [dq, dk, dv], stride
// 3d; written, not added): dq of query r over its window, dk and dv of key r gathered over the
// queries whose window holds r.
__global__ void k_window_grads(const float* qkv, const float* P, const float* dS,
                               const float* dout, float* dqkv, int R, Geo g) {
  const int ld = 3 * g.d;
  NM_FOR(i, size_t(R) * g.d) {
    const int r = int(i / g.d), col = int(i % g.d), h = col / g.dh, s = r % g.S, base = r - s;
    const float *q = qkv, *k = qkv + g.d;
    float dq = 0, dk = 0, dv = 0;
    const float* ds = dS + (size_t(r) * g.heads + h) * g.Wn;
    for (int w = 0; w < g.Wn; ++w) {
      const int s2 = window_cell(g, s, w);
      if (s2 >= 0) dq += ds[w] * k[size_t(base + s2) * ld + col];
      const int sq = window_query(g, s, w);
      if (sq >= 0) {
        const size_t o = (size_t(base + sq) * g.heads + h) * g.Wn + w;
        dk += dS[o] * q[size_t(base + sq) * ld + col];
        dv += P[o] * dout[size_t(base + sq) * g.d + col];
      }
    }
    float* t = dqkv + size_t(r) * ld + col;
    t[0] = dq;
    t[g.d] = dk;
    t[2 * g.d] = dv;
  }
}

// ------------------------------------------------------------------ the node

class Attn2dDevice final : public DeviceNode {
 public:
  Attn2dDevice(const IrNode& nd, const ParamOffset& offset, Ctx ctx)
      : name_(nd.name), act_(nd.act), act_p_(float(nd.act_param)), ctx_(ctx) {
    const StructSpec& st = nd.st;
    const int H = st.shape.at(0), W = st.shape.at(1);
    d_ = st.geti("dim"), heads_ = st.geti("heads");
    L_ = st.geti("depth"), I_ = st.geti("iterations"), hid_ = st.geti("hidden");
    rope_ = st.geti("rope") != 0, proj_ = st.geti("proj") != 0;
    V_ = st.has("vocab") ? st.geti("vocab") : 0;
    const int r = st.geti("window");
    if (heads_ <= 0 || d_ % heads_ || r < 0 || (rope_ && (d_ / heads_) % 4) || (!proj_ && heads_ != 1))
      throw IRError("IR: inconsistent attn2d options at '" + name_ + "'");
    g_ = Geo{H, W, H * W, heads_, d_ / heads_, d_, r, 2 * r + 1, (2 * r + 1) * (2 * r + 1),
             d_ / heads_ / 4, st.str("mask") == "raster"};
    if (V_) emb_ = offset("embed");
    for (int l = 0; l < L_; ++l) {
      const std::string p = std::to_string(l) + ".";
      Block b;
      b.g1 = offset(p + "norm1.weight"), b.b1 = offset(p + "norm1.bias");
      if (proj_) {
        b.wq = offset(p + "query.weight"), b.wk = offset(p + "key.weight");
        b.wv = offset(p + "value.weight"), b.wo = offset(p + "out.weight");
        if (b.wk != b.wq + size_t(d_) * d_ || b.wv != b.wk + size_t(d_) * d_)
          throw IRError("attn2d: query/key/value weights must be consecutive");
      }
      b.g2 = offset(p + "norm2.weight"), b.b2 = offset(p + "norm2.bias");
      b.w1 = offset(p + "mlp1.weight"), b.c1 = offset(p + "mlp1.bias");
      b.w2 = offset(p + "mlp2.weight"), b.c2 = offset(p + "mlp2.bias");
      blk_.push_back(b);
    }
  }

  void allocate(int batch) override {
    const size_t S = g_.S, sd = S * d_;
    const size_t sizes[kTensors] = {sd, S, S * 3 * d_, S * heads_ * g_.Wn, sd, sd, S,
                                    S * hid_, S * hid_};
    saved_stride_ = 0;  // one application's tensors, each for the whole batch
    for (int t = 0; t < kTensors; ++t) {
      size_[t] = sizes[t];
      base_[t] = saved_stride_;
      saved_stride_ += sizes[t] * size_t(batch);
    }
    saved_.resize(saved_stride_ * size_t(L_) * I_);
    for (auto* v : {&gx_, &u_, &du_, &dctx_}) v->resize(size_t(batch) * sd);
    dqkv_.resize(size_t(batch) * S * 3 * d_);
    dh_.resize(size_t(batch) * S * hid_);
    ds_.resize(size_t(batch) * S * heads_ * g_.Wn);
    if (V_) {
      bad_.resize(1);
      bad_.zero(st());
    }
    if (rope_ && g_.m > 0 && cs_.n == 0) {
      const int P = std::max(g_.H, g_.W);
      cs_.resize(size_t(P) * g_.m);
      sn_.resize(size_t(P) * g_.m);
      k_rope_table<<<grid_for(cs_.n), kThreads, 0, st()>>>(cs_.ptr, sn_.ptr, P, g_.m);
      NM_CUDA_LAUNCHED();
    }
  }

  void forward(const float* P, const float* x, float* y, int row, int rows, float* /*aux*/) override {
    if (rows <= 0) return;
    const int R = rows * g_.S;
    float* X = y;  // the blocks work in place on the output
    if (V_) {
      k_embed<<<grid_for(size_t(R) * d_), kThreads, 0, st()>>>(x, P + emb_, X, R, d_, V_, bad_.ptr);
      NM_CUDA_LAUNCHED();
    } else {
      NM_CUDA_CHECK(cudaMemcpyAsync(X, x, sizeof(float) * R * d_, cudaMemcpyDeviceToDevice, st()));
    }
    for (int it = 0; it < I_; ++it)
      for (int l = 0; l < L_; ++l) block_forward(P, blk_[l], it * L_ + l, X, row, rows);
  }

  void backward(const float* P, float* G, const float* x, const float* dy, float* dx, int row,
                int rows, float /*aux_scale*/) override {
    if (rows <= 0) return;
    const int R = rows * g_.S;
    float* gX = gx_.ptr;
    NM_CUDA_CHECK(cudaMemcpyAsync(gX, dy, sizeof(float) * R * d_, cudaMemcpyDeviceToDevice, st()));
    for (int it = I_ - 1; it >= 0; --it)
      for (int l = L_ - 1; l >= 0; --l) block_backward(P, G, blk_[l], it * L_ + l, gX, row, rows);
    if (V_) {
      k_embed_backward<<<grid_for(size_t(R) * d_), kThreads, 0, st()>>>(x, gX, G + emb_, R, d_, V_);
      NM_CUDA_LAUNCHED();
    } else if (dx) {
      k_add<<<grid_for(size_t(R) * d_), kThreads, 0, st()>>>(dx, gX, size_t(R) * d_);
      NM_CUDA_LAUNCHED();
    }
  }

 private:
  struct Block {
    size_t g1 = 0, b1 = 0, wq = 0, wk = 0, wv = 0, wo = 0, g2 = 0, b2 = 0, w1 = 0, c1 = 0, w2 = 0,
           c2 = 0;
  };
  // What one block application keeps for backward (per sample), in this order. kQKV holds each
  // cell's [q, k, v] (q and k after RoPE).
  enum { kXhat1, kRstd1, kQKV, kP, kCtx, kXhat2, kRstd2, kZ1, kA1, kTensors };
  float* sv(int c, int t, int row) {
    return saved_.ptr + saved_stride_ * size_t(c) + base_[t] + size_[t] * size_t(row);
  }

  cudaStream_t st() const { return ctx_.stream; }
  Blas& blas() { return *ctx_.blas; }

  void ln_forward(const float* x, const float* g, const float* b, float* xhat, float* rstd,
                  float* y, int R) {
    k_ln_forward<<<grid_warps(R), kThreads, 0, st()>>>(x, g, b, xhat, rstd, y, R, d_, 1);
    NM_CUDA_LAUNCHED();
  }
  void ln_apply(const float* xhat, const float* g, const float* b, float* y, int R) {
    k_ln_apply<<<grid_for(size_t(R) * d_), kThreads, 0, st()>>>(xhat, g, b, y, size_t(R) * d_, d_);
    NM_CUDA_LAUNCHED();
  }
  // gX += dLN/dx . du ; dg += Σ du ⊙ xhat ; db += Σ du
  void ln_backward(const float* xhat, const float* rstd, const float* g, const float* du,
                   float* gX, float* dg, float* db, int R) {
    k_ln_backward<<<grid_warps(R), kThreads, 0, st()>>>(xhat, rstd, g, du, gX, R, d_, 1);
    NM_CUDA_LAUNCHED();
    colsum(du, xhat, dg, db, R, d_);
  }
  void colsum(const float* A, const float* B, float* sum_ab, float* sum_a, int rows, int w) {
    k_colsum<<<(w + 31) / 32, dim3(32, 32), 0, st()>>>(A, B, sum_ab, sum_a, rows, w);
    NM_CUDA_LAUNCHED();
  }
  void add(float* y, const float* x, size_t n) {
    k_add<<<grid_for(n), kThreads, 0, st()>>>(y, x, n);
    NM_CUDA_LAUNCHED();
  }
  void bias_act(float* z, const float* b, float* a, size_t n, int width) {
    fm::with_act_host(act_, [&](auto tag) {
      k_bias_act<decltype(tag)::value><<<grid_for(n), kThreads, 0, st()>>>(act_p_, z, b, a, n, width);
    });
    NM_CUDA_LAUNCHED();
  }
  void act_backward(const float* z, const float* a, float* dz, size_t n) {
    fm::with_act_host(act_, [&](auto tag) {
      k_act_backward<decltype(tag)::value><<<grid_for(n), kThreads, 0, st()>>>(act_p_, z, a, dz, n);
    });
    NM_CUDA_LAUNCHED();
  }
  void rope(float* qk, int R, float sign) {  // on the q and k parts of rows of [q, k, v]
    k_rope<<<grid_for(size_t(R) * 2 * heads_ * 2 * g_.m), kThreads, 0, st()>>>(
        qk, 3 * d_, 2, cs_.ptr, sn_.ptr, R, g_, sign);
    NM_CUDA_LAUNCHED();
  }
  float scale() const { return float(1.0 / std::sqrt(double(g_.dh))); }

  void block_forward(const float* P, const Block& b, int c, float* X, int row, int rows) {
    const int R = rows * g_.S, d = d_;
    float *u = u_.ptr, *qkv = sv(c, kQKV, row), *probs = sv(c, kP, row), *ctx = sv(c, kCtx, row);
    // attention: X += Wo LA(rope(Wq u), rope(Wk u), Wv u), u = LN1(X)
    ln_forward(X, P + b.g1, P + b.b1, sv(c, kXhat1, row), sv(c, kRstd1, row), u, R);
    if (proj_) {  // W_Q, W_K, W_V are consecutive: one (3d x d) product
      blas().gemm(false, true, R, 3 * d, d, 1.0f, u, d, P + b.wq, d, 0.0f, qkv, 3 * d);
    } else {
      k_tile3<<<grid_for(size_t(R) * 3 * d), kThreads, 0, st()>>>(u, qkv, R, d);
      NM_CUDA_LAUNCHED();
    }
    if (rope_) rope(qkv, R, 1.0f);
    k_window_probs<<<grid_warps(size_t(R) * heads_), kThreads, 0, st()>>>(qkv, qkv + d, 3 * d, probs,
                                                                          R, g_, scale());
    NM_CUDA_LAUNCHED();
    k_window_out<<<grid_for(size_t(R) * d), kThreads, 0, st()>>>(probs, qkv + 2 * d, 3 * d, ctx, R, g_);
    NM_CUDA_LAUNCHED();
    if (proj_)
      blas().gemm(false, true, R, d, d, 1.0f, ctx, d, P + b.wo, d, 1.0f, X, d);
    else
      add(X, ctx, size_t(R) * d);
    // MLP: X += W2 act(W1 LN2(X) + c1) + c2
    float *z1 = sv(c, kZ1, row), *a1 = sv(c, kA1, row);
    ln_forward(X, P + b.g2, P + b.b2, sv(c, kXhat2, row), sv(c, kRstd2, row), u, R);
    blas().gemm(false, true, R, hid_, d, 1.0f, u, d, P + b.w1, d, 0.0f, z1, hid_);
    bias_act(z1, P + b.c1, a1, size_t(R) * hid_, hid_);
    blas().gemm(false, true, R, d, hid_, 1.0f, a1, hid_, P + b.w2, hid_, 1.0f, X, d);
    k_add_bias<<<grid_for(size_t(R) * d), kThreads, 0, st()>>>(X, P + b.c2, size_t(R) * d, d);
    NM_CUDA_LAUNCHED();
  }

  void block_backward(const float* P, float* G, const Block& b, int c, float* gX, int row, int rows) {
    const int R = rows * g_.S, d = d_;
    float *u = u_.ptr, *du = du_.ptr, *dh = dh_.ptr;
    // MLP: X += W2 act(W1 LN2(X) + c1) + c2
    const float *z1 = sv(c, kZ1, row), *a1 = sv(c, kA1, row);
    blas().gemm(false, false, R, hid_, d, 1.0f, gX, d, P + b.w2, hid_, 0.0f, dh, hid_);
    blas().gemm(true, false, d, hid_, R, 1.0f, gX, d, a1, hid_, 1.0f, G + b.w2, hid_);
    colsum(gX, nullptr, nullptr, G + b.c2, R, d);
    act_backward(z1, a1, dh, size_t(R) * hid_);
    ln_apply(sv(c, kXhat2, row), P + b.g2, P + b.b2, u, R);
    blas().gemm(true, false, hid_, d, R, 1.0f, dh, hid_, u, d, 1.0f, G + b.w1, d);
    colsum(dh, nullptr, nullptr, G + b.c1, R, hid_);
    blas().gemm(false, false, R, d, hid_, 1.0f, dh, hid_, P + b.w1, d, 0.0f, du, d);
    ln_backward(sv(c, kXhat2, row), sv(c, kRstd2, row), P + b.g2, du, gX, G + b.g2, G + b.b2, R);
    // attention: X += Wo LA(rope(Wq u), rope(Wk u), Wv u), u = LN1(X)
    const float *qkv = sv(c, kQKV, row), *probs = sv(c, kP, row);
    const float* dctx = gX;
    if (proj_) {
      blas().gemm(false, false, R, d, d, 1.0f, gX, d, P + b.wo, d, 0.0f, dctx_.ptr, d);
      blas().gemm(true, false, d, d, R, 1.0f, gX, d, sv(c, kCtx, row), d, 1.0f, G + b.wo, d);
      dctx = dctx_.ptr;
    }
    float* dqkv = dqkv_.ptr;
    k_window_dscore<<<grid_warps(size_t(R) * heads_), kThreads, 0, st()>>>(probs, qkv + 2 * d, 3 * d,
                                                                           dctx, ds_.ptr, R, g_, scale());
    NM_CUDA_LAUNCHED();
    k_window_grads<<<grid_for(size_t(R) * d), kThreads, 0, st()>>>(qkv, probs, ds_.ptr, dctx, dqkv, R, g_);
    NM_CUDA_LAUNCHED();
    if (rope_) rope(dqkv, R, -1.0f);
    if (proj_) {
      ln_apply(sv(c, kXhat1, row), P + b.g1, P + b.b1, u, R);
      blas().gemm(true, false, 3 * d, d, R, 1.0f, dqkv, 3 * d, u, d, 1.0f, G + b.wq, d);
      blas().gemm(false, false, R, d, 3 * d, 1.0f, dqkv, 3 * d, P + b.wq, d, 0.0f, du, d);
    } else {
      k_sum3<<<grid_for(size_t(R) * d), kThreads, 0, st()>>>(dqkv, du, R, d);
      NM_CUDA_LAUNCHED();
    }
    ln_backward(sv(c, kXhat1, row), sv(c, kRstd1, row), P + b.g1, du, gX, G + b.g1, G + b.b1, R);
  }

  std::string name_;
  Act act_;
  float act_p_;
  Ctx ctx_;
  Geo g_{};
  int d_ = 0, heads_ = 1, L_ = 1, I_ = 1, hid_ = 0, V_ = 0;
  bool rope_ = false, proj_ = true;
  size_t emb_ = 0;
  std::vector<Block> blk_;
  // saved tensors: application c, tensor t, sample row at saved_ + c*saved_stride_ + base_[t] + row*size_[t]
  DeviceBuffer<float> saved_;
  size_t saved_stride_ = 0, base_[kTensors] = {}, size_[kTensors] = {};
  DeviceBuffer<float> gx_, u_, du_, dctx_, dqkv_, dh_, ds_, cs_, sn_;
  DeviceBuffer<int> bad_;  // 1 + the first cell with a token outside the vocabulary, or 0
};

}  // namespace

std::unique_ptr<DeviceNode> make_device_attn2d(const IrNode& nd, const ParamOffset& offset, Ctx ctx) {
  return std::make_unique<Attn2dDevice>(nd, offset, ctx);
}

NM_REGISTER_DEVICE_KIND(NodeKind::Attn2d, make_device_attn2d);

}  // namespace nm::cuda
