// The attn2d kernels (cpu/attn2d.h) against independent references (extensions-math.md 2):
// the closed-form 3x3 case, dense softmax attention (plain and causal) when the window covers
// the grid, the clipped neighbourhood and translation equivariance, and 2D RoPE's reference
// rotation, relative positions and inverse. Float64, one sample.
#include <algorithm>
#include <cmath>
#include <vector>

#include "../core/rng.h"
#include "../cpu/attn2d.h"
#include "check.h"

using namespace nm;
using Vec = std::vector<double>;

namespace {

Vec window(const Vec& q, const Vec& k, const Vec& v, int H, int W, int heads, int r, bool raster) {
  const int dh = int(q.size()) / (H * W * heads);
  const attn2d::Grid g(H, W, heads, dh, r, raster);
  Vec out(q.size()), P(size_t(H) * W * heads * g.Wn);
  attn2d::window_forward(g, q.data(), k.data(), v.data(), dh * heads, P.data(), out.data(), 1);
  return out;
}

Vec rope(Vec x, int H, int W, int heads, bool inverse) {
  const attn2d::Grid g(H, W, heads, int(x.size()) / (H * W * heads), 0, false);
  attn2d::rope(g, x.data(), int(x.size()) / (H * W), 1, inverse);
  return x;
}

Vec normal(Rng& rng, size_t n) {
  Vec x(n);
  for (double& a : x) a = rng.normal();
  return x;
}

// Dense softmax attention over all S cells; causal: key j is seen by query i iff j <= i.
Vec dense(const Vec& q, const Vec& k, const Vec& v, int S, int heads, bool causal) {
  const int d = int(q.size()) / S, dh = d / heads;
  Vec out(q.size(), 0.0);
  for (int h = 0; h < heads; ++h)
    for (int i = 0; i < S; ++i) {
      Vec s(S, -INFINITY);
      double m = -INFINITY, sum = 0;
      for (int j = 0; j < S && (!causal || j <= i); ++j) {
        double a = 0;
        for (int c = 0; c < dh; ++c) a += q[i * d + h * dh + c] * k[j * d + h * dh + c];
        s[j] = a / std::sqrt(double(dh));
        m = std::max(m, s[j]);
      }
      for (double& a : s) sum += (a = std::exp(a - m));
      for (int j = 0; j < S; ++j)
        for (int c = 0; c < dh; ++c) out[i * d + h * dh + c] += s[j] / sum * v[j * d + h * dh + c];
    }
  return out;
}

double max_diff(const Vec& a, const Vec& b) {
  double m = a.size() == b.size() ? 0.0 : INFINITY;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

void closed_form() {  // extensions-math.md 2: x = (i-1, j-1) on a 3x3 grid
  Vec x;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) x.push_back(i - 1), x.push_back(j - 1);
  const Vec out = window(x, x, x, 3, 3, 1, 1, false);
  const double A = out[2 * 8];  // cell (2, 2) gives (A, A)
  CHECK_NEAR(A, 0.669762, 1e-6);
  CHECK_NEAR(A, 1 / (1 + std::exp(-1 / std::sqrt(2.0))), 1e-12);  // σ(1/√2)
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      CHECK_NEAR(out[2 * (i * 3 + j)], (i - 1) * A, 1e-12);
      CHECK_NEAR(out[2 * (i * 3 + j) + 1], (j - 1) * A, 1e-12);
    }
  const Vec wide = window(x, x, x, 3, 3, 1, 2, false);
  CHECK_NEAR(wide[0], -0.43595, 1e-5);
  CHECK_NEAR(wide[1], -0.43595, 1e-5);
}

void wide_window_is_dense_attention() {
  Rng rng(0);
  const int shapes[][3] = {{3, 4, 1}, {4, 2, 2}, {1, 5, 1}, {2, 2, 1}};
  for (const auto& s : shapes) {
    const int H = s[0], W = s[1], heads = s[2], n = H * W * 4 * heads;
    const Vec q = normal(rng, n), k = normal(rng, n), v = normal(rng, n);
    CHECK(max_diff(window(q, k, v, H, W, heads, std::max(H, W), false), dense(q, k, v, H * W, heads, false)) < 1e-12);
    const Vec causal = dense(q, k, v, H * W, heads, true);
    CHECK(max_diff(Vec(causal.begin(), causal.begin() + 4 * heads), Vec(v.begin(), v.begin() + 4 * heads)) < 1e-12);
    CHECK(max_diff(window(q, k, v, H, W, heads, std::max(H, W), true), causal) < 1e-12);
  }
}

