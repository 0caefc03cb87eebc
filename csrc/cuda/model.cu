// The CUDA backend's model: the static plan of a (non-recurrent, float32) model on one GPU.
// Parameters, gradients and optimizer state live in one device arena laid out exactly like the
// CPU model's (so get/set_params, save and load work unchanged); a train call copies its data in
// once and each step sends back only the loss. Initialisation reuses the CPU model's (same seed,
// same numbers). Built as the plugin libneuromorph_cuda, loaded on demand (core/device.cpp).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "common.cuh"
#include "gemm.cuh"
#include "kernels.cuh"
#include "neuromorph/engine.h"

namespace nm::cuda {
namespace {

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
    n = count;
    if (count) NM_CUDA_CHECK(cudaMalloc(&ptr, sizeof(T) * count));
  }
  void zero() { if (n) NM_CUDA_CHECK(cudaMemset(ptr, 0, sizeof(T) * n)); }
};

struct Layer {
  size_t W = 0, b = 0, alpha = SIZE_MAX;
  int in = 0, out = 0;
  size_t z = 0;
};

class CudaModel final : public ModelBase {
 public:
  CudaModel(const std::string& ir, int batch, double lr, const OptimConfig& opt)
      : cpu_(make_model(ir, batch, lr, DType::F32, opt)), ir_(load_ir(ir)), B_(batch), lr_(lr),
        opt_(opt) {
    if (ir_.recurrent)
      throw DeviceError("recurrent models (delayed edges) run on the CPU only in this version");
    for (const IrNode& nd : ir_.nodes) {
      if (nd.is_struct())
        throw DeviceError("the " + kind_name(nd.kind) + " node '" + nd.name +
                          "' runs on the CPU only in this version");
      if (nd.cells > 1)
        throw DeviceError("the position-wise layer '" + nd.name + "' (cells " +
                          std::to_string(nd.cells) + ") runs on the CPU only in this version");
    }
    plan();
  }

  DType dtype() const override { return DType::F32; }
  std::string device() const override { return "cuda"; }
  int batch_size() const override { return B_; }
  int input_width() const override { return cpu_->input_width(); }
  int output_width() const override { return cpu_->output_width(); }
  bool recurrent() const override { return false; }
  bool built() const override { return built_; }
  const std::string& ir_json() const override { return cpu_->ir_json(); }
  double learning_rate() const override { return lr_; }
  const std::vector<ParamInfo>& params() const override { return cpu_->params(); }
  const OptimConfig& optimizer() const override { return opt_; }
  long steps() const override { return steps_; }
  void set_steps(long s) override { steps_ = s; }
  std::vector<std::string> loss_parts() const override { return {"output"}; }
  std::vector<std::pair<std::string, std::vector<double>>> node_stats() override { return {}; }
  std::vector<double> energy_trajectory(const std::string&, const void*, int, int*) override {
    throw ShapeError("the model has no energy block");
  }
  const std::vector<ParamInfo>& state_tensors() const override { return cpu_->state_tensors(); }
  void reset_state() override {}

  void build(uint64_t seed) override {
    cpu_->build(seed);  // the CPU model's initialisation, then one upload
    const size_t n = n_params();
    params_.resize(n);
    grads_.resize(n);
    opt_state_.resize(opt_.buffers() * n);
    opt_state_.zero();
    std::vector<float> host(n);
    for (const ParamInfo& p : cpu_->params()) cpu_->get_param(p.name, host.data() + p.offset);
    NM_CUDA_CHECK(cudaMemcpy(params_.ptr, host.data(), sizeof(float) * n, cudaMemcpyHostToDevice));
    vals_.resize(n_vals_);
    vgrads_.resize(n_vals_);
    zbuf_.resize(n_z_);
    dz_.resize(size_t(B_) * max_width_);
    rowloss_.resize(B_);
    scalar_.resize(1 + 64);
    work_.resize(64);
    steps_ = 0;
    built_ = true;
  }

  int train(const void* x, const void* e, int n, double* losses, const std::atomic<bool>* stop,
            double* parts) override {
    need_built();
    upload(x, e, n);
    for (int k = 0; k < n; ++k) {
      losses[k] = step(k, true);
      update();
      ++steps_;
      if (parts) parts[k] = losses[k];
      if (stop && stop->load(std::memory_order_relaxed)) return k + 1;
    }
    return n;
  }

