// AVX2+FMA window attention for float heads of a multiple of 8 features (cpu/attn2d.h):
// the same arithmetic as the portable kernels in attn2d_kernels.cpp, organised for vectors. Per
// (query, window slot) the heads' dot products are whole 8-float multiply-adds reduced eight
// heads at a time by one hadd tree, so the scores land as a vector over heads; the softmax
// runs on those vectors (P is (cells, slots, heads)); the weighted sums of values (and in the
// backward, of keys) are accumulated in registers across the slots, 32 features at a time.
// Called only when the CPU has AVX2 and FMA (simd::has_avx2()).
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
using avx2::lanes;
using avx2::loadn;
using avx2::storen;
using avx2::reduce8;

// out[h] = scale * a_h . b_h for the heads h; dh = 8 NV features each (NV = 0: dh / 8 read at
// run time). A whole group of eight heads keeps its sums in registers and stores plainly; a
// partial group (fewer heads left) pads with zeros and stores under a mask.
template <int NV>
NM_AVX2_INLINE void head_dots(const float* a, const float* b, int heads, int dh, __m256 scale,
                              float* out) {
  const int nv = NV ? NV : dh / 8;
  for (int h0 = 0; h0 < heads; h0 += 8) {
    const int nh = std::min(8, heads - h0);
    __m256 acc[8];
    for (int j = 0; j < 8; ++j) {
      if (j >= nh) {
        acc[j] = _mm256_setzero_ps();
        continue;
      }
      const float *x = a + size_t(h0 + j) * dh, *y = b + size_t(h0 + j) * dh;
      __m256 s0 = _mm256_mul_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(y)), s1 = _mm256_setzero_ps();
      for (int c = 1; c < nv; ++c) {  // two chains
        if (c % 2) s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + 8 * c), _mm256_loadu_ps(y + 8 * c), s1);
        else s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + 8 * c), _mm256_loadu_ps(y + 8 * c), s0);
      }
      acc[j] = nv > 1 ? _mm256_add_ps(s0, s1) : s0;
    }
    const __m256 r = _mm256_mul_ps(reduce8(acc), scale);
    storen(out + h0, lanes(nh), nh, r);
  }
}

// acc[t] (t < N) += wh[head of chunk t] * x[c0 + 8 t ..]: chunks of 8 features from c0, whose
// heads are hc[0..N).
template <int N>
NM_AVX2_INLINE void axpy_chunks(__m256* acc, const float* wh, const float* x, int c0, const int* hc) {
  for (int t = 0; t < N; ++t)
    acc[t] = _mm256_fmadd_ps(_mm256_broadcast_ss(wh + hc[t]), _mm256_loadu_ps(x + c0 + 8 * t), acc[t]);
}

// o[0..d) (+)= sum over n terms of wt[i][head] * xs[i], in registers 32 floats at a time;
// hc[j]: the head of features 8j..8j+7.
template <bool Add>
NM_AVX2_INLINE void weighted_sum(int n, const float* const* wt, const float* const* xs, int d,
                                 const int* hc, float* o) {
  int c0 = 0;
  for (; c0 + 32 <= d; c0 += 32) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int i = 0; i < n; ++i) axpy_chunks<4>(acc, wt[i], xs[i], c0, hc + c0 / 8);
    for (int t = 0; t < 4; ++t) {
      float* dst = o + c0 + 8 * t;
      _mm256_storeu_ps(dst, Add ? _mm256_add_ps(_mm256_loadu_ps(dst), acc[t]) : acc[t]);
    }
  }
  for (; c0 < d; c0 += 8) {
    __m256 acc[1] = {_mm256_setzero_ps()};
    for (int i = 0; i < n; ++i) axpy_chunks<1>(acc, wt[i], xs[i], c0, hc + c0 / 8);
    _mm256_storeu_ps(o + c0, Add ? _mm256_add_ps(_mm256_loadu_ps(o + c0), acc[0]) : acc[0]);
  }
}

