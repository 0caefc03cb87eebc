// The own AVX2+FMA products (cpu::rows_product and cpu::tn_product in gemm.h). rows_product,
// for many rows and a short inner dimension: C = A B (+ a bias row) (+ C), A (m x k) row-major read in place, B packed once per
// call into 16-column panels. A 6 x 16 tile of C stays in 12 registers over the whole k loop:
// six broadcasts of A and two loads of B per 12 FMAs. C is written once, no zeroing or bias
// rows first (OpenBLAS scales C by beta before its kernel, a pass over C that for the attn2d
// node's 1.5-2 MB outputs runs from memory), and A is not packed. Each entry of C is one FMA
// chain over k in order whatever the row range or tile height, so a product cut into row
// ranges over threads gives the same bits as a whole one. Measured: docs/performance.md,
// session 14. Also (session 15): the products with one short side (small_k_product_avx2,
// small_n_product_avx2; gemm.cpp `skinny`) and 8 x 8 register transposes (transpose_avx2) for
// the dense layers that take their weights as rows_product's row operand (gemm.cpp
// `by_weights`).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cmath>
#include <cstddef>

#include "avx2.h"

namespace nm::simd {
namespace {

// R rows of 16 columns of C from / to registers (c0: columns 0-7, c1: 8-15)
template <int R>
NM_AVX2_INLINE void load_rows(const float* C, int ldc, __m256* c0, __m256* c1) {
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    c0[r] = _mm256_loadu_ps(C + size_t(r) * ldc);
    c1[r] = _mm256_loadu_ps(C + size_t(r) * ldc + 8);
  }
}
template <int R>
NM_AVX2_INLINE void store_rows(float* C, int ldc, const __m256* c0, const __m256* c1) {
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(C + size_t(r) * ldc, c0[r]);
    _mm256_storeu_ps(C + size_t(r) * ldc + 8, c1[r]);
  }
}

// How a tile of C starts and ends: from a bias row and / or C itself (else zero); gate: the
// product multiplied by gate (laid out as C) and, when colsum is given, colsum += the result's
// column sums (each tile's rows summed in registers, then added: a strip at a time).
struct Epi {
  const float* bias;
  bool acc;
  const float* gate;
  float* colsum;
};

// Rows r0..r0+R-1 of C's 16 columns from panel Bp (k x 16).
template <int R>
NM_AVX2_INLINE void tile(const float* A, int lda, const float* Bp, int k, Epi e, float* C, int ldc) {
  const float* bias = e.bias;
  const bool acc = e.acc;
  __m256 c0[R], c1[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    if (acc) {
      c0[r] = _mm256_loadu_ps(C + size_t(r) * ldc);
      c1[r] = _mm256_loadu_ps(C + size_t(r) * ldc + 8);
      if (bias) {
        c0[r] = _mm256_add_ps(c0[r], _mm256_loadu_ps(bias));
        c1[r] = _mm256_add_ps(c1[r], _mm256_loadu_ps(bias + 8));
      }
    } else if (bias) {
      c0[r] = _mm256_loadu_ps(bias);
      c1[r] = _mm256_loadu_ps(bias + 8);
    } else {
      c0[r] = c1[r] = _mm256_setzero_ps();
    }
  }
  const float* a[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) a[r] = A + size_t(r) * lda;
#pragma GCC unroll 4
  for (int p = 0; p < k; ++p) {
    const __m256 b0 = _mm256_load_ps(Bp + size_t(p) * 16), b1 = _mm256_load_ps(Bp + size_t(p) * 16 + 8);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 x = _mm256_broadcast_ss(a[r] + p);
      c0[r] = _mm256_fmadd_ps(x, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(x, b1, c1[r]);
    }
  }
  if (e.gate) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      c0[r] = _mm256_mul_ps(c0[r], _mm256_loadu_ps(e.gate + size_t(r) * ldc));
      c1[r] = _mm256_mul_ps(c1[r], _mm256_loadu_ps(e.gate + size_t(r) * ldc + 8));
      s0 = _mm256_add_ps(s0, c0[r]);
      s1 = _mm256_add_ps(s1, c1[r]);
    }
    if (e.colsum) {
      _mm256_storeu_ps(e.colsum, _mm256_add_ps(_mm256_loadu_ps(e.colsum), s0));
      _mm256_storeu_ps(e.colsum + 8, _mm256_add_ps(_mm256_loadu_ps(e.colsum + 8), s1));
    }
  }
  store_rows<R>(C, ldc, c0, c1);
}

