// Runtime-dispatched float kernels (see simd.h). Every loop body is branch-free arithmetic
// so the compiler vectorises it; `target_clones` builds an AVX2+FMA copy next to the
// baseline one and picks at load time. No -march=native anywhere.
#include "simd.h"

#include "../core/formulas.h"
#include "ops.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// Dispatch on the ISA level (a CPUID feature test), not a CPU model: `arch=haswell` clones are
// chosen by __builtin_cpu_is and never run on AMD processors.
#define NM_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define NM_CLONES
#endif

#define NM_INLINE inline __attribute__((always_inline))
#define NM_INLINE_LAMBDA __attribute__((always_inline))

namespace nm::simd {
namespace {

NM_INLINE float bits_to_float(uint32_t i) { float f; std::memcpy(&f, &i, 4); return f; }
NM_INLINE uint32_t float_to_bits(float f) { uint32_t i; std::memcpy(&i, &f, 4); return i; }

// e^x for x in [-87, 88]: x = k ln2 + r, |r| <= ln2/2, e^r by a degree-7 Taylor polynomial.
// k is read from the shifted sum's low mantissa bits in unsigned arithmetic (no float-to-int
// conversion, which is undefined for NaN: a NaN x gives NaN through p).
// Upper = false: x is known to be <= 0 (no upper clamp; the same values).
template <bool Upper = true>
NM_INLINE float exp_t(float x) {
  x = x < -87.0f ? -87.0f : x;
  if constexpr (Upper) x = x > 88.0f ? 88.0f : x;
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float ks = x * 1.44269504f + shifter;
  float k = ks - shifter;
  float r = x - k * 0.693145752f - k * 1.42860677e-6f;
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720; p = p * r + 1.0f / 120; p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;   p = p * r + 0.5f;       p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * bits_to_float((float_to_bits(ks) - float_to_bits(shifter) + 127u) << 23);
}
NM_INLINE float exp_f(float x) { return exp_t<true>(x); }

// e^x - 1, accurate near 0 (Taylor below |x| = 0.5, exp_f above).
NM_INLINE float expm1_f(float x) {
  float q = 1.0f / 362880;
  q = q * x + 1.0f / 40320; q = q * x + 1.0f / 5040; q = q * x + 1.0f / 720;
  q = q * x + 1.0f / 120;   q = q * x + 1.0f / 24;   q = q * x + 1.0f / 6;
  q = q * x + 0.5f;         q = q * x + 1.0f;
  float small = q * x;
  float large = exp_f(x) - 1.0f;
  float use_small = float(std::fabs(x) < 0.5f);  // a blend, so the loop stays branch-free
  return use_small * small + (1.0f - use_small) * large;
}

NM_INLINE float tanh_f(float x) {
  x = x < -9.0f ? -9.0f : x;
  x = x > 9.0f ? 9.0f : x;
  float e = expm1_f(2.0f * x);
  return e / (e + 2.0f);
}

NM_INLINE float sigmoid_f(float x) { return 1.0f / (1.0f + exp_f(-x)); }

// erfc(u) and e^(-u^2) with one exponential, branch-free so it vectorises: with a = |u| and
// t = 1/(1 + a/2), erfc(a) = t e^(-a^2) R(t), R = e^(a^2) erfc(a) / t a degree-10 polynomial in
// t on (0, 1] (a Chebyshev fit weighted for relative error, made for this file: 4e-8 in exact
// arithmetic). In float, against erfc in double: 4e-7 relative for a < 1, 7e-7 for a < 3, 4e-6
// at a = 9 (the rounding of a^2 in the exponent; half the error of the earlier form
// t e^(-a^2 + P(t)) everywhere). erfc(-a) = 2 - erfc(a): no cancellation in the tail that
// GELU(z < 0) uses; e^(-a^2) is exp_f's (held at e^-87 below, where GELU is 0 to float).
NM_INLINE void erfc_gauss_f(float u, float& e, float& g) {
  const float a = std::fabs(u);
  const float t = 1.0f / (1.0f + 0.5f * a);
  const float r = 0.2820948f + t * (0.28209306f + t * (0.24690277f + t * (0.17510698f +
                  t * (0.09474919f + t * (-0.06389273f + t * (0.14271739f + t * (-0.46981131f +
                  t * (0.50639815f + t * (-0.24078041f + t * 0.04442213f)))))))));
  g = exp_t<false>(-a * a);  // -a^2 <= 0
  const float c = t * g * r;
  e = u < 0 ? 2.0f - c : c;
}

NM_INLINE float erfc_f(float u) {
  float e, g;
  erfc_gauss_f(u, e, g);
  return e;
}


}  // namespace

// The formulas of core/formulas.h with this file's branch-free elementary functions.
struct FastMath {
  static NM_INLINE float exp(float x) { return exp_f(x); }
  static NM_INLINE float expm1(float x) { return expm1_f(x); }
  static NM_INLINE float tanh(float x) { return tanh_f(x); }
  static NM_INLINE float erfc(float x) { return erfc_f(x); }
  static NM_INLINE void erfc_gauss(float x, float& e, float& g) { erfc_gauss_f(x, e, g); }
  static NM_INLINE float sigmoid(float x) { return sigmoid_f(x); }
  static NM_INLINE float log(float x) { return std::log(x); }
  static NM_INLINE float sqrt(float x) { return std::sqrt(x); }
};

NM_CLONES void act_forward(Act f, float p, float alpha, const float* z, float* a, size_t n) {
  if (f == Act::Softmax) return;  // a row operation: ops.h
  if (f == Act::Linear) {
    std::memcpy(a, z, n * sizeof(float));
    return;
  }
  fm::with_act(f, [&](auto tag) NM_INLINE_LAMBDA {
    constexpr Act A = decltype(tag)::value;
    for (size_t i = 0; i < n; ++i) a[i] = fm::act<A, FastMath>(p, alpha, z[i]);
  });
}

NM_CLONES void act_forward_deriv(Act f, float p, float alpha, float* z, float* a, size_t n) {
  fm::with_act(f, [&](auto tag) NM_INLINE_LAMBDA {
    constexpr Act A = decltype(tag)::value;
    for (size_t i = 0; i < n; ++i) {
      float ai, di;
      fm::act_deriv<A, FastMath>(p, alpha, z[i], ai, di);
      a[i] = ai;
      z[i] = di;
    }
  });
}

NM_CLONES void mul(const float* x, const float* y, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = x[i] * y[i];
}

NM_CLONES void act_backward(Act f, float p, float alpha, const float* z, const float* a,
                            const float* da, float* dz, float* dalpha, size_t n) {
  if (f == Act::Softmax) return;
  if (f == Act::Linear || f == Act::BinaryStep) {  // f' is 1 or 0
    if (f == Act::Linear) std::memcpy(dz, da, n * sizeof(float));
    else std::memset(dz, 0, n * sizeof(float));
    return;
  }
  fm::with_act(f, [&](auto tag) NM_INLINE_LAMBDA {
    constexpr Act A = decltype(tag)::value;
    for (size_t i = 0; i < n; ++i) dz[i] = da[i] * fm::deriv<A, FastMath>(p, alpha, z[i], a[i]);
  });
  if (f == Act::ReluParametric && dalpha) {
    float s = 0;
    for (size_t i = 0; i < n; ++i) s += z[i] > 0 ? 0.0f : da[i] * z[i];
    *dalpha += s;
  }
}

// Sum of n floats in 8 independent lanes (vectorisable without reassociation flags).
NM_INLINE float lane_sum(const float* x, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += x[i + l];
  float s = 0;
  for (; i < n; ++i) s += x[i];
  for (int l = 0; l < 8; ++l) s += acc[l];
  return s;
}

// sum over i < n of f(i) in 8 independent lanes (vectorises without reassociation flags)
template <class F>
NM_INLINE float lane_reduce(int n, F&& f) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += f(i + l);
  float s = 0;
  for (; i < n; ++i) s += f(i);
  for (int l = 0; l < 8; ++l) s += acc[l];
  return s;
}