// The head of each chunk of 8 features (dh % 8 == 0), per thread, grown once.
const int* chunk_heads(int d, int dh) {
  thread_local std::vector<int> hc;
  if (hc.size() < size_t(d / 8)) hc.resize(size_t(d / 8));
  for (int j = 0; j < d / 8; ++j) hc[j] = 8 * j / dh;
  return hc.data();
}

template <int NV>
NM_AVX2 void forward_kernel(const Grid& g, const float* q, const float* k, const float* v, int ld,
                            float* P, float* out, int rows) {
  const int S = g.H * g.W, dh = g.dh, heads = g.heads, d = heads * dh, Wn = g.Wn;
  const __m256 scale = _mm256_set1_ps(float(1.0 / std::sqrt(double(dh))));
  const int* hc = chunk_heads(d, dh);
  // the furthest row a query's window reads is r (W + 1) cells on: the one two queries on is
  // asked for ahead (the saved Q/K/V left the cache since the forward; measured on cases e
  // and h: 3-4% of the step, two cells ahead best of 1, 2, 4, 8)
  const size_t ahead = size_t(g.r) * (g.W + 1) + 2, total = size_t(rows) * S;
  for (int b = 0; b < rows; ++b)
    for (int s = 0; s < S; ++s) {
      const int* win = &g.nb[size_t(s) * Wn];
      const size_t cell = size_t(b) * S;
      if (cell + s + ahead < total) prefetch(q + (cell + s + ahead) * ld, ld);
      float* p = P + (cell + s) * Wn * heads;  // p[w * heads + h]
      for (int w = 0; w < Wn; ++w) {
        if (win[w] >= 0) head_dots<NV>(q + (cell + s) * ld, k + (cell + win[w]) * ld, heads, dh, scale, p + w * heads);
        else std::fill(p + w * heads, p + (w + 1) * heads, 0.0f);
      }
      for (int h0 = 0; h0 < heads; h0 += 8) {  // the softmax over slots, eight heads at a time
        const int nh = std::min(8, heads - h0);
        const __m256i m8 = lanes(nh);
        float* ph = p + h0;
        __m256 mx = _mm256_set1_ps(-INFINITY), sum = _mm256_setzero_ps();
        for (int w = 0; w < Wn; ++w)
          if (win[w] >= 0) mx = _mm256_max_ps(mx, loadn(ph + w * heads, m8, nh));
        for (int w = 0; w < Wn; ++w)
          if (win[w] >= 0) {
            const __m256 e = exp8(_mm256_sub_ps(loadn(ph + w * heads, m8, nh), mx));
            storen(ph + w * heads, m8, nh, e);
            sum = _mm256_add_ps(sum, e);
          }
        const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), sum);
        for (int w = 0; w < Wn; ++w)
          if (win[w] >= 0)
            storen(ph + w * heads, m8, nh, _mm256_mul_ps(loadn(ph + w * heads, m8, nh), inv));
      }
      const float* wt[kAvx2MaxSlots];
      const float* xs[kAvx2MaxSlots];
      int n = 0;
      for (int w = 0; w < Wn; ++w)
        if (win[w] >= 0) wt[n] = p + w * heads, xs[n++] = v + (cell + win[w]) * ld;
      weighted_sum<false>(n, wt, xs, d, hc, out + (cell + s) * d);
    }
}

