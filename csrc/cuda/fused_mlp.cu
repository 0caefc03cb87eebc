// The fully fused FP32 MLP kernel (fused_mlp.cuh): one block takes one tile of R = 128 rows
// through the forward pass, the loss and the backward pass of the whole chain; one launch.
//
// Shared memory: two buffers of 128 x LD floats, LD = WC + 4 with WC the width class (32, 64
// or 128; LD/4 odd, so 16-byte loads of 4 consecutive rows hit distinct bank groups):
//   buf0: the tile's activations (forward, updated in place layer by layer: each product keeps
//         its results in registers across a barrier, then overwrites its input), then dL/dz
//         (backward, also in place);
//   buf1: the current layer's weights (forward: Wᵀ[k][n]; backward: W[n][k]), and in the
//         backward pass, between the weight uses, the layer's input activations.
// Configurations (every one 128 registers per thread, no spills):
//   widths <= 32: 128 threads, 36 KB, 4 blocks per SM; <= 64: 256 threads, 68 KB, 2 blocks per
//   SM; <= 128: 512 threads, 132 KB, 1 block per SM.
// Rows, columns and the reduction dimension are padded to multiples of 4 with zeros; nothing in
// shared memory is ever uninitialised.
//
// Products (FP32 FFMA, 16-byte shared loads, register tiles):
//   forward  Z[R,N] = A[R,K] Wᵀ          buf0 x buf1 -> registers -> bias, act -> buf0
//   backward dA[R,K] = D[R,N] W           buf0 x buf1 -> registers -> * f'(z) -> buf0
//   weights  dW[N,K] = Dᵀ A, db = Σ_r D   buf0 x buf1 -> registers -> atomicAdd into G
// For the first two a thread owns TM = 8 rows (r = rg + 16 i) by TNC float4 column chunks
// (c = cg + CG j); a warp covers 4 row groups x 8 column groups, so each 16-byte shared load is
// one wavefront, broadcast to the lanes that share it. Per 4-deep reduction step a thread does
// 8 x 4 x 4 TNC FFMAs for 8 + 4 TNC loads. For dW a thread owns TA x TB float4 chunk pairs
// (4 x 4 outputs each) and walks the tile's rows; db: 8 lanes per chunk and a shuffle.
//
// The backward pass needs each hidden layer's input activations and f'(z): the forward pass
// writes each hidden layer's pre-activation z to the scratch buffer (the only activation
// traffic to device memory; rows padded to 128, row-major [rows][4 chunks(width)]), and the
// backward pass reads it back, recomputing a = f(z) and f'(z, a).
// Gradients: atomicAdd straight into G (float4 atomics on sm_90 where the arena offsets and the
// input width allow, else scalar), no partial buffers and no second kernel.
#include "fused_mlp.cuh"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>

#include "../core/formulas.h"
#include "common.cuh"

