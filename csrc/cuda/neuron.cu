// The neuron node (Genesis sections, extensions-math.md 4e, docs/neuron.md) on the GPU: the
// device twin of cpu/neuron.cpp, same semantics, same parameters, same routing decisions
// (strict >, first wins ties, in the CPU's candidate order).
//
// Routing is data-dependent and stays on the device: no host round-trip inside forward or
// backward. Every kernel works on "jobs" (a job is one sample, or one (sample, candidate) pair
// when voltages are scored) and reads the job's neuron from a device array `sel` (-1: the job
// does nothing). A neuron's parameters are found through a device table of arena offsets per
// parameter kind (tab[kind][neuron]), so one launch serves every sample whatever neuron it sits
// at: the routed matrix products (k_routed_gemm) pick each job's weight matrix, the weight
// gradients (k_routed_wgrad) and the gain / soma gradients (k_colsum) are accumulated per
// neuron by one block per (tile, neuron) that walks the jobs routed to it (deterministic and
// free of atomics up to kChunk samples; larger batches split the jobs into chunks that meet in
// atomicAdd). The host walks the chain to its largest possible depth L (1 + plain neurons, or N
// without attentive neurons, 1 without neighbours); depths no sample reaches cost only launches
// whose blocks exit at once. The attentive axon can only run at depth 0, where every sample is
// active, so attention is dense and goes through ctx.blas (one strided batched product per head),
// as do the section projections and the combiner.
//
// Saved per batch row (forward(row, rows) keeps rows row..row+rows-1), per section and depth:
// the neuron (nid), the hand-off flag (fired), the neuron's voltage (volt), the body's input,
// u, z, the output o, the cells' LN state (xhat, rstd), dropout masks and the synapse outputs,
// and the LN of the hand-off. Gate mode recomputes the chosen neurons' dendrites in backward
// (as the CPU does).
//
// Dropout masks come from a counter-based hash on the device, not from the CPU's generator:
// with dropout > 0, training passes do not reproduce the CPU's masks (inference does not drop).
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../core/formulas.h"
#include "../core/rng.h"
#include "device_node.cuh"

namespace nm::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kRowThreads = 128;  // row kernels: one warp per row of features
constexpr int kRowWarps = kRowThreads / kWarp;
constexpr int kEw = 256;          // elementwise kernels
constexpr int kTile = 16;         // routed products
constexpr int kMaxGrid = 1 << 16;
constexpr float kEps = 1e-5f;
#ifndef NM_NEURON_CHUNK
#define NM_NEURON_CHUNK 256
#endif
constexpr int kChunk = NM_NEURON_CHUNK;  // jobs per block in the per-neuron gradient sums