template <int R>
NM_AVX2 void strip(const float* A, int lda, const float* Bp, int n, int k, Epi e, float* C,
                   int ldc) {
  for (int j = 0; j < n; j += 16) {
    const Epi ej{e.bias ? e.bias + j : nullptr, e.acc, e.gate ? e.gate + j : nullptr,
                 e.colsum ? e.colsum + j : nullptr};
    tile<R>(A, lda, Bp + size_t(j) * k, k, ej, C + j, ldc);
  }
}

// C's rows r0..r0+R-1, columns 16: C += A^T B over k rows of A (k x ., lda) and B (k x ., ldb).
template <int R>
NM_AVX2_INLINE void tile_tn(const float* A, int lda, const float* B, int ldb, int k, float* C,
                            int ldc) {
  __m256 c0[R], c1[R];
  load_rows<R>(C, ldc, c0, c1);
#pragma GCC unroll 4
  for (int p = 0; p < k; ++p) {
    const float* a = A + size_t(p) * lda;
    const __m256 b0 = _mm256_loadu_ps(B + size_t(p) * ldb), b1 = _mm256_loadu_ps(B + size_t(p) * ldb + 8);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 x = _mm256_broadcast_ss(a + r);
      c0[r] = _mm256_fmadd_ps(x, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(x, b1, c1[r]);
    }
  }
  store_rows<R>(C, ldc, c0, c1);
}

template <int R>
NM_AVX2 void strip_tn(const float* A, int lda, const float* B, int ldb, int n, int k, float* C,
                      int ldc) {
  for (int j = 0; j < n; j += 16) tile_tn<R>(A, lda, B + j, ldb, k, C + j, ldc);
}

// r[i][j] <- r[j][i]
NM_AVX2_INLINE void transpose8(__m256* r) {
  __m256 t[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  __m256 u[8];
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

// R rows of C (columns j0..j1-1) = (C or 0) + A B for a short k: op(A)'s entry (i, p) at
// A[i rs + p cs], B (k x n, ldb). 16 columns per step (R x 2 accumulators, B's two vectors in
// registers for the R rows: the compiler would otherwise fold a load of B into every FMA, and
// the loads, not the FMAs, bounded the loop), then 8, then one; every entry one FMA chain over
// p in order.
template <int R>
NM_AVX2_INLINE void small_k_rows(const float* A, size_t rs, size_t cs, int k, const float* B,
                                 int ldb, int j0, int j1, bool acc, float* C, int ldc) {
  int j = j0;
  for (; j + 16 <= j1; j += 16) {
    __m256 c0[R], c1[R];
    if (acc) load_rows<R>(C + j, ldc, c0, c1);
    else
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) c0[r] = c1[r] = _mm256_setzero_ps();
    for (int p = 0; p < k; ++p) {
      __m256 b0 = _mm256_loadu_ps(B + size_t(p) * ldb + j);
      __m256 b1 = _mm256_loadu_ps(B + size_t(p) * ldb + j + 8);
      asm("" : "+x"(b0), "+x"(b1));  // in registers, not a memory operand of each FMA
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m256 x = _mm256_broadcast_ss(A + r * rs + p * cs);
        c0[r] = _mm256_fmadd_ps(x, b0, c0[r]);
        c1[r] = _mm256_fmadd_ps(x, b1, c1[r]);
      }
    }
    store_rows<R>(C + j, ldc, c0, c1);
  }
  for (; j + 8 <= j1; j += 8)
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      __m256 c = acc ? _mm256_loadu_ps(C + size_t(r) * ldc + j) : _mm256_setzero_ps();
      for (int p = 0; p < k; ++p)
        c = _mm256_fmadd_ps(_mm256_broadcast_ss(A + r * rs + p * cs),
                            _mm256_loadu_ps(B + size_t(p) * ldb + j), c);
      _mm256_storeu_ps(C + size_t(r) * ldc + j, c);
    }
  for (; j < j1; ++j)
    for (int r = 0; r < R; ++r) {
      float c = acc ? C[size_t(r) * ldc + j] : 0.0f;
      for (int p = 0; p < k; ++p) c = std::fma(A[r * rs + p * cs], B[size_t(p) * ldb + j], c);
      C[size_t(r) * ldc + j] = c;
    }
}

