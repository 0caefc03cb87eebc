// The arena's update outside the deferred weights (cpu/update.h Updater::sgd_outside) and the
// deferred products' bookkeeping (cpu/deferred.h): skipped ranges at the start, middle and end
// of the arena left as they were (their gradients not even looked at), the rest p - rate g on
// 1 and 2 threads, a refused update naming the parameter and changing nothing; the zeroing that
// spares the deferred part, the bounds (NaN, a rate past the float range, weights near the
// edge) and W -= rate Aᵀ B against the product in double.
// Run under ASan/UBSan by tests/sanitize.sh.
#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "../cpu/deferred.h"
#include "../cpu/threads.h"
#include "../cpu/update.h"
#include "check.h"
#include "neuromorph/errors.h"

using namespace nm;
using nm::cpu::LineVector;

namespace {

// Parameters p0..p4 over 60 017 entries; p0, p2, p4 (start, middle, end) are skipped.
std::vector<ParamInfo> layout() {
  const size_t sizes[] = {3000, 100, 46900, 17, 10000};
  std::vector<ParamInfo> info;
  size_t at = 0;
  for (int i = 0; i < 5; ++i) {
    info.push_back({"p" + std::to_string(i), {int64_t(sizes[i])}, at, sizes[i]});
    at += sizes[i];
  }
  return info;
}

void sgd_outside(int threads) {
  cpu::set_pool_threads(threads);
  const std::vector<ParamInfo> info = layout();
  const size_t n = info.back().offset + info.back().size;
  std::vector<std::pair<size_t, size_t>> skip;
  for (int i : {0, 2, 4}) skip.emplace_back(info[size_t(i)].offset, info[size_t(i)].size);
  OptimConfig opt;
  cpu::Updater<float> upd(info, opt);
  upd.allocate(n);
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  LineVector<float> p(n);
  std::vector<float> g(n);
  for (size_t i = 0; i < n; ++i) p[i] = nd(rng), g[i] = nd(rng);
  for (int i : {0, 2, 4}) g[info[size_t(i)].offset + 5] = std::numeric_limits<float>::quiet_NaN();
  const LineVector<float> p0 = p;
  const double rate = 0.25;
  for (int rep = 0; rep < 2; ++rep) {  // twice: the aside buffer's stale values must not leak
    upd.sgd_outside(p, g.data(), rate, true, 0, skip);
    for (size_t i = 0; i < n; ++i) {
      bool skipped = false;
      for (const auto& [o, m] : skip) skipped = skipped || (i >= o && i < o + m);
      const double want = skipped ? p0[i] : double(p0[i]) - (rep + 1) * rate * double(g[i]);
      if (skipped) CHECK(p[i] == p0[i]);
      else CHECK_NEAR(p[i], want, 1e-5 * (1 + std::fabs(want)));
    }
  }
  const LineVector<float> kept = p;
  g[info[3].offset + 2] = std::numeric_limits<float>::infinity();
  bool named = false;
  try {
    upd.sgd_outside(p, g.data(), rate, true, 4, skip);
  } catch (const Diverged& e) {
    named = std::string(e.what()).find("gradient of 'p3'") != std::string::npos &&
            std::string(e.what()).find("batch 4") != std::string::npos;
  }
  CHECK(named);
  CHECK(p == kept);
  cpu::set_pool_threads(1);
}

// A node that defers two weights of the arena (offsets 40 and 0: declared out of order).
struct Fake final : StructNode<float> {
  std::vector<Deferred> kept;
  bool defer = false;
  void declare(const AddParam&) override {}
  void allocate(int) override {}
  void init(Rng&, float*) const override {}
  void forward(const float*, const float*, float*, int, int, double*) override {}
  void backward(const float*, float*, const float*, const float*, float*, int, int, double) override {}
  void deferrable(std::vector<std::pair<size_t, size_t>>& out) const override {
    out.emplace_back(40, 12), out.emplace_back(0, 30);
  }
  void set_defer(bool on) override { defer = on; }
  void deferred(std::vector<Deferred>& out) const override { out.insert(out.end(), kept.begin(), kept.end()); }
};

void deferred_products() {
  std::vector<std::unique_ptr<StructNode<float>>> nodes;
  nodes.push_back(nullptr);
  nodes.push_back(std::make_unique<Fake>());
  Fake& node = static_cast<Fake&>(*nodes[1]);
  cpu::DeferredUpdates<float> du;
  du.declare(nodes);
  CHECK(du.ranges().size() == 2 && du.ranges()[0].first == 0 && du.ranges()[1].first == 40);
  CHECK(du.worth(84) && !du.worth(85));
  std::vector<float> G(60, 1.f);
  du.zero(G.data(), G.size(), true);
  for (size_t i = 0; i < G.size(); ++i) CHECK(G[i] == ((i < 30 || (i >= 40 && i < 52)) ? 1.f : 0.f));
  du.zero(G.data(), G.size(), false);
  for (float v : G) CHECK(v == 0.f);

  // W0 (5 x 6 at 0) and W1 (3 x 4 at 40) from products over k = 7 rows
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> A0(7 * 5), B0(7 * 6), A1(7 * 3), B1(7 * 4), P(60);
  for (auto* v : {&A0, &B0, &A1, &B1, &P})
    for (float& x : *v) x = nd(rng);
  node.kept = {{0, 5, 6, 7, A0.data(), B0.data()}};
  CHECK(!du.collect(nodes));  // W1's product missing: not exactly the declared weights
  node.kept.push_back({40, 3, 4, 7, A1.data(), B1.data()});
  CHECK(du.collect(nodes));
  CHECK(du.safe(P.data(), 0.5));
  const std::vector<float> P0 = P;
  du.apply(P.data(), 0.5);
  du.into_gradients(G.data());
  for (const auto& [w, m, n, A, B] : {std::make_tuple(0, 5, 6, &A0, &B0), std::make_tuple(40, 3, 4, &A1, &B1)})
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        double s = 0;
        for (int r = 0; r < 7; ++r) s += double((*A)[size_t(r * m + i)]) * (*B)[size_t(r * n + j)];
        const size_t at = size_t(w + i * n + j);
        CHECK_NEAR(G[at], s, 1e-5 * (1 + std::fabs(s)));
        CHECK_NEAR(P[at], P0[at] - 0.5 * s, 1e-5 * (1 + std::fabs(s)));
      }
  for (size_t i = 30; i < 40; ++i) CHECK(P[i] == P0[i] && G[i] == 0.f);

  CHECK(!du.safe(P.data(), 1e39));  // past the float range
  CHECK(!du.safe(P.data(), 1e37));  // rate G past it
  CHECK(du.safe(P.data(), 1.0));
  P[3] = 3.0e38f;  // weights near the edge, set from outside: bounds forgotten, then refused
  du.forget();
  CHECK(!du.safe(P.data(), 1.0));
  P[3] = 1.f;
  du.forget();
  CHECK(du.safe(P.data(), 1.0));
  const float a0 = A0[2], b0 = B0[3];
  A0[2] = 1e20f, B0[3] = 1e20f;  // G past the float range: refused even at a rate that hides it
  CHECK(!du.safe(P.data(), 1e-30));
  A0[2] = a0, B0[3] = b0;
  CHECK(du.safe(P.data(), 1e-30));
  A1[4] = std::numeric_limits<float>::quiet_NaN();
  CHECK(!du.safe(P.data(), 1.0));
}

}  // namespace

int main() {
  sgd_outside(1);
  sgd_outside(2);
  deferred_products();
  return TEST_MAIN_RESULT();
}