void clipped_and_translation_equivariant() {
  Rng rng(1);
  const int H = 6, W = 6, d = 3;
  const Vec x = normal(rng, H * W * d);
  const Vec out = window(x, x, x, H, W, 1, 1, false);
  const int cells[][2] = {{0, 0}, {2, 3}, {5, 1}};
  for (const auto& c : cells) {  // softmax over the clipped 3x3 neighbourhood
    const int i = c[0], j = c[1];
    std::vector<int> nb;
    for (int a = std::max(0, i - 1); a <= std::min(H - 1, i + 1); ++a)
      for (int b = std::max(0, j - 1); b <= std::min(W - 1, j + 1); ++b) nb.push_back(a * W + b);
    Vec s;
    double m = -INFINITY, sum = 0;
    for (int n : nb) {
      double a = 0;
      for (int t = 0; t < d; ++t) a += x[n * d + t] * x[(i * W + j) * d + t];
      s.push_back(a / std::sqrt(double(d)));
      m = std::max(m, s.back());
    }
    for (double& a : s) sum += (a = std::exp(a - m));
    for (int t = 0; t < d; ++t) {
      double want = 0;
      for (size_t q = 0; q < nb.size(); ++q) want += s[q] / sum * x[nb[q] * d + t];
      CHECK_NEAR(out[(i * W + j) * d + t], want, 1e-12);
    }
  }
  Vec shifted(x.size());  // rolled by (1, 1): interior cells move with it
  for (int i = 0; i < H; ++i)
    for (int j = 0; j < W; ++j)
      for (int t = 0; t < d; ++t) shifted[(((i + 1) % H) * W + (j + 1) % W) * d + t] = x[(i * W + j) * d + t];
  const Vec out2 = window(shifted, shifted, shifted, H, W, 1, 1, false);
  for (int i = 1; i < 4; ++i)
    for (int j = 1; j < 4; ++j)
      for (int t = 0; t < d; ++t) CHECK_NEAR(out2[((i + 1) * W + j + 1) * d + t], out[(i * W + j) * d + t], 1e-12);
}

double dot(const Vec& a, int i, const Vec& b, int j, int dh) {
  double s = 0;
  for (int c = 0; c < dh; ++c) s += a[i * dh + c] * b[j * dh + c];
  return s;
}

void rope_reference_and_relative_positions() {
  Vec q(3 * 3 * 4, 0.0);
  q[(1 * 3 + 0) * 4] = 1;  // [1, 0, 0, 0] at (1, 0)
  const Vec rot = rope(q, 3, 3, 1, false);
  CHECK_NEAR(rot[12], 0.540302, 1e-6);
  CHECK_NEAR(rot[13], 0.841471, 1e-6);
  CHECK_NEAR(rot[14], 0.0, 1e-12);
  CHECK_NEAR(rot[15], 0.0, 1e-12);
  CHECK_NEAR(rot[12], std::cos(1.0), 1e-12);  // · the key [1, 0, 0, 0] at (0, 0): cos(1)
  Rng rng(2);
  const int H = 5, W = 4, dh = 8;
  const Vec qv = normal(rng, dh), kv = normal(rng, dh);
  Vec Q0, K0;
  for (int s = 0; s < H * W; ++s) Q0.insert(Q0.end(), qv.begin(), qv.end()), K0.insert(K0.end(), kv.begin(), kv.end());
  const Vec Q = rope(Q0, H, W, 1, false), K = rope(K0, H, W, 1, false);
  auto at = [&](int i, int j) { return i * W + j; };
  CHECK_NEAR(dot(Q, at(1, 0), K, at(0, 0), dh), dot(Q, at(2, 1), K, at(1, 1), dh), 1e-12);  // same offset
  CHECK_NEAR(dot(Q, at(4, 3), K, at(2, 1), dh), dot(Q, at(2, 2), K, at(0, 0), dh), 1e-12);
  CHECK(std::abs(dot(Q, at(1, 0), K, at(0, 0), dh) - dot(Q, at(1, 0), K, at(1, 1), dh)) > 1e-6);
  CHECK(max_diff(rope(Q, H, W, 1, true), Q0) < 1e-12);
}