// G dot products of each of R rows of A (lda) with G rows of B over p0..p1-1 (a multiple of 8
// long), eight lanes each, from / to part (row r's at part + r ldp, G x 8 each). B's vector
// is loaded once into a register for the R rows (as in small_k_rows).
template <int R, int G>
NM_AVX2_INLINE void dot_group(const float* A, int lda, const float* B, int ldb, int p0, int p1,
                              float* part, int ldp, bool first) {
  __m256 s[R][G];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g)
      s[r][g] = first ? _mm256_setzero_ps() : _mm256_load_ps(part + r * ldp + 8 * g);
  for (int p = p0; p < p1; p += 8) {
    __m256 x[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) x[r] = _mm256_loadu_ps(A + size_t(r) * lda + p);
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) {
      __m256 b = _mm256_loadu_ps(B + size_t(g) * ldb + p);
      asm("" : "+x"(b));
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) s[r][g] = _mm256_fmadd_ps(x[r], b, s[r][g]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) _mm256_store_ps(part + r * ldp + 8 * g, s[r][g]);
}

// Two rows with up to 6 outputs a group (12 accumulators), or one row with up to 12.
template <int R>
NM_AVX2_INLINE void dot_groups(int G, const float* A, int lda, const float* B, int ldb, int p0,
                               int p1, float* part, int ldp, bool first) {
  switch (G) {
    case 1: return dot_group<R, 1>(A, lda, B, ldb, p0, p1, part, ldp, first);
    case 2: return dot_group<R, 2>(A, lda, B, ldb, p0, p1, part, ldp, first);
    case 3: return dot_group<R, 3>(A, lda, B, ldb, p0, p1, part, ldp, first);
    case 4: return dot_group<R, 4>(A, lda, B, ldb, p0, p1, part, ldp, first);
    case 5: return dot_group<R, 5>(A, lda, B, ldb, p0, p1, part, ldp, first);
    default: return dot_group<R, 6>(A, lda, B, ldb, p0, p1, part, ldp, first);
  }
}

}  // namespace

// C rows i0..i1-1 (n <= 64 columns, a multiple of 16) += A^T B, A (k x m, lda), B (k x n,
// ldb): a weight gradient dy^T x. Blocks of 64 of the k rows: B's block (64 x n, at most 16 KB)
// stays in L1 while every 6-row strip of C passes over it, each strip's 64 rows of A read once
// for all of C's columns. Each entry's sum runs over the blocks in order, each block one FMA
// chain in order, whatever the row range.
NM_AVX2 void tn_product_avx2(int i0, int i1, int n, int k, const float* A, int lda,
                             const float* B, int ldb, float* C, int ldc) {
  constexpr int KB = 64;
  for (int p0 = 0; p0 < k; p0 += KB) {
    const int kb = k - p0 < KB ? k - p0 : KB;
    const float* Ak = A + size_t(p0) * lda;
    const float* Bk = B + size_t(p0) * ldb;
    int i = i0;
    for (; i + 6 <= i1; i += 6) strip_tn<6>(Ak + i, lda, Bk, ldb, n, kb, C + size_t(i) * ldc, ldc);
    float* c = C + size_t(i) * ldc;
    switch (i1 - i) {
      case 5: strip_tn<5>(Ak + i, lda, Bk, ldb, n, kb, c, ldc); break;
      case 4: strip_tn<4>(Ak + i, lda, Bk, ldb, n, kb, c, ldc); break;
      case 3: strip_tn<3>(Ak + i, lda, Bk, ldb, n, kb, c, ldc); break;
      case 2: strip_tn<2>(Ak + i, lda, Bk, ldb, n, kb, c, ldc); break;
      case 1: strip_tn<1>(Ak + i, lda, Bk, ldb, n, kb, c, ldc); break;
      default: break;
    }
  }
}