  void evaluate(const void* x, const void* e, int n, double* losses) override {
    need_built();
    upload(x, e, n);
    for (int k = 0; k < n; ++k) losses[k] = step(k, false);
  }

  void predict(const void* x, int n, void* y) override {
    need_built();
    upload(x, nullptr, n);
    const Slot& out = slots_[slot_of_[ir_.output]];
    for (int k = 0; k < n; ++k) {
      load_input(k);
      forward();
      NM_CUDA_CHECK(cudaMemcpy(static_cast<float*>(y) + size_t(k) * B_ * out.width, vals_.ptr + out.off,
                               sizeof(float) * B_ * out.width, cudaMemcpyDeviceToHost));
    }
  }

  double compute_gradients(const void* x, const void* e) override {
    need_built();
    upload(x, e, 1);
    return step(0, true);
  }

  void get_param(const std::string& name, void* out, bool grad) const override {
    const ParamInfo& p = find(name);
    if (!built_) throw StateError("model is not built: call build() before reading parameters");
    NM_CUDA_CHECK(cudaMemcpy(out, (grad ? grads_.ptr : params_.ptr) + p.offset, sizeof(float) * p.size,
                             cudaMemcpyDeviceToHost));
  }
  void set_param(const std::string& name, const void* in) override {
    const ParamInfo& p = find(name);
    if (!built_) throw StateError("model is not built: call build() before setting parameters");
    NM_CUDA_CHECK(cudaMemcpy(params_.ptr + p.offset, in, sizeof(float) * p.size, cudaMemcpyHostToDevice));
  }
  void get_state(const std::string& name, void* out) const override {
    if (name != "optimizer.state") throw ShapeError("unknown tensor '" + name + "'");
    NM_CUDA_CHECK(cudaMemcpy(out, opt_state_.ptr, sizeof(float) * opt_state_.n, cudaMemcpyDeviceToHost));
  }
  void set_state(const std::string& name, const void* in) override {
    if (name != "optimizer.state") throw ShapeError("unknown tensor '" + name + "'");
    NM_CUDA_CHECK(cudaMemcpy(opt_state_.ptr, in, sizeof(float) * opt_state_.n, cudaMemcpyHostToDevice));
  }

 private:
  struct Slot {
    int width = 0;
    size_t off = 0;
  };

  static std::string kind_name(NodeKind k) {
    return k == NodeKind::Attn2d ? "attn2d" : k == NodeKind::Column ? "column"
         : k == NodeKind::Energy ? "energy" : k == NodeKind::Embed ? "embed"
         : k == NodeKind::Pool ? "pool" : "neuron";
  }
  size_t n_params() const {
    size_t n = 0;
    for (const ParamInfo& p : cpu_->params()) n = std::max(n, p.offset + p.size);
    return n;
  }
  const ParamInfo& find(const std::string& name) const {
    for (const ParamInfo& p : cpu_->params())
      if (p.name == name) return p;
    throw ShapeError("unknown tensor '" + name + "'");
  }
  void need_built() const {
    if (!built_) throw StateError("model is not built: call build() first");
  }

  void plan() {
    const int n = int(ir_.nodes.size());
    slot_of_.assign(n, -1);
    layers_.assign(n, Layer{});
    for (int idx : ir_.order) {
      const IrNode& nd = ir_.nodes[idx];
      max_width_ = std::max(max_width_, nd.width);
      if (nd.kind == NodeKind::Split || nd.kind == NodeKind::Tap) {
        slot_of_[idx] = slot_of_[nd.inputs[0].node];
        continue;
      }
      slot_of_[idx] = int(slots_.size());
      slots_.push_back(Slot{nd.width, n_vals_});
      n_vals_ += size_t(B_) * nd.width;
    }
    for (int idx = 0; idx < n; ++idx) {
      const IrNode& nd = ir_.nodes[idx];
      if (nd.kind != NodeKind::Layer && nd.kind != NodeKind::Output) continue;
      Layer& L = layers_[idx];
      L.in = ir_.nodes[nd.inputs[0].node].width;
      L.out = nd.width;
      L.W = find(nd.name + ".weight").offset;
      L.b = find(nd.name + ".bias").offset;
      if (nd.act == Act::ReluParametric) L.alpha = find(nd.name + ".alpha").offset;
      L.z = n_z_;
      n_z_ += size_t(B_) * L.out;
    }
    const IrNode& out = ir_.nodes[ir_.output];
    fused_ = out.act == Act::Softmax && out.loss == Loss::CrossEntropy;
  }