// Rows of d features: two passes for the moments (mean, then squared deviations, never
// stored), one for xhat and y. The gain/bias group advances by a counter, not r % G.
NM_CLONES void ln_forward(const float* x, const float* g, const float* b, float* xhat, float* rstd,
                          float* y, int rows, int d, int G) {
  int gi = 0;
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + size_t(r) * d;
    float* h = xhat + size_t(r) * d;
    const float mean = lane_sum(xr, d) / float(d);
    const float var = lane_reduce(d, [&](int c) NM_INLINE_LAMBDA {
      const float t = xr[c] - mean;
      return t * t;
    }) / float(d);
    const float rs = 1.0f / std::sqrt(var + 1e-5f);
    rstd[r] = rs;
    const int group = gi;
    gi = gi + 1 == G ? 0 : gi + 1;
    if (!y) {  // xhat only: the gain and bias are folded into the product that reads it
      for (int c = 0; c < d; ++c) h[c] = (xr[c] - mean) * rs;
      continue;
    }
    const float* gr = g + size_t(group) * d;
    const float* br = b + size_t(group) * d;
    float* yr = y + size_t(r) * d;
    for (int c = 0; c < d; ++c) {
      h[c] = (xr[c] - mean) * rs;
      yr[c] = gr[c] * h[c] + br[c];
    }
  }
}

