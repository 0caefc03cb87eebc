// The float products cut over the worker threads (cpu/gemm.cpp): with a fixed thread count the
// bits of C never depend on where C lies in memory (the cut points are column indices, not
// addresses: an address-based cut had made two identical runs differ), and a cut product equals
// the one-thread product to rounding. Shapes whose columns are not a multiple of the cut unit.
#include <cmath>
#include <cstring>
#include <vector>

#include "../core/rng.h"
#include "../cpu/gemm.h"
#include "../cpu/threads.h"
#include "check.h"

using namespace nm;

namespace {

// n draws of the standard normal
std::vector<float> normals(Rng& rng, size_t n) {
  std::vector<float> v(n);
  for (float& x : v) x = float(rng.normal());
  return v;
}

std::vector<float> product(const std::vector<float>& A, const std::vector<float>& B, int m, int n,
                           int k, bool tb, int offset) {
  std::vector<float> buf(size_t(m) * n + 64, 0.0f);  // C starts `offset` floats into buf
  float* C = buf.data() + offset;
  cpu::gemm<float>(false, tb, m, n, k, 1.0f, A.data(), k, B.data(), tb ? k : n, 0.0f, C, n);
  return std::vector<float>(C, C + size_t(m) * n);
}

void cut_products_do_not_depend_on_the_address() {
  Rng rng(5);
  for (bool tb : {false, true})
    for (int n : {200, 77}) {
      const int m = 96, k = 300;  // 96 x n x 300: above the cut threshold
      std::vector<float> A(size_t(m) * k), B(size_t(k) * n);
      for (float& a : A) a = float(rng.normal());
      for (float& b : B) b = float(rng.normal());
      cpu::set_pool_threads(1), cpu::set_blas_threads(1);
      const std::vector<float> one = product(A, B, m, n, k, tb, 0);
      cpu::set_pool_threads(2), cpu::set_blas_threads(2);
      const std::vector<float> first = product(A, B, m, n, k, tb, 0);
      for (int offset = 1; offset < 16; ++offset) {
        const std::vector<float> moved = product(A, B, m, n, k, tb, offset);
        CHECK(std::memcmp(moved.data(), first.data(), first.size() * sizeof(float)) == 0);
      }
      // both against the product in double, relative to sum_k |a_ik b_kj| (float rounding)
      double worst = 0;
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) {
          double exact = 0, mag = 0;
          for (int t = 0; t < k; ++t) {
            const double ab = double(A[size_t(i) * k + t]) * (tb ? B[size_t(j) * k + t] : B[size_t(t) * n + j]);
            exact += ab, mag += std::fabs(ab);
          }
          for (const auto* c : {&one, &first})
            worst = std::fmax(worst, std::fabs((*c)[size_t(i) * n + j] - exact) / mag);
        }
      CHECK(worst < 1e-6);
    }
  cpu::set_pool_threads(1), cpu::set_blas_threads(1);
}