  void upload(const void* x, const void* e, int n) {  // the whole call's data, once
    xs_.resize(size_t(n) * B_ * input_width());
    NM_CUDA_CHECK(cudaMemcpy(xs_.ptr, x, sizeof(float) * xs_.n, cudaMemcpyHostToDevice));
    if (e) {
      es_.resize(size_t(n) * B_ * output_width());
      NM_CUDA_CHECK(cudaMemcpy(es_.ptr, e, sizeof(float) * es_.n, cudaMemcpyHostToDevice));
    }
  }
  void load_input(int k) {
    const size_t w = size_t(B_) * input_width();
    NM_CUDA_CHECK(cudaMemcpy(vals_.ptr + slots_[slot_of_[ir_.input]].off, xs_.ptr + k * w,
                             sizeof(float) * w, cudaMemcpyDeviceToDevice));
  }
  float* val(int node) { return vals_.ptr + slots_[slot_of_[node]].off; }
  float* vgrad(int node) { return vgrads_.ptr + slots_[slot_of_[node]].off; }

  void forward() {
    const float one = 1.f, zero = 0.f;
    for (int idx : ir_.order) {
      const IrNode& nd = ir_.nodes[idx];
      if (nd.kind == NodeKind::Merge) {
        merge_forward(nd.op, val(nd.inputs[0].node), val(nd.inputs[1].node), val(idx),
                      size_t(B_) * nd.width);
      } else if (nd.kind == NodeKind::Layer || nd.kind == NodeKind::Output) {
        const Layer& L = layers_[idx];
        float* z = zbuf_.ptr + L.z;
        // z[B, out] = u[B, in] W[out, in]ᵀ
        blas_.gemm(false, true, B_, L.out, L.in, one, val(nd.inputs[0].node), L.in, params_.ptr + L.W,
                   L.in, zero, z, L.out);
        bias_act_forward(nd.act, float(nd.act_param), L.alpha == SIZE_MAX ? nullptr : params_.ptr + L.alpha,
                         z, params_.ptr + L.b, val(idx), B_, L.out);
      }
    }
  }

  double step(int k, bool want_grad) {
    load_input(k);
    forward();
    const IrNode& out = ir_.nodes[ir_.output];
    const int w = out.width;
    if (want_grad) {
      grads_.zero();
      vgrads_.zero();
    }
    loss_forward_backward(out.loss, float(out.loss_param), fused_, val(ir_.output),
                          es_.ptr + size_t(k) * B_ * w, rowloss_.ptr, want_grad ? vgrad(ir_.output) : nullptr,
                          B_, w, 1.f / B_);
    reduce_sum(rowloss_.ptr, scalar_.ptr, B_);
    float total = 0;
    NM_CUDA_CHECK(cudaMemcpy(&total, scalar_.ptr, sizeof(float), cudaMemcpyDeviceToHost));
    if (want_grad) backward();
    return double(total) / B_;
  }

