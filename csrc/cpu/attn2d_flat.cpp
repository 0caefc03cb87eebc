// AVX2+FMA window attention for float heads of 8, 16 or 32 features when the head count is 2,
// 4 or 8 (cpu/attn2d.h): the "flat" kernels. A cell's scores are whole vectors over
// (slot, head) in P's own order, 8 / heads slots per vector, so one horizontal-sum tree serves
// 8 (slot, head) dot products and one exponential 8 of them, whatever the head count (the
// general kernels of attn2d_avx2.cpp reduce and exponentiate one slot per vector: half or a
// quarter of the lanes idle at 4 or 2 heads). Slots outside the grid read a row of zeros and
// are masked to -inf before the softmax; under the raster mask only the slots up to the cell
// itself (a prefix of the window) are computed, the rest of P is written as zeros. The head
// size, the head count and so the row width are compile-time constants: the weighted sums keep
// a whole row (up to 64 features) in registers. Measured on case h (4 heads of 16, 8x8, raster):
// docs/performance.md, session 13.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <algorithm>
#include <cmath>
#include <vector>

#include "attn2d.h"
#include "avx2.h"

namespace nm::attn2d {
namespace {

using avx2::exp8;
using avx2::prefetch;
using avx2::reduce8;

// Lanes with head h % HEADS: the per-head max / sum over a vector's slots, in every lane.
template <int HEADS>
NM_AVX2_INLINE __m256 fold_max(__m256 m) {
  if (HEADS <= 4) m = _mm256_max_ps(m, _mm256_permute2f128_ps(m, m, 1));
  if (HEADS <= 2) m = _mm256_max_ps(m, _mm256_permute_ps(m, 0x4E));
  return m;
}
template <int HEADS>
NM_AVX2_INLINE __m256 fold_add(__m256 m) {
  if (HEADS <= 4) m = _mm256_add_ps(m, _mm256_permute2f128_ps(m, m, 1));
  if (HEADS <= 2) m = _mm256_add_ps(m, _mm256_permute_ps(m, 0x4E));
  return m;
}

// The 8 / HEADS slots' dot products a_h . b[slot]_h of one vector, lane = slot * HEADS + head.
template <int NV, int HEADS>
NM_AVX2_INLINE __m256 group_dots(const float* a, const float* const* b) {
  constexpr int dh = 8 * NV;
  __m256 acc[8];
  for (int j = 0; j < 8; ++j) {
    const float *x = a + (j % HEADS) * dh, *y = b[j / HEADS] + (j % HEADS) * dh;
    __m256 s = _mm256_mul_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(y));
    for (int c = 1; c < NV; ++c) s = _mm256_fmadd_ps(_mm256_loadu_ps(x + 8 * c), _mm256_loadu_ps(y + 8 * c), s);
    acc[j] = s;
  }
  return reduce8(acc);
}

// o[0..d) = sum over n terms of wt[i][head] * xs[i] (d = 8 NV HEADS), 64 features at a time.
template <int NV, int HEADS>
NM_AVX2_INLINE void wsum(int n, const float* const* wt, const float* const* xs, float* o) {
  constexpr int d = 8 * NV * HEADS, B = d < 64 ? d : 64, HB = B / (8 * NV);
  for (int c0 = 0; c0 < d; c0 += B) {
    __m256 acc[B / 8];
    for (int t = 0; t < B / 8; ++t) acc[t] = _mm256_setzero_ps();
    const int h0 = c0 / (8 * NV);
    for (int i = 0; i < n; ++i)
      for (int h = 0; h < HB; ++h) {
        const __m256 w = _mm256_broadcast_ss(wt[i] + h0 + h);
        for (int c = 0; c < NV; ++c)
          acc[h * NV + c] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xs[i] + c0 + 8 * (h * NV + c)), acc[h * NV + c]);
      }
    for (int t = 0; t < B / 8; ++t) _mm256_storeu_ps(o + c0 + 8 * t, acc[t]);
  }
}

// The first n (a multiple of 2) lanes of v to p.
NM_AVX2_INLINE void store_first(float* p, int n, __m256 v) {
  if (n == 8) return _mm256_storeu_ps(p, v);
  __m128 lo = _mm256_castps256_ps128(v);
  if (n >= 4) {
    _mm_storeu_ps(p, lo);
    p += 4, n -= 4, lo = _mm256_extractf128_ps(v, 1);
  }
  if (n == 2) _mm_storel_pi(reinterpret_cast<__m64*>(p), lo);
}
NM_AVX2_INLINE __m256 load_first(const float* p, int n) {
  if (n == 8) return _mm256_loadu_ps(p);
  alignas(32) float t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int i = 0; i < n; ++i) t[i] = p[i];
  return _mm256_load_ps(t);
}

