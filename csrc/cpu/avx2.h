// Helpers shared by the hand-vectorised AVX2+FMA kernels (kernels_avx2.cpp, attn2d_avx2.cpp).
// Included only by files whose functions carry the target attribute and are called only when
// the CPU has AVX2 and FMA (simd::has_avx2()).
#pragma once
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include <initializer_list>

#define NM_AVX2 __attribute__((target("avx2,fma")))
#define NM_AVX2_INLINE NM_AVX2 inline __attribute__((always_inline))

namespace nm::avx2 {

// Eight vectors -> one vector of their eight horizontal sums, lane j = sum of v[j].
NM_AVX2_INLINE __m256 reduce8(const __m256* v) {
  const __m256 h0 = _mm256_hadd_ps(v[0], v[1]), h1 = _mm256_hadd_ps(v[2], v[3]);
  const __m256 h2 = _mm256_hadd_ps(v[4], v[5]), h3 = _mm256_hadd_ps(v[6], v[7]);
  const __m256 g0 = _mm256_hadd_ps(h0, h1), g1 = _mm256_hadd_ps(h2, h3);
  return _mm256_add_ps(_mm256_permute2f128_ps(g0, g1, 0x20), _mm256_permute2f128_ps(g0, g1, 0x31));
}

// The sum of a vector's eight lanes.
NM_AVX2_INLINE float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// The largest of a vector's eight lanes.
NM_AVX2_INLINE float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

// Lanes 0..n-1 on (n <= 8): the mask of a partial vector.
NM_AVX2_INLINE __m256i lanes(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// A vector of 8 floats at p, or (whole false) its first lanes under mask m, the rest 0: the
// last, partial vector of a row, or a partial group of heads.
NM_AVX2_INLINE __m256 load8(const float* p, __m256i m, bool whole) {
  return whole ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m);
}
NM_AVX2_INLINE void store8(float* p, __m256i m, bool whole, __m256 v) {
  if (whole) _mm256_storeu_ps(p, v);
  else _mm256_maskstore_ps(p, m, v);
}

// The same for a group of n <= 8 lanes (m = lanes(n)): four lanes (attn2d's 4 heads) move as a
// 128-bit half, the upper lanes of a load zero as under the mask, since masked stores are
// microcoded on AMD's Zen cores; other partial groups under the mask.
NM_AVX2_INLINE __m256 loadn(const float* p, __m256i m, int n) {
  if (n == 8) return _mm256_loadu_ps(p);
  if (n == 4) return _mm256_zextps128_ps256(_mm_loadu_ps(p));
  return _mm256_maskload_ps(p, m);
}
NM_AVX2_INLINE void storen(float* p, __m256i m, int n, __m256 v) {
  if (n == 8) _mm256_storeu_ps(p, v);
  else if (n == 4) _mm_storeu_ps(p, _mm256_castps256_ps128(v));
  else _mm256_maskstore_ps(p, m, v);
}

// Asks for n floats from p into the cache ahead of their use (one prefetch per 64-byte line).
NM_AVX2_INLINE void prefetch(const float* p, int n) {
  for (int i = 0; i < n; i += 16) _mm_prefetch(reinterpret_cast<const char*>(p + i), _MM_HINT_T0);
}

// e^x as simd.cpp's exp_f: x = k ln2 + r, a degree-7 polynomial in r, clamped to [-87, 88].
// A NaN stays NaN: max/min return their second operand when one is NaN, so x goes second.
NM_AVX2_INLINE __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(_mm256_set1_ps(-87.0f), x));
  const __m256 shifter = _mm256_set1_ps(12582912.0f);
  const __m256 k = _mm256_sub_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504f), shifter), shifter);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693145752f), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(1.42860677e-6f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040);
  for (float c : {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f})
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

}  // namespace nm::avx2
#endif