namespace nm::cuda {
namespace {

constexpr int kMaxLayers = 8;
constexpr int kMaxWidth = 128;
constexpr int kTile = 128;  // scratch rows are padded to this; every Cfg::R divides it

struct KLayer {
  const float* W;
  const float* b;
  float* gW;
  float* gb;
  size_t z;  // offset of this (hidden) layer's pre-activations in the scratch buffer
  int in, out;
  Act act;
  float p;
  bool vec_gw, vec_gb;  // float4 atomics allowed for dW rows / db
};

struct KArgs {
  KLayer L[kMaxLayers];
  const float* x;
  const float* e;
  float* row_loss;
  float* y;
  float* scratch;
  int n_layers, rows;
  Loss loss;
  float loss_p, scale;
  bool sxent, train;
};

template <int WC_, int R_, int NT_, int TNC_, int TAB_, int MINB_>
struct Cfg {
  static constexpr int WC = WC_;        // widths <= WC
  static constexpr int LD = WC + 4;     // shared row stride (floats); LD/4 odd
  static constexpr int R = R_;          // rows per block
  static constexpr int NT = NT_;        // threads
  static constexpr int MINB = MINB_;    // blocks per SM the registers are sized for
  static constexpr int NW = NT / 32;    // warps
  static constexpr int TM = 8;          // rows per thread
  static constexpr int RG = R / TM;     // row groups
  static constexpr int PR = RG / 4;     // warp patches along the rows
  static constexpr int TNC = TNC_;      // float4 column chunks per thread
  static constexpr int TA = TAB_, TB = TAB_;  // dW chunk pairs per thread: TA x TB
  static constexpr int BUF0 = R * LD;                  // activations / dL/dz
  static constexpr int BUF1 = (R > WC ? R : WC) * LD;  // weights, or the input activations
  static constexpr int SMEM = (BUF0 + BUF1) * int(sizeof(float));
  static_assert((LD / 4) % 2 == 1, "LD/4 must be odd");
  static_assert(R % 32 == 0 && kTile % R == 0,
                "tiles of whole warp patches; scratch rows are padded to kTile");
  // every warp takes at most one GEMM patch: 4 row groups x 8 column groups
  static_assert(PR * (((WC / 4 + TNC - 1) / TNC + 7) / 8) <= NW, "GEMM patches exceed the warps");
};
using CfgS = Cfg<32, 128, 128, 1, 1, 4>;   // 36 KB shared, <= 128 registers: 4 blocks per SM
using CfgM = Cfg<64, 128, 256, 1, 1, 2>;   // 68 KB, <= 128 registers: 2 blocks per SM
using CfgL = Cfg<128, 128, 512, 1, 1, 1>;  // 132 KB, <= 128 registers: 1 block per SM

__host__ __device__ __forceinline__ int chunks(int n) { return (n + 3) >> 2; }
__device__ __forceinline__ float4 ld4(const float* p) {
  return *reinterpret_cast<const float4*>(p);
}
__device__ __forceinline__ void st4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }
__device__ __forceinline__ float& at(float4& v, int u) { return (&v.x)[u]; }  // u: a constant
__device__ __forceinline__ float at(const float4& v, int u) { return (&v.x)[u]; }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// g[0..min(left,4)) += v: one float4 atomic on sm_90 when allowed, else scalar atomics
__device__ __forceinline__ void add4(float* g, float4 v, bool vec, int left) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (vec && left >= 4) {
    atomicAdd(reinterpret_cast<float4*>(g), v);
    return;
  }
#else
  (void)vec;
#endif
  atomicAdd(g, v.x);
  if (left > 1) atomicAdd(g + 1, v.y);
  if (left > 2) atomicAdd(g + 2, v.z);
  if (left > 3) atomicAdd(g + 3, v.w);
}

// ------------------------------------------------------------------------------ tile loaders
// dst[r][k] = x[row0 + r][k] for k < 4 chunks(in); zero past the width and past the valid rows
template <class C>
__device__ void load_x(float* dst, const float* __restrict__ x, int in, int row0, int nvalid) {
  const int kc4 = 4 * chunks(in);
  const float* src = x + size_t(row0) * in;
  for (int idx = threadIdx.x; idx < C::R * kc4; idx += C::NT) {
    const int r = idx / kc4, k = idx - r * kc4;
    dst[r * C::LD + k] = (r < nvalid && k < in) ? __ldg(src + size_t(r) * in + k) : 0.f;
  }
}

// Weights W[N][K] (global, row-major) into shared: T (forward) dst[k][n], else dst[n][k]. The
// pad (rows up to the next multiple of 4, columns up to LD) is zeroed.
template <class C, bool T>
__device__ void load_w(float* dst, const float* __restrict__ W, int N, int K) {
  for (int idx = threadIdx.x; idx < N * K; idx += C::NT) {
    const int n = idx / K, k = idx - n * K;
    dst[T ? k * C::LD + n : n * C::LD + k] = __ldg(W + idx);
  }
  const int rows = T ? K : N, cols = T ? N : K;  // as laid out in shared memory
  const int rows4 = 4 * chunks(rows), padc = C::LD - cols;
  for (int idx = threadIdx.x; idx < rows4 * padc; idx += C::NT) {  // columns past the width
    const int r = idx / padc;
    dst[r * C::LD + cols + (idx - r * padc)] = 0.f;
  }
  for (int idx = threadIdx.x; idx < (rows4 - rows) * cols; idx += C::NT) {  // pad rows
    const int r = idx / cols;
    dst[(rows + r) * C::LD + (idx - r * cols)] = 0.f;
  }
}