int grid_for(long long n, int per_block) {
  const long long b = (n + per_block - 1) / per_block;
  return int(b < 1 ? 1 : b > kMaxGrid ? kMaxGrid : b);
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float act_f(Act f, float p, float z) { return fm::act(f, p, 0.f, z); }
__device__ __forceinline__ float act_d(Act f, float p, float z, float a) {
  return fm::deriv(f, p, 0.f, z, a);
}
// the voltage's logistic, written as the CPU's (1 / (1 + e^-z)): σ(0) is exactly 1/2
__device__ __forceinline__ float volt_sigm(float z) { return 1.f / (1.f + expf(-z)); }

__host__ __device__ inline uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
__device__ __forceinline__ float hash_uniform(uint64_t key, uint64_t i) {
  return float(mix64(key ^ mix64(i)) >> 40) * (1.0f / 16777216.0f);  // [0, 1)
}

// One matrix per job: data + (j / group) * stride, or (table set) the parameter of the job's
// neuron, P + table[sel[j]].
struct Mat {
  const float* data = nullptr;
  long long stride = 0;
  int group = 1;
  const size_t* table = nullptr;
};
__device__ __forceinline__ const float* mat_at(const Mat& m, const float* P, int j, int n) {
  return m.table ? P + m.table[n] : m.data + (long long)(j / m.group) * m.stride;
}

// ------------------------------------------------------------------------------ routed products
// For every job j with sel[j] >= 0: C_j = op(A_j)[m,k] op(B_j)[k,n] + beta C_j (row-major,
// C_j = C + j*sc). One 16x16 tile per block; blocks walk the jobs along z.
__global__ void k_routed_gemm(const int* sel, int jobs, const float* P, bool ta, bool tb, int m,
                              int n, int k, Mat A, int lda, Mat B, int ldb, float beta, float* C,
                              long long sc, int ldc) {
  __shared__ float As[kTile][kTile + 1], Bs[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int row = blockIdx.y * kTile + ty, col = blockIdx.x * kTile + tx;
  for (int j = blockIdx.z; j < jobs; j += gridDim.z) {
    const int nj = sel[j];
    if (nj < 0) continue;  // the same for the whole block
    const float* a = mat_at(A, P, j, nj);
    const float* b = mat_at(B, P, j, nj);
    float acc = 0.f;
    for (int t = 0; t < k; t += kTile) {
      const int ak = t + tx, bk = t + ty;
      As[ty][tx] = row < m && ak < k ? (ta ? a[size_t(ak) * lda + row] : a[size_t(row) * lda + ak])
                                     : 0.f;
      Bs[ty][tx] = bk < k && col < n ? (tb ? b[size_t(col) * ldb + bk] : b[size_t(bk) * ldb + col])
                                     : 0.f;
      __syncthreads();
      for (int i = 0; i < kTile; ++i) acc += As[ty][i] * Bs[i][tx];
      __syncthreads();
    }
    if (row < m && col < n) {
      float* c = C + j * sc + size_t(row) * ldc + col;
      *c = acc + (beta == 0.f ? 0.f : beta * *c);
    }
  }
}

// Weight gradient per neuron: for neuron z, G[table[z]] (m x n, row-major) += Σ_{j: sel[j]==z}
// D_jᵀ H_j with D_j = D + j*sd (T x m) and H_j (T x n). Each block owns one tile of one neuron's
// matrix and walks a chunk of `per` jobs: with one chunk (batches up to kChunk) the sum is a
// plain, deterministic add; with more, the chunks meet in atomicAdd.
__global__ void k_routed_wgrad(const int* sel, int jobs, int nneur, int per, const size_t* table,
                               float* G, int m, int n, int T, const float* D, long long sd, Mat H) {
  __shared__ float Ds[kTile][kTile + 1], Hs[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int z = int(blockIdx.z) % nneur, chunk = int(blockIdx.z) / nneur;
  const int m0 = blockIdx.y * kTile, row = m0 + ty, col = blockIdx.x * kTile + tx;
  const int j1 = min(jobs, (chunk + 1) * per);
  float acc = 0.f;
  bool any = false;
  for (int j = chunk * per; j < j1; ++j) {
    if (sel[j] != z) continue;  // the same for the whole block
    any = true;
    const float* d = D + j * sd;
    const float* h = H.data + (long long)(j / H.group) * H.stride;
    for (int t = 0; t < T; t += kTile) {
      Ds[ty][tx] = t + ty < T && m0 + tx < m ? d[size_t(t + ty) * m + m0 + tx] : 0.f;  // [t][row]
      Hs[ty][tx] = t + ty < T && col < n ? h[size_t(t + ty) * n + col] : 0.f;          // [t][col]
      __syncthreads();
      for (int i = 0; i < kTile; ++i) acc += Ds[i][ty] * Hs[i][tx];
      __syncthreads();
    }
  }
  if (!any || row >= m || col >= n) return;
  float* g = G + table[z] + size_t(row) * n + col;
  if (int(gridDim.z) > nneur) atomicAdd(g, acc);
  else *g += acc;
}

// Column sums per neuron: G[table[z] + c] += scale Σ_{j: sel[j]==z} coef_j Σ_t A_j[t,c] B_j[t,c]
// (A_j = A + j*T*width; B and coef optional). Without table: G[c] over every job (z = 0).
// blockIdx.y = chunk * nneur + z; chunks of `per` jobs as in k_routed_wgrad.
__global__ void k_colsum(const int* sel, int jobs, int nneur, int per, const size_t* table,
                         float* G, int T, int width, const float* A, const float* B,
                         const float* coef, float scale) {
  __shared__ float red[8][kWarp + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int z = int(blockIdx.y) % nneur, chunk = int(blockIdx.y) / nneur;
  const int c = blockIdx.x * kWarp + tx, j1 = min(jobs, (chunk + 1) * per);
  float acc = 0.f;
  bool any = false;
  if (c < width)
    for (int j = chunk * per; j < j1; ++j) {
      if (table && sel[j] != z) continue;
      any = true;
      const size_t base = size_t(j) * T * width + c;
      float s = 0.f;
      for (int t = ty; t < T; t += 8) {
        const size_t i = base + size_t(t) * width;
        s += B ? A[i] * B[i] : A[i];
      }
      acc += coef ? coef[j] * s : s;
    }
  red[ty][tx] = acc;
  __syncthreads();
  if (ty == 0 && c < width && any) {
    float s = 0.f;
    for (int i = 0; i < 8; ++i) s += red[i][tx];
    float* g = G + (table ? table[z] : 0) + c;
    if (int(gridDim.y) > nneur) atomicAdd(g, scale * s);
    else *g += scale * s;
  }
}

// ------------------------------------------------------------------------------ cells
// f(h) = act(γ ⊙ LN(pre)) per row (job j = row / T): xhat, rstd saved when given; inverted
// dropout when mask is given; out = f + res (res optional).
__global__ void k_cell_fwd(const int* sel, int jobs, int T, int d, const float* P,
                           const size_t* gtab, const float* pre, float* xhat, float* rstd,
                           float* out, const float* res, float* mask, float p, uint64_t key,
                           Act f, float ap) {
  const int lane = threadIdx.x % kWarp;
  const long long rows = (long long)jobs * T;
  const float keep = p > 0.f ? 1.f / (1.f - p) : 1.f;
  for (long long r = (long long)blockIdx.x * kRowWarps + threadIdx.x / kWarp; r < rows;
       r += (long long)gridDim.x * kRowWarps) {
    const int n = sel[r / T];
    if (n < 0) continue;
    const float* x = pre + r * d;
    const float* g = P + gtab[n];
    float s = 0.f;
    for (int c = lane; c < d; c += kWarp) s += x[c];
    const float mean = warp_sum(s) / float(d);
    float v = 0.f;
    for (int c = lane; c < d; c += kWarp) v += (x[c] - mean) * (x[c] - mean);
    const float rs = 1.f / sqrtf(warp_sum(v) / float(d) + kEps);
    if (rstd && lane == 0) rstd[r] = rs;
    for (int c = lane; c < d; c += kWarp) {
      const size_t i = size_t(r) * d + c;
      const float h = (x[c] - mean) * rs;
      if (xhat) xhat[i] = h;
      float a = act_f(f, ap, g[c] * h);
      if (mask) {
        const float mk = hash_uniform(key, i) < p ? 0.f : keep;
        mask[i] = mk;
        a *= mk;
      }
      out[i] = res ? a + res[i] : a;
    }
  }
}

// Backward of a cell's LN + act per row: dz = (da ⊙ mask) ⊙ f'(γ xhat) (kept for dγ) and
// dpre = rstd (dz γ − mean(dz γ) − xhat mean(dz γ xhat)).
__global__ void k_cell_bwd(const int* sel, int jobs, int T, int d, const float* P,
                           const size_t* gtab, const float* xhat, const float* rstd,
                           const float* mask, const float* da, float* dz, float* dpre, Act f,
                           float ap) {
  const int lane = threadIdx.x % kWarp;
  const long long rows = (long long)jobs * T;
  for (long long r = (long long)blockIdx.x * kRowWarps + threadIdx.x / kWarp; r < rows;
       r += (long long)gridDim.x * kRowWarps) {
    const int n = sel[r / T];
    if (n < 0) continue;
    const float* g = P + gtab[n];
    float s1 = 0.f, s2 = 0.f;
    for (int c = lane; c < d; c += kWarp) {
      const size_t i = size_t(r) * d + c;
      const float h = xhat[i], zc = g[c] * h, a = act_f(f, ap, zc);
      const float dm = mask ? da[i] * mask[i] : da[i];
      const float dzc = dm * act_d(f, ap, zc, a);
      dz[i] = dzc;
      s1 += dzc * g[c];
      s2 += dzc * g[c] * h;
    }
    const float m1 = warp_sum(s1) / float(d), m2 = warp_sum(s2) / float(d), rs = rstd[r];
    for (int c = lane; c < d; c += kWarp) {
      const size_t i = size_t(r) * d + c;
      dpre[i] = rs * (dz[i] * g[c] - m1 - xhat[i] * m2);
    }
  }
}

// ------------------------------------------------------------------------------ voltages
// v_j = σ(Σ_c soma[c] mean_t h_j[t,c]) (one warp per job; h_j = h + (j/group)*stride)
__device__ float soma_logit(const float* hj, const float* w, int T, int d, int lane) {
  float acc = 0.f;
  for (int c = lane; c < d; c += kWarp) {
    float m = 0.f;
    for (int t = 0; t < T; ++t) m += hj[size_t(t) * d + c];
    acc += w[c] * m / float(T);
  }
  return warp_sum(acc);
}

__global__ void k_soma_fwd(const int* sel, int jobs, int T, int d, const float* P,
                           const size_t* stab, const float* h, long long hs, int group,
                           float* vol) {
  const int lane = threadIdx.x % kWarp;
  for (long long j = (long long)blockIdx.x * kRowWarps + threadIdx.x / kWarp; j < jobs;
       j += (long long)gridDim.x * kRowWarps) {
    const int n = sel[j];
    if (n < 0) continue;
    const float acc = soma_logit(h + (j / group) * hs, P + stab[n], T, d, lane);
    if (lane == 0) vol[j] = volt_sigm(acc);
  }
}

// Gate backward of v·vbar (vbar_j = Σ_t vrow[j,t]): coef_j = vbar v (1 − v) (the soma's
// gradient is coef_j mean_t h_j) and dh_j[t,c] (+)= coef_j soma[c] / T (dh optional).
__global__ void k_soma_bwd(const int* sel, int jobs, int T, int d, const float* P,
                           const size_t* stab, const float* h, long long hs, const float* vrow,
                           float* coef, float* dh, bool accumulate) {
  const int lane = threadIdx.x % kWarp;
  for (long long j = (long long)blockIdx.x * kRowWarps + threadIdx.x / kWarp; j < jobs;
       j += (long long)gridDim.x * kRowWarps) {
    const int n = sel[j];
    if (n < 0) continue;
    const float* w = P + stab[n];
    const float v = volt_sigm(soma_logit(h + j * hs, w, T, d, lane));
    float vb = 0.f;
    for (int t = lane; t < T; t += kWarp) vb += vrow[j * T + t];
    const float dp = warp_sum(vb) * v * (1.f - v);
    if (lane == 0) coef[j] = dp;
    if (!dh) continue;
    float* o = dh + j * (long long)T * d;
    for (long long i = lane; i < (long long)T * d; i += kWarp) {
      const float val = dp * w[i % d] / float(T);
      o[i] = accumulate ? o[i] + val : val;
    }
  }
}

// ------------------------------------------------------------------------------ routing
// entry candidates: job b*ne + c scores neuron c
__global__ void k_fill_entry(int* sel, int rows, int ne) {
  const long long n = (long long)rows * ne;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x)
    sel[i] = int(i % ne);
}

// per-sample entry: argmax voltage (strict >, first wins; -1 start as the CPU)
__global__ void k_entry_sample(const float* vol, int rows, int ne, int* nid0, float* volt0) {
  for (int b = blockIdx.x * blockDim.x + threadIdx.x; b < rows; b += gridDim.x * blockDim.x) {
    int best = 0;
    float bs = -1.f;
    for (int c = 0; c < ne; ++c) {
      const float v = vol[(long long)b * ne + c];
      if (v > bs) bs = v, best = c;
    }
    nid0[b] = best;
    volt0[b] = bs;
  }
}

// deterministic block sum of f(b) over b < rows (all threads get the result)
template <class F>
__device__ float block_sum(int rows, F f) {
  __shared__ float red[kEw];
  float s = 0.f;
  for (int b = threadIdx.x; b < rows; b += blockDim.x) s += f(b);
  red[threadIdx.x] = s;
  __syncthreads();
  for (int o = blockDim.x / 2; o > 0; o >>= 1) {
    if (int(threadIdx.x) < o) red[threadIdx.x] += red[threadIdx.x + o];
    __syncthreads();
  }
  const float r = red[0];
  __syncthreads();
  return r;
}

// per-batch entry (one block): argmax of the batch-mean voltage
__global__ void k_entry_batch(const float* vol, int rows, int ne, int* nid0, float* volt0) {
  int best = 0;
  float bs = -1.f;
  for (int c = 0; c < ne; ++c) {
    const float m = block_sum(rows, [&](int b) { return vol[(long long)b * ne + c]; }) / float(rows);
    if (m > bs) bs = m, best = c;
  }
  for (int b = threadIdx.x; b < rows; b += blockDim.x) nid0[b] = best, volt0[b] = 0.f;
}

// hand-off candidates at depth d: job b*K + c is neighbour c of the sample's neuron, or -1
// when the sample's chain has ended, the neighbour is attentive or already on the path
__global__ void k_candidates(const int* nid, int B, int d, int rows, const int* nbrs, int K,
                             int A, int* vsel) {
  const long long n = (long long)rows * K;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    const int b = int(i / K), c = int(i % K);
    const int cur = nid[(long long)d * B + b];
    int m = -1;
    if (cur >= 0) {
      m = nbrs[cur * K + c];
      if (m < A) m = -1;
      for (int e = 0; e <= d && m >= 0; ++e)
        if (nid[(long long)e * B + b] == m) m = -1;
    }
    vsel[i] = m;
  }
}

// per-sample hand-off: the best free neighbour fires when its voltage exceeds θ
__global__ void k_hop_sample(const int* vsel, const float* vol, int rows, int K, float theta,
                             const int* nid_d, int* fired_d, int* nid_n, float* volt_n) {
  for (int b = blockIdx.x * blockDim.x + threadIdx.x; b < rows; b += gridDim.x * blockDim.x) {
    int best = -1;
    float bv = -1.f;
    if (nid_d[b] >= 0)
      for (int c = 0; c < K; ++c) {
        const long long j = (long long)b * K + c;
        if (vsel[j] < 0) continue;
        if (vol[j] > bv) bv = vol[j], best = vsel[j];
      }
    const bool fire = best >= 0 && bv > theta;
    fired_d[b] = fire;
    nid_n[b] = fire ? best : -1;
    volt_n[b] = fire ? bv : 0.f;
  }
}

// per-batch hand-off (one block): the neighbour of highest batch-mean voltage; samples below θ
// go on as zeros; nothing fires: the chain ends for all
__global__ void k_hop_batch(const int* vsel, const float* vol, int rows, int K, float theta,
                            const int* nid_d, int* fired_d, int* nid_n, float* volt_n) {
  __shared__ int any_s;
  int best = -1, cb = 0;
  float bs = -1.f;
  if (nid_d[0] >= 0)
    for (int c = 0; c < K; ++c) {
      if (vsel[c] < 0) continue;  // sample 0's candidates: the path is shared
      const float m =
          block_sum(rows, [&](int b) { return vol[(long long)b * K + c]; }) / float(rows);
      if (m > bs) bs = m, best = vsel[c], cb = c;
    }
  if (threadIdx.x == 0) any_s = 0;
  __syncthreads();
  if (best >= 0)
    for (int b = threadIdx.x; b < rows; b += blockDim.x)
      if (vol[(long long)b * K + cb] > theta) any_s = 1;
  __syncthreads();
  const bool any = any_s != 0;
  for (int b = threadIdx.x; b < rows; b += blockDim.x) {
    const float v = best >= 0 ? vol[(long long)b * K + cb] : 0.f;
    fired_d[b] = any && v > theta;
    nid_n[b] = any ? best : -1;
    volt_n[b] = any ? v : 0.f;
  }
}

// the next depth's input: z of the samples that fired, zeros for the others that go on
__global__ void k_next_input(const int* nid_n, const int* fired_d, const float* z, float* xn,
                             int rows, int sd) {
  const long long n = (long long)rows * sd;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    const int b = int(i / sd);
    if (nid_n[b] >= 0) xn[i] = fired_d[b] ? z[i] : 0.f;
  }
}

// o_d = z_d + s γ ⊙ LN(o_{d+1}) where the sample fired at d (s = its next voltage in gate mode)
__global__ void k_assemble(const int* nid_d, const int* fired_d, const float* volt_n, bool gate,
                           const float* P, const size_t* ntab, const float* z, const float* o1,
                           float* lnx, float* lnr, float* o, int rows, int T, int d) {
  const int lane = threadIdx.x % kWarp;
  const long long R = (long long)rows * T;
  for (long long r = (long long)blockIdx.x * kRowWarps + threadIdx.x / kWarp; r < R;
       r += (long long)gridDim.x * kRowWarps) {
    const int b = int(r / T), n = nid_d[b];
    if (n < 0) continue;
    const size_t off = size_t(r) * d;
    if (!fired_d[b]) {
      for (int c = lane; c < d; c += kWarp) o[off + c] = z[off + c];
      continue;
    }
    const float* x = o1 + off;
    const float* g = P + ntab[n];
    const float sc = gate ? volt_n[b] : 1.f;
    float s = 0.f;
    for (int c = lane; c < d; c += kWarp) s += x[c];
    const float mean = warp_sum(s) / float(d);
    float v = 0.f;
    for (int c = lane; c < d; c += kWarp) v += (x[c] - mean) * (x[c] - mean);
    const float rs = 1.f / sqrtf(warp_sum(v) / float(d) + kEps);
    if (lane == 0) lnr[r] = rs;
    for (int c = lane; c < d; c += kWarp) {
      const float h = (x[c] - mean) * rs;
      lnx[off + c] = h;
      o[off + c] = z[off + c] + sc * (g[c] * h);
    }
  }
}

// y = o_0, or in gate mode y = x + v_e (o_0 − x)
__global__ void k_output(const float* o0, const float* x, const float* volt0, bool gate,
                         float* y, int rows, int sd) {
  const long long n = (long long)rows * sd;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x)
    y[i] = gate ? x[i] + volt0[i / sd] * (o0[i] - x[i]) : o0[i];
}