// The lanes (slot, head) of vector j whose slot is inside the grid (all ones), from the cell's
// source cells src (Grid::fsrc: padded, so the 8 ints read past a cell's last slots exist).
template <int HEADS>
NM_AVX2_INLINE __m256 valid(const int* src, int j) {
  const __m256i slot = _mm256_setr_epi32(0 / HEADS, 1 / HEADS, 2 / HEADS, 3 / HEADS, 4 / HEADS,
                                         5 / HEADS, 6 / HEADS, 7 / HEADS);
  const __m256i s = _mm256_permutevar8x32_epi32(
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + j * (8 / HEADS))), slot);
  return _mm256_castsi256_ps(_mm256_cmpgt_epi32(s, _mm256_set1_epi32(-1)));
}

// RoPE on one cell's row of heads of 16 features (as rope16_avx2 in attn2d_avx2.cpp), from
// the grid's per-cell vectors Grid::rope16 (cos, signed sin, by row then by column index);
// Inverse: by the negative angles. The same operations as rope16_avx2, so the same bits.
template <int HEADS, bool Inverse>
NM_AVX2_INLINE void rotate_row(const Grid& g, int cell, float* x) {
  const float* t = g.rope16.data() + size_t(cell) * 32;
  const __m256 c[2] = {_mm256_loadu_ps(t), _mm256_loadu_ps(t + 16)};
  const __m256 sg[2] = {_mm256_loadu_ps(t + 8), _mm256_loadu_ps(t + 24)};
  for (int h = 0; h < HEADS; ++h)
    for (int half = 0; half < 2; ++half) {
      float* v = x + h * 16 + half * 8;
      const __m256 a = _mm256_loadu_ps(v), w = _mm256_permute2f128_ps(a, a, 1);
      const __m256 ws = _mm256_mul_ps(w, sg[half]);  // rounded first, as in rope16_avx2: same bits
      _mm256_storeu_ps(v, Inverse ? _mm256_fmsub_ps(a, c[half], ws) : _mm256_fmadd_ps(a, c[half], ws));
    }
}

// A row of zeros as wide as any row the kernels read (the slots outside the grid).
const float* zero_row(int n) {
  thread_local std::vector<float> z;
  if (z.size() < size_t(n)) z.assign(size_t(n), 0.0f);
  return z.data();
}

// Rope: q and k rotated in place just before their first read (the query's own row; a key
// row once the queries up to the last that can see it are next: r (W + 1) cells on, or the
// cell itself under the raster mask), so the saved Q/K/V hold them rotated, as after rope().
template <int NV, int HEADS, bool Rope>
NM_AVX2 void forward_flat(const Grid& g, float* q, float* k, const float* v, int ld, float* P,
                          float* out, int rows) {
  constexpr int dh = 8 * NV, d = dh * HEADS, SPR = 8 / HEADS;
  const int S = g.H * g.W, Wv = g.fWv, nvec = g.fnvec, per_cell = g.Wn * HEADS;
  const int stored = std::min(Wv, g.Wn) * HEADS;  // the rest of P's cell row is zeros
  const __m256 scale = _mm256_set1_ps(float(1.0 / std::sqrt(double(dh))));
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  const float* zero = zero_row(ld);
  const float* kp[32];
  const float* vp[32];
  const float* wt[32];
  __m256 sc[32 / SPR], ok[32 / SPR];  // scores, then probabilities; the lanes of real slots
  // the furthest row a query's window reads is r (W + 1) cells on: the one two queries further
  // is asked for ahead (as in attn2d_avx2.cpp; the saved Q/K/V left the cache since the forward)
  const size_t ahead = size_t(g.r) * (g.W + 1) + 2, total = size_t(rows) * S;
  const int reach = g.raster ? 0 : g.r * (g.W + 1);  // the furthest key a query reads
  for (int b = 0; b < rows; ++b)
    for (int s = 0, rotated = 0; s < S; ++s) {
      const size_t cell = size_t(b) * S;
      if (cell + s + ahead < total) prefetch(q + (cell + s + ahead) * ld, ld);
      if constexpr (Rope) {
        for (; rotated <= std::min(S - 1, s + reach); ++rotated)
          rotate_row<HEADS, false>(g, rotated, k + (cell + rotated) * ld);
        rotate_row<HEADS, false>(g, s, q + (cell + s) * ld);
      }
      const int* src = &g.fsrc[size_t(s) * Wv];
      for (int w = 0; w < Wv; ++w) {
        kp[w] = src[w] >= 0 ? k + (cell + src[w]) * ld : zero;
        vp[w] = src[w] >= 0 ? v + (cell + src[w]) * ld : zero;
      }
      const float* qs = q + (cell + s) * ld;
      __m256 mx = ninf;
      for (int j = 0; j < nvec; ++j) {
        ok[j] = valid<HEADS>(src, j);
        sc[j] = _mm256_blendv_ps(ninf, _mm256_mul_ps(group_dots<NV, HEADS>(qs, kp + j * SPR), scale), ok[j]);
        mx = _mm256_max_ps(mx, sc[j]);
      }
      mx = fold_max<HEADS>(mx);
      __m256 sum = _mm256_setzero_ps();
      for (int j = 0; j < nvec; ++j) {
        sc[j] = _mm256_and_ps(exp8(_mm256_sub_ps(sc[j], mx)), ok[j]);
        sum = _mm256_add_ps(sum, sc[j]);
      }
      const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), fold_add<HEADS>(sum));
      float* p = P + (cell + s) * per_cell;
      for (int j = 0; j < nvec; ++j) store_first(p + 8 * j, std::min(8, stored - 8 * j), _mm256_mul_ps(sc[j], inv));
      std::fill(p + stored, p + per_cell, 0.0f);
      for (int w = 0; w < Wv; ++w) wt[w] = p + w * HEADS;
      wsum<NV, HEADS>(std::min(Wv, g.Wn), wt, vp, out + (cell + s) * d);
    }
}