template <Act A>
__device__ __forceinline__ float4 act4(float p, float4 z, int col0, int width) {
  float4 a;
#pragma unroll
  for (int u = 0; u < 4; ++u) at(a, u) = col0 + u < width ? fm::act<A>(p, 0.f, at(z, u)) : 0.f;
  return a;
}

// dst[r][c] = f(z[r][c]) from a hidden layer's stored pre-activations (tile base z, rows of
// 4 chunks(out) floats); zero past the width.
template <class C>
__device__ void load_act(float* dst, const float* z, const KLayer& H) {
  const int nc = chunks(H.out), out = H.out;
  const float p = H.p;
  fm::with_act(H.act, [&](auto tag) {
    constexpr Act A = decltype(tag)::value;
    for (int idx = threadIdx.x; idx < C::R * nc; idx += C::NT) {
      const int r = idx / nc, c = idx - r * nc;
      st4(dst + r * C::LD + 4 * c, act4<A>(p, ld4(z + 4 * size_t(idx)), 4 * c, out));
    }
  });
}

// ------------------------------------------------------------------------------ products
// acc[i][4j+u] += Σ_k A[rg + RG i][k] B[k][4 (cg + CG j) + u] over k < 4 kchunks
template <class C>
__device__ __forceinline__ void mm(const float* __restrict__ A, const float* __restrict__ B,
                                   int kchunks, int rg, int cg, int CG,
                                   float (&acc)[C::TM][4 * C::TNC]) {
  const float* a0 = A + rg * C::LD;
  const float* b0 = B + 4 * cg;
#pragma unroll 1
  for (int kc = 0; kc < kchunks; ++kc) {
    float4 b[4][C::TNC];
#pragma unroll
    for (int q = 0; q < 4; ++q)
#pragma unroll
      for (int j = 0; j < C::TNC; ++j) b[q][j] = ld4(b0 + (4 * kc + q) * C::LD + 4 * CG * j);
#pragma unroll
    for (int i = 0; i < C::TM; ++i) {
      const float4 a = ld4(a0 + i * C::RG * C::LD + 4 * kc);
#pragma unroll
      for (int j = 0; j < C::TNC; ++j)
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          float s = acc[i][4 * j + u];
          s = fmaf(a.x, at(b[0][j], u), s);
          s = fmaf(a.y, at(b[1][j], u), s);
          s = fmaf(a.z, at(b[2][j], u), s);
          s = fmaf(a.w, at(b[3][j], u), s);
          acc[i][4 * j + u] = s;
        }
    }
  }
}

