// The interface a structured node kind implements on the GPU: the device twin of
// core/struct_node.h. The plan (core/plan.h) owns the parameter layout and the initialisation;
// a device node only finds its parameters' offsets in the arena (`offset("wq")` is the offset of
// "<node>.wq") and runs forward / backward on device buffers, on the model's stream, with no host
// synchronisation and no host round-trip: every launch goes to ctx.stream (cuBLAS products
// through ctx.blas, which is bound to that stream).
//
// Layout as on the CPU: flat rows, one sample per row, token-major / feature-minor inside a row
// (extensions-math.md section 0). `row` is the first sample of the block in the batch (saved
// tensors for backward are kept per batch row), `rows` the number of samples in the block:
// non-recurrent models call with (0, rows of the batch), recurrent ones with (t, 1).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../core/ir.h"
#include "common.cuh"
#include "gemm.cuh"

namespace nm::cuda {

struct Ctx {
  cudaStream_t stream = nullptr;
  Blas* blas = nullptr;
};

// Offset in the parameter arena of the node's parameter "<node>.<part>" (ShapeError if none).
using ParamOffset = std::function<size_t(const std::string& part)>;

class DeviceNode {
 public:
  virtual ~DeviceNode() = default;
  // At build: device buffers for `batch` samples (forward saves, backward scratch).
  virtual void allocate(int batch) = 0;
  // y[rows, out] from x[rows, in] (device pointers already offset to `row`); P the parameter
  // arena. With aux (device, already offset to `row`), adds each sample's auxiliary loss to
  // aux[0..rows). Keeps what backward needs.
  virtual void forward(const float* P, const float* x, float* y, int row, int rows,
                       float* aux) = 0;
  // With dy = dL/dy: G += dL/dP, dx += dL/dx (dx null: the model input). aux_scale is
  // dL/d(aux of one sample).
  virtual void backward(const float* P, float* G, const float* x, const float* dy, float* dx,
                        int row, int rows, float aux_scale) = 0;
  // Training (dropout on) or inference for the next forwards.
  virtual void set_training(bool) {}
  // neuron: each sample's activation count of the last forward, for samples 0..rows-1 (host
  // copy; called only on request, never inside a step).
  virtual std::vector<double> counts(int rows) { (void)rows; return {}; }
  // energy: while sink is set, forwards also record each sample's energies E^0..E^T (device
  // side); `fetch` appends the recorded values of the last forward's `rows` samples to *sink
  // (sample-major, steps+1 per sample) and sets *steps. Other kinds: StateError.
  virtual void record(bool on) { (void)on; throw StateError("not an energy block"); }
  virtual void fetch_record(int rows, std::vector<double>* sink, int* steps) {
    (void)rows; (void)sink; (void)steps;
    throw StateError("not an energy block");
  }
};

// The registry of device kinds: each kind's CUDA unit (cuda/<kind>.cu) registers its factory at
// load with NM_REGISTER_DEVICE_KIND; the CUDA executor makes its nodes through it (a kind with
// no device unit is a DeviceError naming it).
using DeviceMaker = std::unique_ptr<DeviceNode> (*)(const IrNode& nd, const ParamOffset& offset, Ctx ctx);
bool register_device_kind(NodeKind kind, DeviceMaker make);  // true; for static initialisers
DeviceMaker device_maker(NodeKind kind);                     // null when none
#define NM_REGISTER_DEVICE_KIND(KIND, MAKER) \
  const bool nm_device_registered_##MAKER = ::nm::cuda::register_device_kind(KIND, &MAKER)

std::unique_ptr<DeviceNode> make_device_attn2d(const IrNode& nd, const ParamOffset& offset, Ctx ctx);
std::unique_ptr<DeviceNode> make_device_column(const IrNode& nd, const ParamOffset& offset, Ctx ctx);
std::unique_ptr<DeviceNode> make_device_energy(const IrNode& nd, const ParamOffset& offset, Ctx ctx);
std::unique_ptr<DeviceNode> make_device_neuron(const IrNode& nd, const ParamOffset& offset, Ctx ctx);
std::unique_ptr<DeviceNode> make_device_embed(const IrNode& nd, const ParamOffset& offset, Ctx ctx);
std::unique_ptr<DeviceNode> make_device_pool(const IrNode& nd, const ParamOffset& offset, Ctx ctx);

// Device buffer of T, freed with the owner; resize discards the contents.
template <class T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t n = 0;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { if (ptr) cudaFree(ptr); }
  void resize(size_t count) {
    if (count == n) return;
    if (ptr) NM_CUDA_CHECK(cudaFree(ptr));
    ptr = nullptr;
    n = 0;
    if (count) NM_CUDA_CHECK(cudaMalloc(&ptr, sizeof(T) * count));
    n = count;
  }
  void zero(cudaStream_t s) { if (n) NM_CUDA_CHECK(cudaMemsetAsync(ptr, 0, sizeof(T) * n, s)); }
};

}  // namespace nm::cuda
