// AVX2+FMA dense kernels for few rows (rows <= 16). Compiled with a function-level target
// attribute and called only when the CPU has AVX2 and FMA (see simd.cpp's dispatch).
// Shapes: u (rows, in), W (out, in), z/dz (rows, out), du (rows, in), dW (out, in).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cmath>
#include <cstddef>

#include "avx2.h"

namespace nm::simd {
namespace {

using avx2::exp8;
using avx2::hmax;
using avx2::hsum;
using avx2::lanes;
using avx2::load8;
using avx2::store8;
using avx2::reduce8;

// z[r, k] = b[k] + W[k, :] . u[r, :] for an R x K block (R*K <= 8 independent FMA chains that
// share every load). z points at z[0, 0] of the block, W at row 0 of the block.
template <int R, int K>
NM_AVX2 inline void dot_block(const float* W, const float* u, const float* b, float* z, int in,
                              int out) {
  __m256 acc[8];
  for (int a = 0; a < 8; ++a) acc[a] = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= in; i += 8) {
    __m256 w[K];
    for (int k = 0; k < K; ++k) w[k] = _mm256_loadu_ps(W + size_t(k) * in + i);
    for (int r = 0; r < R; ++r) {
      __m256 x = _mm256_loadu_ps(u + size_t(r) * in + i);
      for (int k = 0; k < K; ++k) acc[r * K + k] = _mm256_fmadd_ps(w[k], x, acc[r * K + k]);
    }
  }
  alignas(32) float tot[8];
  _mm256_store_ps(tot, reduce8(acc));
  for (int r = 0; r < R; ++r)
    for (int k = 0; k < K; ++k) {
      float s = tot[r * K + k] + b[k];
      for (int t = i; t < in; ++t) s += W[size_t(k) * in + t] * u[size_t(r) * in + t];
      z[size_t(r) * out + k] = s;
    }
}

template <int R, int K>
NM_AVX2 inline void rows_block(const float* u, const float* W, const float* b, float* z, int in,
                               int out) {
  int o = 0;
  for (; o + K <= out; o += K) dot_block<R, K>(W + size_t(o) * in, u, b + o, z + o, in, out);
  for (; o < out; ++o) dot_block<R, 1>(W + size_t(o) * in, u, b + o, z + o, in, out);
}

// Column o of dz (rows x out) as scalars and broadcast vectors; returns its sum (rows <= 16).
NM_AVX2 inline float column(const float* dz, int rows, int out, int o, float* g, __m256* gv) {
  float sum = 0;
  for (int r = 0; r < rows; ++r) {
    g[r] = dz[size_t(r) * out + o];
    sum += g[r];
    gv[r] = _mm256_set1_ps(g[r]);
  }
  return sum;
}

}  // namespace

NM_AVX2 void dense_forward_small_avx2(const float* u, const float* W, const float* b, float* z,
                                      int rows, int in, int out) {
  int r = 0;
  for (; r + 4 <= rows; r += 4) rows_block<4, 2>(u + size_t(r) * in, W, b, z + size_t(r) * out, in, out);
  const float* ur = u + size_t(r) * in;
  float* zr = z + size_t(r) * out;
  switch (rows - r) {
    case 3: rows_block<3, 2>(ur, W, b, zr, in, out); break;
    case 2: rows_block<2, 4>(ur, W, b, zr, in, out); break;
    case 1: rows_block<1, 8>(ur, W, b, zr, in, out); break;
    default: break;
  }
}

NM_AVX2 void dense_backward_small_avx2(const float* u, const float* W, const float* dz, float* dW,
                                       float* db, float* du, int rows, int in, int out) {
  // dW[o, :] += sum_r dz[r, o] u[r, :]  -- one pass over each weight row
  for (int o = 0; dW && o < out; ++o) {
    float g[16];
    __m256 gv[16];
    const float gs = column(dz, rows, out, o, g, gv);
    db[o] += gs;
    float* dw = dW + size_t(o) * in;
    int i = 0;
    for (; i + 8 <= in; i += 8) {
      __m256 v = _mm256_loadu_ps(dw + i);
      for (int r = 0; r < rows; ++r)
        v = _mm256_fmadd_ps(gv[r], _mm256_loadu_ps(u + size_t(r) * in + i), v);
      _mm256_storeu_ps(dw + i, v);
    }
    for (; i < in; ++i)
      for (int r = 0; r < rows; ++r) dw[i] += g[r] * u[size_t(r) * in + i];
  }
  if (!du) return;
  // du[r, :] += sum_o dz[r, o] W[o, :]
  for (int r = 0; r < rows; ++r) {
    const float* dzr = dz + size_t(r) * out;
    float* dur = du + size_t(r) * in;
    for (int o = 0; o < out; ++o) {
      const float gr = dzr[o];
      if (gr == 0.0f) continue;
      const __m256 gvr = _mm256_set1_ps(gr);
      const float* w = W + size_t(o) * in;
      int i = 0;
      for (; i + 8 <= in; i += 8)
        _mm256_storeu_ps(dur + i, _mm256_fmadd_ps(gvr, _mm256_loadu_ps(w + i), _mm256_loadu_ps(dur + i)));
      for (; i < in; ++i) dur[i] += gr * w[i];
    }
  }
}