// G[W] += Dᵀ A, G[b] += Σ_r D over the tile's valid rows (D: buf0 [R][N], A: buf1 [R][K])
template <class C>
__device__ void weight_grads(const KLayer& Ly, const float* __restrict__ D,
                             const float* __restrict__ A, int nvalid) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int N = Ly.out, K = Ly.in, Nc = chunks(N), Kc = chunks(K);
  const int NG = (Nc + C::TA - 1) / C::TA, KG = (Kc + C::TB - 1) / C::TB;
  const int PK = (KG + 7) / 8, patches = ((NG + 3) / 4) * PK;
  for (int p = warp; p < patches; p += C::NW) {
    const int ng = 4 * (p / PK) + (lane >> 3), kg = 8 * (p % PK) + (lane & 7);
    if (ng >= NG || kg >= KG) continue;
    float acc[4 * C::TA][4 * C::TB];
#pragma unroll
    for (int s = 0; s < 4 * C::TA; ++s)
#pragma unroll
      for (int t = 0; t < 4 * C::TB; ++t) acc[s][t] = 0.f;
    const float* d0 = D + 4 * ng;
    const float* x0 = A + 4 * kg;
#pragma unroll 4
    for (int r = 0; r < nvalid; ++r) {
      float4 d[C::TA], x[C::TB];
#pragma unroll
      for (int s = 0; s < C::TA; ++s) d[s] = ld4(d0 + r * C::LD + 4 * NG * s);
#pragma unroll
      for (int t = 0; t < C::TB; ++t) x[t] = ld4(x0 + r * C::LD + 4 * KG * t);
#pragma unroll
      for (int s = 0; s < C::TA; ++s)
#pragma unroll
        for (int u = 0; u < 4; ++u)
#pragma unroll
          for (int t = 0; t < C::TB; ++t)
#pragma unroll
            for (int v = 0; v < 4; ++v)
              acc[4 * s + u][4 * t + v] = fmaf(at(d[s], u), at(x[t], v), acc[4 * s + u][4 * t + v]);
    }
#pragma unroll
    for (int s = 0; s < C::TA; ++s)
#pragma unroll
      for (int t = 0; t < C::TB; ++t) {
        const int nc = ng + NG * s, kc = kg + KG * t;
        if (nc >= Nc || kc >= Kc) continue;
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int n = 4 * nc + u;
          if (n >= N) break;
          add4(Ly.gW + size_t(n) * K + 4 * kc,
               make_float4(acc[4 * s + u][4 * t], acc[4 * s + u][4 * t + 1],
                           acc[4 * s + u][4 * t + 2], acc[4 * s + u][4 * t + 3]),
               Ly.vec_gw, K - 4 * kc);
        }
      }
  }
  // bias: 8 lanes per float4 chunk, each summing every 8th row, then a shuffle reduction
  const int part = lane & 7;
  for (int c0 = 4 * warp; c0 < Nc; c0 += 4 * C::NW) {  // warp-uniform loop
    const int c = c0 + (lane >> 3);
    float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
    if (c < Nc)
      for (int r = part; r < nvalid; r += 8) {
        const float4 d = ld4(D + r * C::LD + 4 * c);
        s.x += d.x;
        s.y += d.y;
        s.z += d.z;
        s.w += d.w;
      }
#pragma unroll
    for (int o = 1; o < 8; o <<= 1) {
      s.x += __shfl_xor_sync(0xffffffffu, s.x, o);
      s.y += __shfl_xor_sync(0xffffffffu, s.y, o);
      s.z += __shfl_xor_sync(0xffffffffu, s.z, o);
      s.w += __shfl_xor_sync(0xffffffffu, s.w, o);
    }
    if (c < Nc && part == 0) add4(Ly.gb + 4 * c, s, Ly.vec_gb, N - 4 * c);
  }
}

