// The attn2d kernels of cpu/attn2d.h (extensions-math.md 2e): the grid's tables, the portable
// window attention (float and double; the float one hands over to attn2d_avx2.cpp and
// attn2d_flat.cpp on AVX2+FMA), RoPE, and qkv_forward / qkv_backward, which the node runs.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "attn2d.h"
#include "simd.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NM_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))  // see simd.cpp
#else
#define NM_CLONES
#endif
#define NM_INLINE inline __attribute__((always_inline))

namespace nm {
namespace attn2d {

Grid::Grid(int h, int w, int nheads, int hdim, int radius, bool mask)
    : H(h), W(w), heads(nheads), dh(hdim), r(radius), Wn((2 * radius + 1) * (2 * radius + 1)),
      raster(mask) {
  const int S = H * W, span = 2 * r + 1;
  nb.assign(size_t(S) * Wn, -1);
  for (int s = 0; s < S; ++s)
    for (int slot = 0; slot < Wn; ++slot) {
      const int i2 = s / W + slot / span - r, j2 = s % W + slot % span - r, s2 = i2 * W + j2;
      if (i2 >= 0 && i2 < H && j2 >= 0 && j2 < W && !(raster && s2 > s)) nb[size_t(s) * Wn + slot] = s2;
    }
  inb.assign(size_t(S) * Wn, -1);  // each (cell, slot) sees one cell: the inverse is a function
  for (int s = 0; s < S; ++s)
    for (int slot = 0; slot < Wn; ++slot)
      if (nb[size_t(s) * Wn + slot] >= 0) inb[size_t(nb[size_t(s) * Wn + slot]) * Wn + slot] = s;
  const int used = raster ? r * span + r + 1 : Wn;
  if ((heads == 2 || heads == 4 || heads == 8) && used <= 16) {
    const int spr = 8 / heads;
    fWv = (used + spr - 1) / spr * spr, fnvec = fWv / spr;
    fsrc.assign(size_t(S) * fWv + 8, -1);
    for (int s = 0; s < S; ++s)
      for (int w = 0; w < std::min(fWv, Wn); ++w) fsrc[size_t(s) * fWv + w] = nb[size_t(s) * Wn + w];
  }
  const int m = dh / 4, P = std::max(H, W);
  if (m == 0 || dh % 4) return;  // no RoPE for this head size
  cs.resize(size_t(P) * m);
  sn.resize(size_t(P) * m);
  for (int p = 0; p < P; ++p)
    for (int kk = 0; kk < m; ++kk) {
      const double ang = p * std::pow(10000.0, -double(kk) / m);
      cs[size_t(p) * m + kk] = std::cos(ang);
      sn[size_t(p) * m + kk] = std::sin(ang);
    }
  csf.assign(cs.begin(), cs.end());
  snf.assign(sn.begin(), sn.end());
  if (dh != 16 || !fWv) return;  // only the flat kernels read it
  rope16.resize(size_t(S) * 32);
  for (int s = 0; s < S; ++s)
    for (int half = 0; half < 2; ++half) {
      const int pos = half ? s % W : s / W;
      float* t = rope16.data() + size_t(s) * 32 + half * 16;
      for (int l = 0; l < 8; ++l) {
        t[l] = csf[size_t(pos) * 4 + l % 4];
        t[8 + l] = l < 4 ? -snf[size_t(pos) * 4 + l] : snf[size_t(pos) * 4 + l - 4];
      }
    }
}

template <> const double* Grid::cosines<double>() const { return cs.data(); }
template <> const double* Grid::sines<double>() const { return sn.data(); }
template <> const float* Grid::cosines<float>() const { return csf.data(); }
template <> const float* Grid::sines<float>() const { return snf.data(); }

// a · b over n values in 8 independent lanes: vectorises without reassociating a float sum
template <class T>
NM_INLINE T dot(const T* a, const T* b, int n) {
  T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int c = 0;
  for (; c + 8 <= n; c += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[c + l] * b[c + l];
  T s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; c < n; ++c) s += a[c] * b[c];
  return s;
}

// Per query cell, slot by slot with the heads innermost: a window cell's row of q/k/v is read
// once per slot, front to back, and the heads' dot products are independent work. P holds
// (cell, slot, head): the layout of the vector kernels in attn2d_avx2.cpp.
template <class T>
NM_INLINE void window_forward_impl(const Grid& g, const T* q, const T* k, const T* v, int ld, T* P,
                                   T* out, int rows) {
  const int S = g.H * g.W, dh = g.dh, heads = g.heads, d = heads * dh, Wn = g.Wn;
  const T scale = T(1.0 / std::sqrt(double(dh)));
  for (int b = 0; b < rows; ++b)
    for (int s = 0; s < S; ++s) {
      const int* win = &g.nb[size_t(s) * Wn];
      const size_t cell = size_t(b) * S;
      const T* qs = q + (cell + s) * ld;
      T* p = P + (cell + s) * Wn * heads;  // p[w * heads + h]
      for (int w = 0; w < Wn; ++w) {
        if (win[w] < 0) continue;
        const T* ks = k + (cell + win[w]) * ld;
        for (int h = 0; h < heads; ++h) p[w * heads + h] = dot(qs + h * dh, ks + h * dh, dh) * scale;
      }
      for (int h = 0; h < heads; ++h) {
        T m = -INFINITY;
        for (int w = 0; w < Wn; ++w)
          if (win[w] >= 0) m = std::max(m, p[w * heads + h]);
        T sum = 0;
        for (int w = 0; w < Wn; ++w) {
          T& pw = p[w * heads + h];
          pw = win[w] < 0 ? T(0) : std::exp(pw - m);
          sum += pw;
        }
        const T inv = T(1) / sum;
        for (int w = 0; w < Wn; ++w) p[w * heads + h] *= inv;
      }
      T* o = out + (cell + s) * d;
      for (int c = 0; c < d; ++c) o[c] = 0;
      for (int w = 0; w < Wn; ++w) {
        if (win[w] < 0) continue;
        const T* vs = v + (cell + win[w]) * ld;
        for (int h = 0; h < heads; ++h) {
          const T pw = p[w * heads + h];
          T* oh = o + h * dh;
          const T* vh = vs + h * dh;
          for (int c = 0; c < dh; ++c) oh[c] += pw * vh[c];
        }
      }
    }
}

template <class T>
NM_INLINE void window_backward_impl(const Grid& g, const T* q, const T* k, const T* v, int ld,
                                    const T* P, const T* dout, T* dq, T* dk, T* dv, int rows) {
  const int S = g.H * g.W, dh = g.dh, heads = g.heads, d = heads * dh, Wn = g.Wn;
  const T scale = T(1.0 / std::sqrt(double(dh)));
  thread_local std::vector<T> buf;  // dout · v per (slot, head), then Σ_w p dp per head
  if (buf.size() < size_t(heads) * (Wn + 1)) buf.resize(size_t(heads) * (Wn + 1));
  T *dp = buf.data(), *dot_pv = buf.data() + size_t(heads) * Wn;
  for (size_t c = 0; c < size_t(rows) * S; ++c)  // the gradients are sums over the queries
    for (T* r : {dq + c * ld, dk + c * ld, dv + c * ld}) std::fill(r, r + d, T(0));
  for (int b = 0; b < rows; ++b)
    for (int s = 0; s < S; ++s) {
      const int* win = &g.nb[size_t(s) * Wn];
      const size_t cell = size_t(b) * S;
      const T* p = P + (cell + s) * Wn * heads;
      const T* go = dout + (cell + s) * d;
      for (int h = 0; h < heads; ++h) dot_pv[h] = 0;
      for (int w = 0; w < Wn; ++w) {
        if (win[w] < 0) continue;
        const size_t ko = (cell + win[w]) * ld;
        const T* vs = v + ko;
        T* dvs = dv + ko;
        for (int h = 0; h < heads; ++h) {
          const T pw = p[w * heads + h], g2 = dot(go + h * dh, vs + h * dh, dh);
          dp[w * heads + h] = g2;
          dot_pv[h] += pw * g2;
          T* dvh = dvs + h * dh;
          const T* goh = go + h * dh;
          for (int c = 0; c < dh; ++c) dvh[c] += pw * goh[c];
        }
      }
      const size_t qo = (cell + s) * ld;
      const T* qs = q + qo;
      T* dqs = dq + qo;
      for (int w = 0; w < Wn; ++w) {
        if (win[w] < 0) continue;
        const size_t ko = (cell + win[w]) * ld;
        const T* ks = k + ko;
        T* dks = dk + ko;
        for (int h = 0; h < heads; ++h) {
          const T ds = p[w * heads + h] * (dp[w * heads + h] - dot_pv[h]) * scale;
          T* dqh = dqs + h * dh;
          T* dkh = dks + h * dh;
          const T *kh = ks + h * dh, *qh = qs + h * dh;
          for (int c = 0; c < dh; ++c) {
            dqh[c] += ds * kh[c];
            dkh[c] += ds * qh[c];
          }
        }
      }
    }
}

// Float heads of a multiple of 8 features on an AVX2+FMA CPU take the vector kernels.
static bool vector_heads(const Grid& g) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  return g.dh % 8 == 0 && g.Wn <= kAvx2MaxSlots && simd::has_avx2();
#else
  (void)g;
  return false;
#endif
}

template <>
NM_CLONES void window_forward<float>(const Grid& g, const float* q, const float* k, const float* v,
                                     int ld, float* P, float* out, int rows) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))  // the kernels of attn2d_avx2.cpp
  if (vector_heads(g)) return window_forward_avx2(g, q, k, v, ld, P, out, rows);
