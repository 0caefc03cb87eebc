// AVX2+FMA dense kernels for few rows (rows <= 16). Compiled with a function-level target
// attribute and called only when the CPU has AVX2 and FMA (see simd.cpp's dispatch).
// Shapes: u (rows, in), W (out, in), z/dz (rows, out), du (rows, in), dW (out, in).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include <cstddef>

#define NM_AVX2 __attribute__((target("avx2,fma")))

namespace nm::simd {
namespace {

NM_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// R rows against weight row w: 2R independent FMA chains that share each load of w.
template <int R>
NM_AVX2 inline void dot_rows(const float* w, const float* u, int in, float bias, float* z,
                             int out) {
  __m256 a0[R], a1[R];
  for (int r = 0; r < R; ++r) a0[r] = a1[r] = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= in; i += 16) {
    __m256 w0 = _mm256_loadu_ps(w + i), w1 = _mm256_loadu_ps(w + i + 8);
    for (int r = 0; r < R; ++r) {
      a0[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(u + size_t(r) * in + i), a0[r]);
      a1[r] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(u + size_t(r) * in + i + 8), a1[r]);
    }
  }
  for (; i + 8 <= in; i += 8) {
    __m256 w0 = _mm256_loadu_ps(w + i);
    for (int r = 0; r < R; ++r)
      a0[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(u + size_t(r) * in + i), a0[r]);
  }
  for (int r = 0; r < R; ++r) {
    float s = bias + hsum(_mm256_add_ps(a0[r], a1[r]));
    for (int k = i; k < in; ++k) s += w[k] * u[size_t(r) * in + k];
    z[size_t(r) * out] = s;
  }
}

}  // namespace

NM_AVX2 void dense_forward_small_avx2(const float* u, const float* W, const float* b, float* z,
                                      int rows, int in, int out) {
  for (int o = 0; o < out; ++o) {
    const float* w = W + size_t(o) * in;
    int r = 0;
    for (; r + 4 <= rows; r += 4) dot_rows<4>(w, u + size_t(r) * in, in, b[o], z + size_t(r) * out + o, out);
    for (; r + 2 <= rows; r += 2) dot_rows<2>(w, u + size_t(r) * in, in, b[o], z + size_t(r) * out + o, out);
    for (; r < rows; ++r) dot_rows<1>(w, u + size_t(r) * in, in, b[o], z + size_t(r) * out + o, out);
  }
}

NM_AVX2 void dense_backward_small_avx2(const float* u, const float* W, const float* dz, float* dW,
                                       float* db, float* du, int rows, int in, int out) {
  // dW[o, :] += sum_r dz[r, o] u[r, :]  -- one pass over each weight row
  for (int o = 0; o < out; ++o) {
    float g[16];
    __m256 gv[16];
    float gs = 0;
    for (int r = 0; r < rows; ++r) {
      g[r] = dz[size_t(r) * out + o];
      gs += g[r];
      gv[r] = _mm256_set1_ps(g[r]);
    }
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

}  // namespace nm::simd
#endif