// ------------------------------------------------------------------------------ output rows
// buf0 holds the output layer's z; one warp per row: activation (softmax per row), y, the row
// loss and (training) dL/dz back into buf0 (zero past the width and in the invalid rows). The
// activation is dispatched per row (warp-uniform), the loss switch per entry: their code adds
// up rather than multiplies.
template <class C>
__device__ void output_rows(const KArgs& a, float* buf0, int row0, int nvalid) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const KLayer& Ly = a.L[a.n_layers - 1];
  const int N = Ly.out, nc4 = 4 * chunks(N);
  const float p = Ly.p;
  const bool sums = fm::loss_sums(a.loss), softmax = Ly.act == Act::Softmax;
  for (int r = warp; r < C::R; r += C::NW) {  // warp-uniform
    float* zr = buf0 + r * C::LD;
    if (r >= nvalid) {
      if (a.train)
        for (int c = lane; c < nc4; c += 32) zr[c] = 0.f;
      continue;
    }
    const size_t g = (size_t(row0) + r) * N;
    float z[4], av[4], ev[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int c = lane + 32 * j;
      z[j] = c < N ? zr[c] : 0.f;
    }
    if (softmax) {
      float m = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (lane + 32 * j < N) m = fmaxf(m, z[j]);
      m = warp_max(m);
      float s = 0.f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        av[j] = lane + 32 * j < N ? expf(z[j] - m) : 0.f;
        s += av[j];
      }
      s = warp_sum(s);
#pragma unroll
      for (int j = 0; j < 4; ++j) av[j] /= s;
    } else {
      fm::with_act(Ly.act, [&](auto tag) {
        constexpr Act A = decltype(tag)::value;
#pragma unroll
        for (int j = 0; j < 4; ++j) av[j] = fm::act<A>(p, 0.f, z[j]);
      });
    }
    if (a.y) {
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (lane + 32 * j < N) a.y[g + lane + 32 * j] = av[j];
    }
    if (!a.e) continue;
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int c = lane + 32 * j;
      ev[j] = c < N ? __ldg(a.e + g + c) : 0.f;
      if (c < N) s += fm::loss_term(a.loss, a.loss_p, av[j], ev[j]);
    }
    s = warp_sum(s);
    if (lane == 0 && a.row_loss) a.row_loss[size_t(row0) + r] = sums ? s : s / float(N);
    if (!a.train) continue;
    float dz[4];
    if (a.sxent) {
      float se = 0.f;
#pragma unroll
      for (int j = 0; j < 4; ++j) se += ev[j];
      se = warp_sum(se);
#pragma unroll
      for (int j = 0; j < 4; ++j) dz[j] = fm::softmax_xent_grad(av[j], ev[j], se, a.scale);
    } else {
      const float k = sums ? a.scale : a.scale / float(N);
      float gr[4];
#pragma unroll
      for (int j = 0; j < 4; ++j)
        gr[j] = lane + 32 * j < N ? k * fm::loss_grad(a.loss, a.loss_p, av[j], ev[j]) : 0.f;
      if (softmax) {  // the Jacobian-vector product
        float dot = 0.f;
#pragma unroll
        for (int j = 0; j < 4; ++j) dot += gr[j] * av[j];
        dot = warp_sum(dot);
#pragma unroll
        for (int j = 0; j < 4; ++j) dz[j] = av[j] * (gr[j] - dot);
      } else {
        fm::with_act(Ly.act, [&](auto tag) {
          constexpr Act A = decltype(tag)::value;
#pragma unroll
          for (int j = 0; j < 4; ++j) dz[j] = gr[j] * fm::deriv<A>(p, 0.f, z[j], av[j]);
        });
      }
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int c = lane + 32 * j;
      if (c < nc4) zr[c] = c < N ? dz[j] : 0.f;
    }
  }
}