// The own AVX2 products (gemm_avx2.cpp) against the product in double, relative to
// sum_k |a b| (float rounding): rows_product in its four starts (zero, bias, C, C + bias) with
// B as given and transposed, tn_product (C += A^T B); row counts that leave strips of 1-5 rows,
// odd k; 1 and 2 threads give the same bits (each entry one FMA chain, any row range).
void own_products_equal_the_double_product() {
  if (!cpu::rows_product(false, 64, 16, 16, std::vector<float>(64 * 16).data(), 16,
                         std::vector<float>(16 * 16).data(), 16, nullptr, false,
                         std::vector<float>(64 * 16).data(), 16))
    return;  // no AVX2 (or NEUROMORPH_NO_AVX2): the callers take gemm, tested above
  Rng rng(11);
  auto normal = [&](size_t n) { return normals(rng, n); };
  struct Shape { int m, n, k; };
  // (331 x 256 x 64, 256 x 64 x 300 and the flipped 64 x 112 x 640 reach the 2-thread cut)
  for (const Shape sh : {Shape{64, 16, 16}, Shape{200, 48, 77}, Shape{331, 256, 64}, Shape{97, 64, 512},
                          Shape{256, 64, 300}, Shape{64, 112, 640}}) {
    const int m = sh.m, n = sh.n, k = sh.k;
    const std::vector<float> A = normal(size_t(m) * k), B = normal(size_t(k) * n), bias = normal(n),
                             C0 = normal(size_t(m) * n);
    for (bool tb : {false, true})
      for (int start = 0; start < 4 && k <= 512; ++start) {  // (rows_product: k <= 512)
        const bool acc = start & 1, with_bias = start & 2;
        std::vector<float> Bt(B.size());  // B as its transpose (n x k) for tb
        for (int t = 0; t < k; ++t)
          for (int j = 0; j < n; ++j) Bt[size_t(j) * k + t] = B[size_t(t) * n + j];
        std::vector<float> bits[2];
        for (int threads : {1, 2}) {
          cpu::set_pool_threads(threads);
          std::vector<float> C = C0;
          CHECK(cpu::rows_product(tb, m, n, k, A.data(), k, tb ? Bt.data() : B.data(), tb ? k : n,
                                  with_bias ? bias.data() : nullptr, acc, C.data(), n));
          bits[threads - 1] = C;
        }
        CHECK(std::memcmp(bits[0].data(), bits[1].data(), bits[0].size() * sizeof(float)) == 0);
        double worst = 0;
        for (int i = 0; i < m; ++i)
          for (int j = 0; j < n; ++j) {
            double exact = (acc ? C0[size_t(i) * n + j] : 0.0) + (with_bias ? bias[j] : 0.0);
            double mag = std::fabs(exact);
            for (int t = 0; t < k; ++t) {
              const double ab = double(A[size_t(i) * k + t]) * B[size_t(t) * n + j];
              exact += ab, mag += std::fabs(ab);
            }
            worst = std::fmax(worst, std::fabs(bits[0][size_t(i) * n + j] - exact) / mag);
          }
        CHECK(worst < 1e-6);
      }
    // tn_product: C (m x n) += A'^T B' with A' = k x m, B' = k x n (n <= 64, or m <= 64 a
    // multiple of 16 through C's transpose; k >= 256)
    if ((n > 64 && (m > 64 || m % 16)) || k < 256) continue;
    const std::vector<float> At = normal(size_t(k) * m), Bk = normal(size_t(k) * n);
    std::vector<float> bits[2];
    for (int threads : {1, 2}) {
      cpu::set_pool_threads(threads);
      std::vector<float> C = C0;
      CHECK(cpu::tn_product(m, n, k, At.data(), m, Bk.data(), n, C.data(), n));
      bits[threads - 1] = C;
    }
    CHECK(std::memcmp(bits[0].data(), bits[1].data(), bits[0].size() * sizeof(float)) == 0);
    double worst = 0;
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        double exact = C0[size_t(i) * n + j], mag = std::fabs(exact);
        for (int t = 0; t < k; ++t) {
          const double ab = double(At[size_t(t) * m + i]) * Bk[size_t(t) * n + j];
          exact += ab, mag += std::fabs(ab);
        }
        worst = std::fmax(worst, std::fabs(bits[0][size_t(i) * n + j] - exact) / mag);
      }
    CHECK(worst < 1e-6);
  }
  // the gated form: C = (A B) ⊙ gate, colsum += C's column sums (run whole on any thread count)
  {
    const int m = 137, n = 48, k = 40;
    const std::vector<float> A = normal(size_t(m) * k), B = normal(size_t(k) * n),
                             gate = normal(size_t(m) * n), cs0 = normal(n);
    std::vector<float> bits[2], sums[2];
    for (int threads : {1, 2}) {
      cpu::set_pool_threads(threads);
      std::vector<float> C(size_t(m) * n), cs = cs0;
      CHECK(cpu::rows_product(false, m, n, k, A.data(), k, B.data(), n, nullptr, false, C.data(), n,
                              gate.data(), cs.data()));
      bits[threads - 1] = C, sums[threads - 1] = cs;
    }
    CHECK(bits[0] == bits[1] && sums[0] == sums[1]);
    double worst = 0, worst_sum = 0;
    for (int j = 0; j < n; ++j) {
      double col = cs0[j], col_mag = std::fabs(col);
      for (int i = 0; i < m; ++i) {
        double exact = 0, mag = 0;
        for (int t = 0; t < k; ++t) {
          const double ab = double(A[size_t(i) * k + t]) * B[size_t(t) * n + j];
          exact += ab, mag += std::fabs(ab);
        }
        const double g = gate[size_t(i) * n + j];
        worst = std::fmax(worst, std::fabs(bits[0][size_t(i) * n + j] - exact * g) / (mag * std::fabs(g) + 1e-30));
        col += exact * g, col_mag += mag * std::fabs(g);
      }
      worst_sum = std::fmax(worst_sum, std::fabs(sums[0][j] - col) / col_mag);
    }
    CHECK(worst < 1e-6);
    CHECK(worst_sum < 1e-5);
  }
  // strided operands: A, B and C rows longer than the product reads (leading dimensions)
  {
    const int m = 70, n = 32, k = 24, lda = 40, ldb = 37, ldc = 48;
    const std::vector<float> A = normal(size_t(m) * lda), B = normal(size_t(n) * ldb);  // B as n x k
    std::vector<float> C(size_t(m) * ldc, 7.0f);
    CHECK(cpu::rows_product(true, m, n, k, A.data(), lda, B.data(), ldb, nullptr, false, C.data(), ldc));
    double worst = 0;
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < ldc; ++j) {
        if (j >= n) {  // outside C's columns: untouched
          CHECK(C[size_t(i) * ldc + j] == 7.0f);
          continue;
        }
        double exact = 0, mag = 0;
        for (int t = 0; t < k; ++t) {
          const double ab = double(A[size_t(i) * lda + t]) * B[size_t(j) * ldb + t];
          exact += ab, mag += std::fabs(ab);
        }
        worst = std::fmax(worst, std::fabs(C[size_t(i) * ldc + j] - exact) / mag);
      }
    CHECK(worst < 1e-6);
  }
  cpu::set_pool_threads(1);
  // outside their range they decline (the callers take gemm)
  std::vector<float> z(64 * 64);
  CHECK(!cpu::rows_product(false, 64, 24, 16, z.data(), 16, z.data(), 24, nullptr, false, z.data(), 24));
  CHECK(!cpu::tn_product(64, 24, 256, z.data(), 64, z.data(), 24, z.data(), 24));
}

