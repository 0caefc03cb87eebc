// Per-output bodies of the energy block's non-matrix synapse kernels (multilinear contractions
// of dense k ≥ 3 and tensor synapses, conv and pooling), as __host__ __device__ functions of the
// output they compute, so the host can check their indexing against cpu/energy.cpp. Each
// computes one output entry completely (a gather: no atomics, no write conflicts).
#pragma once
#include <cuda_runtime.h>

#include "../core/lagrangian.h"

namespace nm::cuda::energy {

using namespace nm::energy;  // the Lagrangians (core/lagrangian.h)

// ------------------------------------------------------------------ multilinear maps
// W has dims d_0 x ... x d_{k-1} (row-major); slot l holds one vector of d_l entries per sample
// (sample r at p[l] + r * d_l).
constexpr int kMaxSlots = 16;

struct MlShape {
  int k = 0;
  int d[kMaxSlots] = {};
  long long stride[kMaxSlots] = {};  // of each slot in W
  long long total = 0;
};

struct Slots {
  const float* p[kMaxSlots] = {};
  NM_HD float at(const MlShape& s, int l, int r, int i) const { return p[l][size_t(r) * s.d[l] + i]; }
};

// advance the multi-index over every slot but `skip1`, `skip2` (last slot fastest); false at the end
NM_HD bool ml_next(const MlShape& s, int* idx, int skip1, int skip2) {
  for (int l = s.k - 1; l >= 0; --l) {
    if (l == skip1 || l == skip2) continue;
    if (++idx[l] < s.d[l]) return true;
    idx[l] = 0;
  }
  return false;
}

NM_HD long long ml_flat(const MlShape& s, const int* idx) {
  long long f = 0;
  for (int l = 0; l < s.k; ++l) f += idx[l] * s.stride[l];
  return f;
}

// entry i of sample r of W contracted with every slot but j
NM_HD float ml_contract(const MlShape& s, const float* W, const Slots& v, int j, int r, int i) {
  int idx[kMaxSlots] = {};
  idx[j] = i;
  float acc = 0;
  do {
    float prod = W[ml_flat(s, idx)];
    for (int l = 0; l < s.k; ++l)
      if (l != j) prod *= v.at(s, l, r, idx[l]);
    acc += prod;
  } while (ml_next(s, idx, j, j));
  return acc;
}

// For out_j = contract(W, v, j) with upstream c_j (c.p[j] null: none), the weight gradient at
// flat entry f summed over samples 0..rows-1: Σ_r Σ_j c_j ⊗ Π_{l≠j} v_l
NM_HD float ml_wgrad(const MlShape& s, const Slots& v, const Slots& c, long long f, int rows) {
  int idx[kMaxSlots];
  long long rest = f;
  for (int l = s.k - 1; l >= 0; --l) {
    idx[l] = int(rest % s.d[l]);
    rest /= s.d[l];
  }
  float acc = 0;
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < s.k; ++j) {
      if (!c.p[j]) continue;
      float others = c.at(s, j, r, idx[j]);
      for (int l = 0; l < s.k; ++l)
        if (l != j) others *= v.at(s, l, r, idx[l]);
      acc += others;
    }
  return acc;
}

// ... and the gradient of slot i's vector at entry e of sample r:
// Σ_{j≠i} W contracted with c_j in slot j and v elsewhere (slot i left open)
NM_HD float ml_vgrad(const MlShape& s, const float* W, const Slots& v, const Slots& c, int i,
                            int r, int e) {
  float acc = 0;
  for (int j = 0; j < s.k; ++j) {
    if (j == i || !c.p[j]) continue;
    int idx[kMaxSlots] = {};
    idx[i] = e;
    do {
      float pr = W[ml_flat(s, idx)] * c.at(s, j, r, idx[j]);
      for (int l = 0; l < s.k; ++l)
        if (l != j && l != i) pr *= v.at(s, l, r, idx[l]);
      acc += pr;
    } while (ml_next(s, idx, i, -1));
  }
  return acc;
}

// ------------------------------------------------------------------ conv (+ pooling)
// Layers HxWxC channel-minor; kernel (C2, C1, k, k); conv map Hc x Wc x C2; pooled H2 x W2 x C2.
struct ConvShape {
  int H1 = 1, W1 = 1, C1 = 1, H2 = 1, W2 = 1, C2 = 1, k = 1, st = 1, pad = 0;
  int pool = 0, win = 0, pst = 0, Hc = 1, Wc = 1;  // pool: 0 none, 1 avg, 2 max
  NM_HD int n1() const { return H1 * W1 * C1; }
  NM_HD int n2() const { return H2 * W2 * C2; }
  NM_HD int csize() const { return Hc * Wc * C2; }
};