// counts[b] += path length (depths with a neuron)
__global__ void k_count(const int* nid, int B, int L, int rows, float* counts) {
  for (int b = blockIdx.x * blockDim.x + threadIdx.x; b < rows; b += gridDim.x * blockDim.x) {
    int c = 0;
    for (int d = 0; d < L; ++d) c += nid[(long long)d * B + b] >= 0;
    counts[b] += float(c);
  }
}

// ------------------------------------------------------------------------------ backward, chain
// gate entry: vrow[b,t] = Σ_c dy (o_0 − x) (v_e's gradient, summed later) and dx += (1 − v_e) dy
__global__ void k_gate_entry(const float* dy, const float* o0, const float* x, const float* volt0,
                             float* vrow, float* dx, int rows, int T, int d) {
  const int lane = threadIdx.x % kWarp;
  const long long R = (long long)rows * T;
  for (long long r = (long long)blockIdx.x * kRowWarps + threadIdx.x / kWarp; r < R;
       r += (long long)gridDim.x * kRowWarps) {
    const float ve = volt0[r / T];
    const size_t off = size_t(r) * d;
    float s = 0.f;
    for (int c = lane; c < d; c += kWarp) {
      s += dy[off + c] * (o0[off + c] - x[off + c]);
      if (dx) dx[off + c] += (1.f - ve) * dy[off + c];
    }
    s = warp_sum(s);
    if (lane == 0) vrow[r] = s;
  }
}

// Depth d of the output chain, shallow to deep: ō_d (dy at d = 0, scaled by v_e in gate mode;
// zero where the gradient never reaches, i.e. an earlier hop did not fire) becomes z̄_d; where
// the sample fired, ō_{d+1} = LN backward of s ō_d (dγ's terms left in dln), and in gate mode
// vrow = ō_d · γ xhat (the gradient of the next voltage). selg: the neuron whose norm gets dγ
// (-1: none); selv: the next neuron whose voltage gets a gradient (gate).
__global__ void k_chain_bwd(int dep, const int* nid, const int* fired, const float* volt, int B,
                            bool gate, const float* P, const size_t* ntab, const float* dy,
                            const float* ocur, const float* lnx, const float* lnr, float* dzd,
                            float* onext, float* dln, float* vrow, int* selg, int* selv, int rows,
                            int T, int d) {
  const int lane = threadIdx.x % kWarp;
  const long long R = (long long)rows * T;
  for (long long r = (long long)blockIdx.x * kRowWarps + threadIdx.x / kWarp; r < R;
       r += (long long)gridDim.x * kRowWarps) {
    const int b = int(r / T), t = int(r % T);
    const int n = nid[(long long)dep * B + b];
    if (n < 0) continue;
    bool reached = true;
    for (int e = 0; e < dep; ++e) reached = reached && fired[(long long)e * B + b] != 0;
    const bool fire = reached && fired[(long long)dep * B + b] != 0;
    if (t == 0 && lane == 0) {
      selg[b] = fire ? n : -1;
      selv[b] = fire ? nid[(long long)(dep + 1) * B + b] : -1;
    }
    const size_t off = size_t(r) * d;
    const float in_scale = dep == 0 && gate ? volt[b] : 1.f;
    for (int c = lane; c < d; c += kWarp)
      dzd[off + c] = !reached ? 0.f : dep == 0 ? in_scale * dy[off + c] : ocur[off + c];
    if (!fire) continue;
    const float sc = gate ? volt[(long long)(dep + 1) * B + b] : 1.f;
    const float* g = P + ntab[n];
    float s1 = 0.f, s2 = 0.f, sv = 0.f;
    for (int c = lane; c < d; c += kWarp) {
      const float ob = dzd[off + c], h = lnx[off + c], dl = sc * ob;
      dln[off + c] = dl;
      s1 += dl * g[c];
      s2 += dl * g[c] * h;
      sv += ob * g[c] * h;
    }
    const float m1 = warp_sum(s1) / float(d), m2 = warp_sum(s2) / float(d);
    sv = warp_sum(sv);
    const float rs = lnr[r];
    for (int c = lane; c < d; c += kWarp)
      onext[off + c] = rs * (dln[off + c] * g[c] - m1 - lnx[off + c] * m2);
    if (gate && lane == 0) vrow[r] = sv;
  }
}

// g = z̄_d + ī_{d+1} where the sample fired at d (active samples of depth d)
__global__ void k_grad_in(const int* nid_d, const int* fired_d, const float* dzd, const float* din,
                          float* g, int rows, int sd) {
  const long long n = (long long)rows * sd;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    const int b = int(i / sd);
    if (nid_d[b] < 0) continue;
    g[i] = fired_d[b] ? dzd[i] + din[i] : dzd[i];
  }
}