// The engine's layout: q, k, v as the thirds of one (rows, cells, 3, d) product, ld = 3d; the
// float kernels (8-lane dot products, float RoPE tables) against the double ones. Head sizes
// that are multiples of 8 take the AVX2 kernels on CPUs that have it (attn2d_avx2.cpp): heads
// fewer than, more than and not a multiple of 8, widths with and without a remainder of 32.
void strided_layout_and_float_kernels(int heads, int dh, int r, int H = 5, int W = 4) {
  Rng rng(3 + heads * dh + r);
  const int d = heads * dh, S = H * W, rows = 2;
  for (bool raster : {false, true}) {
    const attn2d::Grid g(H, W, heads, dh, r, raster);
    const size_t n = size_t(rows) * S * d, np = size_t(rows) * S * heads * g.Wn;
    const Vec q = normal(rng, n), k = normal(rng, n), v = normal(rng, n), dout = normal(rng, n);
    Vec qkv(3 * n);  // interleaved per cell: [q | k | v]
    for (size_t c = 0; c < size_t(rows) * S; ++c)
      for (int t = 0; t < d; ++t)
        qkv[c * 3 * d + t] = q[c * d + t], qkv[c * 3 * d + d + t] = k[c * d + t],
        qkv[c * 3 * d + 2 * d + t] = v[c * d + t];
    Vec out(n), P(np), out3(n), P3(np);
    attn2d::window_forward(g, q.data(), k.data(), v.data(), d, P.data(), out.data(), rows);
    attn2d::window_forward(g, qkv.data(), qkv.data() + d, qkv.data() + 2 * d, 3 * d, P3.data(),
                           out3.data(), rows);
    CHECK(max_diff(out, out3) < 1e-14 && max_diff(P, P3) < 1e-14);
    Vec dq(n, 0.0), dk(n, 0.0), dv(n, 0.0), dqkv(3 * n, 5.0);  // overwritten, not added to
    attn2d::window_backward(g, q.data(), k.data(), v.data(), d, P.data(), dout.data(), dq.data(),
                            dk.data(), dv.data(), rows);
    attn2d::window_backward(g, qkv.data(), qkv.data() + d, qkv.data() + 2 * d, 3 * d, P.data(),
                            dout.data(), dqkv.data(), dqkv.data() + d, dqkv.data() + 2 * d, rows);
    double strided = 0;
    for (size_t c = 0; c < size_t(rows) * S; ++c)
      for (int t = 0; t < d; ++t)
        strided = std::max({strided, std::abs(dqkv[c * 3 * d + t] - dq[c * d + t]),
                            std::abs(dqkv[c * 3 * d + d + t] - dk[c * d + t]),
                            std::abs(dqkv[c * 3 * d + 2 * d + t] - dv[c * d + t])});
    CHECK(strided < 1e-14);
    // float: the same numbers rounded, to float precision
    auto f = [](const Vec& x) { return std::vector<float>(x.begin(), x.end()); };
    auto back = [](const std::vector<float>& x) { return Vec(x.begin(), x.end()); };
    std::vector<float> fq = f(q), fk = f(k), fv = f(v), fo(n), fP(np), fdo = f(dout);
    std::vector<float> fdq(n, 7.f), fdk(n, 7.f), fdv(n, 7.f);  // overwritten, not added to
    attn2d::window_forward(g, fq.data(), fk.data(), fv.data(), d, fP.data(), fo.data(), rows);
    attn2d::window_backward(g, fq.data(), fk.data(), fv.data(), d, fP.data(), fdo.data(),
                            fdq.data(), fdk.data(), fdv.data(), rows);
    CHECK(max_diff(back(fo), out) < 1e-5 && max_diff(back(fP), P) < 1e-5);
    CHECK(max_diff(back(fdq), dq) < 1e-5 && max_diff(back(fdk), dk) < 1e-5 &&
          max_diff(back(fdv), dv) < 1e-5);
    for (bool inverse : {false, true}) {  // RoPE on the q third in place, float vs double
      Vec x = qkv;
      std::vector<float> fx = f(qkv);
      attn2d::rope(g, x.data(), 3 * d, rows, inverse);
      attn2d::rope(g, fx.data(), 3 * d, rows, inverse);
      CHECK(max_diff(back(fx), x) < 1e-5);
      Vec moved(x.begin() + d, x.end()), kept(qkv.begin() + d, qkv.end());
      double others = 0;  // the k and v thirds of cell 0 are not touched
      for (int t = 0; t < 2 * d; ++t) others = std::max(others, std::abs(moved[t] - kept[t]));
      CHECK(others == 0);
      CHECK(max_diff(x, qkv) > 1e-3);
    }
  }
}

