// Kernels of the attn2d node (extensions-math.md section 2e): local 2D window attention on an
// HxW grid and 2D axial RoPE. The window of cell (i, j) is clipped at the borders; under the
// raster mask a key is seen only when its raster index is <= the query's. Neither kernel
// materialises an S x S matrix: probabilities are kept per (cell, head, window slot).
#pragma once

namespace nm::attn2d {

// q, k, v, out: (rows, H*W, heads*dh); P: (rows, H*W, heads, (2r+1)^2) softmax weights
// (0 for slots outside the grid or masked). Scale dh^-1/2.
template <class T>
void window_forward(const T* q, const T* k, const T* v, T* P, T* out, int rows, int H, int W,
                    int heads, int dh, int r, bool raster);
// dq, dk, dv += the gradients for dout.
template <class T>
void window_backward(const T* q, const T* k, const T* v, const T* P, const T* dout, T* dq, T* dk,
                     T* dv, int rows, int H, int W, int heads, int dh, int r, bool raster);

// In place on x (rows, H*W, heads*dh): per head, the first half rotated by the row index, the
// second by the column index, pairs (k, k+m) with angle pos * 10000^(-k/m), m = dh/4.
// inverse = rotate by the negative angle (the backward of the rotation).
template <class T>
void rope(T* x, int rows, int H, int W, int heads, int dh, bool inverse);

}  // namespace nm::attn2d