// C[m, n] = op(A) B (+ C) for a short inner dimension (k <= 32; the energy synapses' 10-wide
// layers): op(A) = A (m x k, lda) or, when ta, A^T (A k x m). Columns in blocks of 256 (B's
// k x 256 block, <= 32 KB, stays in L1 while all of C's rows pass), rows six at a time.
NM_AVX2 void small_k_product_avx2(bool ta, int m, int n, int k, const float* A, int lda,
                                  const float* B, int ldb, bool acc, float* C, int ldc) {
  const size_t rs = ta ? 1 : size_t(lda), cs = ta ? size_t(lda) : 1;
  for (int j0 = 0; j0 < n; j0 += 256) {
    const int j1 = j0 + 256 < n ? j0 + 256 : n;
    int i = 0;
    for (; i + 6 <= m; i += 6)
      small_k_rows<6>(A + i * rs, rs, cs, k, B, ldb, j0, j1, acc, C + size_t(i) * ldc, ldc);
    const float* a = A + i * rs;
    float* c = C + size_t(i) * ldc;
    switch (m - i) {
      case 5: small_k_rows<5>(a, rs, cs, k, B, ldb, j0, j1, acc, c, ldc); break;
      case 4: small_k_rows<4>(a, rs, cs, k, B, ldb, j0, j1, acc, c, ldc); break;
      case 3: small_k_rows<3>(a, rs, cs, k, B, ldb, j0, j1, acc, c, ldc); break;
      case 2: small_k_rows<2>(a, rs, cs, k, B, ldb, j0, j1, acc, c, ldc); break;
      case 1: small_k_rows<1>(a, rs, cs, k, B, ldb, j0, j1, acc, c, ldc); break;
      default: break;
    }
  }
}

// C[m, n] = A B^T (+ C) for few columns (n <= 16) and a long k: each entry a dot product of a
// row of A (m x k) with a row of B (n x k), in eight lanes over k's blocks of 512 (B's block,
// <= 32 KB, stays in L1 while 16 rows of A pass), the lanes then summed, then the k % 8 tail.
NM_AVX2 void small_n_product_avx2(int m, int n, int k, const float* A, int lda, const float* B,
                                  int ldb, bool acc, float* C, int ldc) {
  constexpr int KB = 512, RB = 16, LDP = 16 * 8;
  alignas(32) float part[RB * LDP];
  const int k8 = k / 8 * 8;
  const int G = (n + (n + 5) / 6 - 1) / ((n + 5) / 6);  // n in groups of at most 6, even sizes
  for (int r0 = 0; r0 < m; r0 += RB) {
    const int r1 = r0 + RB < m ? r0 + RB : m;
    for (int p0 = 0; p0 < k8; p0 += KB) {
      const int p1 = p0 + KB < k8 ? p0 + KB : k8;
      int r = r0;
      for (; r < r1; r += 2) {
        const bool two = r + 2 <= r1;
        for (int o = 0; o < n; o += G) {
          const int g = n - o < G ? n - o : G;
          const float* a = A + size_t(r) * lda;
          float* pp = part + (r - r0) * LDP + 8 * o;
          if (two) dot_groups<2>(g, a, lda, B + size_t(o) * ldb, ldb, p0, p1, pp, LDP, p0 == 0);
          else dot_groups<1>(g, a, lda, B + size_t(o) * ldb, ldb, p0, p1, pp, LDP, p0 == 0);
        }
      }
    }
    for (int r = r0; r < r1; ++r)
      for (int o = 0; o < n; ++o) {
        float s = k8 ? avx2::hsum(_mm256_load_ps(part + (r - r0) * LDP + 8 * o)) : 0.0f;
        for (int p = k8; p < k; ++p) s = std::fma(A[size_t(r) * lda + p], B[size_t(o) * ldb + p], s);
        float& c = C[size_t(r) * ldc + o];
        c = acc ? c + s : s;
      }
  }
}

