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

}  // namespace

int main() {
  cut_products_do_not_depend_on_the_address();
  return TEST_MAIN_RESULT();
}
