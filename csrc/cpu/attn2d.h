// Kernels of the attn2d node (extensions-math.md section 2e): local 2D window attention on an
// HxW grid and 2D axial RoPE. The window of cell (i, j) is clipped at the borders; under the
// raster mask a key is seen only when its raster index is <= the query's. Neither kernel
// materialises an S x S matrix: probabilities are kept per (cell, head, window slot).
#pragma once
#include <vector>

namespace nm::attn2d {

// What the kernels need of the grid, computed once (per node, at plan time).
struct Grid {
  Grid(int H, int W, int heads, int dh, int r, bool raster);
  int H, W, heads, dh, r, Wn;  // Wn = (2r+1)^2 window slots
  bool raster;
  std::vector<int> nb;         // nb[s * Wn + w]: the cell in slot w of s's window, or -1
  std::vector<int> inb;        // inb[t * Wn + w]: the cell whose slot w holds t, or -1
  std::vector<double> cs, sn;  // RoPE: cos / sin of pos * 10000^(-k/m), (max(H, W), m = dh/4)
  std::vector<float> csf, snf;  // the same, rounded once for the float engine
  // The flat kernels' slots (attn2d_flat.cpp), for 2, 4 or 8 heads when at most 16 slots are
  // computed (fWv = 0 otherwise): the window's slots up to the cell itself under the raster mask
  // (all Wn without it), rounded up to a multiple of 8 / heads, in fnvec score vectors;
  // fsrc[s * fWv + w] the source cell or -1, and 8 more -1 at the end (whole vectors are read).
  int fWv = 0, fnvec = 0;
  std::vector<int> fsrc;
  // Heads of 16 features: per cell the RoPE vectors of the flat kernels (cos | cos, -sin | sin
  // by the row index, then by the column index; 32 floats, from csf/snf).
  std::vector<float> rope16;
  template <class T> const T* cosines() const;
  template <class T> const T* sines() const;
};

// q, k, v: (rows, H*W) cells of heads*dh features, `ld` apart (heads*dh when contiguous; 3
// heads*dh when they are the thirds of one (rows, H*W, 3, heads*dh) product); out: (rows, H*W,
// heads*dh) contiguous; P: (rows, H*W, Wn, heads) softmax weights (0 for slots outside the grid
// or masked). Scale dh^-1/2.
template <class T>
void window_forward(const Grid& g, const T* q, const T* k, const T* v, int ld, T* P, T* out,
                    int rows);
// dq, dk, dv (cells `ld` apart, like q, k, v) = the gradients for dout (contiguous): every
// row of the three is written (a cell no window sees, e.g. under the raster mask, gets zeros).
template <class T>
void window_backward(const Grid& g, const T* q, const T* k, const T* v, int ld, const T* P,
                     const T* dout, T* dq, T* dk, T* dv, int rows);

// In place on x (rows, H*W cells of heads*dh features, `ld` apart): per head, the first half
// rotated by the row index, the second by the column index, pairs (k, k+m) with angle
// pos * 10000^(-k/m), m = dh/4. inverse = rotate by the negative angle (the backward).
template <class T>
void rope(const Grid& g, T* x, int ld, int rows, bool inverse);

// What the node runs: window attention on the thirds q, k, v of one (rows, cells, 3, heads*dh)
// product, with RoPE on q and k first when `rope` (in place: the saved Q/K/V hold them rotated);
// the backward writes dqkv whole, RoPE undone on dq and dk. The flat kernels rotate rows as
// they reach them (no separate passes over Q/K/V).
template <class T>
void qkv_forward(const Grid& g, T* qkv, bool rope, T* P, T* out, int rows);
template <class T>
void qkv_backward(const Grid& g, const T* qkv, bool rope, const T* P, const T* dout, T* dqkv,
                  int rows);

// The float kernels for heads of a multiple of 8 features on AVX2+FMA (attn2d_avx2.cpp); the two
// above call them when simd::has_avx2() and the window has at most kAvx2MaxSlots slots
// (radius 7: the kernels keep a slot's pointers on the stack).
constexpr int kAvx2MaxSlots = 225;
void window_forward_avx2(const Grid& g, const float* q, const float* k, const float* v, int ld,
                         float* P, float* out, int rows);
void window_backward_avx2(const Grid& g, const float* q, const float* k, const float* v, int ld,
                          const float* P, const float* dout, float* dq, float* dk, float* dv,
                          int rows);
// The flat kernels (attn2d_flat.cpp) for heads of 8, 16 or 32 features when Grid::fWv > 0;
// false: not taken (the caller runs the general kernels).
bool window_forward_flat(const Grid& g, const float* q, const float* k, const float* v, int ld,
                         float* P, float* out, int rows);
bool window_backward_flat(const Grid& g, const float* q, const float* k, const float* v, int ld,
                          const float* P, const float* dout, float* dq, float* dk, float* dv,
                          int rows);
// The same with RoPE fused (heads of 16 features); false: not taken.
bool qkv_forward_flat_rope(const Grid& g, float* qkv, float* P, float* out, int rows);
bool qkv_backward_flat_rope(const Grid& g, const float* qkv, const float* P, const float* dout,
                            float* dqkv, int rows);
// rope for float heads of 16 features on AVX2+FMA
void rope16_avx2(const Grid& g, float* x, int ld, int rows, bool inverse);

}  // namespace nm::attn2d