// The fused SGD step's update of one layer: W -= lr dz^T u, b -= lr sum_r dz.
NM_AVX2 void dense_sgd_update_small_avx2(const float* u, float* W, const float* dz, float* b,
                                         int rows, int in, int out, float lr) {
  for (int o = 0; o < out; ++o) {
    float g[16];
    __m256 gv[16];
    const float gs = column(dz, rows, out, o, g, gv);
    b[o] -= lr * gs;
    float* w = W + size_t(o) * in;
    const __m256 nlr = _mm256_set1_ps(-lr);
    int i = 0;
    for (; i + 8 <= in; i += 8) {
      __m256 acc = _mm256_setzero_ps();
      for (int r = 0; r < rows; ++r)
        acc = _mm256_fmadd_ps(gv[r], _mm256_loadu_ps(u + size_t(r) * in + i), acc);
      _mm256_storeu_ps(w + i, _mm256_fmadd_ps(nlr, acc, _mm256_loadu_ps(w + i)));
    }
    for (; i < in; ++i) {
      float acc = 0;
      for (int r = 0; r < rows; ++r) acc += g[r] * u[size_t(r) * in + i];
      w[i] -= lr * acc;
    }
  }
}

namespace {

// One row of softmax(x [+ b]): the maximum, then e^(x - max) and its sum, then the scaling;
// each pass over whole vectors and a masked last one.
NM_AVX2_INLINE void softmax_row(float* x, const float* b, int n) {
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  const int nw = n & ~7;
  const __m256i m = lanes(n - nw);
  __m256 mx = ninf;
  for (int j = 0; j < n; j += 8) {
    const bool whole = j < nw;
    __m256 v = load8(x + j, m, whole);
    if (b) store8(x + j, m, whole, v = _mm256_add_ps(v, load8(b + j, m, whole)));
    mx = _mm256_max_ps(mx, whole ? v : _mm256_blendv_ps(ninf, v, _mm256_castsi256_ps(m)));
  }
  const __m256 top = _mm256_set1_ps(hmax(mx));
  __m256 sum = _mm256_setzero_ps();
  for (int j = 0; j < n; j += 8) {
    const bool whole = j < nw;
    const __m256 v = load8(x + j, m, whole);
    __m256 e = _mm256_andnot_ps(_mm256_cmp_ps(v, ninf, _CMP_EQ_OQ), exp8(_mm256_sub_ps(v, top)));
    if (!whole) e = _mm256_and_ps(e, _mm256_castsi256_ps(m));
    store8(x + j, m, whole, e);
    sum = _mm256_add_ps(sum, e);
  }
  const __m256 inv = _mm256_set1_ps(1.0f / hsum(sum));
  for (int j = 0; j < n; j += 8) {
    const bool whole = j < nw;
    store8(x + j, m, whole, _mm256_mul_ps(load8(x + j, m, whole), inv));
  }
}

}  // namespace

// Rows of softmax(s [+ bias]) in place (simd::softmax_rows / softmax_rows_bias): the maximum
// and the sum in vector lanes, e^x by exp8 (simd.cpp's exp_f); an entry at -inf becomes
// exactly 0.
NM_AVX2 void softmax_rows_avx2(float* s, const float* bias, int rows, int n) {
  for (int r = 0; r < rows; ++r)
    softmax_row(s + size_t(r) * n, bias ? bias + size_t(r) * n : nullptr, n);
}

// dp = p ⊙ (dp - Σ p dp) per row in place; acc += the result when given
NM_AVX2 void softmax_rows_backward_avx2(const float* p, float* dp, int rows, int n, float* acc) {
  const int nw = n & ~7;
  const __m256i m = lanes(n - nw);
  for (int r = 0; r < rows; ++r) {
    const float* pr = p + size_t(r) * n;
    float* g = dp + size_t(r) * n;
    float* a = acc ? acc + size_t(r) * n : nullptr;
    __m256 dot0 = _mm256_setzero_ps(), dot1 = _mm256_setzero_ps();
    int j = 0;
    for (; j + 16 <= nw; j += 16) {
      dot0 = _mm256_fmadd_ps(_mm256_loadu_ps(pr + j), _mm256_loadu_ps(g + j), dot0);
      dot1 = _mm256_fmadd_ps(_mm256_loadu_ps(pr + j + 8), _mm256_loadu_ps(g + j + 8), dot1);
    }
    for (; j < n; j += 8) {
      const bool whole = j < nw;
      dot0 = _mm256_fmadd_ps(load8(pr + j, m, whole), load8(g + j, m, whole), dot0);
    }
    const __m256 dv = _mm256_set1_ps(hsum(_mm256_add_ps(dot0, dot1)));
    for (j = 0; j < n; j += 8) {
      const bool whole = j < nw;
      const __m256 y = _mm256_mul_ps(load8(pr + j, m, whole), _mm256_sub_ps(load8(g + j, m, whole), dv));
      store8(g + j, m, whole, y);
      if (a) store8(a + j, m, whole, _mm256_add_ps(load8(a + j, m, whole), y));
    }
  }
}

}  // namespace nm::simd
#endif