#endif
  window_forward_impl(g, q, k, v, ld, P, out, rows);
}
template <>
void window_forward<double>(const Grid& g, const double* q, const double* k, const double* v,
                            int ld, double* P, double* out, int rows) {
  window_forward_impl(g, q, k, v, ld, P, out, rows);
}
template <>
NM_CLONES void window_backward<float>(const Grid& g, const float* q, const float* k, const float* v,
                                      int ld, const float* P, const float* dout, float* dq,
                                      float* dk, float* dv, int rows) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))  // the kernels of attn2d_avx2.cpp
  if (vector_heads(g)) return window_backward_avx2(g, q, k, v, ld, P, dout, dq, dk, dv, rows);
#endif
  window_backward_impl(g, q, k, v, ld, P, dout, dq, dk, dv, rows);
}
template <>
void window_backward<double>(const Grid& g, const double* q, const double* k, const double* v,
                             int ld, const double* P, const double* dout, double* dq, double* dk,
                             double* dv, int rows) {
  window_backward_impl(g, q, k, v, ld, P, dout, dq, dk, dv, rows);
}

// The pairs (lo[k], hi[k]) rotated by the angles of (c, s): four separate arrays (restrict),
// so the loop is whole vector operations.
template <int M, class T>
NM_INLINE void rotate(T* __restrict lo, T* __restrict hi, const T* __restrict c,
                      const T* __restrict s, T sign, int m) {
  for (int kk = 0; kk < (M ? M : m); ++kk) {
    const T a = lo[kk], bb = hi[kk], cc = c[kk], ss = sign * s[kk];
    lo[kk] = a * cc - bb * ss;
    hi[kk] = a * ss + bb * cc;
  }
}