// Two passes per sample: the scores' gradient ds of every (cell, slot, head), and each cell's rows of
// dq (its window's keys), dk (the queries whose windows hold it) and dv (their output gradients),
// each summed in registers and written once (Grid::inb: who sees a cell, in which slot).
// Every cell's three rows are written: no zeroing before.
template <int NV>
NM_AVX2 void backward_kernel(const Grid& g, const float* q, const float* k, const float* v, int ld,
                             const float* P, const float* dout, float* dq, float* dk, float* dv,
                             int rows) {
  const int S = g.H * g.W, dh = g.dh, heads = g.heads, d = heads * dh, Wn = g.Wn;
  const __m256 one = _mm256_set1_ps(1.0f), scale = _mm256_set1_ps(float(1.0 / std::sqrt(double(dh))));
  thread_local std::vector<float> buf;  // one sample's dout . v per (cell, slot, head), then ds
  const size_t per_cell = size_t(Wn) * heads;
  if (buf.size() < size_t(S) * per_cell) buf.resize(size_t(S) * per_cell);
  float* DS = buf.data();
  const int* hc = chunk_heads(d, dh);
  const float* wt[kAvx2MaxSlots];
  const float* xs[kAvx2MaxSlots];
  // Cell t's rows need ds of the queries that see it, all at most lag = r (W + 1) cells later in
  // raster order: pass 2 trails pass 1 by lag cells, so what it reads was just written (cache).
  const int lag = g.r * (g.W + 1);
  const size_t ahead = size_t(lag) + 2, total = size_t(rows) * S;  // as in the forward
  for (int b = 0; b < rows; ++b) {
    const size_t cell = size_t(b) * S;
    for (int step = 0; step < S + lag; ++step) {
      if (step < S) {  // pass 1 at query s: ds = p (dp - sum_w p dp) / sqrt(dh), dp = dout . v
        const int s = step;
        if (cell + s + ahead < total) {
          prefetch(q + (cell + s + ahead) * ld, ld);
          prefetch(dout + (cell + s + 2) * d, d);
          prefetch(P + (cell + s + 2) * per_cell, int(per_cell));
        }
        const int* win = &g.nb[size_t(s) * Wn];
        const float* p = P + (cell + s) * per_cell;
        const float* go = dout + (cell + s) * d;
        float* ds = DS + size_t(s) * per_cell;
        for (int w = 0; w < Wn; ++w) {
          if (win[w] >= 0) head_dots<NV>(go, v + (cell + win[w]) * ld, heads, dh, one, ds + w * heads);
          else std::fill(ds + w * heads, ds + (w + 1) * heads, 0.0f);
        }
        for (int h0 = 0; h0 < heads; h0 += 8) {
          const int nh = std::min(8, heads - h0);
          const __m256i m8 = lanes(nh);
          const float* ph = p + h0;
          float* dh0 = ds + h0;
          __m256 pdp = _mm256_setzero_ps();
          for (int w = 0; w < Wn; ++w)
            if (win[w] >= 0)
              pdp = _mm256_fmadd_ps(loadn(ph + w * heads, m8, nh), loadn(dh0 + w * heads, m8, nh), pdp);
          for (int w = 0; w < Wn; ++w)
            if (win[w] >= 0) {
              const __m256 pw = loadn(ph + w * heads, m8, nh);
              const __m256 dp = loadn(dh0 + w * heads, m8, nh);
              storen(dh0 + w * heads, m8, nh, _mm256_mul_ps(_mm256_mul_ps(pw, _mm256_sub_ps(dp, pdp)), scale));
            }
        }
      }
      const int t = step - lag;
      if (t < 0) continue;
      // pass 2 at cell t: its dq, dk, dv rows
      const size_t to = (cell + t) * ld;
      const int* win = &g.nb[size_t(t) * Wn];
      const int* seen = &g.inb[size_t(t) * Wn];
      const float* ds = DS + size_t(t) * per_cell;
      int n = 0;
      for (int w = 0; w < Wn; ++w)
        if (win[w] >= 0) wt[n] = ds + w * heads, xs[n++] = k + (cell + win[w]) * ld;
      weighted_sum<false>(n, wt, xs, d, hc, dq + to);  // dq_t = sum_w ds_tw k_w
      n = 0;
      for (int w = 0; w < Wn; ++w)
        if (seen[w] >= 0) wt[n] = DS + size_t(seen[w]) * per_cell + w * heads, xs[n++] = q + (cell + seen[w]) * ld;
      weighted_sum<false>(n, wt, xs, d, hc, dk + to);  // dk_t = sum_s ds_st q_s
      n = 0;
      for (int w = 0; w < Wn; ++w)
        if (seen[w] >= 0)
          wt[n] = P + (cell + seen[w]) * per_cell + w * heads, xs[n++] = dout + (cell + seen[w]) * d;
      weighted_sum<false>(n, wt, xs, d, hc, dv + to);  // dv_t = sum_s p_st dout_s
    }
  }
}

}  // namespace