// ū = g (+ the synapse chain's input gradient); the body's input gradient starts at ū
__global__ void k_body_du(const int* sel, const float* g, const float* dh, float* du, float* gx,
                          int rows, int sd) {
  const long long n = (long long)rows * sd;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    if (sel[i / sd] < 0) continue;
    const float v = dh ? g[i] + dh[i] : g[i];
    du[i] = v;
    gx[i] = v;
  }
}

__global__ void k_add(float* y, const float* x, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x)
    y[i] += x[i];
}

// ------------------------------------------------------------------------------ attention
// rows of T scores: softmax in place, entries above the diagonal masked when causal
__global__ void k_softmax(float* s, long long R, int T, bool causal) {
  const int lane = threadIdx.x % kWarp;
  for (long long r = (long long)blockIdx.x * kRowWarps + threadIdx.x / kWarp; r < R;
       r += (long long)gridDim.x * kRowWarps) {
    float* x = s + r * T;
    const int lim = causal ? int(r % T) + 1 : T;  // query i sees keys 0..i
    float m = -INFINITY;
    for (int j = lane; j < lim; j += kWarp) m = fmaxf(m, x[j]);
    for (int o = kWarp / 2; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float sum = 0.f;
    for (int j = lane; j < T; j += kWarp) {
      const float e = j < lim ? expf(x[j] - m) : 0.f;
      x[j] = e;
      sum += e;
    }
    const float inv = 1.f / warp_sum(sum);
    for (int j = lane; j < T; j += kWarp) x[j] *= inv;
  }
}

// ds = p ⊙ (dp − Σ p dp), in place in dp
__global__ void k_softmax_bwd(const float* p, float* dp, long long R, int T) {
  const int lane = threadIdx.x % kWarp;
  for (long long r = (long long)blockIdx.x * kRowWarps + threadIdx.x / kWarp; r < R;
       r += (long long)gridDim.x * kRowWarps) {
    const float* pr = p + r * T;
    float* g = dp + r * T;
    float s = 0.f;
    for (int j = lane; j < T; j += kWarp) s += pr[j] * g[j];
    const float dot = warp_sum(s);
    for (int j = lane; j < T; j += kWarp) g[j] = pr[j] * (g[j] - dot);
  }
}

// ------------------------------------------------------------------------------ sections
__global__ void k_bias_add(float* y, const float* b, long long R, int w) {
  const long long n = R * w;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x)
    y[i] += b[i % w];
}

// combiner: y = act(γ ⊙ LN(z) + β) per row; xhat, rstd saved
__global__ void k_comb_fwd(const float* zc, const float* g, const float* be, float* xhat,
                           float* rstd, float* y, long long R, int d, Act f, float ap) {
  const int lane = threadIdx.x % kWarp;
  for (long long r = (long long)blockIdx.x * kRowWarps + threadIdx.x / kWarp; r < R;
       r += (long long)gridDim.x * kRowWarps) {
    const float* x = zc + r * d;
    float s = 0.f;
    for (int c = lane; c < d; c += kWarp) s += x[c];
    const float mean = warp_sum(s) / float(d);
    float v = 0.f;
    for (int c = lane; c < d; c += kWarp) v += (x[c] - mean) * (x[c] - mean);
    const float rs = 1.f / sqrtf(warp_sum(v) / float(d) + kEps);
    if (lane == 0) rstd[r] = rs;
    for (int c = lane; c < d; c += kWarp) {
      const float h = (x[c] - mean) * rs;
      xhat[r * d + c] = h;
      y[r * d + c] = act_f(f, ap, g[c] * h + be[c]);
    }
  }
}

// combiner backward: dn = dy ⊙ f'(n) (kept for dγ, dβ), dz = LN backward of dn
__global__ void k_comb_bwd(const float* xhat, const float* rstd, const float* g, const float* be,
                           const float* dy, float* dn, float* dz, long long R, int d, Act f,
                           float ap) {
  const int lane = threadIdx.x % kWarp;
  for (long long r = (long long)blockIdx.x * kRowWarps + threadIdx.x / kWarp; r < R;
       r += (long long)gridDim.x * kRowWarps) {
    float s1 = 0.f, s2 = 0.f;
    for (int c = lane; c < d; c += kWarp) {
      const long long i = r * d + c;
      const float h = xhat[i], nv = g[c] * h + be[c], a = act_f(f, ap, nv);
      const float dv = dy[i] * act_d(f, ap, nv, a);
      dn[i] = dv;
      s1 += dv * g[c];
      s2 += dv * g[c] * h;
    }
    const float m1 = warp_sum(s1) / float(d), m2 = warp_sum(s2) / float(d), rs = rstd[r];
    for (int c = lane; c < d; c += kWarp) {
      const long long i = r * d + c;
      dz[i] = rs * (dn[i] * g[c] - m1 - xhat[i] * m2);
    }
  }
}

// ============================================================================== the node
class NeuronDevice final : public DeviceNode {
 public:
  NeuronDevice(const IrNode& nd, const ParamOffset& offset, Ctx ctx)
      : name_(nd.name), act_(nd.act), ap_(float(nd.act_param)), ctx_(ctx) {
    const StructSpec& st = nd.st;
    T_ = st.shape.at(0);
    D_ = st.geti("dim"), S_ = st.geti("sections");
    N_ = st.geti("neurons"), A_ = st.geti("attentive"), H_ = st.geti("heads");
    Dd_ = st.geti("dendrites"), Sy_ = st.geti("synapses"), K_ = st.geti("neighbors");
    theta_ = float(st.get("threshold"));
    seed_ = uint64_t(st.get("seed"));
    causal_ = st.geti("causal") != 0;
    dropout_ = st.has("dropout") ? float(st.get("dropout")) : 0.f;
    const std::string& r = st.str("route");
    route_ = r == "batch" ? kBatch : r == "gate" ? kGate : kSample;
    if (S_ < 1 || D_ % S_ || N_ < 1 || A_ < 0 || A_ > N_ || K_ < 0 || K_ > N_ - 1 || H_ < 1 ||
        Dd_ < 0 || Sy_ < 0 || T_ < 1)
      throw IRError("IR: inconsistent neuron options at '" + name_ + "'");
    Ds_ = D_ / S_;
    if (A_ && Ds_ % H_) throw IRError("IR: inconsistent neuron options at '" + name_ + "'");
    ne_ = A_ ? A_ : N_;
    L_ = K_ == 0 ? 1 : A_ ? 1 + (N_ - A_) : N_;
    nk_ = 2 * Dd_ + 2 * Sy_ + 7;

    // parameter offsets, per section and kind, one entry per neuron
    std::vector<size_t> tab(size_t(S_) * nk_ * N_, 0);
    std::vector<int> nbrs(size_t(S_) * N_ * (K_ ? K_ : 1), 0);
    Rng nb(seed_);  // the CPU's neighbour draw: Fisher-Yates over the other neurons, first K
    sec_ = std::make_unique<Sec[]>(size_t(S_));
    for (int s = 0; s < S_; ++s) {
      const std::string ps = S_ > 1 ? "s" + std::to_string(s) + "." : std::string();
      if (S_ > 1) {
        sec_[s].in_w = offset(ps + "in.weight");
        sec_[s].in_b = offset(ps + "in.bias");
      }
      auto at = [&](int kind, int n) -> size_t& { return tab[(size_t(s) * nk_ + kind) * N_ + n]; };
      for (int n = 0; n < N_; ++n) {
        const std::string p = ps + "n" + std::to_string(n) + ".";
        for (int j = 0; j < Dd_; ++j) {
          at(kDendW(j), n) = offset(p + "dend" + std::to_string(j) + ".weight");
          at(kDendG(j), n) = offset(p + "dend" + std::to_string(j) + ".gamma");
        }
        at(kSoma(), n) = offset(p + "soma");
        if (n < A_) {
          at(kQ(), n) = offset(p + "query");
          at(kK(), n) = offset(p + "key");
          at(kV(), n) = offset(p + "value");
        }
        at(kAxW(), n) = offset(p + "axon.weight");
        at(kAxG(), n) = offset(p + "axon.gamma");
        for (int j = 0; j < Sy_; ++j) {
          at(kSynW(j), n) = offset(p + "syn" + std::to_string(j) + ".weight");
          at(kSynG(j), n) = offset(p + "syn" + std::to_string(j) + ".gamma");
        }
        at(kNorm(), n) = offset(p + "norm");
        std::vector<int> others;
        for (int m = 0; m < N_; ++m)
          if (m != n) others.push_back(m);
        for (int i = int(others.size()) - 1; i > 0; --i)
          std::swap(others[i], others[size_t(nb.next() % uint64_t(i + 1))]);
        for (int c = 0; c < K_; ++c) nbrs[(size_t(s) * N_ + n) * K_ + c] = others[c];
      }
    }
    if (S_ > 1) {
      comb_w_ = offset("combine.weight");
      comb_b_ = offset("combine.bias");
      comb_g_ = offset("combine.norm.weight");
      comb_be_ = offset("combine.norm.bias");
    }
    // uploaded once, on the model's stream, finished before the host vectors go
    tab_.resize(tab.size());
    NM_CUDA_CHECK(cudaMemcpyAsync(tab_.ptr, tab.data(), sizeof(size_t) * tab.size(),
                                  cudaMemcpyHostToDevice, ctx_.stream));
    nbrs_.resize(nbrs.size());
    NM_CUDA_CHECK(cudaMemcpyAsync(nbrs_.ptr, nbrs.data(), sizeof(int) * nbrs.size(),
                                  cudaMemcpyHostToDevice, ctx_.stream));
    NM_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
  }