// M = dh/4 as a compile-time constant for the common head sizes (the pair loop then becomes
// whole vector operations); 0: read from the grid.
template <int M, class T>
NM_INLINE void rope_impl(const Grid& g, T* x, int ld, int rows, bool inverse) {
  const int S = g.H * g.W, dh = g.dh, m = M ? M : dh / 4;
  const T sign = inverse ? T(-1) : T(1);
  const T *cosv = g.cosines<T>(), *sinv = g.sines<T>();
  for (int b = 0; b < rows; ++b)
    for (int s = 0; s < S; ++s) {
      const int pos[2] = {s / g.W, s % g.W};
      for (int h = 0; h < g.heads; ++h)
        for (int half = 0; half < 2; ++half) {
          T* e = x + (size_t(b) * S + s) * ld + h * dh + half * (dh / 2);
          rotate<M>(e, e + m, cosv + size_t(pos[half]) * m, sinv + size_t(pos[half]) * m, sign, m);
        }
    }
}

template <class T>
NM_INLINE void rope_dispatch(const Grid& g, T* x, int ld, int rows, bool inverse) {
  switch (g.dh / 4) {
    case 2: return rope_impl<2>(g, x, ld, rows, inverse);
    case 4: return rope_impl<4>(g, x, ld, rows, inverse);
    case 8: return rope_impl<8>(g, x, ld, rows, inverse);
    case 16: return rope_impl<16>(g, x, ld, rows, inverse);
    default: return rope_impl<0>(g, x, ld, rows, inverse);
  }
}

template <>
NM_CLONES void rope<float>(const Grid& g, float* x, int ld, int rows, bool inverse) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))  // the kernels of attn2d_avx2.cpp
  if (g.dh == 16 && vector_heads(g)) return rope16_avx2(g, x, ld, rows, inverse);
#endif
  rope_dispatch(g, x, ld, rows, inverse);
}
template <>
void rope<double>(const Grid& g, double* x, int ld, int rows, bool inverse) {
  rope_dispatch(g, x, ld, rows, inverse);
}

template <class T>
void qkv_forward(const Grid& g, T* qkv, bool rope_on, T* P, T* out, int rows) {
  const int d = g.heads * g.dh, ld = 3 * d;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if constexpr (std::is_same_v<T, float>)
    if (rope_on && vector_heads(g) && qkv_forward_flat_rope(g, qkv, P, out, rows)) return;
#endif
  if (rope_on) {
    rope(g, qkv, ld, rows, false);
    rope(g, qkv + d, ld, rows, false);
  }
  window_forward(g, qkv, qkv + d, qkv + 2 * d, ld, P, out, rows);
}

template <class T>
void qkv_backward(const Grid& g, const T* qkv, bool rope_on, const T* P, const T* dout, T* dqkv,
                  int rows) {
  const int d = g.heads * g.dh, ld = 3 * d;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if constexpr (std::is_same_v<T, float>)
    if (rope_on && vector_heads(g) && qkv_backward_flat_rope(g, qkv, P, dout, dqkv, rows)) return;
#endif
  window_backward(g, qkv, qkv + d, qkv + 2 * d, ld, P, dout, dqkv, dqkv + d, dqkv + 2 * d, rows);
  if (rope_on) {
    rope(g, dqkv, ld, rows, true);
    rope(g, dqkv + d, ld, rows, true);
  }
}

template void qkv_forward<float>(const Grid&, float*, bool, float*, float*, int);
template void qkv_forward<double>(const Grid&, double*, bool, double*, double*, int);
template void qkv_backward<float>(const Grid&, const float*, bool, const float*, const float*,
                                  float*, int);
template void qkv_backward<double>(const Grid&, const double*, bool, const double*, const double*,
                                   double*, int);

}  // namespace attn2d
}  // namespace nm