// The kernels with the head size's vector count as a constant for 1-4 vectors per head.
NM_AVX2 void window_forward_avx2(const Grid& g, const float* q, const float* k, const float* v,
                                 int ld, float* P, float* out, int rows) {
  if (window_forward_flat(g, q, k, v, ld, P, out, rows)) return;
  switch (g.dh / 8) {
    case 1: return forward_kernel<1>(g, q, k, v, ld, P, out, rows);
    case 2: return forward_kernel<2>(g, q, k, v, ld, P, out, rows);
    case 3: return forward_kernel<3>(g, q, k, v, ld, P, out, rows);
    case 4: return forward_kernel<4>(g, q, k, v, ld, P, out, rows);
    default: return forward_kernel<0>(g, q, k, v, ld, P, out, rows);
  }
}

NM_AVX2 void window_backward_avx2(const Grid& g, const float* q, const float* k, const float* v,
                                  int ld, const float* P, const float* dout, float* dq, float* dk,
                                  float* dv, int rows) {
  if (window_backward_flat(g, q, k, v, ld, P, dout, dq, dk, dv, rows)) return;
  switch (g.dh / 8) {
    case 1: return backward_kernel<1>(g, q, k, v, ld, P, dout, dq, dk, dv, rows);
    case 2: return backward_kernel<2>(g, q, k, v, ld, P, dout, dq, dk, dv, rows);
    case 3: return backward_kernel<3>(g, q, k, v, ld, P, dout, dq, dk, dv, rows);
    case 4: return backward_kernel<4>(g, q, k, v, ld, P, dout, dq, dk, dv, rows);
    default: return backward_kernel<0>(g, q, k, v, ld, P, dout, dq, dk, dv, rows);
  }
}

// RoPE for heads of 16 features (m = 4): each half of a head is one vector [lo | hi]; with w its
// 128-bit halves swapped, the rotation is v (c | c) + w (-s | s), tables per position.
NM_AVX2 void rope16_avx2(const Grid& g, float* x, int ld, int rows, bool inverse) {
  const int S = g.H * g.W;
  const float* cs = g.csf.data();
  const float* sn = g.snf.data();
  const __m256 sign = _mm256_setr_ps(-1, -1, -1, -1, 1, 1, 1, 1);
  const __m256 flip = _mm256_set1_ps(inverse ? -1.0f : 1.0f);
  for (int s = 0; s < S; ++s) {
    const int pos[2] = {s / g.W, s % g.W};
    __m256 c[2], sg[2];
    for (int half = 0; half < 2; ++half) {
      const __m128 c4 = _mm_loadu_ps(cs + size_t(pos[half]) * 4), s4 = _mm_loadu_ps(sn + size_t(pos[half]) * 4);
      c[half] = _mm256_set_m128(c4, c4);
      sg[half] = _mm256_mul_ps(_mm256_mul_ps(_mm256_set_m128(s4, s4), sign), flip);
    }
    for (int b = 0; b < rows; ++b) {
      float* e = x + (size_t(b) * S + s) * ld;
      for (int h = 0; h < g.heads; ++h)
        for (int half = 0; half < 2; ++half) {
          float* v = e + h * 16 + half * 8;
          const __m256 a = _mm256_loadu_ps(v);
          const __m256 w = _mm256_permute2f128_ps(a, a, 1);
          _mm256_storeu_ps(v, _mm256_fmadd_ps(a, c[half], _mm256_mul_ps(w, sg[half])));
        }
    }
  }
}

}  // namespace nm::attn2d
#endif
