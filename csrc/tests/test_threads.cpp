// The engine's worker pool (cpu/threads.h): chunks cut by index, nested loops inline, errors
// from any chunk rethrown on the caller, chunk counts capped, workers that have gone to sleep
// woken, two client threads sharing the pool, per-chunk gradient copies folded in chunk order,
// every chunk run exactly once whichever thread claims it, and by the caller alone while the
// workers are held.
// Run under ASan/UBSan by tests/sanitize.sh; the same file passed ThreadSanitizer (docs/
// performance.md, Threads).
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "../cpu/threads.h"
#include "check.h"

using namespace nm::cpu;

static void chunks_and_errors(int threads) {
  set_pool_threads(threads);
  CHECK(pool_threads() == threads);
  std::vector<double> v(100000, 1.0);
  for (int rep = 0; rep < 400; ++rep) {
    std::vector<double> part(size_t(threads), 0.0);
    std::vector<size_t> begins(size_t(threads), 0);
    const int n = parallel_for(v.size(), 1000, [&](int c, size_t b, size_t e) {
      double s = 0;
      for (size_t i = b; i < e; ++i) s += (v[i] += 1);
      part[size_t(c)] = s, begins[size_t(c)] = b;
      int inner = 0;  // a nested loop runs inline, as one chunk
      parallel_for(10, 1, [&](int c2, size_t b2, size_t e2) { inner += (c2 == 0 && b2 == 0 && e2 == 10); });
      CHECK(inner == 1);
    });
    CHECK(n == threads);
    double tot = 0;
    for (int c = 0; c < n; ++c) {
      tot += part[size_t(c)];
      CHECK(begins[size_t(c)] == v.size() * size_t(c) / size_t(n));  // cut by index alone
    }
    CHECK(tot == double(v.size()) * (rep + 2));
    if (rep % 7 == 0)  // an error in a worker's chunk reaches the caller; the pool goes on
      CHECK(nm::test::throws<std::runtime_error>([&] {
        parallel_for(100, 1, [&](int c, size_t, size_t) {
          if (c == threads - 1) throw std::runtime_error("chunk");
        });
      }));
    if (rep % 13 == 0) {  // at most max_chunks chunks
      std::atomic<int> most{0};
      const int m = parallel_for(100, 1, [&](int c, size_t, size_t) {
        int seen = most.load();
        while (c > seen && !most.compare_exchange_weak(seen, c)) {}
      }, 2);
      CHECK(m == 2 && most.load() == 1);
    }
    if (rep % 100 == 99)  // past the spinning: the workers sleep and must be woken
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

static void chunk_grads(int threads) {
  set_pool_threads(threads);
  ChunkGrads<double> g;
  g.track(0, 10);
  g.track(10, 5, false);  // written after the chunks only: no copy
  g.track(15, 10);
  CHECK(g.size() == 20);
  std::vector<double> G(25, 0.0);
  for (int rep = 0; rep < 3; ++rep) {  // the copies are zeroed at every use
    g.reserve(threads);
    const int k = sample_chunks(64, threads, false, [&](int, int m, int c) {
      double* Gc = g.get(G.data(), c);
      for (int i = 0; i < 25; ++i)
        if (i < 10 || i >= 15) Gc[i] += m;
    });
    CHECK(k == threads);
    g.fold(G.data(), k);
  }
  CHECK(G[0] == 3 * 64 && G[24] == 3 * 64 && G[12] == 0);
}

// Each chunk exactly once, whoever runs it: chunks of uneven cost (one sleeps), so the caller,
// done with chunk 0 early, may claim others. And with the workers held (as if asleep or their
// CPUs busy), the caller claims every chunk and the job completes: the old pool, where worker
// i always ran chunk i, waited for them.
static void claims(int threads) {
  set_pool_threads(threads);
  const std::thread::id caller = std::this_thread::get_id();
  for (int rep = 0; rep < 240; ++rep) {
    const bool held = rep >= 200;
    hold_pool_workers(held);
    const size_t nt = size_t(threads);
    std::vector<std::atomic<int>> runs(nt);
    std::vector<std::thread::id> who(nt);
    for (auto& r : runs) r = 0;
    const int n = parallel_for(nt * 10, 1, [&](int c, size_t, size_t) {
      runs[size_t(c)]++;
      who[size_t(c)] = std::this_thread::get_id();
      if (c == 1 && !held && rep % 3 == 0) std::this_thread::sleep_for(std::chrono::microseconds(300));
    });
    CHECK(n == threads);
    for (size_t c = 0; c < nt; ++c) {
      CHECK(runs[c].load() == 1);
      if (c == 0 || held) CHECK(who[c] == caller);
    }
  }
  hold_pool_workers(false);
}

static void two_clients() {
  set_pool_threads(2);
  std::atomic<long> total{0};
  auto client = [&] {
    for (int r = 0; r < 300; ++r)
      parallel_for(5000, 100, [&](int, size_t b, size_t e) { total += long(e - b); });
  };
  std::thread a(client), b(client);
  a.join(), b.join();
  CHECK(total.load() == 2L * 300 * 5000);
}

int main() {
  for (int threads : {2, 3})
    chunks_and_errors(threads), chunk_grads(threads), claims(threads);
  two_clients();
  set_pool_threads(1);
  CHECK(pool_threads() == 1);
  return TEST_MAIN_RESULT();
}