NM_CLONES void ln_backward_hat(const float* xhat, const float* rstd, const float* dh, float* dx,
                               int rows, int d) {
  for (int r = 0; r < rows; ++r) {
    const float* h = xhat + size_t(r) * d;
    const float* dhr = dh + size_t(r) * d;
    const float m1 = lane_sum(dhr, d) / float(d);
    const float m2 = lane_reduce(d, [&](int c) NM_INLINE_LAMBDA { return dhr[c] * h[c]; }) / float(d);
    const float rs = rstd[r];
    float* dxr = dx + size_t(r) * d;
    for (int c = 0; c < d; ++c) dxr[c] += rs * (dhr[c] - m1 - h[c] * m2);
  }
}

// dx += rstd (dy g - mean(dy g) - xhat mean(dy g xhat)); the two means by lane sums, nothing
// stored in between.
NM_CLONES void ln_backward(const float* xhat, const float* rstd, const float* g, const float* dy,
                           float* dx, float* dg, float* db, int rows, int d, int G) {
  int gi = 0;
  for (int r = 0; r < rows; ++r) {
    const float* h = xhat + size_t(r) * d;
    const float* dyr = dy + size_t(r) * d;
    const float* gr = g + size_t(gi) * d;
    float* dgr = dg + size_t(gi) * d;
    float* dbr = db + size_t(gi) * d;
    gi = gi + 1 == G ? 0 : gi + 1;
    for (int c = 0; c < d; ++c) {
      dgr[c] += dyr[c] * h[c];
      dbr[c] += dyr[c];
    }
    const float m1 = lane_reduce(d, [&](int c) NM_INLINE_LAMBDA { return dyr[c] * gr[c]; }) / float(d);
    const float m2 = lane_reduce(d, [&](int c) NM_INLINE_LAMBDA { return dyr[c] * gr[c] * h[c]; }) / float(d);
    const float rs = rstd[r];
    float* dxr = dx + size_t(r) * d;
    for (int c = 0; c < d; ++c) dxr[c] += rs * (dyr[c] * gr[c] - m1 - h[c] * m2);
  }
}

NM_CLONES void ln_apply(const float* xhat, const float* g, const float* b, float* y, int rows,
                        int d) {
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < d; ++c) y[size_t(r) * d + c] = g[c] * xhat[size_t(r) * d + c] + b[c];
}

NM_CLONES void fold_grads(const float* __restrict W, const float* __restrict g,
                          const float* __restrict b, const float* __restrict M,
                          const float* __restrict cs, int out, int d, float* __restrict dW,
                          float* __restrict dg, float* __restrict db) {
  for (int j = 0; j < out; ++j) {
    const float* Wj = W + size_t(j) * d;
    const float* Mj = M + size_t(j) * d;
    float* dWj = dW + size_t(j) * d;
    const float cj = cs[j];
    for (int c = 0; c < d; ++c) {
      dWj[c] += Mj[c] * g[c] + cj * b[c];
      dg[c] += Wj[c] * Mj[c];
      db[c] += cj * Wj[c];
    }
  }
}

NM_CLONES void col_sums(const float* x, int rows, int n, float* out) {
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < n; ++j) out[j] += x[size_t(r) * n + j];
}

NM_CLONES void mul_col_sums(const float* d, float* x, int rows, int n, float* out) {
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < n; ++j) {
      const float v = x[size_t(r) * n + j] * d[size_t(r) * n + j];
      x[size_t(r) * n + j] = v;
      out[j] += v;
    }
}

NM_CLONES void add_rows(const float* b, int rows, int n, float* y) {
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < n; ++j) y[size_t(r) * n + j] += b[j];
}

// One row of softmax(x [+ b]) in place: the maximum and the sum in 8 lanes (vectorised without
// reassociation flags); an entry at -inf becomes exactly 0.
template <bool Bias>
NM_INLINE void softmax_row(float* x, const float* b, int n) {
  float mx[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
  int j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) {
      float v = x[j + l];
      if constexpr (Bias) x[j + l] = v = v + b[j + l];
      mx[l] = v > mx[l] ? v : mx[l];
    }
  float m = -INFINITY;
  for (; j < n; ++j) {
    if constexpr (Bias) x[j] += b[j];
    m = x[j] > m ? x[j] : m;
  }
  for (int l = 0; l < 8; ++l) m = mx[l] > m ? mx[l] : m;
  const float sum = lane_reduce(n, [&](int i) NM_INLINE_LAMBDA {
    const float e = exp_f(x[i] - m);
    return x[i] = x[i] == -INFINITY ? 0.0f : e;
  });
  const float inv = 1.0f / sum;
  for (int i = 0; i < n; ++i) x[i] *= inv;
}