// conv map entry (i, j, c2) of one sample's x (H1 x W1 x C1)
NM_HD float conv_at(const ConvShape& s, const float* K, const float* x, int i, int j, int c2) {
  float y = 0;
  for (int u = 0; u < s.k; ++u)
    for (int v = 0; v < s.k; ++v) {
      const int a = i * s.st + u - s.pad, b = j * s.st + v - s.pad;
      if (a < 0 || a >= s.H1 || b < 0 || b >= s.W1) continue;
      const float* xp = x + (size_t(a) * s.W1 + b) * s.C1;
      const float* kp = K + (size_t(c2) * s.C1 * s.k + u) * s.k + v;
      float acc = 0;
      for (int c1 = 0; c1 < s.C1; ++c1) acc += kp[size_t(c1) * s.k * s.k] * xp[c1];
      y += acc;
    }
  return y;
}

NM_HD int imin(int a, int b) { return a < b ? a : b; }

// the first i >= 0 with x − i st < span (x >= 0)
NM_HD int first_cover(int x, int span, int st) {
  const int d = x - span + 1;
  return d > 0 ? (d + st - 1) / st : 0;
}

// convᵀ of one sample's map y (Hc x Wc x C2) at input entry (a, b, c1): the map cells (i, j)
// whose window holds (a, b), i.e. 0 <= a + pad − i st < k
NM_HD float conv_adj_at(const ConvShape& s, const float* K, const float* y, int a, int b, int c1) {
  float acc = 0;
  const int i_hi = imin(s.Hc - 1, (a + s.pad) / s.st), j_hi = imin(s.Wc - 1, (b + s.pad) / s.st);
  for (int i = first_cover(a + s.pad, s.k, s.st); i <= i_hi; ++i) {
    const int u = a + s.pad - i * s.st;
    for (int j = first_cover(b + s.pad, s.k, s.st); j <= j_hi; ++j) {
      const int v = b + s.pad - j * s.st;
      const float* yp = y + (size_t(i) * s.Wc + j) * s.C2;
      for (int c2 = 0; c2 < s.C2; ++c2) acc += K[((size_t(c2) * s.C1 + c1) * s.k + u) * s.k + v] * yp[c2];
    }
  }
  return acc;
}

// argmax (flat index into the map) of pooled cell o = (i, j, c) of one sample's map m
NM_HD int pool_arg(const ConvShape& s, const float* m, int o) {
  const int c = o % s.C2, j = (o / s.C2) % s.W2, i = o / (s.C2 * s.W2);
  int best = -1;
  for (int u = 0; u < s.win; ++u)
    for (int v = 0; v < s.win; ++v) {
      const int at = ((i * s.pst + u) * s.Wc + (j * s.pst + v)) * s.C2 + c;
      if (best < 0 || m[at] > m[best]) best = at;
    }
  return best;
}

// pooled cell o of one sample's map m (arg: that sample's argmaxes, max pooling only)
NM_HD float pool_at(const ConvShape& s, const float* m, const int* arg, int o) {
  if (s.pool == 0) return m[o];
  if (s.pool == 2) return m[arg[o]];
  const int c = o % s.C2, j = (o / s.C2) % s.W2, i = o / (s.C2 * s.W2);
  float acc = 0;
  for (int u = 0; u < s.win; ++u)
    for (int v = 0; v < s.win; ++v) acc += m[((i * s.pst + u) * s.Wc + (j * s.pst + v)) * s.C2 + c];
  return acc / float(s.win * s.win);
}

// poolᵀ of one sample's pooled y at map entry at = (a, b, c): the pooled cells (i, j) whose
// window holds (a, b), i.e. 0 <= a − i pst < win
NM_HD float pool_adj_at(const ConvShape& s, const float* y, const int* arg, int at) {
  if (s.pool == 0) return y[at];
  const int c = at % s.C2, b = (at / s.C2) % s.Wc, a = at / (s.C2 * s.Wc);
  const int i_hi = imin(s.H2 - 1, a / s.pst), j_hi = imin(s.W2 - 1, b / s.pst);
  float acc = 0;
  for (int i = first_cover(a, s.win, s.pst); i <= i_hi; ++i)
    for (int j = first_cover(b, s.win, s.pst); j <= j_hi; ++j) {
      const int o = (i * s.W2 + j) * s.C2 + c;
      if (s.pool == 2) {
        if (arg[o] == at) acc += y[o];
      } else {
        acc += y[o] / float(s.win * s.win);
      }
    }
  return acc;
}

// one term of the kernel gradient entry (c2, c1, u, v) of <y, conv_K(x)> for one sample: map
// cell q = i Wc + j
NM_HD double conv_kgrad_term(const ConvShape& s, const float* y, const float* x, int c2, int c1,
                                    int u, int v, int q) {
  const int i = q / s.Wc, j = q % s.Wc;
  const int a = i * s.st + u - s.pad, b = j * s.st + v - s.pad;
  if (a < 0 || a >= s.H1 || b < 0 || b >= s.W1) return 0;
  return double(y[size_t(q) * s.C2 + c2]) * x[(size_t(a) * s.W1 + b) * s.C1 + c1];
}

}  // namespace nm::cuda::energy