// ------------------------------------------------------------------------------ the kernel
template <class C>
__global__ void __launch_bounds__(C::NT, C::MINB) k_fused_mlp(const __grid_constant__ KArgs a) {
  extern __shared__ float4 smem_[];
  float* const buf0 = reinterpret_cast<float*>(smem_);
  float* const buf1 = buf0 + C::BUF0;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int row0 = blockIdx.x * C::R, nvalid = min(C::R, a.rows - row0);
  const int L = a.n_layers;

  // nothing in shared memory is ever uninitialised (pads are read, multiplied by zeros)
  for (int i = tid; i < (C::BUF0 + C::BUF1) / 4; i += C::NT)
    smem_[i] = make_float4(0.f, 0.f, 0.f, 0.f);
  __syncthreads();
  load_x<C>(buf0, a.x, a.L[0].in, row0, nvalid);
  load_w<C, true>(buf1, a.L[0].W, a.L[0].out, a.L[0].in);
  __syncthreads();

  // this warp's GEMM patch: row groups rg (rows rg + 16 i), column-chunk group cgl
  const int rg = 4 * (warp % C::PR) + (lane >> 3);
  const int cgl = 8 * (warp / C::PR) + (lane & 7);
  float acc[C::TM][4 * C::TNC];

  // ---- forward
  for (int l = 0; l < L; ++l) {
    const KLayer& Ly = a.L[l];
    const int Nc = chunks(Ly.out), CG = (Nc + C::TNC - 1) / C::TNC;
    const bool mine = cgl < CG;
    if (mine) {
#pragma unroll
      for (int i = 0; i < C::TM; ++i)
#pragma unroll
        for (int v = 0; v < 4 * C::TNC; ++v) acc[i][v] = 0.f;
      mm<C>(buf0, buf1, chunks(Ly.in), rg, cgl, CG, acc);
    }
    __syncthreads();  // every read of buf0 / buf1 done
    if (mine) {
      const bool hidden = l + 1 < L;
      const int N = Ly.out;
      float* zs = hidden && a.train ? a.scratch + Ly.z : nullptr;
      fm::with_act(hidden ? Ly.act : Act::kCount, [&](auto tag) {  // output: z as it is
        constexpr Act A = decltype(tag)::value;
#pragma unroll
        for (int j = 0; j < C::TNC; ++j) {
          const int c = cgl + CG * j;
          if (c >= Nc) continue;
          float bv[4];
#pragma unroll
          for (int u = 0; u < 4; ++u) bv[u] = 4 * c + u < N ? __ldg(Ly.b + 4 * c + u) : 0.f;
#pragma unroll
          for (int i = 0; i < C::TM; ++i) {
            const int r = rg + C::RG * i;
            const float4 z = make_float4(acc[i][4 * j] + bv[0], acc[i][4 * j + 1] + bv[1],
                                         acc[i][4 * j + 2] + bv[2], acc[i][4 * j + 3] + bv[3]);
            if (zs) st4(zs + (size_t(row0) + r) * (4 * Nc) + 4 * c, z);
            st4(buf0 + r * C::LD + 4 * c, act4<A>(Ly.p, z, 4 * c, N));
          }
        }
      });
    }
    if (l + 1 < L) load_w<C, true>(buf1, a.L[l + 1].W, a.L[l + 1].out, a.L[l + 1].in);
    __syncthreads();
  }

  // ---- output activation, y, loss, dL/dz
  output_rows<C>(a, buf0, row0, nvalid);
  if (!a.train) return;

  // ---- backward: buf0 = dL/dz of layer l
  for (int l = L - 1;; --l) {
    const KLayer& Ly = a.L[l];
    if (l == 0) {
      load_x<C>(buf1, a.x, Ly.in, row0, nvalid);
    } else {
      const KLayer& H = a.L[l - 1];
      load_act<C>(buf1, a.scratch + H.z + size_t(row0) * (4 * chunks(H.out)), H);
    }
    __syncthreads();
    weight_grads<C>(Ly, buf0, buf1, nvalid);
    if (l == 0) break;
    __syncthreads();
    load_w<C, false>(buf1, Ly.W, Ly.out, Ly.in);
    __syncthreads();
    // dA[R, K] = D[R, N] W[N, K], then dL/dz of layer l-1 = dA * f'(z)
    const KLayer& H = a.L[l - 1];
    const int Kc = chunks(Ly.in), CG = (Kc + C::TNC - 1) / C::TNC;
    const bool mine = cgl < CG;
    if (mine) {
#pragma unroll
      for (int i = 0; i < C::TM; ++i)
#pragma unroll
        for (int v = 0; v < 4 * C::TNC; ++v) acc[i][v] = 0.f;
      mm<C>(buf0, buf1, chunks(Ly.out), rg, cgl, CG, acc);
    }
    __syncthreads();
    if (mine) {
      const float* zs = a.scratch + H.z;
      const int K = Ly.in;
      fm::with_act(H.act, [&](auto tag) {
        constexpr Act A = decltype(tag)::value;
#pragma unroll
        for (int j = 0; j < C::TNC; ++j) {
          const int c = cgl + CG * j;
          if (c >= Kc) continue;
#pragma unroll
          for (int i = 0; i < C::TM; ++i) {
            const int r = rg + C::RG * i;
            const float4 z = ld4(zs + (size_t(row0) + r) * (4 * Kc) + 4 * c);
            float4 d;
#pragma unroll
            for (int u = 0; u < 4; ++u) {
              const float zu = at(z, u), au = fm::act<A>(H.p, 0.f, zu);
              at(d, u) = 4 * c + u < K ? acc[i][4 * j + u] * fm::deriv<A>(H.p, 0.f, zu, au) : 0.f;
            }
            st4(buf0 + r * C::LD + 4 * c, d);
          }
        }
      });
    }
    // the next iteration's loader writes buf1 only; its barrier orders these buf0 writes
  }
}

int max_width(const FusedMlp& m) {
  int w = 0;
  for (const FusedLayer& f : m.layers) w = std::max({w, f.in, f.out});
  return w;
}