  void allocate(int batch) override {
    B_ = batch;
    const size_t B = size_t(batch), sd = size_t(T_) * Ds_, L = size_t(L_), Tz = size_t(T_);
    const size_t J = B * size_t(ne_ > K_ ? ne_ : K_);
    const size_t att = size_t(H_) * T_ * T_;
    const bool drop = dropout_ > 0;
    for (int si = 0; si < S_; ++si) {
      Sec& s = sec_[si];
      s.nid.resize(L * B);
      s.fired.resize(L * B);
      s.volt.resize(L * B);
      for (auto* b : {&s.X, &s.U, &s.Z, &s.O, &s.axx, &s.lnx}) b->resize(L * B * sd);
      s.axr.resize(L * B * Tz);
      s.lnr.resize(L * B * Tz);
      s.axm.resize(drop ? L * B * sd : 0);
      s.synx.resize(size_t(Sy_) * L * B * sd);
      s.synr.resize(size_t(Sy_) * L * B * Tz);
      s.syno.resize(size_t(Sy_ > 1 ? Sy_ - 1 : 0) * L * B * sd);  // the last one writes z
      s.synm.resize(drop ? size_t(Sy_) * L * B * sd : 0);
      for (auto* b : {&s.q, &s.k, &s.v, &s.ctx}) b->resize(A_ ? B * sd : 0);
      s.pm.resize(A_ ? B * att : 0);
      s.a.resize(S_ > 1 ? B * sd : 0);
      // the batch-mode entry leaves volt[0] at 0 and depths past the chain are never read,
      // but keep every saved tensor defined
      s.nid.zero(ctx_.stream);
      s.fired.zero(ctx_.stream);
      s.volt.zero(ctx_.stream);
    }
    counts_.resize(B);
    counts_.zero(ctx_.stream);
    // scratch
    vpre_.resize(J * sd);
    vh0_.resize(J * sd);
    vh1_.resize(J * sd);
    vol_.resize(J);
    vsel_.resize(J);
    dZ_.resize(L * B * sd);
    for (auto* b : {&dO0_, &dO1_, &dln_, &din0_, &din1_, &g_, &du_, &dh0_, &dh1_, &dz_, &dpre_,
                    &vdh0_, &vdh1_})
      b->resize(B * sd);
    vrow_.resize(B * Tz);
    coef_.resize(B);
    selg_.resize(B);
    selv_.resize(B);
    for (auto* b : {&dctx_, &dq_, &dk_, &dv_}) b->resize(A_ ? B * sd : 0);
    dP_.resize(A_ ? B * att : 0);
    vx_.resize(size_t(Dd_) * B * sd);
    vo_.resize(size_t(Dd_) * B * sd);
    vr_.resize(size_t(Dd_) * B * Tz);
    const size_t td = Tz * D_;
    for (auto* b : {&cat_, &cxhat_, &zc_, &dcat_, &dnc_}) b->resize(S_ > 1 ? B * td : 0);
    crstd_.resize(S_ > 1 ? B * Tz : 0);
    for (auto* b : {&ysec_, &dys_, &das_}) b->resize(S_ > 1 ? B * sd : 0);
  }

  void forward(const float* P, const float* x, float* y, int row, int rows, float* aux) override {
    (void)aux;  // no auxiliary loss
    check_rows(row, rows);
    const cudaStream_t st = ctx_.stream;
    if (training_ && dropout_ > 0) ++drop_calls_;
    NM_CUDA_CHECK(cudaMemsetAsync(counts_.ptr + row, 0, sizeof(float) * rows, st));
    const size_t sd = size_t(T_) * Ds_, td = size_t(T_) * D_;
    const int R = rows * T_;
    if (S_ == 1) {
      section_forward(0, P, x, y, row, rows);
      return;
    }
    float* cat = cat_.ptr + row * td;
    for (int s = 0; s < S_; ++s) {
      Sec& sc = sec_[s];
      float* a = sc.a.ptr + row * sd;
      ctx_.blas->gemm(false, true, R, Ds_, D_, 1.f, x, D_, P + sc.in_w, D_, 0.f, a, Ds_);
      k_bias_add<<<grid_for((long long)R * Ds_, kEw), kEw, 0, st>>>(a, P + sc.in_b, R, Ds_);
      NM_CUDA_LAUNCHED();
      section_forward(s, P, a, ysec_.ptr, row, rows);
      NM_CUDA_CHECK(cudaMemcpy2DAsync(cat + size_t(s) * Ds_, sizeof(float) * D_, ysec_.ptr,
                                      sizeof(float) * Ds_, sizeof(float) * Ds_, size_t(R),
                                      cudaMemcpyDeviceToDevice, st));
    }
    // combiner: act(LN_aff(W_c cat + b_c))
    ctx_.blas->gemm(false, true, R, D_, D_, 1.f, cat, D_, P + comb_w_, D_, 0.f, zc_.ptr, D_);
    k_bias_add<<<grid_for((long long)R * D_, kEw), kEw, 0, st>>>(zc_.ptr, P + comb_b_, R, D_);
    NM_CUDA_LAUNCHED();
    k_comb_fwd<<<grid_for(R, kRowWarps), kRowThreads, 0, st>>>(
        zc_.ptr, P + comb_g_, P + comb_be_, cxhat_.ptr + row * td, crstd_.ptr + size_t(row) * T_,
        y, R, D_, act_, ap_);
    NM_CUDA_LAUNCHED();
  }

  void backward(const float* P, float* G, const float* x, const float* dy, float* dx, int row,
                int rows, float aux_scale) override {
    (void)aux_scale;
    check_rows(row, rows);
    const cudaStream_t st = ctx_.stream;
    const size_t sd = size_t(T_) * Ds_, td = size_t(T_) * D_;
    const int R = rows * T_;
    if (S_ == 1) {
      section_backward(0, P, G, x, dy, dx, row, rows);
      return;
    }
    const float* cat = cat_.ptr + row * td;
    k_comb_bwd<<<grid_for(R, kRowWarps), kRowThreads, 0, st>>>(
        cxhat_.ptr + row * td, crstd_.ptr + size_t(row) * T_, P + comb_g_, P + comb_be_, dy,
        dnc_.ptr, zc_.ptr, R, D_, act_, ap_);
    NM_CUDA_LAUNCHED();
    colsum(nullptr, rows, nullptr, G + comb_g_, T_, D_, dnc_.ptr, cxhat_.ptr + row * td, nullptr, 1.f);
    colsum(nullptr, rows, nullptr, G + comb_be_, T_, D_, dnc_.ptr, nullptr, nullptr, 1.f);
    colsum(nullptr, rows, nullptr, G + comb_b_, T_, D_, zc_.ptr, nullptr, nullptr, 1.f);
    ctx_.blas->gemm(true, false, D_, D_, R, 1.f, zc_.ptr, D_, cat, D_, 1.f, G + comb_w_, D_);
    ctx_.blas->gemm(false, false, R, D_, D_, 1.f, zc_.ptr, D_, P + comb_w_, D_, 0.f, dcat_.ptr, D_);
    for (int s = 0; s < S_; ++s) {
      Sec& sc = sec_[s];
      NM_CUDA_CHECK(cudaMemcpy2DAsync(dys_.ptr, sizeof(float) * Ds_, dcat_.ptr + size_t(s) * Ds_,
                                      sizeof(float) * D_, sizeof(float) * Ds_, size_t(R),
                                      cudaMemcpyDeviceToDevice, st));
      NM_CUDA_CHECK(cudaMemsetAsync(das_.ptr, 0, sizeof(float) * rows * sd, st));
      section_backward(s, P, G, sc.a.ptr + row * sd, dys_.ptr, das_.ptr, row, rows);
      ctx_.blas->gemm(true, false, Ds_, D_, R, 1.f, das_.ptr, Ds_, x, D_, 1.f, G + sc.in_w, D_);
      colsum(nullptr, rows, nullptr, G + sc.in_b, T_, Ds_, das_.ptr, nullptr, nullptr, 1.f);
      if (dx)
        ctx_.blas->gemm(false, false, R, D_, Ds_, 1.f, das_.ptr, Ds_, P + sc.in_w, D_, 1.f, dx, D_);
    }
  }

  void set_training(bool on) override { training_ = on; }

  std::vector<double> counts(int rows) override {
    if (rows > B_) rows = B_;
    std::vector<float> h(rows > 0 ? size_t(rows) : 0);
    if (rows > 0) {
      NM_CUDA_CHECK(cudaMemcpyAsync(h.data(), counts_.ptr, sizeof(float) * rows,
                                    cudaMemcpyDeviceToHost, ctx_.stream));
      NM_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    }
    return std::vector<double>(h.begin(), h.end());
  }

