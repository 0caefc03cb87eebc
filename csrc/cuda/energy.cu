// The energy block (HAMUX, extensions-math.md 1; docs/energy.md) on the GPU. CPU reference:
// cpu/energy.cpp; the Lagrangians of both: core/lagrangian.h. Same parameters, same row layout, same unrolled explicit
// Euler descent, same reverse mode through the unroll (every current and its vector-Jacobian
// product written in closed form), same recorded energies.
//
// Design. Every step is batched over the samples: the layer states x^t and activations g^t of
// every step are kept (per batch row) for backward; each descent step is one launch per layer
// and phase (activation, Euler update; backward: step, Jacobian) plus the synapses' products.
// Matrix synapses (dense k = 2, hidden, attention, mixer) are GEMMs over all samples at once
// (strided batched GEMMs for per-sample products); dense k ≥ 3, tensor and conv synapses are
// gather kernels (one thread per output entry, energy_ops.cuh). Lagrangians are entry-wise
// kernels or one warp per row (row kinds), in double as on the CPU (core/lagrangian.h). Parameter
// gradients are deterministic: GEMMs with beta 1 into G, column sums and block reductions, no
// atomics (only the recorded energies use double atomics). Synapses recompute their hidden
// state (h, scores) in backward from the saved activations. (The CPU node also skips the
// clamped layers' work and keeps the hidden synapse's per-step h and s: not done here yet.)
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "device_node.cuh"
#include "../core/lagrangian.h"
#include "energy_node.cuh"
#include "energy_ops.cuh"
#include "neuromorph/errors.h"