// dst (m x n, ldd) = scale src^T (+ bias[j] in column j), src n x m (lds): 8 x 8 blocks
// transposed in registers, each entry one rounding (src scale + bias) as the plain loop's.
NM_AVX2 void transpose_avx2(int m, int n, const float* src, int lds, float scale,
                            const float* bias, float* dst, int ldd) {
  const int m8 = m / 8 * 8, n8 = n / 8 * 8;
  const __m256 s = _mm256_set1_ps(scale);
  for (int i = 0; i < m8; i += 8)
    for (int j = 0; j < n8; j += 8) {
      __m256 r[8];
      for (int c = 0; c < 8; ++c) r[c] = _mm256_loadu_ps(src + size_t(j + c) * lds + i);
      transpose8(r);
      const __m256 b = bias ? _mm256_loadu_ps(bias + j) : _mm256_setzero_ps();
      for (int c = 0; c < 8; ++c)
        _mm256_storeu_ps(dst + size_t(i + c) * ldd + j, _mm256_fmadd_ps(r[c], s, b));
    }
  auto one = [&](int i, int j) {
    dst[size_t(i) * ldd + j] = std::fma(src[size_t(j) * lds + i], scale, bias ? bias[j] : 0.0f);
  };
  for (int i = 0; i < m8; ++i)
    for (int j = n8; j < n; ++j) one(i, j);
  for (int i = m8; i < m; ++i)
    for (int j = 0; j < n; ++j) one(i, j);
}

// Bp: panel j (columns 16j..16j+15) is k rows of 16, row p = B[p, 16j..] (tb: B given as its
// transpose, n x k).
NM_AVX2 void pack_panels_avx2(bool tb, int n, int k, const float* B, int ldb, float* Bp) {
  for (int j = 0; j < n; j += 16) {
    float* P = Bp + size_t(j) * k;
    if (tb) {  // 8 x 8 blocks transposed in registers, the last k % 8 columns one by one
      const int k8 = k / 8 * 8;
      for (int c0 = 0; c0 < 16; c0 += 8)
        for (int p = 0; p < k8; p += 8) {
          __m256 r[8];
          for (int c = 0; c < 8; ++c) r[c] = _mm256_loadu_ps(B + size_t(j + c0 + c) * ldb + p);
          transpose8(r);
          for (int c = 0; c < 8; ++c) _mm256_store_ps(P + size_t(p + c) * 16 + c0, r[c]);
        }
      for (int c = 0; c < 16; ++c) {
        const float* b = B + size_t(j + c) * ldb;
        for (int p = k8; p < k; ++p) P[size_t(p) * 16 + c] = b[p];
      }
    } else {
      for (int p = 0; p < k; ++p) {
        const float* b = B + size_t(p) * ldb + j;
        _mm256_store_ps(P + size_t(p) * 16, _mm256_loadu_ps(b));
        _mm256_store_ps(P + size_t(p) * 16 + 8, _mm256_loadu_ps(b + 8));
      }
    }
  }
}

// Rows m0..m1-1 of C (n a multiple of 16), 6 at a time; the next strip's rows of A are asked
// for while the current one runs (they come from memory: the node's activations). gate (laid
// out as C: row i at gate + i ldc, like C) and colsum: see Epi. A, B, C and gate must not
// overlap.
NM_AVX2 void rows_product_avx2(int m0, int m1, int n, int k, const float* A, int lda,
                               const float* Bp, const float* bias, bool acc, const float* gate,
                               float* colsum, float* C, int ldc) {
  const int lines = (k + 15) / 16;  // cache lines per row of A (64-byte lines)
  auto epi = [&](int i) {
    return Epi{bias, acc, gate ? gate + size_t(i) * ldc : nullptr, colsum};
  };
  int i = m0;
  for (; i + 6 <= m1; i += 6) {
    if (i + 12 <= m1)
      for (int q = 0; q < 6 * lines; ++q)
        _mm_prefetch(reinterpret_cast<const char*>(A + size_t(i + 6 + q / lines) * lda + (q % lines) * 16),
                     _MM_HINT_T0);
    strip<6>(A + size_t(i) * lda, lda, Bp, n, k, epi(i), C + size_t(i) * ldc, ldc);
  }
  const float* a = A + size_t(i) * lda;
  float* c = C + size_t(i) * ldc;
  switch (m1 - i) {
    case 5: strip<5>(a, lda, Bp, n, k, epi(i), c, ldc); break;
    case 4: strip<4>(a, lda, Bp, n, k, epi(i), c, ldc); break;
    case 3: strip<3>(a, lda, Bp, n, k, epi(i), c, ldc); break;
    case 2: strip<2>(a, lda, Bp, n, k, epi(i), c, ldc); break;
    case 1: strip<1>(a, lda, Bp, n, k, epi(i), c, ldc); break;
    default: break;
  }
}

}  // namespace nm::simd
#endif