 private:
  enum Route { kSample, kBatch, kGate };
  struct Sec {
    size_t in_w = 0, in_b = 0;
    // saved per batch row: [L][B] and [L][B][T·Ds] (cells: [Sy][L][B][...])
    DeviceBuffer<int> nid, fired;
    DeviceBuffer<float> volt, X, U, Z, O, axx, axr, axm, synx, synr, syno, synm, lnx, lnr;
    DeviceBuffer<float> q, k, v, ctx, pm;  // depth 0 attention (A > 0)
    DeviceBuffer<float> a;                 // sections > 1: the section's input
  };

  // parameter kinds in the offset table
  int kDendW(int j) const { return j; }
  int kDendG(int j) const { return Dd_ + j; }
  int kSoma() const { return 2 * Dd_; }
  int kQ() const { return 2 * Dd_ + 1; }
  int kK() const { return 2 * Dd_ + 2; }
  int kV() const { return 2 * Dd_ + 3; }
  int kAxW() const { return 2 * Dd_ + 4; }
  int kAxG() const { return 2 * Dd_ + 5; }
  int kSynW(int j) const { return 2 * Dd_ + 6 + j; }
  int kSynG(int j) const { return 2 * Dd_ + 6 + Sy_ + j; }
  int kNorm() const { return 2 * Dd_ + 6 + 2 * Sy_; }
  const size_t* tab(int s, int kind) const { return tab_.ptr + (size_t(s) * nk_ + kind) * N_; }

  void check_rows(int row, int rows) const {
    if (row < 0 || rows < 1 || row + rows > B_)
      throw ShapeError("neuron '" + name_ + "': rows " + std::to_string(row) + ".." +
                       std::to_string(row + rows) + " outside the batch of " + std::to_string(B_));
  }

  // saved tensor slices: depth d (and cell j), starting at batch row `row`
  size_t sd() const { return size_t(T_) * Ds_; }
  size_t at_d(int d, int row) const { return (size_t(d) * B_ + row) * sd(); }
  size_t at_dj(int j, int d, int row) const { return ((size_t(j) * L_ + d) * B_ + row) * sd(); }
  size_t at_t(int d, int row) const { return (size_t(d) * B_ + row) * T_; }
  size_t at_tj(int j, int d, int row) const { return ((size_t(j) * L_ + d) * B_ + row) * T_; }

  uint64_t drop_key(int s, int d, int cell, int row) const {
    return mix64(mix64(mix64(seed_ ^ 0x6E6575726F6EULL) + drop_calls_) +
                 ((uint64_t(s) * 64 + uint64_t(d)) * 128 + uint64_t(cell)) * 1000003ULL +
                 uint64_t(row));
  }

  // ---------------------------------------------------------------- launch helpers
  // C_j = op(A_j) op(B_j) (+ C_j) over the routed jobs
  void rgemm(const int* sel, int jobs, const float* P, bool ta, bool tb, int m, int n, int k,
             Mat A, int lda, Mat B, int ldb, float beta, float* C, long long sc, int ldc) {
    const dim3 block(kTile, kTile);
    const dim3 grid((n + kTile - 1) / kTile, (m + kTile - 1) / kTile,
                    jobs < 65535 ? jobs : 65535);
    k_routed_gemm<<<grid, block, 0, ctx_.stream>>>(sel, jobs, P, ta, tb, m, n, k, A, lda, B, ldb,
                                                   beta, C, sc, ldc);
    NM_CUDA_LAUNCHED();
  }
  // out_j[T, Ds] = in_j[T, Ds] W_nᵀ for the cell kind `wkind`
  void cell_linear(int s, int wkind, const int* sel, int jobs, const float* P, Mat in, float* out) {
    Mat W;
    W.table = tab(s, wkind);
    rgemm(sel, jobs, P, false, true, T_, Ds_, Ds_, in, Ds_, W, Ds_, 0.f, out, (long long)sd(), Ds_);
  }
  // jobs split in chunks of kChunk (at most 65535 / nneur chunks)
  static int chunks(int jobs, int nneur) {
    const int c = (jobs + kChunk - 1) / kChunk, cap = 65535 / nneur;
    return c < 1 ? 1 : c > cap ? cap : c;
  }
  void colsum(const int* sel, int jobs, const size_t* table, float* G, int T, int width,
              const float* A, const float* B, const float* coef, float scale) {
    const int nn = table ? N_ : 1, ch = chunks(jobs, nn), per = (jobs + ch - 1) / ch;
    const dim3 block(kWarp, 8), grid((width + kWarp - 1) / kWarp, nn * ch);
    k_colsum<<<grid, block, 0, ctx_.stream>>>(sel, jobs, nn, per, table, G, T, width, A, B, coef,
                                              scale);
    NM_CUDA_LAUNCHED();
  }
  void wgrad(const int* sel, int jobs, const size_t* table, float* G, const float* D, Mat H) {
    const int ch = chunks(jobs, N_), per = (jobs + ch - 1) / ch;
    const dim3 block(kTile, kTile),
        grid((Ds_ + kTile - 1) / kTile, (Ds_ + kTile - 1) / kTile, N_ * ch);
    k_routed_wgrad<<<grid, block, 0, ctx_.stream>>>(sel, jobs, N_, per, table, G, Ds_, Ds_, T_, D,
                                                    (long long)sd(), H);
    NM_CUDA_LAUNCHED();
  }
  void cell_act(int s, int gkind, const int* sel, int jobs, const float* P, const float* pre,
                float* xhat, float* rstd, float* out, const float* res, float* mask,
                uint64_t key) {
    k_cell_fwd<<<grid_for((long long)jobs * T_, kRowWarps), kRowThreads, 0, ctx_.stream>>>(
        sel, jobs, T_, Ds_, P, tab(s, gkind), pre, xhat, rstd, out, res, mask, dropout_, key,
        act_, ap_);
    NM_CUDA_LAUNCHED();
  }
  // Backward of one cell applied to `jobs` jobs: G (W, γ) += ..., dh (+)= dL/dh when dh is set.
  void cell_backward(int s, int wkind, int gkind, const int* sel, int jobs, const float* P,
                     float* G, Mat h, const float* xhat, const float* rstd, const float* mask,
                     const float* da, float* dh, float beta) {
    k_cell_bwd<<<grid_for((long long)jobs * T_, kRowWarps), kRowThreads, 0, ctx_.stream>>>(
        sel, jobs, T_, Ds_, P, tab(s, gkind), xhat, rstd, mask, da, dz_.ptr, dpre_.ptr, act_, ap_);
    NM_CUDA_LAUNCHED();
    colsum(sel, jobs, tab(s, gkind), G, T_, Ds_, dz_.ptr, xhat, nullptr, 1.f);
    wgrad(sel, jobs, tab(s, wkind), G, dpre_.ptr, h);
    if (dh) {
      Mat Dp, W;
      Dp.data = dpre_.ptr;
      Dp.stride = (long long)sd();
      W.table = tab(s, wkind);
      rgemm(sel, jobs, P, false, false, T_, Ds_, Ds_, Dp, Ds_, W, Ds_, beta, dh, (long long)sd(),
            Ds_);
    }
  }

  // ---------------------------------------------------------------- forward
  // vol[j] = voltage of neuron sel[j] at its input (job j reads in + (j / group) * sd)
  void voltages(int s, const float* P, const int* sel, int jobs, const float* in, int group) {
    Mat h;
    h.data = in;
    h.stride = (long long)sd();
    h.group = group;
    for (int i = 0; i < Dd_; ++i) {
      cell_linear(s, kDendW(i), sel, jobs, P, h, vpre_.ptr);
      float* out = i % 2 ? vh1_.ptr : vh0_.ptr;
      cell_act(s, kDendG(i), sel, jobs, P, vpre_.ptr, nullptr, nullptr, out, nullptr, nullptr, 0);
      h.data = out;
      h.group = 1;
    }
    k_soma_fwd<<<grid_for(jobs, kRowWarps), kRowThreads, 0, ctx_.stream>>>(
        sel, jobs, T_, Ds_, P, tab(s, kSoma()), h.data, h.stride, h.group, vol_.ptr);
    NM_CUDA_LAUNCHED();
  }

