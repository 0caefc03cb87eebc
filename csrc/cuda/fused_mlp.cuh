// A fully fused FP32 kernel for narrow MLP chains (every width <= 128), in the spirit of
// tiny-cuda-nn's fully fused MLP but in plain FP32 FFMA (no TF32 / half tensor cores), so its
// results equal the cuBLAS path to rounding. One block takes a tile of 128 rows through the
// whole forward pass, the loss and the whole backward pass; activations never leave the chip
// except each hidden layer's pre-activation z, which the backward pass reads back from a
// scratch buffer (fused_mlp_scratch). Weight and bias gradients go to G by atomicAdd
// (float4 atomics on sm_90 when aligned). Design notes: fused_mlp.cu.
#pragma once
#include <cstddef>
#include <vector>

#include <cuda_runtime.h>

#include "../core/ir.h"

namespace nm::cuda {

struct FusedLayer {
  size_t W = 0, b = 0;
  int in = 0, out = 0;
  Act act = Act::Linear;
  float act_param = 0;
};

struct FusedMlp {
  // a chain: input -> layers[0] -> ... -> layers.back() (the output)
  std::vector<FusedLayer> layers;
  Loss loss = Loss::Mse;
  float loss_param = 0;
  bool softmax_xent = false;       // output act is softmax and the loss cross-entropy: dL/dz fused
};

// Whether the fused kernel runs this chain: all widths (inputs and outputs) <= 128, 1..8 layers,
// no PReLU (ReluParametric), softmax only as the output activation (and softmax_xent only with
// a softmax output and the cross-entropy loss), layers chained (in == previous out).
bool fused_mlp_supported(const FusedMlp& m);

// Floats of device scratch a training pass (G non-null) over `rows` samples needs: the hidden
// layers' pre-activations, rows rounded up to the tile (128). 0 for a single layer. A forward /
// loss-only pass needs none.
size_t fused_mlp_scratch(const FusedMlp& m, int rows);

// One pass over `rows` samples x[rows, in0] (device pointers; P, G: parameter arena / gradient
// arena, weights W[out, in] row-major at P + layer.W, bias at P + layer.b):
//  - y (if non-null): the output activations [rows, out_last];
//  - with e non-null: row_loss[r] = that row's loss (sum of terms for cross-entropy, mean of
//    terms otherwise);
//  - with G non-null (and e): G += gradients of  scale * sum_r row_loss[r]  w.r.t. every W and b
//    (G is zeroed by the caller; scale is 1/rows for the batch mean). Needs `scratch`: at least
//    fused_mlp_scratch(m, rows) floats of device memory, 16-byte aligned (cudaMalloc is), not
//    shared with a pass running concurrently; throws DeviceError when it is null and needed.
// Everything on `stream`; no host synchronisation; launch errors checked with NM_CUDA_LAUNCHED().
// Unsupported chains (fused_mlp_supported false) throw DeviceError.
void fused_mlp(cudaStream_t stream, const FusedMlp& m, const float* P, float* G, const float* x,
               const float* e, float* row_loss, float* y, int rows, float scale,
               float* scratch = nullptr);

}  // namespace nm::cuda