// qkv_forward / qkv_backward with RoPE (what the node runs; for heads of 16 on AVX2 the flat
// kernels rotate rows inside, attn2d_flat.cpp) against RoPE as separate passes around the
// window kernels: the same bits, in the saved Q/K/V, P, the output and dqkv.
void fused_rope_equals_separate_passes(int heads, int r, int H, int W) {
  Rng rng(11 + heads + r);
  const int dh = 16, d = heads * dh, S = H * W, rows = 3;
  for (bool raster : {false, true}) {
    const attn2d::Grid g(H, W, heads, dh, r, raster);
    const size_t n3 = size_t(rows) * S * 3 * d, n = size_t(rows) * S * d;
    const size_t np = size_t(rows) * S * heads * g.Wn;
    const Vec x = normal(rng, n3), dy = normal(rng, n);
    std::vector<float> a(x.begin(), x.end()), b = a, dout(dy.begin(), dy.end());
    std::vector<float> P1(np), P2(np), o1(n), o2(n), g1(n3, 7.f), g2(n3, 7.f);
    attn2d::qkv_forward(g, a.data(), true, P1.data(), o1.data(), rows);
    attn2d::rope(g, b.data(), 3 * d, rows, false);
    attn2d::rope(g, b.data() + d, 3 * d, rows, false);
    attn2d::window_forward(g, b.data(), b.data() + d, b.data() + 2 * d, 3 * d, P2.data(), o2.data(), rows);
    CHECK(a == b && P1 == P2 && o1 == o2);
    attn2d::qkv_backward(g, a.data(), true, P1.data(), dout.data(), g1.data(), rows);
    attn2d::window_backward(g, b.data(), b.data() + d, b.data() + 2 * d, 3 * d, P2.data(), dout.data(),
                            g2.data(), g2.data() + d, g2.data() + 2 * d, rows);
    attn2d::rope(g, g2.data(), 3 * d, rows, true);
    attn2d::rope(g, g2.data() + d, 3 * d, rows, true);
    CHECK(g1 == g2);
  }
}

}  // namespace

int main() {
  closed_form();
  wide_window_is_dense_attention();
  clipped_and_translation_equivariant();
  rope_reference_and_relative_positions();
  strided_layout_and_float_kernels(3, 20, 1);  // the portable float kernels
  strided_layout_and_float_kernels(3, 16, 1);
  strided_layout_and_float_kernels(8, 16, 1);
  strided_layout_and_float_kernels(9, 8, 2);
  strided_layout_and_float_kernels(5, 8, 1);
  strided_layout_and_float_kernels(2, 48, 1);
  strided_layout_and_float_kernels(16, 8, 1);  // two whole groups of eight heads
  strided_layout_and_float_kernels(2, 16, 8);  // 289 slots: over kAvx2MaxSlots, the portable path
  strided_layout_and_float_kernels(3, 16, 2, 3, 7);  // wider than tall: the backward's lag r (W + 1)
  strided_layout_and_float_kernels(8, 8, 3, 2, 9);   // a window wider than the grid is tall
  // the flat kernels (attn2d_flat.cpp: 2, 4 or 8 heads of 8, 16 or 32)
  strided_layout_and_float_kernels(4, 16, 1);
  strided_layout_and_float_kernels(2, 8, 2);
  strided_layout_and_float_kernels(4, 32, 1, 3, 5);
  strided_layout_and_float_kernels(2, 16, 1, 1, 6);  // a grid thinner than the window
  fused_rope_equals_separate_passes(4, 1, 5, 6);
  fused_rope_equals_separate_passes(8, 1, 4, 4);
  fused_rope_equals_separate_passes(2, 2, 4, 5);
  fused_rope_equals_separate_passes(3, 1, 4, 4);  // 3 heads: the general kernels and passes
  return TEST_MAIN_RESULT();
}