static NM_CLONES void softmax_rows_portable(float* s, const float* bias, int rows, int n) {
  for (int r = 0; r < rows; ++r) {
    if (bias) softmax_row<true>(s + size_t(r) * n, bias + size_t(r) * n, n);
    else softmax_row<false>(s + size_t(r) * n, nullptr, n);
  }
}

static NM_CLONES void softmax_rows_backward_portable(const float* p, float* dp, int rows, int n, float* acc) {
  for (int r = 0; r < rows; ++r) {
    const float* pr = p + size_t(r) * n;
    float* g = dp + size_t(r) * n;
    const float dot = lane_reduce(n, [&](int j) NM_INLINE_LAMBDA { return pr[j] * g[j]; });
    for (int j = 0; j < n; ++j) g[j] = pr[j] * (g[j] - dot);
    if (acc)
      for (int j = 0; j < n; ++j) acc[size_t(r) * n + j] += g[j];
  }
}

NM_CLONES double abs_sum(const float* v, size_t n) {
  float acc[32] = {};  // four vectors of sums: one would wait on the add's latency
  size_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int k = 0; k < 32; ++k) acc[k] += std::fabs(v[i + k]);
  for (; i < n; ++i) acc[i % 32] += std::fabs(v[i]);
  double s = 0;
  for (int k = 0; k < 32; ++k) s += double(acc[k]);
  return s;
}

NM_CLONES bool sgd_step(const float* p, const float* g, float lr, float* out, size_t n) {
  float nan[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // x * 0: NaN where x is inf or NaN
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) {
      const float v = p[i + k] - lr * g[i + k];
      out[i + k] = v;
      nan[k] += v * 0.0f;
    }
  for (; i < n; ++i) {
    out[i] = p[i] - lr * g[i];
    nan[0] += out[i] * 0.0f;
  }
  float all = 0;
  for (int k = 0; k < 8; ++k) all += nan[k];
  return all == 0.0f;
}

}  // namespace nm::simd

namespace nm::simd {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
void dense_forward_small_avx2(const float*, const float*, const float*, float*, int, int, int);
void dense_backward_small_avx2(const float*, const float*, const float*, float*, float*, float*,
                               int, int, int);
void dense_sgd_update_small_avx2(const float*, float*, const float*, float*, int, int,
                                   int, float);
void softmax_rows_avx2(float*, const float*, int, int);
void softmax_rows_backward_avx2(const float*, float*, int, int, float*);
// NEUROMORPH_NO_AVX2=1 forces the portable path (tests run the suite through it).
static const bool kHasAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                             !std::getenv("NEUROMORPH_NO_AVX2");
#else
static const bool kHasAvx2 = false;
#endif

bool has_avx2() { return kHasAvx2; }

void dense_forward_small(const float* u, const float* W, const float* b, float* z, int rows,
                         int in, int out) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (kHasAvx2) return dense_forward_small_avx2(u, W, b, z, rows, in, out);
#endif
  ops::dense_forward(u, W, b, z, rows, in, out);  // portable path: the reference op
}

void dense_backward_small(const float* u, const float* W, const float* dz, float* dW, float* db,
                          float* du, int rows, int in, int out) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (kHasAvx2 && rows <= 16) return dense_backward_small_avx2(u, W, dz, dW, db, du, rows, in, out);
#endif
  ops::dense_backward(u, W, dz, dW, db, du, rows, in, out);
}

// The softmax rows: hand-vectorised on AVX2 (kernels_avx2.cpp; GCC leaves the portable
// version's maximum scalar), the portable loops otherwise.
void softmax_rows(float* s, int rows, int n) { softmax_rows_bias(s, nullptr, rows, n); }

void softmax_rows_bias(float* s, const float* bias, int rows, int n) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (kHasAvx2) return softmax_rows_avx2(s, bias, rows, n);
#endif
  softmax_rows_portable(s, bias, rows, n);
}

void softmax_rows_backward(const float* p, float* dp, int rows, int n, float* acc) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (kHasAvx2) return softmax_rows_backward_avx2(p, dp, rows, n, acc);
#endif
  softmax_rows_backward_portable(p, dp, rows, n, acc);
}
}  // namespace nm::simd

namespace nm::simd {
bool dense_sgd_update_small(const float* u, float* W, const float* dz, float* b, int rows, int in,
                            int out, float lr) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (kHasAvx2 && rows <= 16) {
    dense_sgd_update_small_avx2(u, W, dz, b, rows, in, out, lr);
    return true;
  }
#endif
  (void)u; (void)W; (void)dz; (void)b; (void)rows; (void)in; (void)out; (void)lr;
  return false;
}
}  // namespace nm::simd