template <class C>
void launch(cudaStream_t stream, const KArgs& a) {
  if (C::SMEM > 48 * 1024) {  // once per device (not a stream operation: fine under capture)
    static std::atomic<unsigned long long> done{0};
    int dev = 0;
    NM_CUDA_CHECK(cudaGetDevice(&dev));
    const unsigned long long bit = dev < 64 ? 1ull << dev : 0;
    if (!bit || !(done.load(std::memory_order_acquire) & bit)) {
      NM_CUDA_CHECK(cudaFuncSetAttribute(k_fused_mlp<C>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, C::SMEM));
      done.fetch_or(bit, std::memory_order_release);
    }
  }
  const unsigned grid = unsigned((a.rows + C::R - 1) / C::R);
  k_fused_mlp<C><<<grid, C::NT, C::SMEM, stream>>>(a);
  NM_CUDA_LAUNCHED();
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool fused_mlp_supported(const FusedMlp& m) {
  const size_t L = m.layers.size();
  if (L < 1 || L > size_t(kMaxLayers)) return false;
  for (size_t i = 0; i < L; ++i) {
    const FusedLayer& f = m.layers[i];
    if (f.in < 1 || f.in > kMaxWidth || f.out < 1 || f.out > kMaxWidth) return false;
    if (i > 0 && f.in != m.layers[i - 1].out) return false;
    if (f.act == Act::ReluParametric || f.act == Act::kCount) return false;
    if (f.act == Act::Softmax && i + 1 != L) return false;
  }
  if (m.loss == Loss::kCount) return false;
  if (m.softmax_xent && (m.layers.back().act != Act::Softmax || m.loss != Loss::CrossEntropy))
    return false;
  return true;
}

size_t fused_mlp_scratch(const FusedMlp& m, int rows) {
  if (rows <= 0 || m.layers.size() < 2) return 0;
  const size_t rows_pad = (size_t(rows) + kTile - 1) / kTile * kTile;
  size_t n = 0;
  for (size_t l = 0; l + 1 < m.layers.size(); ++l)
    n += rows_pad * 4 * size_t(chunks(m.layers[l].out));
  return n;
}

void fused_mlp(cudaStream_t stream, const FusedMlp& m, const float* P, float* G, const float* x,
               const float* e, float* row_loss, float* y, int rows, float scale, float* scratch) {
  if (!fused_mlp_supported(m)) throw DeviceError("fused_mlp: this layer chain is not supported");
  if (rows <= 0) return;
  KArgs a{};
  a.n_layers = int(m.layers.size());
  a.x = x;
  a.e = e;
  a.row_loss = row_loss;
  a.y = y;
  a.rows = rows;
  a.loss = m.loss;
  a.loss_p = m.loss_param;
  a.scale = scale;
  a.sxent = m.softmax_xent;
  a.train = G != nullptr && e != nullptr;
  if (a.train && a.n_layers > 1) {
    if (!scratch) throw DeviceError("fused_mlp: a training pass needs the scratch buffer");
    if (!aligned16(scratch))
      throw DeviceError("fused_mlp: the scratch buffer is not 16-byte aligned");
  }
  a.scratch = scratch;
  const size_t rows_pad = (size_t(rows) + kTile - 1) / kTile * kTile;
  size_t z = 0;
  for (int l = 0; l < a.n_layers; ++l) {
    const FusedLayer& f = m.layers[size_t(l)];
    KLayer& k = a.L[l];
    k.W = P + f.W;
    k.b = P + f.b;
    k.gW = a.train ? G + f.W : nullptr;
    k.gb = a.train ? G + f.b : nullptr;
    k.in = f.in;
    k.out = f.out;
    k.act = f.act;
    k.p = f.act_param;
    k.vec_gw = a.train && f.in % 4 == 0 && aligned16(G + f.W);
    k.vec_gb = a.train && aligned16(G + f.b);
    k.z = z;
    if (l + 1 < a.n_layers) z += rows_pad * 4 * size_t(chunks(f.out));
  }
  const int w = max_width(m);
  if (w <= CfgS::WC) launch<CfgS>(stream, a);
  else if (w <= CfgM::WC) launch<CfgM>(stream, a);
  else launch<CfgL>(stream, a);
}

}  // namespace nm::cuda