// Dense layers of 32 and 48 rows take the weights as the own product's row operand (gemm.cpp
// by_weights): the forward, the weight gradient and the fused SGD step against the product in
// double, and with 1 and 2 threads the same bits (the cut is by the weights' six-row strips).
void dense_layers_at_32_and_48_rows() {
  // without AVX2 these layers take OpenBLAS, whose cut pieces round differently
  const bool own = cpu::rows_product(false, 64, 16, 16, std::vector<float>(64 * 16).data(), 16,
                                     std::vector<float>(16 * 16).data(), 16, nullptr, false,
                                     std::vector<float>(64 * 16).data(), 16);
  Rng rng(13);
  auto normal = [&](size_t n) { return normals(rng, n); };
  struct Shape { int rows, in, out; };
  for (const Shape s : {Shape{32, 400, 352}, Shape{48, 208, 130}}) {
    const std::vector<float> u = normal(size_t(s.rows) * s.in), W = normal(size_t(s.out) * s.in),
                             b = normal(size_t(s.out)), dz = normal(size_t(s.rows) * s.out);
    const float lr = 0.05f;
    std::vector<float> z[2], dW[2], db[2], Wn[2], bn[2];
    for (int threads : {1, 2}) {
      cpu::set_pool_threads(threads);
      const int t = threads - 1;
      z[t].assign(size_t(s.rows) * s.out, 0.0f);
      cpu::dense_forward<float>(u.data(), W.data(), b.data(), z[t].data(), s.rows, s.in, s.out);
      dW[t].assign(W.size(), 1.0f), db[t].assign(b.size(), 1.0f);  // gradients accumulate
      cpu::dense_backward<float>(u.data(), W.data(), dz.data(), dW[t].data(), db[t].data(),
                                 nullptr, s.rows, s.in, s.out);
      Wn[t] = W, bn[t] = b;
      cpu::dense_sgd_update(u.data(), Wn[t].data(), dz.data(), bn[t].data(), s.rows, s.in, s.out, lr);
    }
    cpu::set_pool_threads(1);
    if (own) CHECK(z[0] == z[1] && dW[0] == dW[1] && Wn[0] == Wn[1]);
    double wz = 0, wg = 0, wu = 0;
    for (int r = 0; r < s.rows; ++r)
      for (int o = 0; o < s.out; ++o) {
        double exact = b[o], mag = std::fabs(b[o]);
        for (int i = 0; i < s.in; ++i) {
          const double p = double(u[size_t(r) * s.in + i]) * W[size_t(o) * s.in + i];
          exact += p, mag += std::fabs(p);
        }
        wz = std::fmax(wz, std::fabs(z[0][size_t(r) * s.out + o] - exact) / mag);
      }
    for (int o = 0; o < s.out; ++o)
      for (int i = 0; i < s.in; ++i) {
        double g = 0, mag = 0;
        for (int r = 0; r < s.rows; ++r) {
          const double p = double(dz[size_t(r) * s.out + o]) * u[size_t(r) * s.in + i];
          g += p, mag += std::fabs(p);
        }
        const size_t at = size_t(o) * s.in + i;
        wg = std::fmax(wg, std::fabs(dW[0][at] - (1.0 + g)) / (1.0 + mag));
        wu = std::fmax(wu, std::fabs(Wn[0][at] - (W[at] - double(lr) * g)) / (std::fabs(W[at]) + lr * mag));
      }
    CHECK(wz < 1e-6);
    CHECK(wg < 1e-6);
    CHECK(wu < 1e-6);
    for (int o = 0; o < s.out; ++o) {
      double g = 0;
      for (int r = 0; r < s.rows; ++r) g += dz[size_t(r) * s.out + o];
      CHECK(std::fabs(db[0][o] - (1.0 + g)) < 1e-4);
      CHECK(std::fabs(bn[0][o] - (b[o] - double(lr) * g)) < 1e-5);
    }
  }
}