  void body_forward(int s, int d, const float* P, const float* in, int row, int rows) {
    Sec& sc = sec_[s];
    const cudaStream_t st = ctx_.stream;
    const int* sel = sc.nid.ptr + size_t(d) * B_ + row;
    const bool drop = training_ && dropout_ > 0;
    const size_t sdz = sd();
    Mat x;
    x.data = in;
    x.stride = (long long)sdz;
    Mat ax_in = x;
    if (d == 0 && A_ > 0) {  // attentive entry: q, k, v, then MHA over the sample's tokens
      float* q = sc.q.ptr + row * sdz;
      float* k = sc.k.ptr + row * sdz;
      float* v = sc.v.ptr + row * sdz;
      float* cx = sc.ctx.ptr + row * sdz;
      float* pm = sc.pm.ptr + size_t(row) * H_ * T_ * T_;
      cell_linear(s, kQ(), sel, rows, P, x, q);
      cell_linear(s, kK(), sel, rows, P, x, k);
      cell_linear(s, kV(), sel, rows, P, x, v);
      const int dh = Ds_ / H_;
      const long long tt = (long long)T_ * T_, hst = (long long)H_ * tt;
      const float scale = float(1 / std::sqrt(double(dh)));
      for (int h = 0; h < H_; ++h)
        ctx_.blas->gemm_batched(false, true, T_, T_, dh, scale, q + h * dh, Ds_, (long long)sdz,
                                k + h * dh, Ds_, (long long)sdz, 0.f, pm + h * tt, T_, hst, rows);
      const long long nrow = (long long)rows * H_ * T_;
      k_softmax<<<grid_for(nrow, kRowWarps), kRowThreads, 0, st>>>(pm, nrow, T_, causal_);
      NM_CUDA_LAUNCHED();
      for (int h = 0; h < H_; ++h)
        ctx_.blas->gemm_batched(false, false, T_, dh, T_, 1.f, pm + h * tt, T_, hst, v + h * dh,
                                Ds_, (long long)sdz, 0.f, cx + h * dh, Ds_, (long long)sdz, rows);
      ax_in.data = cx;
    }
    float* U = sc.U.ptr + at_d(d, row);
    float* Z = sc.Z.ptr + at_d(d, row);
    cell_linear(s, kAxW(), sel, rows, P, ax_in, vpre_.ptr);
    cell_act(s, kAxG(), sel, rows, P, vpre_.ptr, sc.axx.ptr + at_d(d, row),
             sc.axr.ptr + at_t(d, row), U, in, drop ? sc.axm.ptr + at_d(d, row) : nullptr,
             drop ? drop_key(s, d, 0, row) : 0);
    Mat h;
    h.data = U;
    h.stride = (long long)sdz;
    for (int j = 0; j < Sy_; ++j) {
      const bool last = j == Sy_ - 1;
      float* out = last ? Z : sc.syno.ptr + at_dj(j, d, row);
      cell_linear(s, kSynW(j), sel, rows, P, h, vpre_.ptr);
      cell_act(s, kSynG(j), sel, rows, P, vpre_.ptr, sc.synx.ptr + at_dj(j, d, row),
               sc.synr.ptr + at_tj(j, d, row), out, last ? U : nullptr,
               drop ? sc.synm.ptr + at_dj(j, d, row) : nullptr,
               drop ? drop_key(s, d, 1 + j, row) : 0);
      h.data = out;
    }
    if (Sy_ == 0)
      NM_CUDA_CHECK(cudaMemcpyAsync(Z, U, sizeof(float) * rows * sdz, cudaMemcpyDeviceToDevice, st));
  }

  void section_forward(int s, const float* P, const float* x, float* y, int row, int rows) {
    Sec& sc = sec_[s];
    const cudaStream_t st = ctx_.stream;
    const size_t sdz = sd();
    int* nid = sc.nid.ptr + row;  // nid[d * B_ + b]
    int* fired = sc.fired.ptr + row;
    float* volt = sc.volt.ptr + row;
    // entry: argmax voltage over the attentive neurons (all, when there are none)
    const int je = rows * ne_;
    k_fill_entry<<<grid_for(je, kEw), kEw, 0, st>>>(vsel_.ptr, rows, ne_);
    NM_CUDA_LAUNCHED();
    voltages(s, P, vsel_.ptr, je, x, ne_);
    if (route_ == kBatch)
      k_entry_batch<<<1, kEw, 0, st>>>(vol_.ptr, rows, ne_, nid, volt);
    else
      k_entry_sample<<<grid_for(rows, kEw), kEw, 0, st>>>(vol_.ptr, rows, ne_, nid, volt);
    NM_CUDA_LAUNCHED();
    // the chain, depth by depth
    for (int d = 0; d < L_; ++d) {
      const float* in = d == 0 ? x : sc.X.ptr + at_d(d, row);
      body_forward(s, d, P, in, row, rows);
      int* fd = fired + size_t(d) * B_;
      if (d + 1 == L_) {  // no free plain neuron can be left: the chain ends here
        NM_CUDA_CHECK(cudaMemsetAsync(fd, 0, sizeof(int) * rows, st));
        break;
      }
      const int jk = rows * K_;
      k_candidates<<<grid_for(jk, kEw), kEw, 0, st>>>(nid, B_, d, rows,
                                                      nbrs_.ptr + size_t(s) * N_ * K_, K_, A_,
                                                      vsel_.ptr);
      NM_CUDA_LAUNCHED();
      const float* Z = sc.Z.ptr + at_d(d, row);
      voltages(s, P, vsel_.ptr, jk, Z, K_);
      int* nn = nid + size_t(d + 1) * B_;
      float* vn = volt + size_t(d + 1) * B_;
      if (route_ == kBatch)
        k_hop_batch<<<1, kEw, 0, st>>>(vsel_.ptr, vol_.ptr, rows, K_, theta_, nid + size_t(d) * B_,
                                       fd, nn, vn);
      else
        k_hop_sample<<<grid_for(rows, kEw), kEw, 0, st>>>(vsel_.ptr, vol_.ptr, rows, K_, theta_,
                                                          nid + size_t(d) * B_, fd, nn, vn);
      NM_CUDA_LAUNCHED();
      k_next_input<<<grid_for((long long)rows * sdz, kEw), kEw, 0, st>>>(
          nn, fd, Z, sc.X.ptr + at_d(d + 1, row), rows, int(sdz));
      NM_CUDA_LAUNCHED();
    }
    // outputs from the deepest level up
    for (int d = L_ - 1; d >= 0; --d) {
      k_assemble<<<grid_for((long long)rows * T_, kRowWarps), kRowThreads, 0, st>>>(
          nid + size_t(d) * B_, fired + size_t(d) * B_,
          d + 1 < L_ ? volt + size_t(d + 1) * B_ : volt, route_ == kGate, P, tab(s, kNorm()),
          sc.Z.ptr + at_d(d, row), d + 1 < L_ ? sc.O.ptr + at_d(d + 1, row) : nullptr,
          sc.lnx.ptr + at_d(d, row), sc.lnr.ptr + at_t(d, row), sc.O.ptr + at_d(d, row), rows, T_,
          Ds_);
      NM_CUDA_LAUNCHED();
    }
    k_output<<<grid_for((long long)rows * sdz, kEw), kEw, 0, st>>>(
        sc.O.ptr + at_d(0, row), x, volt, route_ == kGate, y, rows, int(sdz));
    NM_CUDA_LAUNCHED();
    k_count<<<grid_for(rows, kEw), kEw, 0, st>>>(nid, B_, L_, rows, counts_.ptr + row);
    NM_CUDA_LAUNCHED();
  }

  // ---------------------------------------------------------------- backward
  // gradient of v_{sel[j]}(in_j) · vbar_j (vbar_j = Σ_t vrow[j,t]) into G (dendrites, soma) and,
  // when target is set, target_j += dL/din_j
  void voltage_backward(int s, const float* P, float* G, const int* sel, int rows,
                        const float* in, float* target) {
    const size_t sdz = sd();
    Mat h;
    h.data = in;
    h.stride = (long long)sdz;
    for (int i = 0; i < Dd_; ++i) {  // the dendrites again, keeping what backward needs
      cell_linear(s, kDendW(i), sel, rows, P, h, vpre_.ptr);
      float* out = vo_.ptr + size_t(i) * B_ * sdz;
      cell_act(s, kDendG(i), sel, rows, P, vpre_.ptr, vx_.ptr + size_t(i) * B_ * sdz,
               vr_.ptr + size_t(i) * B_ * T_, out, nullptr, nullptr, 0);
      h.data = out;
    }
    float* dh = Dd_ ? vdh0_.ptr : target;
    k_soma_bwd<<<grid_for(rows, kRowWarps), kRowThreads, 0, ctx_.stream>>>(
        sel, rows, T_, Ds_, P, tab(s, kSoma()), h.data, (long long)sdz, vrow_.ptr, coef_.ptr, dh,
        Dd_ == 0);
    NM_CUDA_LAUNCHED();
    colsum(sel, rows, tab(s, kSoma()), G, T_, Ds_, h.data, nullptr, coef_.ptr, 1.f / float(T_));
    float* cur = vdh0_.ptr;
    for (int i = Dd_ - 1; i >= 0; --i) {
      Mat hi;
      hi.data = i ? vo_.ptr + size_t(i - 1) * B_ * sdz : in;
      hi.stride = (long long)sdz;
      float* out = i ? (cur == vdh0_.ptr ? vdh1_.ptr : vdh0_.ptr) : target;
      cell_backward(s, kDendW(i), kDendG(i), sel, rows, P, G, hi, vx_.ptr + size_t(i) * B_ * sdz,
                    vr_.ptr + size_t(i) * B_ * T_, nullptr, cur, out, i ? 0.f : 1.f);
      cur = out;
    }
  }