// Pass 1 per query s: ds = p (dp - sum_w p dp) / sqrt(dh), dp = dout . v, flat like the scores
// (DS rows of nvec vectors); pass 2 per cell t, lag cells behind: its dq (its window's keys), dk
// (the queries whose windows hold it) and dv rows, each summed in registers and written once.
// Rope: dq and dk rotated back (the inverse RoPE of the backward) as each row is written.
template <int NV, int HEADS, bool Rope>
NM_AVX2 void backward_flat(const Grid& g, const float* q, const float* k, const float* v, int ld,
                           const float* P, const float* dout, float* dq, float* dk, float* dv,
                           int rows) {
  constexpr int dh = 8 * NV, d = dh * HEADS, SPR = 8 / HEADS;
  const int S = g.H * g.W, Wv = g.fWv, nvec = g.fnvec, Wn = g.Wn, per_cell = Wn * HEADS;
  const int used = std::min(Wv, Wn), stored = used * HEADS;
  const __m256 scale = _mm256_set1_ps(float(1.0 / std::sqrt(double(dh))));
  const float* zero = zero_row(ld);
  thread_local std::vector<float> buf;
  const size_t row = size_t(nvec) * 8;
  if (buf.size() < size_t(S) * row) buf.resize(size_t(S) * row);
  float* DS = buf.data();
  const float* vp[32];
  const float* wt[32];
  const float* xs[32];
  const float* wp[32];
  const float* ps[32];
  const float* qp[32];
  const float* op[32];
  const int lag = g.r * (g.W + 1);
  const size_t ahead = size_t(lag) + 2, total = size_t(rows) * S;
  for (int b = 0; b < rows; ++b) {
    const size_t cell = size_t(b) * S;
    for (int step = 0; step < S + lag; ++step) {
      if (step < S) {
        const int s = step;
        if (cell + s + ahead < total) {
          prefetch(q + (cell + s + ahead) * ld, ld);
          prefetch(dout + (cell + s + 2) * d, d);
          prefetch(P + (cell + s + 2) * per_cell, per_cell);
        }
        const int* src = &g.fsrc[size_t(s) * Wv];
        for (int w = 0; w < Wv; ++w) vp[w] = src[w] >= 0 ? v + (cell + src[w]) * ld : zero;
        const float* go = dout + (cell + s) * d;
        const float* p = P + (cell + s) * per_cell;
        __m256 dp[32 / SPR], pv[32 / SPR], pdp = _mm256_setzero_ps();
        for (int j = 0; j < nvec; ++j) {
          dp[j] = group_dots<NV, HEADS>(go, vp + j * SPR);
          pv[j] = load_first(p + 8 * j, std::min(8, stored - 8 * j));
          pdp = _mm256_fmadd_ps(pv[j], dp[j], pdp);
        }
        pdp = fold_add<HEADS>(pdp);
        float* ds = DS + size_t(s) * row;
        for (int j = 0; j < nvec; ++j)
          _mm256_storeu_ps(ds + 8 * j, _mm256_mul_ps(_mm256_mul_ps(pv[j], _mm256_sub_ps(dp[j], pdp)), scale));
      }
      const int t = step - lag;
      if (t < 0) continue;
      const size_t to = (cell + t) * ld;
      const int* src = &g.fsrc[size_t(t) * Wv];
      const int* seen = &g.inb[size_t(t) * Wn];
      const float* ds = DS + size_t(t) * row;
      int n = 0, m = 0;
      for (int w = 0; w < used; ++w) {
        if (src[w] >= 0) wt[n] = ds + w * HEADS, xs[n++] = k + (cell + src[w]) * ld;
        if (seen[w] >= 0) {
          wp[m] = DS + size_t(seen[w]) * row + w * HEADS, ps[m] = P + (cell + seen[w]) * per_cell + w * HEADS;
          qp[m] = q + (cell + seen[w]) * ld, op[m++] = dout + (cell + seen[w]) * d;
        }
      }
      wsum<NV, HEADS>(n, wt, xs, dq + to);        // dq_t = sum_w ds_tw k_w
      wsum<NV, HEADS>(m, wp, qp, dk + to);        // dk_t = sum_s ds_st q_s
      wsum<NV, HEADS>(m, ps, op, dv + to);        // dv_t = sum_s p_st dout_s
      if constexpr (Rope) {
        rotate_row<HEADS, true>(g, t, dq + to);
        rotate_row<HEADS, true>(g, t, dk + to);
      }
    }
  }
}