  void backward() {
    const float one = 1.f;
    for (auto it = ir_.order.rbegin(); it != ir_.order.rend(); ++it) {
      const int idx = *it;
      const IrNode& nd = ir_.nodes[idx];
      if (nd.kind == NodeKind::Merge) {
        merge_backward(nd.op, val(nd.inputs[0].node), val(nd.inputs[1].node), vgrad(idx),
                       vgrad(nd.inputs[0].node), vgrad(nd.inputs[1].node), size_t(B_) * nd.width);
        continue;
      }
      if (nd.kind != NodeKind::Layer && nd.kind != NodeKind::Output) continue;
      const Layer& L = layers_[idx];
      const float* z = zbuf_.ptr + L.z;
      float* dz = dz_.ptr;
      if (idx == ir_.output && fused_) {
        NM_CUDA_CHECK(cudaMemcpy(dz, vgrad(idx), sizeof(float) * B_ * L.out, cudaMemcpyDeviceToDevice));
      } else {
        act_backward(nd.act, float(nd.act_param), L.alpha == SIZE_MAX ? nullptr : params_.ptr + L.alpha,
                     z, val(idx), vgrad(idx), dz, L.alpha == SIZE_MAX ? nullptr : grads_.ptr + L.alpha,
                     B_, L.out);
      }
      const int src = nd.inputs[0].node;
      // dW[out, in] += dzᵀ u ; db += Σ dz ; du[B, in] += dz W
      blas_.gemm(true, false, L.out, L.in, B_, one, dz, L.out, val(src), L.in, one, grads_.ptr + L.W, L.in);
      bias_grad(dz, grads_.ptr + L.b, B_, L.out);
      if (ir_.nodes[src].kind != NodeKind::Input)
        blas_.gemm(false, false, B_, L.in, L.out, one, dz, L.out, params_.ptr + L.W, L.in, one,
                   vgrad(src), L.in);
    }
  }

  void update() {
    const size_t n = params_.n;
    if (opt_.grad_clip > 0) {
      clip_coef(grads_.ptr, work_.ptr, scalar_.ptr, float(opt_.grad_clip), n);
      scale(grads_.ptr, scalar_.ptr, n);
    }
    const double rate = opt_.rate(lr_, steps_);
    const float wd = float(opt_.weight_decay);
    switch (opt_.kind) {
      case OptimConfig::Sgd: sgd(params_.ptr, grads_.ptr, float(rate), wd, n); break;
      case OptimConfig::Momentum:
        momentum(params_.ptr, grads_.ptr, opt_state_.ptr, float(rate), wd, float(opt_.momentum),
                 steps_ == 0, n);
        break;
      default: {
        const double bc1 = 1 - std::pow(opt_.beta1, double(steps_ + 1));
        const double bc2 = 1 - std::pow(opt_.beta2, double(steps_ + 1));
        adam(params_.ptr, grads_.ptr, opt_state_.ptr, opt_state_.ptr + n, float(rate / bc1),
             float(std::sqrt(bc2)), float(opt_.beta1), float(opt_.beta2), float(opt_.eps),
             float(rate * opt_.weight_decay), opt_.kind == OptimConfig::AdamW, wd, n);
      }
    }
  }

  std::unique_ptr<ModelBase> cpu_;  // plan metadata and the initialisation
  IrModel ir_;
  int B_;
  double lr_;
  OptimConfig opt_;
  long steps_ = 0;
  bool built_ = false, fused_ = false;
  Blas blas_;
  std::vector<int> slot_of_;
  std::vector<Slot> slots_;
  std::vector<Layer> layers_;
  size_t n_vals_ = 0, n_z_ = 0;
  int max_width_ = 1;
  DeviceBuffer<float> params_, grads_, opt_state_, vals_, vgrads_, zbuf_, dz_, rowloss_, scalar_,
      work_, xs_, es_;
};

}  // namespace
}  // namespace nm::cuda

// Plugin entry points (C linkage, looked up with dlsym by core/device.cpp).
extern "C" {

// Number of usable CUDA devices; 0 with the reason in `why` when there are none.
int nm_cuda_device_count(char* why, int len) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why && len > 0) std::snprintf(why, size_t(len), "%s", cudaGetErrorString(e));
    cudaGetLastError();  // clear the sticky error state
    return 0;
  }
  if (n == 0 && why && len > 0) std::snprintf(why, size_t(len), "no CUDA device is visible");
  return n;
}

void nm_cuda_device_name(char* out, int len) {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) std::snprintf(out, size_t(len), "%s", prop.name);
  else if (len > 0) out[0] = 0;
}

nm::ModelBase* nm_cuda_create(const char* ir, int batch, double lr, const nm::OptimConfig* opt) {
  return new nm::cuda::CudaModel(ir, batch, lr, *opt);
}

}  // extern "C"