  // body at depth d for the samples there: g = dL/dz; gx = dL/dx (overwritten)
  void body_backward(int s, int d, const float* P, float* G, const float* in, const float* g,
                     float* gx, int row, int rows) {
    Sec& sc = sec_[s];
    const cudaStream_t st = ctx_.stream;
    const int* sel = sc.nid.ptr + size_t(d) * B_ + row;
    const size_t sdz = sd();
    const bool drop = training_ && dropout_ > 0;
    const float* dh = g;
    for (int j = Sy_ - 1; j >= 0; --j) {
      Mat hin;
      hin.data = j ? sc.syno.ptr + at_dj(j - 1, d, row) : sc.U.ptr + at_d(d, row);
      hin.stride = (long long)sdz;
      float* out = dh == dh0_.ptr ? dh1_.ptr : dh0_.ptr;
      cell_backward(s, kSynW(j), kSynG(j), sel, rows, P, G, hin, sc.synx.ptr + at_dj(j, d, row),
                    sc.synr.ptr + at_tj(j, d, row), drop ? sc.synm.ptr + at_dj(j, d, row) : nullptr,
                    dh, out, 0.f);
      dh = out;
    }
    k_body_du<<<grid_for((long long)rows * sdz, kEw), kEw, 0, st>>>(
        sel, g, Sy_ ? dh : nullptr, du_.ptr, gx, rows, int(sdz));
    NM_CUDA_LAUNCHED();
    const float* axm = drop ? sc.axm.ptr + at_d(d, row) : nullptr;
    Mat x;
    x.data = in;
    x.stride = (long long)sdz;
    if (!(d == 0 && A_ > 0)) {
      cell_backward(s, kAxW(), kAxG(), sel, rows, P, G, x, sc.axx.ptr + at_d(d, row),
                    sc.axr.ptr + at_t(d, row), axm, du_.ptr, gx, 1.f);
      return;
    }
    // attentive: axon over the attention's context, then MHA and q, k, v
    const float* q = sc.q.ptr + row * sdz;
    const float* k = sc.k.ptr + row * sdz;
    const float* v = sc.v.ptr + row * sdz;
    const float* pm = sc.pm.ptr + size_t(row) * H_ * T_ * T_;
    Mat cx;
    cx.data = sc.ctx.ptr + row * sdz;
    cx.stride = (long long)sdz;
    cell_backward(s, kAxW(), kAxG(), sel, rows, P, G, cx, sc.axx.ptr + at_d(d, row),
                  sc.axr.ptr + at_t(d, row), axm, du_.ptr, dctx_.ptr, 0.f);
    const int dhd = Ds_ / H_;
    const long long tt = (long long)T_ * T_, hst = (long long)H_ * tt, ls = (long long)sdz;
    const float scale = float(1 / std::sqrt(double(dhd)));
    Blas* bl = ctx_.blas;
    for (int h = 0; h < H_; ++h) {
      bl->gemm_batched(false, true, T_, T_, dhd, 1.f, dctx_.ptr + h * dhd, Ds_, ls, v + h * dhd,
                       Ds_, ls, 0.f, dP_.ptr + h * tt, T_, hst, rows);
      bl->gemm_batched(true, false, T_, dhd, T_, 1.f, pm + h * tt, T_, hst, dctx_.ptr + h * dhd,
                       Ds_, ls, 0.f, dv_.ptr + h * dhd, Ds_, ls, rows);
    }
    const long long nrow = (long long)rows * H_ * T_;
    k_softmax_bwd<<<grid_for(nrow, kRowWarps), kRowThreads, 0, st>>>(pm, dP_.ptr, nrow, T_);
    NM_CUDA_LAUNCHED();
    for (int h = 0; h < H_; ++h) {
      bl->gemm_batched(false, false, T_, dhd, T_, scale, dP_.ptr + h * tt, T_, hst, k + h * dhd,
                       Ds_, ls, 0.f, dq_.ptr + h * dhd, Ds_, ls, rows);
      bl->gemm_batched(true, false, T_, dhd, T_, scale, dP_.ptr + h * tt, T_, hst, q + h * dhd,
                       Ds_, ls, 0.f, dk_.ptr + h * dhd, Ds_, ls, rows);
    }
    const std::pair<int, float*> qkv[3] = {{kQ(), dq_.ptr}, {kK(), dk_.ptr}, {kV(), dv_.ptr}};
    for (const auto& [kind, dw] : qkv) {
      wgrad(sel, rows, tab(s, kind), G, dw, x);
      Mat Dw, W;
      Dw.data = dw;
      Dw.stride = ls;
      W.table = tab(s, kind);
      rgemm(sel, rows, P, false, false, T_, Ds_, Ds_, Dw, Ds_, W, Ds_, 1.f, gx, ls, Ds_);
    }
  }

  void section_backward(int s, const float* P, float* G, const float* x, const float* dy, float* dx,
                        int row, int rows) {
    Sec& sc = sec_[s];
    const cudaStream_t st = ctx_.stream;
    const size_t sdz = sd();
    const int* nid = sc.nid.ptr + row;
    const int* fired = sc.fired.ptr + row;
    const float* volt = sc.volt.ptr + row;
    const bool gate = route_ == kGate;
    const int grows = grid_for((long long)rows * T_, kRowWarps);
    if (gate) {  // y = x + v_e (o_0 − x): v_e's gradient and the skip path
      k_gate_entry<<<grows, kRowThreads, 0, st>>>(dy, sc.O.ptr + at_d(0, row), x, volt,
                                                  vrow_.ptr, dx, rows, T_, Ds_);
      NM_CUDA_LAUNCHED();
      voltage_backward(s, P, G, nid, rows, x, dx);
    }
    // down the chain: ō_d → z̄_d, and through the hand-off's LN to ō_{d+1}
    float* ocur = dO0_.ptr;
    float* onext = dO1_.ptr;
    for (int d = 0; d < L_; ++d) {
      float* dzd = dZ_.ptr + at_d(d, 0);
      k_chain_bwd<<<grows, kRowThreads, 0, st>>>(d, nid, fired, volt, B_, gate, P, tab(s, kNorm()),
                                                 dy, ocur, sc.lnx.ptr + at_d(d, row),
                                                 sc.lnr.ptr + at_t(d, row), dzd, onext, dln_.ptr,
                                                 vrow_.ptr, selg_.ptr, selv_.ptr, rows, T_, Ds_);
      NM_CUDA_LAUNCHED();
      if (d + 1 == L_) break;  // nothing fires at the last depth
      colsum(selg_.ptr, rows, tab(s, kNorm()), G, T_, Ds_, dln_.ptr, sc.lnx.ptr + at_d(d, row),
             nullptr, 1.f);
      if (gate) voltage_backward(s, P, G, selv_.ptr, rows, sc.Z.ptr + at_d(d, row), dzd);
      std::swap(ocur, onext);
    }
    // bodies, deepest first: z̄_d also collects the input gradient of depth d+1 where it fired
    float* din = din0_.ptr;
    float* dnew = din1_.ptr;
    for (int d = L_ - 1; d >= 0; --d) {
      k_grad_in<<<grid_for((long long)rows * sdz, kEw), kEw, 0, st>>>(
          nid + size_t(d) * B_, fired + size_t(d) * B_, dZ_.ptr + at_d(d, 0), din, g_.ptr, rows,
          int(sdz));
      NM_CUDA_LAUNCHED();
      const float* in = d == 0 ? x : sc.X.ptr + at_d(d, row);
      body_backward(s, d, P, G, in, g_.ptr, dnew, row, rows);
      std::swap(din, dnew);
    }
    if (dx) {
      k_add<<<grid_for((long long)rows * sdz, kEw), kEw, 0, st>>>(dx, din, (long long)rows * sdz);
      NM_CUDA_LAUNCHED();
    }
  }

  std::string name_;
  Act act_;
  float ap_;
  Ctx ctx_;
  int T_ = 0, D_ = 0, S_ = 1, Ds_ = 0, N_ = 0, A_ = 0, H_ = 1, Dd_ = 0, Sy_ = 0, K_ = 0;
  int ne_ = 1, L_ = 1, nk_ = 0, B_ = 0;
  float theta_ = 0.5f, dropout_ = 0.f;
  uint64_t seed_ = 0, drop_calls_ = 0;
  bool causal_ = false, training_ = false;
  Route route_ = kSample;
  std::unique_ptr<Sec[]> sec_;  // DeviceBuffer does not move
  size_t comb_w_ = 0, comb_b_ = 0, comb_g_ = 0, comb_be_ = 0;
  DeviceBuffer<size_t> tab_;
  DeviceBuffer<int> nbrs_;
  DeviceBuffer<float> counts_;
  // scratch
  DeviceBuffer<float> vpre_, vh0_, vh1_, vol_;
  DeviceBuffer<int> vsel_, selg_, selv_;
  DeviceBuffer<float> dZ_, dO0_, dO1_, dln_, din0_, din1_, g_, du_, dh0_, dh1_, dz_, dpre_;
  DeviceBuffer<float> vdh0_, vdh1_, vrow_, coef_, vx_, vo_, vr_;
  DeviceBuffer<float> dctx_, dq_, dk_, dv_, dP_;
  DeviceBuffer<float> cat_, cxhat_, crstd_, zc_, dcat_, dnc_, ysec_, dys_, das_;
};

}  // namespace

std::unique_ptr<DeviceNode> make_device_neuron(const IrNode& nd, const ParamOffset& offset, Ctx ctx) {
  return std::make_unique<NeuronDevice>(nd, offset, ctx);
}

NM_REGISTER_DEVICE_KIND(NodeKind::Neuron, make_device_neuron);

}  // namespace nm::cuda