// The products with one short side (gemm.cpp skinny: the energy synapses' 10-wide layer
// against 1000 units): C = A B with k <= 16, C = A^T B for few rows of C, C = A B^T for few
// columns, each with beta 0 and 1, against the product in double. The shapes leave remainders
// everywhere: rows outside whole strips of 6 (or pairs), columns outside 16- and 8-column steps,
// k outside 8-lane steps and across the 512-long blocks of the dot products.
void skinny_products_equal_the_double_product() {
  Rng rng(17);
  auto normal = [&](size_t n) { return normals(rng, n); };
  struct Shape { bool ta, tb; int m, n, k; };
  for (const Shape s : {Shape{false, false, 13, 300, 10}, Shape{false, false, 32, 1000, 16},
                        Shape{false, false, 64, 259, 3}, Shape{true, false, 10, 1000, 32},
                        Shape{true, false, 7, 265, 17}, Shape{false, true, 33, 10, 1003},
                        Shape{false, true, 20, 16, 300}, Shape{false, true, 5, 13, 517}}) {
    const int lda = s.ta ? s.m + 3 : s.k + 5, ldb = s.tb ? s.k + 2 : s.n + 7, ldc = s.n + 4;
    const std::vector<float> A = normal(size_t(s.ta ? s.k : s.m) * lda),
                             B = normal(size_t(s.tb ? s.n : s.k) * ldb);
    for (float beta : {0.0f, 1.0f}) {
      std::vector<float> C = normal(size_t(s.m) * ldc);
      const std::vector<float> C0 = C;
      cpu::gemm<float>(s.ta, s.tb, s.m, s.n, s.k, 1.0f, A.data(), lda, B.data(), ldb, beta,
                       C.data(), ldc);
      double worst = 0;
      for (int i = 0; i < s.m; ++i)
        for (int j = 0; j < ldc; ++j) {
          const size_t at = size_t(i) * ldc + j;
          if (j >= s.n) {  // outside C's columns: untouched
            CHECK(C[at] == C0[at]);
            continue;
          }
          double exact = beta * double(C0[at]), mag = std::fabs(exact) + 1e-30;
          for (int p = 0; p < s.k; ++p) {
            const double a = s.ta ? A[size_t(p) * lda + i] : A[size_t(i) * lda + p];
            const double b = s.tb ? B[size_t(j) * ldb + p] : B[size_t(p) * ldb + j];
            exact += a * b, mag += std::fabs(a * b);
          }
          worst = std::fmax(worst, std::fabs(C[at] - exact) / mag);
        }
      CHECK(worst < 1e-6);
    }
  }
}

}  // namespace

int main() {
  cut_products_do_not_depend_on_the_address();
  own_products_equal_the_double_product();
  dense_layers_at_32_and_48_rows();
  skinny_products_equal_the_double_product();
  return TEST_MAIN_RESULT();
}