namespace nm::cuda {
namespace {

using energy::ConvShape;
using energy::Lg;
using energy::MlShape;
using energy::Slots;
using energy::kMaxSlots;
using CPtrs = std::vector<const float*>;
using Ptrs = std::vector<float*>;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

unsigned blocks_for(size_t n) { return unsigned((n + kThreads - 1) / kThreads); }
unsigned blocks_for_warps(size_t warps) { return unsigned((warps + kWarps - 1) / kWarps); }

#define NM_TID() (blockIdx.x * size_t(blockDim.x) + threadIdx.x)

// lane reductions of one warp (every lane gets the result)
struct WarpRed {
  NM_HD double sum(double v) const {
#ifdef __CUDA_ARCH__
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
#endif
    return v;
  }
  NM_HD double max(double v) const {
#ifdef __CUDA_ARCH__
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
#endif
    return v;
  }
};

// sum of a block's values (kThreads threads); valid in thread 0
__device__ double block_sum(double v) {
  __shared__ double sh[kThreads];
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (int(threadIdx.x) < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  return sh[0];
}

// ------------------------------------------------------------------ Lagrangian kernels
// A Lagrangian as the kernels see it: kind, parameter, row width; `beta` (device) overrides p
// when the layer learns its beta.
struct DLag {
  Lg k = Lg::Linear;
  double p = 0;
  int row = 1;
  const float* beta = nullptr;
  NM_HD bool rows() const { return energy::lg_rows(k); }
  NM_HD double param() const { return beta ? double(*beta) : p; }
};

DLag to_device(const nm::energy::Lagrangian& l, const float* beta = nullptr) {
  DLag d;
  d.k = l.k, d.p = l.p, d.row = l.row, d.beta = beta;
  return d;
}

// g = ∇L(x − b) over rows x n (b: n entries or null)
__global__ void k_act_elem(DLag L, const float* x, const float* b, float* g, size_t total, int n) {
  const size_t i = NM_TID();
  if (i >= total) return;
  const float u = b ? x[i] - b[i % n] : x[i];
  g[i] = float(energy::lg_g1(L.k, L.param(), u));
}

// row kinds: one warp per row of L.row entries (L.row divides n)
__global__ void k_act_row(DLag L, const float* x, const float* b, float* g, size_t nrows, int n) {
  const size_t w = NM_TID() / 32;
  const int lane = threadIdx.x % 32;
  if (w >= nrows) return;
  const size_t at = w * size_t(L.row);
  energy::row_grad(L.k, L.param(), x + at, b ? b + at % n : nullptr, g + at, L.row, lane, 32, WarpRed{});
}

// J v with J = ∇²L(x − b) (g = ∇L there); v has row stride ldv. out = J v (when out), acc += J v
// (when acc), dbeta = v ⊙ ∂g/∂β (when dbeta).
__global__ void k_jvp_elem(DLag L, const float* x, const float* b, const float* g, const float* v,
                           int ldv, float* out, float* acc, double* dbeta, size_t total, int n) {
  const size_t i = NM_TID();
  if (i >= total) return;
  const size_t r = i / n, c = i % n;
  const float u = b ? x[i] - b[c] : x[i];
  const double p = L.param();
  const float vi = v[r * ldv + c];
  const float f = float(energy::lg_d1(L.k, p, u, g[i]) * double(vi));
  if (out) out[i] = f;
  if (acc) acc[i] += f;
  if (dbeta) dbeta[i] = double(vi) * energy::lg_db1(L.k, p, u, g[i]);
}

__global__ void k_jvp_row(DLag L, const float* x, const float* b, const float* g, const float* v,
                          int ldv, float* out, float* acc, double* dbeta, size_t nrows, int n) {
  const size_t w = NM_TID() / 32;
  const int lane = threadIdx.x % 32;
  if (w >= nrows) return;
  const size_t at = w * size_t(L.row), r = at / n, c = at % n;
  energy::row_jvp(L.k, L.param(), x + at, b ? b + c : nullptr, g + at, v + r * ldv + c, out ? out + at : nullptr,
                  acc ? acc + at : nullptr, dbeta ? dbeta + at : nullptr, L.row, lane, 32, WarpRed{});
}

// E[r * ldE] += Σ (u·g when g) − Σ L(u), u = x − b, per sample r of rows x n. One warp per row of
// a row kind, per 32 entries otherwise.
__global__ void k_energy_lag(DLag L, const float* x, const float* b, const float* g, int rows, int n,
                             double* E, int ldE) {
  const size_t w = NM_TID() / 32;
  const int lane = threadIdx.x % 32;
  const int D = L.rows() ? L.row : 32, U = (n + D - 1) / D;
  if (w >= size_t(rows) * U) return;
  const int r = int(w / U), c0 = int(w % U) * D, width = min(D, n - c0);
  const float* xr = x + size_t(r) * n + c0;
  const float* br = b ? b + c0 : nullptr;
  const WarpRed red;
  double dot = 0, val = 0;
  if (g)
    for (int i = lane; i < width; i += 32)
      dot += double(energy::shifted(xr, br, i)) * g[size_t(r) * n + c0 + i];
  dot = red.sum(dot);
  if (L.rows()) {
    val = energy::row_value(L.k, L.param(), xr, br, width, lane, 32, red);
  } else {
    for (int i = lane; i < width; i += 32)
      val += energy::lg_l1(L.k, L.param(), energy::shifted(xr, br, i));
    val = red.sum(val);
  }
  if (lane == 0) atomicAdd(E + size_t(r) * ldE, dot - val);
}

// ------------------------------------------------------------------ small helpers
// dst[c] += scale Σ_r src[r n + c]
__global__ void k_colsum(const float* src, int rows, int n, float scale, float* dst) {
  const size_t c = NM_TID();
  if (c >= size_t(n)) return;
  double s = 0;
  for (int r = 0; r < rows; ++r) s += src[size_t(r) * n + c];
  dst[c] += float(scale * s);
}

// *dst += Σ part[0..n) (one block)
__global__ void k_sum_to(const double* part, size_t n, float* dst) {
  double s = 0;
  for (size_t i = threadIdx.x; i < n; i += blockDim.x) s += part[i];
  s = block_sum(s);
  if (threadIdx.x == 0) *dst += float(s);
}

// x_{t+1} = x_t + a (I − (x_t − b))
__global__ void k_euler(const float* xt, const float* cur, const float* b, float* xn, float a,
                        size_t total, int n) {
  const size_t i = NM_TID();
  if (i >= total) return;
  xn[i] = xt[i] + a * (cur[i] - (xt[i] - (b ? b[i % n] : 0.f)));
}

// one step back: Ī = a x̄⁺, x̄ = (1 − a) x̄⁺
__global__ void k_back_step(float* bar, float* Ib, float a, size_t total) {
  const size_t i = NM_TID();
  if (i >= total) return;
  const float v = bar[i];
  Ib[i] = a * v;
  bar[i] = v * (1.f - a);
}

// dst[r ld + i] += src[r n + i]
__global__ void k_add_into(const float* src, size_t total, int n, float* dst, int ld) {
  const size_t i = NM_TID();
  if (i >= total) return;
  dst[(i / n) * ld + i % n] += src[i];
}

// dst[r n + i] = v[i]
__global__ void k_broadcast(const float* v, float* dst, size_t total, int n) {
  const size_t i = NM_TID();
  if (i >= total) return;
  dst[i] = v[i % n];
}

// I[r n + i] += b[i]
__global__ void k_add_rows(float* I, const float* b, size_t total, int n) {
  const size_t i = NM_TID();
  if (i >= total) return;
  I[i] += b[i % n];
}

// E[r ldE] += scale Σ_i a[r lda + i] c[r n + i] (lda 0: a shared by every sample); one warp per sample
__global__ void k_rowdot(const float* a, int lda, const float* c, int rows, int n, double scale,
                         double* E, int ldE) {
  const size_t r = NM_TID() / 32;
  const int lane = threadIdx.x % 32;
  if (r >= size_t(rows)) return;
  double s = 0;
  for (int i = lane; i < n; i += 32) s += double(a[r * lda + i]) * c[r * n + i];
  s = WarpRed{}.sum(s);
  if (lane == 0) E[r * ldE] += scale * s;
}

// Ŵ[:, m] = W[:, m] / ‖W[:, m]‖ (0 for a zero column); W is n x M
__global__ void k_colnorm(const float* W, int n, int M, float* What) {
  const int m = int(NM_TID());
  if (m >= M) return;
  double ss = 0;
  for (int i = 0; i < n; ++i) ss += double(W[size_t(i) * M + m]) * W[size_t(i) * M + m];
  const double inv = ss > 0 ? 1 / sqrt(ss) : 0.0;
  for (int i = 0; i < n; ++i) What[size_t(i) * M + m] = float(W[size_t(i) * M + m] * inv);
}

// G += the gradient of W given Ŵ̄ (through the column normalisation)
__global__ void k_unnorm(const float* W, const float* What, const float* Wb, int n, int M, float* G) {
  const int m = int(NM_TID());
  if (m >= M) return;
  double ss = 0, dot = 0;
  for (int i = 0; i < n; ++i) {
    const double v = W[size_t(i) * M + m];
    ss += v * v;
    dot += double(What[size_t(i) * M + m]) * Wb[size_t(i) * M + m];
  }
  if (ss <= 0) return;
  const double inv = 1 / sqrt(ss);
  for (int i = 0; i < n; ++i)
    G[size_t(i) * M + m] += float(inv * (Wb[size_t(i) * M + m] - What[size_t(i) * M + m] * dot));
}

// ------------------------------------------------------------------ multilinear kernels
// out[r d_j + i] += W contracted with every slot but j (sample r)
__global__ void k_ml_contract(MlShape s, const float* W, Slots v, int j, float* out, int rows) {
  const size_t t = NM_TID();
  if (t >= size_t(rows) * s.d[j]) return;
  out[t] += energy::ml_contract(s, W, v, j, int(t / s.d[j]), int(t % s.d[j]));
}

__global__ void k_ml_wgrad(MlShape s, Slots v, Slots c, int rows, float* Wbar) {
  const size_t f = NM_TID();
  if (f >= size_t(s.total)) return;
  Wbar[f] += energy::ml_wgrad(s, v, c, (long long)f, rows);
}

__global__ void k_ml_vgrad(MlShape s, const float* W, Slots v, Slots c, int i, float* vbar, int rows) {
  const size_t t = NM_TID();
  if (t >= size_t(rows) * s.d[i]) return;
  vbar[t] += energy::ml_vgrad(s, W, v, c, i, int(t / s.d[i]), int(t % s.d[i]));
}

// ------------------------------------------------------------------ conv kernels
// m (rows x csize) = conv_K(x)
__global__ void k_conv_map(ConvShape s, const float* K, const float* x, float* m, int rows) {
  const size_t t = NM_TID(), cs = size_t(s.csize());
  if (t >= size_t(rows) * cs) return;
  const int r = int(t / cs), q = int(t % cs);
  m[t] = energy::conv_at(s, K, x + size_t(r) * s.n1(), q / (s.C2 * s.Wc), (q / s.C2) % s.Wc, q % s.C2);
}

// x (rows x n1) += convᵀ(y)
__global__ void k_conv_adj(ConvShape s, const float* K, const float* y, float* x, int rows) {
  const size_t t = NM_TID(), n1 = size_t(s.n1());
  if (t >= size_t(rows) * n1) return;
  const int r = int(t / n1), q = int(t % n1);
  x[t] += energy::conv_adj_at(s, K, y + size_t(r) * s.csize(), q / (s.C1 * s.W1), (q / s.C1) % s.W1,
                              q % s.C1);
}

__global__ void k_pool_arg(ConvShape s, const float* m, int* arg, int rows) {
  const size_t t = NM_TID(), n2 = size_t(s.n2());
  if (t >= size_t(rows) * n2) return;
  arg[t] = energy::pool_arg(s, m + (t / n2) * s.csize(), int(t % n2));
}

// out (rows x n2) += pool(m)
__global__ void k_pool_fwd(ConvShape s, const float* m, const int* arg, float* out, int rows) {
  const size_t t = NM_TID(), n2 = size_t(s.n2());
  if (t >= size_t(rows) * n2) return;
  const size_t r = t / n2;
  out[t] += energy::pool_at(s, m + r * s.csize(), arg ? arg + r * n2 : nullptr, int(t % n2));
}

// m (rows x csize) = poolᵀ(y)
__global__ void k_pool_adj(ConvShape s, const float* y, const int* arg, float* m, int rows) {
  const size_t t = NM_TID(), cs = size_t(s.csize());
  if (t >= size_t(rows) * cs) return;
  const size_t r = t / cs;
  m[t] = energy::pool_adj_at(s, y + r * s.n2(), arg ? arg + r * s.n2() : nullptr, int(t % cs));
}

// Kb += kernel gradient of Σ_r <y_r, conv_K(x_r)>; one block per kernel entry
__global__ void k_conv_kgrad(ConvShape s, const float* y, const float* x, float* Kb, int rows) {
  const int e = blockIdx.x;
  const int v = e % s.k, u = (e / s.k) % s.k, c1 = (e / (s.k * s.k)) % s.C1, c2 = e / (s.k * s.k * s.C1);
  const size_t hw = size_t(s.Hc) * s.Wc;
  double acc = 0;
  for (size_t t = threadIdx.x; t < size_t(rows) * hw; t += blockDim.x) {
    const size_t r = t / hw;
    acc += energy::conv_kgrad_term(s, y + r * s.csize(), x + r * s.n1(), c2, c1, u, v, int(t % hw));
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) Kb[e] += float(acc);
}

// ------------------------------------------------------------------ launchers
void lag_act(const DLag& L, const float* x, const float* b, float* g, int rows, int n, cudaStream_t st) {
  const size_t total = size_t(rows) * n;
  if (!total) return;
  if (L.rows()) {
    const size_t nr = total / size_t(L.row);
    k_act_row<<<blocks_for_warps(nr), kThreads, 0, st>>>(L, x, b, g, nr, n);
  } else {
    k_act_elem<<<blocks_for(total), kThreads, 0, st>>>(L, x, b, g, total, n);
  }
  NM_CUDA_LAUNCHED();
}

void lag_jvp(const DLag& L, const float* x, const float* b, const float* g, const float* v, int ldv,
             float* out, float* acc, double* dbeta, int rows, int n, cudaStream_t st) {
  const size_t total = size_t(rows) * n;
  if (!total) return;
  if (L.rows()) {
    const size_t nr = total / size_t(L.row);
    k_jvp_row<<<blocks_for_warps(nr), kThreads, 0, st>>>(L, x, b, g, v, ldv, out, acc, dbeta, nr, n);
  } else {
    k_jvp_elem<<<blocks_for(total), kThreads, 0, st>>>(L, x, b, g, v, ldv, out, acc, dbeta, total, n);
  }
  NM_CUDA_LAUNCHED();
}

void lag_energy(const DLag& L, const float* x, const float* b, const float* g, int rows, int n,
                double* E, int ldE, cudaStream_t st) {
  if (rows <= 0 || n <= 0) return;
  const int D = L.rows() ? L.row : 32, U = (n + D - 1) / D;
  k_energy_lag<<<blocks_for_warps(size_t(rows) * U), kThreads, 0, st>>>(L, x, b, g, rows, n, E, ldE);
  NM_CUDA_LAUNCHED();
}

void colsum(const float* src, int rows, int n, float scale, float* dst, cudaStream_t st) {
  if (rows <= 0 || n <= 0) return;
  k_colsum<<<blocks_for(size_t(n)), kThreads, 0, st>>>(src, rows, n, scale, dst);
  NM_CUDA_LAUNCHED();
}

void rowdot(const float* a, int lda, const float* c, int rows, int n, double scale, double* E, int ldE,
            cudaStream_t st) {
  if (rows <= 0) return;
  k_rowdot<<<blocks_for_warps(size_t(rows)), kThreads, 0, st>>>(a, lda, c, rows, n, scale, E, ldE);
  NM_CUDA_LAUNCHED();
}

void add_rows(float* I, const float* b, int rows, int n, cudaStream_t st) {
  const size_t total = size_t(rows) * n;
  if (!total) return;
  k_add_rows<<<blocks_for(total), kThreads, 0, st>>>(I, b, total, n);
  NM_CUDA_LAUNCHED();
}

void zero(float* p, size_t n, cudaStream_t st) {
  if (n) NM_CUDA_CHECK(cudaMemsetAsync(p, 0, sizeof(float) * n, st));
}

// ------------------------------------------------------------------ synapses
// A synapse on the device: currents into its layers (I[j] += ∂F/∂g_j), their vector-Jacobian
// product (G += ∂/∂params, gb[j] += ∂/∂g_j of Σ_j <Ib_j, I_j>), its energy (E[r ldE] −= F).
// All per-layer pointers are (rows x size of ref j), sample-major.
struct DSyn {
  std::string name;
  std::vector<int> sizes;  // per ref
  Ctx ctx;
  virtual ~DSyn() = default;
  virtual void allocate(int batch) { (void)batch; }
  virtual void prepare(const float* P) { (void)P; }  // before each forward / backward
  virtual void current(const float* P, const CPtrs& g, const Ptrs& I, int rows) = 0;
  virtual void vjp(const float* P, float* G, const CPtrs& g, const CPtrs& Ib, const Ptrs& gb,
                   int rows) = 0;
  virtual void energy(const float* P, const CPtrs& g, double* E, int ldE, int rows) = 0;

  cudaStream_t st() const { return ctx.stream; }
  // C = op(A) op(B) + beta C (row-major)
  void mm(bool ta, bool tb, int m, int n, int k, const float* A, int lda, const float* B, int ldb,
          float beta, float* C, int ldc) const {
    if (m <= 0 || n <= 0) return;
    ctx.blas->gemm(ta, tb, m, n, k, 1.f, A, lda, B, ldb, beta, C, ldc);
  }
  // `count` products, operand i at X + i * sX
  void mmb(bool ta, bool tb, int m, int n, int k, const float* A, int lda, long long sa, const float* B,
           int ldb, long long sb, float beta, float* C, int ldc, long long sc, int count) const {
    if (m <= 0 || n <= 0 || count <= 0) return;
    ctx.blas->gemm_batched(ta, tb, m, n, k, 1.f, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, count);
  }
  // multilinear launches (one thread per output entry)
  void ml_contract(const MlShape& s, const float* W, const Slots& v, int j, float* out, int rows) const {
    const size_t n = size_t(rows) * s.d[j];
    if (!n) return;
    k_ml_contract<<<blocks_for(n), kThreads, 0, st()>>>(s, W, v, j, out, rows);
    NM_CUDA_LAUNCHED();
  }
  void ml_wgrad(const MlShape& s, const Slots& v, const Slots& c, int rows, float* Wbar) const {
    if (rows <= 0 || s.total <= 0) return;
    k_ml_wgrad<<<blocks_for(size_t(s.total)), kThreads, 0, st()>>>(s, v, c, rows, Wbar);
    NM_CUDA_LAUNCHED();
  }
  void ml_vgrad(const MlShape& s, const float* W, const Slots& v, const Slots& c, int i, float* vbar,
                int rows) const {
    const size_t n = size_t(rows) * s.d[i];
    if (!n) return;
    k_ml_vgrad<<<blocks_for(n), kThreads, 0, st()>>>(s, W, v, c, i, vbar, rows);
    NM_CUDA_LAUNCHED();
  }
};

MlShape ml_shape(const std::vector<int>& dims, const std::string& name) {
  if (dims.size() > size_t(kMaxSlots))
    throw DeviceError("the synapse '" + name + "' joins more than " + std::to_string(kMaxSlots - 1) +
                      " layers, more than the CUDA backend supports");
  MlShape s;
  s.k = int(dims.size());
  long long st = 1;
  for (int l = s.k - 1; l >= 0; --l) {
    s.d[l] = dims[size_t(l)];
    s.stride[l] = st;
    st *= dims[size_t(l)];
  }
  s.total = st;
  return s;
}

template <class V>
Slots slots_of(const std::vector<V*>& v, int first = 0) {
  Slots s;
  for (size_t j = 0; j < v.size(); ++j) s.p[size_t(first) + j] = v[j];
  return s;
}

// ------------------------------------------------------------------ dense (N-ary), bias
struct DDense final : DSyn {
  bool has_bias = false;
  size_t W = 0, b = 0;
  MlShape ml;
  DeviceBuffer<float> tmp;  // energy: W contracted with all but the last layer
  int k() const { return int(sizes.size()); }
  void allocate(int batch) override { tmp.resize(size_t(batch) * sizes.back()); }
  void current(const float* P, const CPtrs& g, const Ptrs& I, int rows) override {
    const int n0 = sizes[0], nl = sizes.back();
    if (k() == 2) {  // I0 += g1 Wᵀ, I1 += g0 W
      mm(false, true, rows, n0, nl, g[1], nl, P + W, nl, 1.f, I[0], n0);
      mm(false, false, rows, nl, n0, g[0], n0, P + W, nl, 1.f, I[1], nl);
    } else {
      const Slots v = slots_of(g);
      for (int j = 0; j < k(); ++j) ml_contract(ml, P + W, v, j, I[size_t(j)], rows);
    }
    if (has_bias) add_rows(I.back(), P + b, rows, nl, st());
  }
  void vjp(const float* P, float* G, const CPtrs& g, const CPtrs& Ib, const Ptrs& gb,
           int rows) override {
    const int n0 = sizes[0], nl = sizes.back();
    if (k() == 2) {
      mm(false, false, rows, nl, n0, Ib[0], n0, P + W, nl, 1.f, gb[1], nl);  // ḡ1 += Ī0 W
      mm(true, false, n0, nl, rows, Ib[0], n0, g[1], nl, 1.f, G + W, nl);    // W̄ += Ī0ᵀ g1
      mm(false, true, rows, n0, nl, Ib[1], nl, P + W, nl, 1.f, gb[0], n0);   // ḡ0 += Ī1 Wᵀ
      mm(true, false, n0, nl, rows, g[0], n0, Ib[1], nl, 1.f, G + W, nl);    // W̄ += g0ᵀ Ī1
    } else {
      const Slots v = slots_of(g), c = slots_of(Ib);
      ml_wgrad(ml, v, c, rows, G + W);
      for (int i = 0; i < k(); ++i) ml_vgrad(ml, P + W, v, c, i, gb[size_t(i)], rows);
    }
    if (has_bias) colsum(Ib.back(), rows, nl, 1.f, G + b, st());
  }
  void energy(const float* P, const CPtrs& g, double* E, int ldE, int rows) override {
    const int n0 = sizes[0], nl = sizes.back();
    if (k() == 2) {
      mm(false, false, rows, nl, n0, g[0], n0, P + W, nl, 0.f, tmp.ptr, nl);  // g0 W
    } else {
      zero(tmp.ptr, size_t(rows) * nl, st());
      ml_contract(ml, P + W, slots_of(g), k() - 1, tmp.ptr, rows);
    }
    rowdot(tmp.ptr, nl, g.back(), rows, nl, -1.0, E, ldE, st());
    if (has_bias) rowdot(P + b, 0, g.back(), rows, nl, -1.0, E, ldE, st());
  }
};

struct DBias final : DSyn {
  size_t b = 0;
  void current(const float* P, const CPtrs&, const Ptrs& I, int rows) override {
    add_rows(I[0], P + b, rows, sizes[0], st());
  }
  void vjp(const float*, float* G, const CPtrs&, const CPtrs& Ib, const Ptrs&, int rows) override {
    colsum(Ib[0], rows, sizes[0], 1.f, G + b, st());
  }
  void energy(const float* P, const CPtrs& g, double* E, int ldE, int rows) override {
    rowdot(P + b, 0, g[0], rows, sizes[0], -1.0, E, ldE, st());
  }
};

// ------------------------------------------------------------------ hidden (integrated-out layer)
// h = Σ_j g_j Ŵ_j (rows x M), s = ∇L_h(h), I_j = s Ŵ_jᵀ, E = −L_h(h)
struct DHidden final : DSyn {
  int M = 0;
  bool norm = false;
  DLag lag;
  std::vector<size_t> W;
  // norm 1: the normalised weights and their gradient
  std::vector<std::unique_ptr<DeviceBuffer<float>>> What, Wb;
  DeviceBuffer<float> h, s, sb, hb;
  void allocate(int batch) override {
    const size_t n = size_t(batch) * M;
    h.resize(n), s.resize(n), sb.resize(n), hb.resize(n);
    What.clear(), Wb.clear();
    if (!norm) return;
    for (int nj : sizes) {
      What.push_back(std::make_unique<DeviceBuffer<float>>());
      What.back()->resize(size_t(nj) * M);
      Wb.push_back(std::make_unique<DeviceBuffer<float>>());
      Wb.back()->resize(size_t(nj) * M);
    }
  }
  void prepare(const float* P) override {
    if (!norm) return;
    for (size_t j = 0; j < W.size(); ++j) {
      k_colnorm<<<blocks_for(size_t(M)), kThreads, 0, st()>>>(P + W[j], sizes[j], M, What[j]->ptr);
      NM_CUDA_LAUNCHED();
    }
  }
  const float* w(const float* P, size_t j) const { return norm ? What[j]->ptr : P + W[j]; }
  void hidden(const float* P, const CPtrs& g, int rows) {
    for (size_t j = 0; j < W.size(); ++j)
      mm(false, false, rows, M, sizes[j], g[j], sizes[j], w(P, j), M, j ? 1.f : 0.f, h.ptr, M);
    lag_act(lag, h.ptr, nullptr, s.ptr, rows, M, st());
  }
  void current(const float* P, const CPtrs& g, const Ptrs& I, int rows) override {
    hidden(P, g, rows);
    for (size_t j = 0; j < W.size(); ++j)
      mm(false, true, rows, sizes[j], M, s.ptr, M, w(P, j), M, 1.f, I[j], sizes[j]);
  }
  void vjp(const float* P, float* G, const CPtrs& g, const CPtrs& Ib, const Ptrs& gb,
           int rows) override {
    hidden(P, g, rows);
    for (size_t j = 0; j < W.size(); ++j) {
      const int n = sizes[j];
      float* wb = norm ? Wb[j]->ptr : G + W[j];
      mm(true, false, n, M, rows, Ib[j], n, s.ptr, M, norm ? 0.f : 1.f, wb, M);   // Ŵ̄ += Īᵀ s
      mm(false, false, rows, M, n, Ib[j], n, w(P, j), M, j ? 1.f : 0.f, sb.ptr, M);  // s̄ += Ī Ŵ
    }
    lag_jvp(lag, h.ptr, nullptr, s.ptr, sb.ptr, M, hb.ptr, nullptr, nullptr, rows, M, st());  // h̄ = J s̄
    for (size_t j = 0; j < W.size(); ++j) {
      const int n = sizes[j];
      float* wb = norm ? Wb[j]->ptr : G + W[j];
      mm(true, false, n, M, rows, g[j], n, hb.ptr, M, 1.f, wb, M);            // Ŵ̄ += gᵀ h̄
      mm(false, true, rows, n, M, hb.ptr, M, w(P, j), M, 1.f, gb[j], n);      // ḡ += h̄ Ŵᵀ
      if (norm) {
        k_unnorm<<<blocks_for(size_t(M)), kThreads, 0, st()>>>(P + W[j], What[j]->ptr, wb, n, M,
                                                               G + W[j]);
        NM_CUDA_LAUNCHED();
      }
    }
  }
  void energy(const float* P, const CPtrs& g, double* E, int ldE, int rows) override {
    hidden(P, g, rows);
    lag_energy(lag, h.ptr, nullptr, nullptr, rows, M, E, ldE, st());
  }
};

// ------------------------------------------------------------------ tensor
// A multilinear map whose slot 0 is the (Y·M) hidden vector: h = contract(W, g, slot 0),
// s = ∇L_h(h) (rows of M), I_j = contract(W, [s, g], slot j + 1), E = −Σ_y L_h(h_y).
struct DTensor final : DSyn {
  int M = 0, Y = 1;
  DLag lag;
  size_t W = 0;
  MlShape ml;
  DeviceBuffer<float> h, s, sb, hb;
  int YM() const { return Y * M; }
  void allocate(int batch) override {
    const size_t n = size_t(batch) * YM();
    h.resize(n), s.resize(n), sb.resize(n), hb.resize(n);
  }
  void hidden(const float* P, const CPtrs& g, int rows) {
    zero(h.ptr, size_t(rows) * YM(), st());
    ml_contract(ml, P + W, slots_of(g, 1), 0, h.ptr, rows);
    lag_act(lag, h.ptr, nullptr, s.ptr, rows, YM(), st());
  }
  void current(const float* P, const CPtrs& g, const Ptrs& I, int rows) override {
    hidden(P, g, rows);
    Slots v = slots_of(g, 1);
    v.p[0] = s.ptr;
    for (size_t j = 0; j < g.size(); ++j) ml_contract(ml, P + W, v, int(j) + 1, I[j], rows);
  }
  void vjp(const float* P, float* G, const CPtrs& g, const CPtrs& Ib, const Ptrs& gb,
           int rows) override {
    hidden(P, g, rows);
    Slots v = slots_of(g, 1);
    v.p[0] = s.ptr;
    // through I_j = contract(W, [s, g], j): W̄, s̄ and ḡ
    const Slots c = slots_of(Ib, 1);  // slot 0: none
    zero(sb.ptr, size_t(rows) * YM(), st());
    ml_wgrad(ml, v, c, rows, G + W);
    ml_vgrad(ml, P + W, v, c, 0, sb.ptr, rows);
    for (size_t j = 0; j < g.size(); ++j) ml_vgrad(ml, P + W, v, c, int(j) + 1, gb[j], rows);
    // h̄ = J s̄, then through h = contract(W, g, 0)
    lag_jvp(lag, h.ptr, nullptr, s.ptr, sb.ptr, YM(), hb.ptr, nullptr, nullptr, rows, YM(), st());
    Slots c0;
    c0.p[0] = hb.ptr;
    ml_wgrad(ml, v, c0, rows, G + W);
    for (size_t j = 0; j < g.size(); ++j) ml_vgrad(ml, P + W, v, c0, int(j) + 1, gb[j], rows);
  }
  void energy(const float* P, const CPtrs& g, double* E, int ldE, int rows) override {
    hidden(P, g, rows);
    lag_energy(lag, h.ptr, nullptr, nullptr, rows, YM(), E, ldE, st());
  }
};

// ------------------------------------------------------------------ attention
// Q = g_q W_Q, K = g_k W_K (tokens x H·Z); S_h = Q_h K_hᵀ (per sample H x Nq x Nk); A = ∇L_h(S)
// (rows of Nk); I_q = Σ_h A_h K_h W_Q,hᵀ, I_k = Σ_h A_hᵀ Q_h W_K,hᵀ; E = −Σ L_h(S).
struct DAttention final : DSyn {
  int H = 0, Z = 0, Nq = 1, Dq = 1, Nk = 1, Dk = 1;  // H, Z: from the IR
  DLag lag;
  size_t WQ = 0, WK = 0;
  DeviceBuffer<float> Q, K, S, A, Ab, Sb, Cq, Ck, Cqb, Ckb, Qb, Kb;
  int HZ() const { return H * Z; }
  long long sS() const { return (long long)H * Nq * Nk; }  // scores of one sample
  long long sQ() const { return (long long)Nq * HZ(); }
  long long sK() const { return (long long)Nk * HZ(); }
  void allocate(int batch) override {
    const size_t B = size_t(batch);
    for (auto* b : {&Q, &Cq, &Cqb, &Qb}) b->resize(B * size_t(sQ()));
    for (auto* b : {&K, &Ck, &Ckb, &Kb}) b->resize(B * size_t(sK()));
    for (auto* b : {&S, &A, &Ab, &Sb}) b->resize(B * size_t(sS()));
  }
  // Per-sample operands of head h: its scores (Nq x Nk per sample) or its slice of a token
  // matrix (N x Z at column h Z of N x H·Z per sample).
  struct Op {
    float* p;
    int ld;
    long long s;
  };
  Op sc(DeviceBuffer<float>& b, int h) const { return {b.ptr + size_t(h) * Nq * Nk, Nk, sS()}; }
  Op tq(DeviceBuffer<float>& b, int h) const { return {b.ptr + size_t(h) * Z, HZ(), sQ()}; }
  Op tk(DeviceBuffer<float>& b, int h) const { return {b.ptr + size_t(h) * Z, HZ(), sK()}; }
  // C = op(A) op(B) + beta C for every sample
  void hmm(bool ta, bool tb, int m, int n, int k, Op A, Op B, float beta, Op C, int rows) const {
    mmb(ta, tb, m, n, k, A.p, A.ld, A.s, B.p, B.ld, B.s, beta, C.p, C.ld, C.s, rows);
  }
  void scores(const float* P, const float* gq, const float* gk, int rows) {
    mm(false, false, rows * Nq, HZ(), Dq, gq, Dq, P + WQ, HZ(), 0.f, Q.ptr, HZ());
    mm(false, false, rows * Nk, HZ(), Dk, gk, Dk, P + WK, HZ(), 0.f, K.ptr, HZ());
    for (int h = 0; h < H; ++h) hmm(false, true, Nq, Nk, Z, tq(Q, h), tk(K, h), 0.f, sc(S, h), rows);
    lag_act(lag, S.ptr, nullptr, A.ptr, rows, int(sS()), st());
  }
  // Cq_h = A_h K_h, Ck_h = A_hᵀ Q_h (per sample, every head)
  void contexts(int rows) {
    for (int h = 0; h < H; ++h) {
      hmm(false, false, Nq, Z, Nk, sc(A, h), tk(K, h), 0.f, tq(Cq, h), rows);
      hmm(true, false, Nk, Z, Nq, sc(A, h), tq(Q, h), 0.f, tk(Ck, h), rows);
    }
  }
  void current(const float* P, const CPtrs& g, const Ptrs& I, int rows) override {
    scores(P, g[0], g[1], rows);
    contexts(rows);
    mm(false, true, rows * Nq, Dq, HZ(), Cq.ptr, HZ(), P + WQ, HZ(), 1.f, I[0], Dq);
    mm(false, true, rows * Nk, Dk, HZ(), Ck.ptr, HZ(), P + WK, HZ(), 1.f, I[1], Dk);
  }
  void vjp(const float* P, float* G, const CPtrs& g, const CPtrs& Ib, const Ptrs& gb,
           int rows) override {
    scores(P, g[0], g[1], rows);
    contexts(rows);
    const float *Iq = Ib[0], *Ik = Ib[1];
    const int HZ_ = HZ();
    mm(true, false, Dq, HZ_, rows * Nq, Iq, Dq, Cq.ptr, HZ_, 1.f, G + WQ, HZ_);    // W̄_Q += Iqᵀ Cq
    mm(false, false, rows * Nq, HZ_, Dq, Iq, Dq, P + WQ, HZ_, 0.f, Cqb.ptr, HZ_);  // C̄q = Iq W_Q
    mm(true, false, Dk, HZ_, rows * Nk, Ik, Dk, Ck.ptr, HZ_, 1.f, G + WK, HZ_);    // W̄_K += Ikᵀ Ck
    mm(false, false, rows * Nk, HZ_, Dk, Ik, Dk, P + WK, HZ_, 0.f, Ckb.ptr, HZ_);  // C̄k = Ik W_K
    for (int h = 0; h < H; ++h) {
      hmm(false, true, Nq, Nk, Z, tq(Cqb, h), tk(K, h), 0.f, sc(Ab, h), rows);   // Ā = C̄q Kᵀ
      hmm(false, true, Nq, Nk, Z, tq(Q, h), tk(Ckb, h), 1.f, sc(Ab, h), rows);   // Ā += Q C̄kᵀ
      hmm(true, false, Nk, Z, Nq, sc(A, h), tq(Cqb, h), 0.f, tk(Kb, h), rows);   // K̄ = Aᵀ C̄q
      hmm(false, false, Nq, Z, Nk, sc(A, h), tk(Ckb, h), 0.f, tq(Qb, h), rows);  // Q̄ = A C̄k
    }
    lag_jvp(lag, S.ptr, nullptr, A.ptr, Ab.ptr, int(sS()), Sb.ptr, nullptr, nullptr, rows, int(sS()),
            st());  // S̄ = J Ā
    for (int h = 0; h < H; ++h) {
      hmm(false, false, Nq, Z, Nk, sc(Sb, h), tk(K, h), 1.f, tq(Qb, h), rows);  // Q̄ += S̄ K
      hmm(true, false, Nk, Z, Nq, sc(Sb, h), tq(Q, h), 1.f, tk(Kb, h), rows);   // K̄ += S̄ᵀ Q
    }
    mm(true, false, Dq, HZ_, rows * Nq, g[0], Dq, Qb.ptr, HZ_, 1.f, G + WQ, HZ_);   // W̄_Q += g_qᵀ Q̄
    mm(false, true, rows * Nq, Dq, HZ_, Qb.ptr, HZ_, P + WQ, HZ_, 1.f, gb[0], Dq);  // ḡ_q += Q̄ W_Qᵀ
    mm(true, false, Dk, HZ_, rows * Nk, g[1], Dk, Kb.ptr, HZ_, 1.f, G + WK, HZ_);   // W̄_K += g_kᵀ K̄
    mm(false, true, rows * Nk, Dk, HZ_, Kb.ptr, HZ_, P + WK, HZ_, 1.f, gb[1], Dk);  // ḡ_k += K̄ W_Kᵀ
  }
  void energy(const float* P, const CPtrs& g, double* E, int ldE, int rows) override {
    scores(P, g[0], g[1], rows);
    lag_energy(lag, S.ptr, nullptr, nullptr, rows, int(sS()), E, ldE, st());
  }
};

// ------------------------------------------------------------------ mixer
// Gm = g_aᵀ g_b (Da x Db per sample); M_yz = <W_yz, Gm>; s = ∇L_h(M) (rows of Z);
// V = Σ_yz s_yz W_yz; I_a = g_b Vᵀ, I_b = g_a V; E = −Σ_y L_h(M_y).
struct DMixer final : DSyn {
  int Y = 0, Z = 0, N = 1, Da = 1, Db = 1;  // Y, Z: from the IR
  DLag lag;
  size_t W = 0;
  DeviceBuffer<float> Gm, Mv, s, sb, Mb, V, Vb, Gb;
  int AB() const { return Da * Db; }
  int YZ() const { return Y * Z; }
  void allocate(int batch) override {
    const size_t B = size_t(batch);
    for (auto* b : {&Gm, &V, &Vb, &Gb}) b->resize(B * AB());
    for (auto* b : {&Mv, &s, &sb, &Mb}) b->resize(B * YZ());
  }
  void mix(const float* P, const float* ga, const float* gb, int rows) {
    const long long sa = (long long)N * Da, sb2 = (long long)N * Db;
    mmb(true, false, Da, Db, N, ga, Da, sa, gb, Db, sb2, 0.f, Gm.ptr, Db, AB(), rows);  // Gm = g_aᵀ g_b
    mm(false, true, rows, YZ(), AB(), Gm.ptr, AB(), P + W, AB(), 0.f, Mv.ptr, YZ());
    lag_act(lag, Mv.ptr, nullptr, s.ptr, rows, YZ(), st());
    mm(false, false, rows, AB(), YZ(), s.ptr, YZ(), P + W, AB(), 0.f, V.ptr, AB());
  }
  // per sample, with a (N x Da), b (N x Db), X (Da x Db): oa += b Xᵀ, ob += a X
  void spread(const float* a, const float* b, const float* X, float* oa, float* ob, int rows) const {
    const long long sa = (long long)N * Da, sb2 = (long long)N * Db;
    mmb(false, true, N, Da, Db, b, Db, sb2, X, Db, AB(), 1.f, oa, Da, sa, rows);
    mmb(false, false, N, Db, Da, a, Da, sa, X, Db, AB(), 1.f, ob, Db, sb2, rows);
  }
  void current(const float* P, const CPtrs& g, const Ptrs& I, int rows) override {
    mix(P, g[0], g[1], rows);
    spread(g[0], g[1], V.ptr, I[0], I[1], rows);
  }
  void vjp(const float* P, float* G, const CPtrs& g, const CPtrs& Ib, const Ptrs& gbar,
           int rows) override {
    const float *ga = g[0], *gb = g[1], *Ia = Ib[0], *Ibb = Ib[1];
    const long long sa = (long long)N * Da, sb2 = (long long)N * Db;
    mix(P, ga, gb, rows);
    mmb(true, false, Da, Db, N, Ia, Da, sa, gb, Db, sb2, 0.f, Vb.ptr, Db, AB(), rows);   // V̄ = Iaᵀ g_b
    mmb(true, false, Da, Db, N, ga, Da, sa, Ibb, Db, sb2, 1.f, Vb.ptr, Db, AB(), rows);  // V̄ += g_aᵀ Ib
    spread(Ia, Ibb, V.ptr, gbar[0], gbar[1], rows);  // ḡ_a += Ib Vᵀ, ḡ_b += Ia V
    mm(false, true, rows, YZ(), AB(), Vb.ptr, AB(), P + W, AB(), 0.f, sb.ptr, YZ());   // s̄ = V̄ Wᵀ
    mm(true, false, YZ(), AB(), rows, s.ptr, YZ(), Vb.ptr, AB(), 1.f, G + W, AB());    // W̄ += sᵀ V̄
    lag_jvp(lag, Mv.ptr, nullptr, s.ptr, sb.ptr, YZ(), Mb.ptr, nullptr, nullptr, rows, YZ(), st());
    mm(true, false, YZ(), AB(), rows, Mb.ptr, YZ(), Gm.ptr, AB(), 1.f, G + W, AB());   // W̄ += M̄ᵀ Gm
    mm(false, false, rows, AB(), YZ(), Mb.ptr, YZ(), P + W, AB(), 0.f, Gb.ptr, AB());  // Ḡ = M̄ W
    spread(ga, gb, Gb.ptr, gbar[0], gbar[1], rows);  // ḡ_a += g_b Ḡᵀ, ḡ_b += g_a Ḡ
  }
  void energy(const float* P, const CPtrs& g, double* E, int ldE, int rows) override {
    mix(P, g[0], g[1], rows);
    lag_energy(lag, Mv.ptr, nullptr, nullptr, rows, YZ(), E, ldE, st());
  }
};

// ------------------------------------------------------------------ conv (+ pooling)
// E = −<g2, pool(conv(g1))>; I2 = pool(conv(g1)); I1 = convᵀ(poolᵀ(g2)). Max pooling routes
// through the argmax of conv(g1).
struct DConv final : DSyn {
  ConvShape cs;
  size_t K = 0;
  DeviceBuffer<float> cmap, tmp, pooled;
  DeviceBuffer<int> arg;
  void allocate(int batch) override {
    const size_t B = size_t(batch);
    cmap.resize(B * cs.csize());
    tmp.resize(cs.pool ? B * cs.csize() : 0);
    pooled.resize(B * cs.n2());
    arg.resize(cs.pool == 2 ? B * cs.n2() : 0);
  }
  const int* args() const { return cs.pool == 2 ? arg.ptr : nullptr; }
  void conv(const float* P, const float* x, float* m, int rows) const {  // m = conv(x)
    const size_t n = size_t(rows) * cs.csize();
    if (!n) return;
    k_conv_map<<<blocks_for(n), kThreads, 0, st()>>>(cs, P + K, x, m, rows);
    NM_CUDA_LAUNCHED();
  }
  void map(const float* P, const float* g1, int rows) {  // cmap = conv(g1) and its argmaxes
    conv(P, g1, cmap.ptr, rows);
    if (cs.pool != 2 || rows <= 0) return;
    k_pool_arg<<<blocks_for(size_t(rows) * cs.n2()), kThreads, 0, st()>>>(cs, cmap.ptr, arg.ptr, rows);
    NM_CUDA_LAUNCHED();
  }
  void pool_fwd(const float* m, float* out, int rows) const {  // out += pool(m)
    if (rows <= 0) return;
    k_pool_fwd<<<blocks_for(size_t(rows) * cs.n2()), kThreads, 0, st()>>>(cs, m, args(), out, rows);
    NM_CUDA_LAUNCHED();
  }
  const float* pool_adj(const float* y, int rows) {  // poolᵀ(y) (y itself without pooling)
    if (!cs.pool) return y;
    if (rows > 0) {
      const size_t n = size_t(rows) * cs.csize();
      k_pool_adj<<<blocks_for(n), kThreads, 0, st()>>>(cs, y, args(), tmp.ptr, rows);
      NM_CUDA_LAUNCHED();
    }
    return tmp.ptr;
  }
  void conv_adj(const float* P, const float* y, float* x, int rows) const {  // x += convᵀ(y)
    const size_t n = size_t(rows) * cs.n1();
    if (!n) return;
    k_conv_adj<<<blocks_for(n), kThreads, 0, st()>>>(cs, P + K, y, x, rows);
    NM_CUDA_LAUNCHED();
  }
  void kgrad(const float* y, const float* x, float* Kb, int rows) const {
    if (rows <= 0) return;
    k_conv_kgrad<<<unsigned(cs.C2 * cs.C1 * cs.k * cs.k), kThreads, 0, st()>>>(cs, y, x, Kb, rows);
    NM_CUDA_LAUNCHED();
  }
  void current(const float* P, const CPtrs& g, const Ptrs& I, int rows) override {
    map(P, g[0], rows);
    pool_fwd(cmap.ptr, I[1], rows);
    conv_adj(P, pool_adj(g[1], rows), I[0], rows);
  }
  void vjp(const float* P, float* G, const CPtrs& g, const CPtrs& Ib, const Ptrs& gb,
           int rows) override {
    map(P, g[0], rows);
    // I2 = pool conv g1: ḡ1 += convᵀ poolᵀ Ī2, K̄ += kgrad(poolᵀ Ī2, g1)
    const float* t = pool_adj(Ib[1], rows);
    conv_adj(P, t, gb[0], rows);
    kgrad(t, g[0], G + K, rows);
    // I1 = convᵀ poolᵀ g2: ḡ2 += pool conv Ī1 (through the argmaxes of conv g1),
    // K̄ += kgrad(poolᵀ g2, Ī1)
    conv(P, Ib[0], cmap.ptr, rows);
    pool_fwd(cmap.ptr, gb[1], rows);
    kgrad(pool_adj(g[1], rows), Ib[0], G + K, rows);
  }
  void energy(const float* P, const CPtrs& g, double* E, int ldE, int rows) override {
    map(P, g[0], rows);
    zero(pooled.ptr, size_t(rows) * cs.n2(), st());
    pool_fwd(cmap.ptr, pooled.ptr, rows);
    rowdot(pooled.ptr, cs.n2(), g[1], rows, cs.n2(), -1.0, E, ldE, st());
  }
};

// ------------------------------------------------------------------ the block
class EnergyDevice final : public DeviceNode {
 public:
  EnergyDevice(const IrNode& nd, const ParamOffset& offset, Ctx ctx)
      : name_(nd.name), spec_(nd.en), in_w_(nd.st.in_width), out_w_(nd.width), ctx_(ctx) {
    const int L = int(spec_.layers.size());
    for (const EnergyLayer& l : spec_.layers) {
      lags_.push_back(nm::energy::Lagrangian::make(l.lag.kind, l.lag.p, l.shape.back()));
      if (l.learn_beta && !energy::lg_has_beta(lags_.back().k))
        throw IRError("IR: layer '" + l.name + "' learns beta, but its Lagrangian '" + l.lag.name +
                      "' has none");
    }
    size_t S = 0;
    for (const EnergyLayer& l : spec_.layers) {
      lofs_.push_back(S);
      S += size_t(l.size);
      maxn_ = std::max(maxn_, l.size);
    }
    S_ = S;
    // parameters, under the names the CPU node declares (docs/energy.md)
    for (int l = 0; l < L; ++l) {
      const EnergyLayer& ly = spec_.layers[size_t(l)];
      bias_.push_back(ly.bias ? param(offset, ly.name + ".bias") : SIZE_MAX);
      beta_.push_back(ly.learn_beta ? param(offset, ly.name + ".beta") : SIZE_MAX);
      if (ly.learn_beta) any_beta_ = true;
    }
    for (const EnergySynapse& s : spec_.synapses) syns_.push_back(make_synapse(s, offset));
  }

  void allocate(int batch) override {
    B_ = batch;
    const size_t B = size_t(batch), T1 = size_t(spec_.steps) + 1;
    xs_.resize(T1 * S_ * B);
    gs_.resize(T1 * S_ * B);
    for (auto* b : {&cur_, &bar_, &Ib_, &gb_, &jv_}) b->resize(S_ * B);
    dbeta_.resize(any_beta_ ? size_t(maxn_) * B : 0);
    rec_.resize(T1 * B);
    rec_.zero(ctx_.stream);
    init0_.resize(spec_.normal_init ? S_ : 0);
    for (auto& s : syns_) s->allocate(batch);
  }

  // `init normal`: the fixed start state of each layer (the CPU node's, drawn at build)
  void set_start(const std::vector<std::vector<float>>& states) {
    if (!spec_.normal_init) return;
    if (states.size() != spec_.layers.size())
      throw ShapeError("energy block '" + name_ + "': " + std::to_string(states.size()) +
                       " start states for " + std::to_string(spec_.layers.size()) + " layers");
    init0_.resize(S_);
    for (size_t l = 0; l < states.size(); ++l) {
      if (int(states[l].size()) != spec_.layers[l].size)
        throw ShapeError("energy block '" + name_ + "': the start state of '" + spec_.layers[l].name +
                         "' has the wrong size");
      NM_CUDA_CHECK(cudaMemcpy(init0_.ptr + lofs_[l], states[l].data(), sizeof(float) * states[l].size(),
                               cudaMemcpyHostToDevice));
    }
    have_start_ = true;
  }

  void forward(const float* P, const float* x, float* y, int row, int rows, float* /*aux*/) override {
    if (rows <= 0) return;
    need(row, rows);
    if (spec_.normal_init && !have_start_)
      throw StateError("energy block '" + name_ + "' (init normal): no start state on the device");
    const cudaStream_t st = ctx_.stream;
    const int L = int(spec_.layers.size());
    for (auto& s : syns_) s->prepare(P);
    for (int l = 0; l < L; ++l) {  // x^0: input layers from their slice of x, others the start
      const int n = spec_.layers[size_t(l)].size, off = spec_.layers[size_t(l)].in_offset;
      float* x0 = X(0, l, row);
      const size_t total = size_t(rows) * n;
      if (off >= 0) {
        NM_CUDA_CHECK(cudaMemcpy2DAsync(x0, sizeof(float) * n, x + off, sizeof(float) * in_w_,
                                        sizeof(float) * n, size_t(rows), cudaMemcpyDeviceToDevice, st));
      } else if (spec_.normal_init) {
        k_broadcast<<<blocks_for(total), kThreads, 0, st>>>(init0_.ptr + lofs_[size_t(l)], x0, total, n);
        NM_CUDA_LAUNCHED();
      } else {
        zero(x0, total, st);
      }
    }
    for (int t = 0; t < spec_.steps; ++t) {
      activations(P, t, row, rows);
      currents(P, t, row, rows);
      for (int l = 0; l < L; ++l) {
        const int n = spec_.layers[size_t(l)].size;
        const size_t total = size_t(rows) * n;
        k_euler<<<blocks_for(total), kThreads, 0, st>>>(X(t, l, row), scratch(cur_, l), bias(P, l),
                                                        X(t + 1, l, row), rate(l), total, n);
        NM_CUDA_LAUNCHED();
      }
    }
    activations(P, spec_.steps, row, rows);
    if (record_) trajectory(P, row, rows);
    size_t off = 0;  // y: the out layers' activations side by side
    for (int o : spec_.outs) {
      const int n = spec_.layers[size_t(o)].size;
      NM_CUDA_CHECK(cudaMemcpy2DAsync(y + off, sizeof(float) * out_w_, Gv(spec_.steps, o, row),
                                      sizeof(float) * n, sizeof(float) * n, size_t(rows),
                                      cudaMemcpyDeviceToDevice, st));
      off += size_t(n);
    }
  }

  void backward(const float* P, float* G, const float* /*x*/, const float* dy, float* dx, int row,
                int rows, float /*aux_scale*/) override {
    if (rows <= 0) return;
    need(row, rows);
    const cudaStream_t st = ctx_.stream;
    const int L = int(spec_.layers.size()), Tn = spec_.steps;
    for (auto& s : syns_) s->prepare(P);
    for (int l = 0; l < L; ++l) zero(scratch(bar_, l), size_t(rows) * spec_.layers[size_t(l)].size, st);
    size_t off = 0;  // y = the out layers' g(x^T), side by side
    for (int o : spec_.outs) {
      through_g(P, G, Tn, o, dy + off, out_w_, row, rows);
      off += size_t(spec_.layers[size_t(o)].size);
    }
    for (int t = Tn - 1; t >= 0; --t) {
      for (int l = 0; l < L; ++l) {
        const int n = spec_.layers[size_t(l)].size;
        const size_t total = size_t(rows) * n;
        k_back_step<<<blocks_for(total), kThreads, 0, st>>>(scratch(bar_, l), scratch(Ib_, l), rate(l),
                                                            total);
        NM_CUDA_LAUNCHED();
        if (bias_[size_t(l)] != SIZE_MAX)
          colsum(scratch(Ib_, l), rows, n, 1.f, G + bias_[size_t(l)], st);
        zero(scratch(gb_, l), total, st);
      }
      for (size_t s = 0; s < syns_.size(); ++s) {
        CPtrs g, ib;
        Ptrs gbs;
        for (int ref : spec_.synapses[s].refs) {
          g.push_back(Gv(t, ref, row));
          ib.push_back(scratch(Ib_, ref));
          gbs.push_back(scratch(gb_, ref));
        }
        syns_[s]->vjp(P, G, g, ib, gbs, rows);
      }
      for (int l = 0; l < L; ++l) through_g(P, G, t, l, scratch(gb_, l), size(l), row, rows);
    }
    if (!dx) return;
    for (int l = 0; l < L; ++l) {  // the input layers' adjoints (clamped: summed over the steps)
      const int o = spec_.layers[size_t(l)].in_offset, n = spec_.layers[size_t(l)].size;
      if (o < 0) continue;
      const size_t total = size_t(rows) * n;
      k_add_into<<<blocks_for(total), kThreads, 0, st>>>(scratch(bar_, l), total, n, dx + o, in_w_);
      NM_CUDA_LAUNCHED();
    }
  }

  void record(bool on) override { record_ = on; }

  void fetch_record(int rows, std::vector<double>* sink, int* steps) override {
    if (steps) *steps = spec_.steps;
    if (!sink || rows <= 0) return;
    if (rows > B_) throw ShapeError("energy block '" + name_ + "': " + std::to_string(rows) +
                                    " rows recorded, the batch has " + std::to_string(B_));
    const size_t n = size_t(rows) * (size_t(spec_.steps) + 1);
    std::vector<double> host(n);
    NM_CUDA_CHECK(cudaMemcpyAsync(host.data(), rec_.ptr, sizeof(double) * n, cudaMemcpyDeviceToHost,
                                  ctx_.stream));
    NM_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    sink->insert(sink->end(), host.begin(), host.end());
  }

 private:
  // The arena offset of a parameter under the name the CPU node declares: "<member>.<part>"
  // (e.g. "am_s.weight", "am_v.bias"), with no "<block>." prefix (docs/energy.md). So the
  // ParamOffset given to this kind must resolve full names, not prefix the block's name.
  static size_t param(const ParamOffset& offset, const std::string& name) { return offset(name); }

  void need(int row, int rows) const {
    if (row < 0 || row + rows > B_)
      throw ShapeError("energy block '" + name_ + "': rows " + std::to_string(row) + ".." +
                       std::to_string(row + rows) + " outside the batch of " + std::to_string(B_));
  }
  int size(int l) const { return spec_.layers[size_t(l)].size; }
  float rate(int l) const {
    const EnergyLayer& ly = spec_.layers[size_t(l)];
    return ly.clamp ? 0.f : float(spec_.dt / ly.tau);
  }
  const float* bias(const float* P, int l) const {
    return bias_[size_t(l)] == SIZE_MAX ? nullptr : P + bias_[size_t(l)];
  }
  DLag dlag(const float* P, int l) const {
    const size_t b = beta_[size_t(l)];
    return to_device(lags_[size_t(l)], b == SIZE_MAX ? nullptr : P + b);
  }
  float* X(int t, int l, int row) const {
    return xs_.ptr + (size_t(t) * S_ + lofs_[size_t(l)]) * size_t(B_) + size_t(row) * size(l);
  }
  float* Gv(int t, int l, int row) const {
    return gs_.ptr + (size_t(t) * S_ + lofs_[size_t(l)]) * size_t(B_) + size_t(row) * size(l);
  }
  // layer l's block of a per-layer scratch (rows from 0)
  float* scratch(const DeviceBuffer<float>& b, int l) const {
    return b.ptr + lofs_[size_t(l)] * size_t(B_);
  }

  void activations(const float* P, int t, int row, int rows) {
    for (int l = 0; l < int(spec_.layers.size()); ++l)
      lag_act(dlag(P, l), X(t, l, row), bias(P, l), Gv(t, l, row), rows, spec_.layers[size_t(l)].size,
              ctx_.stream);
  }
  void currents(const float* P, int t, int row, int rows) {
    for (int l = 0; l < int(spec_.layers.size()); ++l)
      zero(scratch(cur_, l), size_t(rows) * spec_.layers[size_t(l)].size, ctx_.stream);
    for (size_t s = 0; s < syns_.size(); ++s) {
      CPtrs g;
      Ptrs I;
      for (int ref : spec_.synapses[s].refs) {
        g.push_back(Gv(t, ref, row));
        I.push_back(scratch(cur_, ref));
      }
      syns_[s]->current(P, g, I, rows);
    }
  }
  // gbar (upstream of g_l at step t, row stride ldg) into bar_[l] (x), the layer's bias (−J gbar)
  // and its learned beta
  void through_g(const float* P, float* G, int t, int l, const float* gbar, int ldg, int row, int rows) {
    const int n = spec_.layers[size_t(l)].size;
    const bool has_bias = bias_[size_t(l)] != SIZE_MAX, has_beta = beta_[size_t(l)] != SIZE_MAX;
    float* jv = has_bias ? scratch(jv_, l) : nullptr;
    lag_jvp(dlag(P, l), X(t, l, row), bias(P, l), Gv(t, l, row), gbar, ldg, jv, scratch(bar_, l),
            has_beta ? dbeta_.ptr : nullptr, rows, n, ctx_.stream);
    if (has_bias) colsum(jv, rows, n, -1.f, G + bias_[size_t(l)], ctx_.stream);
    if (has_beta) {
      k_sum_to<<<1, kThreads, 0, ctx_.stream>>>(dbeta_.ptr, size_t(rows) * n, G + beta_[size_t(l)]);
      NM_CUDA_LAUNCHED();
    }
  }
  // E^0..E^T of samples row..row+rows-1 into rec_ (sample-major, steps + 1 per sample)
  void trajectory(const float* P, int row, int rows) {
    const int T1 = spec_.steps + 1;
    double* E = rec_.ptr + size_t(row) * T1;
    NM_CUDA_CHECK(cudaMemsetAsync(E, 0, sizeof(double) * size_t(rows) * T1, ctx_.stream));
    for (int t = 0; t < T1; ++t) {
      for (int l = 0; l < int(spec_.layers.size()); ++l)
        lag_energy(dlag(P, l), X(t, l, row), bias(P, l), Gv(t, l, row), rows, size(l), E + t, T1,
                   ctx_.stream);
      for (size_t s = 0; s < syns_.size(); ++s) {
        CPtrs g;
        for (int ref : spec_.synapses[s].refs) g.push_back(Gv(t, ref, row));
        syns_[s]->energy(P, g, E + t, T1, rows);
      }
    }
  }

  std::unique_ptr<DSyn> make_synapse(const EnergySynapse& s, const ParamOffset& offset) const {
    // every option is in the IR (core/validate.cpp checked it): no defaults here
    auto num = [&](const char* key) { return s.num.at(key); };
    std::vector<int> sizes;
    for (int r : s.refs) sizes.push_back(spec_.layers[size_t(r)].size);
    auto tokens = [&](int ref, int* N, int* D) {
      const auto& sh = spec_.layers[size_t(ref)].shape;
      *D = sh.back();
      *N = spec_.layers[size_t(ref)].size / *D;
    };
    auto hidden_lag = [&](int row) {
      return to_device(nm::energy::Lagrangian::make(s.hidden.kind, s.hidden.p, row));
    };
    const std::string& nm_ = s.name;
    std::unique_ptr<DSyn> out;
    switch (s.kind) {
    case SynKind::Dense: {
      auto d = std::make_unique<DDense>();
      d->has_bias = num("bias") != 0;
      d->ml = ml_shape(sizes, nm_);
      d->W = param(offset, nm_ + ".weight");
      if (d->has_bias) d->b = param(offset, nm_ + ".bias");
      out = std::move(d);
      break;
    }
    case SynKind::Bias: {
      auto b = std::make_unique<DBias>();
      b->b = param(offset, nm_ + ".bias");
      out = std::move(b);
      break;
    }
    case SynKind::Hidden: {
      auto h = std::make_unique<DHidden>();
      h->M = int(num("units"));
      h->norm = num("norm") != 0;
      h->lag = hidden_lag(h->M);
      for (size_t j = 0; j < sizes.size(); ++j)
        h->W.push_back(param(offset, nm_ + ".weight" + std::to_string(j)));
      out = std::move(h);
      break;
    }
    case SynKind::Tensor: {
      auto h = std::make_unique<DTensor>();
      h->M = int(num("units"));
      h->Y = int(num("heads"));
      h->lag = hidden_lag(h->M);
      std::vector<int> dims{h->Y * h->M};
      dims.insert(dims.end(), sizes.begin(), sizes.end());
      h->ml = ml_shape(dims, nm_);
      h->W = param(offset, nm_ + ".weight");
      out = std::move(h);
      break;
    }
    case SynKind::Attention: {
      auto a = std::make_unique<DAttention>();
      a->H = int(num("heads"));
      a->Z = int(num("qk"));
      tokens(s.refs[0], &a->Nq, &a->Dq);
      tokens(s.refs[1], &a->Nk, &a->Dk);
      a->lag = hidden_lag(a->Nk);
      a->WQ = param(offset, nm_ + ".query");
      a->WK = param(offset, nm_ + ".key");
      out = std::move(a);
      break;
    }
    case SynKind::Mixer: {
      auto m = std::make_unique<DMixer>();
      m->Y = int(num("heads"));
      m->Z = int(num("qk"));
      int Nb;
      tokens(s.refs[0], &m->N, &m->Da);
      tokens(s.refs[1], &Nb, &m->Db);
      if (Nb != m->N) throw IRError("IR: mixer '" + nm_ + "' joins layers of unequal token counts");
      m->lag = hidden_lag(m->Z);
      m->W = param(offset, nm_ + ".weight");
      out = std::move(m);
      break;
    }
    case SynKind::Conv: {
      auto c = std::make_unique<DConv>();
      const auto &a = spec_.layers[size_t(s.refs[0])].shape, &b = spec_.layers[size_t(s.refs[1])].shape;
      if (a.size() != 3 || b.size() != 3) throw IRError("IR: conv '" + nm_ + "' needs HxWxC layers");
      ConvShape& cs = c->cs;
      cs.H1 = a[0], cs.W1 = a[1], cs.C1 = a[2], cs.H2 = b[0], cs.W2 = b[1], cs.C2 = b[2];
      cs.k = int(num("kernel")), cs.st = int(num("stride")), cs.pad = int(num("pad"));
      cs.pool = s.pool == PoolOp::Avg ? 1 : s.pool == PoolOp::Max ? 2 : 0;
      cs.win = cs.pool ? int(num("window")) : 0;  // read with pooling only
      cs.pst = cs.pool ? int(num("pstride")) : 0;
      cs.Hc = (cs.H1 + 2 * cs.pad - cs.k) / cs.st + 1;
      cs.Wc = (cs.W1 + 2 * cs.pad - cs.k) / cs.st + 1;
      const int ph = cs.pool ? (cs.Hc - cs.win) / cs.pst + 1 : cs.Hc;
      const int pw = cs.pool ? (cs.Wc - cs.win) / cs.pst + 1 : cs.Wc;
      if (ph != cs.H2 || pw != cs.W2) throw IRError("IR: conv '" + nm_ + "' does not fit its layers");
      c->K = param(offset, nm_ + ".kernel");
      out = std::move(c);
      break;
    }
    case SynKind::kCount:
      throw IRError("IR: synapse '" + s.name + "' of no known kind");
    }
    out->name = s.name;
    out->sizes = sizes;
    out->ctx = ctx_;
    return out;
  }

  std::string name_;
  EnergySpec spec_;
  int in_w_, out_w_;
  Ctx ctx_;
  std::vector<nm::energy::Lagrangian> lags_;
  std::vector<std::unique_ptr<DSyn>> syns_;
  std::vector<size_t> bias_, beta_, lofs_;  // offsets; lofs_: layer l's start in a step's S entries
  size_t S_ = 0;
  int maxn_ = 1, B_ = 0;
  bool any_beta_ = false, record_ = false, have_start_ = false;
  // x^t and g^t of every step and layer: step t, layer l at (t S + lofs_[l]) B, rows of its size
  DeviceBuffer<float> xs_, gs_;
  DeviceBuffer<float> cur_, bar_, Ib_, gb_, jv_;  // per-layer scratch, layer l at lofs_[l] B
  DeviceBuffer<double> dbeta_, rec_;
  DeviceBuffer<float> init0_;
};

}  // namespace

std::unique_ptr<DeviceNode> make_device_energy(const IrNode& nd, const ParamOffset& offset, Ctx ctx) {
  return std::make_unique<EnergyDevice>(nd, offset, ctx);
}

void energy_set_start(DeviceNode* node, const std::vector<std::vector<float>>& states) {
  auto* e = dynamic_cast<EnergyDevice*>(node);
  if (!e) throw StateError("not an energy block");
  e->set_start(states);
}

NM_REGISTER_DEVICE_KIND(NodeKind::Energy, make_device_energy);

}  // namespace nm::cuda