template <int NV, bool Rope>
bool forward_heads(const Grid& g, float* q, float* k, const float* v, int ld, float* P, float* out,
                   int rows) {
  switch (g.heads) {
    case 2: return forward_flat<NV, 2, Rope>(g, q, k, v, ld, P, out, rows), true;
    case 4: return forward_flat<NV, 4, Rope>(g, q, k, v, ld, P, out, rows), true;
    case 8: return forward_flat<NV, 8, Rope>(g, q, k, v, ld, P, out, rows), true;
    default: return false;
  }
}
template <int NV, bool Rope>
bool backward_heads(const Grid& g, const float* q, const float* k, const float* v, int ld,
                    const float* P, const float* dout, float* dq, float* dk, float* dv, int rows) {
  switch (g.heads) {
    case 2: return backward_flat<NV, 2, Rope>(g, q, k, v, ld, P, dout, dq, dk, dv, rows), true;
    case 4: return backward_flat<NV, 4, Rope>(g, q, k, v, ld, P, dout, dq, dk, dv, rows), true;
    case 8: return backward_flat<NV, 8, Rope>(g, q, k, v, ld, P, dout, dq, dk, dv, rows), true;
    default: return false;
  }
}

}  // namespace

// The kernels read q and k only when there is no RoPE: the const_casts are never written through.
bool window_forward_flat(const Grid& g, const float* q, const float* k, const float* v, int ld,
                         float* P, float* out, int rows) {
  if (!g.fWv) return false;
  float *qw = const_cast<float*>(q), *kw = const_cast<float*>(k);
  switch (g.dh) {
    case 8: return forward_heads<1, false>(g, qw, kw, v, ld, P, out, rows);
    case 16: return forward_heads<2, false>(g, qw, kw, v, ld, P, out, rows);
    case 32: return forward_heads<4, false>(g, qw, kw, v, ld, P, out, rows);
    default: return false;
  }
}

bool window_backward_flat(const Grid& g, const float* q, const float* k, const float* v, int ld,
                          const float* P, const float* dout, float* dq, float* dk, float* dv,
                          int rows) {
  if (!g.fWv) return false;
  switch (g.dh) {
    case 8: return backward_heads<1, false>(g, q, k, v, ld, P, dout, dq, dk, dv, rows);
    case 16: return backward_heads<2, false>(g, q, k, v, ld, P, dout, dq, dk, dv, rows);
    case 32: return backward_heads<4, false>(g, q, k, v, ld, P, dout, dq, dk, dv, rows);
    default: return false;
  }
}

bool qkv_forward_flat_rope(const Grid& g, float* qkv, float* P, float* out, int rows) {
  const int d = g.heads * g.dh;
  if (!g.fWv || g.dh != 16 || g.rope16.empty()) return false;
  return forward_heads<2, true>(g, qkv, qkv + d, qkv + 2 * d, 3 * d, P, out, rows);
}

bool qkv_backward_flat_rope(const Grid& g, const float* qkv, const float* P, const float* dout,
                            float* dqkv, int rows) {
  const int d = g.heads * g.dh;
  if (!g.fWv || g.dh != 16 || g.rope16.empty()) return false;
  return backward_heads<2, true>(g, qkv, qkv + d, qkv + 2 * d, 3 * d, P, dout, dqkv, dqkv + d,
                                 dqkv + 2 * d, rows);
}

}  // namespace nm::attn2d
#endif
