// The CUDA executor of a model's plan (core/plan.h), float32 on one GPU: the same slots,
// parameter layout, states and initialisation as the CPU executor (cpu/model.cpp), the same
// formulas (core/formulas.h), every node kind (structured kinds through cuda/device_node.cuh),
// recurrent streams with BPTT through the batch window, position-wise (`cells`) layers.
//
// One stream per model. A train call never waits for the device between steps: batches stream
// in through pinned, double-buffered staging (or are read in place when the caller's data is
// already on the device), each step's loss is summed on the device into a per-call array, the
// divergence check raises a device flag that stops later updates, and the host reads the losses
// and the flag once, at the end of the call. Built as the plugin libneuromorph_cuda, loaded on
// demand (core/device.cpp).
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "../core/optim.h"
#include "../core/plan.h"
#include "common.cuh"
#include "device_node.cuh"
#include "energy_node.cuh"
#include "fused_mlp.cuh"
#include "gemm.cuh"
#include "kernels.cuh"
#include "neuromorph/engine.h"

namespace nm::cuda {
namespace {

constexpr size_t kStageFloats = size_t(1) << 20;  // 4 MiB per staging buffer

// Host memory the device can read asynchronously (page-locked), freed with the owner.
struct PinnedBuffer {
  float* ptr = nullptr;
  size_t n = 0;
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() { if (ptr) cudaFreeHost(ptr); }
  void resize(size_t count) {
    if (count <= n) return;
    if (ptr) NM_CUDA_CHECK(cudaFreeHost(ptr));
    ptr = nullptr;
    n = 0;
    NM_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&ptr), sizeof(float) * count,
                                cudaHostAllocDefault));
    n = count;
  }
};

struct Stream {
  cudaStream_t s = nullptr;
  Stream() { NM_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
  ~Stream() { if (s) cudaStreamDestroy(s); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
};

struct Event {
  cudaEvent_t e = nullptr;
  Event() { NM_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming)); }
  ~Event() { if (e) cudaEventDestroy(e); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
};

bool env_off(const char* name) {
  const char* v = std::getenv(name);
  return v && *v && std::strcmp(v, "0") != 0;
}

class CudaModel final : public ModelBase {
 public:
  CudaModel(const std::string& ir, int batch, double lr, const OptimConfig& opt)
      : plan_(load_ir(ir), batch, opt), ir_(plan_.ir), B_(batch), R_(batch), lr_(lr), opt_(opt),
        blas_(compute_.s) {
    if (batch <= 0) throw ShapeError("batch_size must be a positive integer, got " + std::to_string(batch));
    const Ctx ctx{compute_.s, &blas_};
    nodes_.resize(ir_.nodes.size());
    for (size_t idx = 0; idx < ir_.nodes.size(); ++idx) {
      const IrNode& nd = ir_.nodes[idx];
      if (!nd.is_struct()) continue;
      // an energy block's parameters are named by its members ("<member>.<part>")
      const std::string prefix = nd.kind == NodeKind::Energy ? "" : nd.name + ".";
      const ParamOffset off = [this, prefix](const std::string& part) {
        return plan_.param(prefix + part).offset;
      };
      nodes_[idx] = make_node(nd, off, ctx);
    }
    plan_fused();
  }

  DType dtype() const override { return DType::F32; }
  std::string device() const override { return "cuda"; }
  int batch_size() const override { return B_; }
  int input_width() const override { return ir_.nodes[ir_.input].width; }
  int output_width() const override { return ir_.nodes[ir_.output].width; }
  bool recurrent() const override { return ir_.recurrent; }
  bool built() const override { return built_; }
  const std::string& ir_json() const override { return ir_.json; }
  double learning_rate() const override { return lr_; }
  const std::vector<ParamInfo>& params() const override { return plan_.params; }
  const OptimConfig& optimizer() const override { return opt_; }
  long steps() const override { return steps_; }
  void set_steps(long s) override { steps_ = s; }
  std::vector<std::string> loss_parts() const override {
    std::vector<std::string> names{"output"};
    names.insert(names.end(), plan_.aux_names.begin(), plan_.aux_names.end());
    return names;
  }
  const std::vector<ParamInfo>& state_tensors() const override { return plan_.states; }
  int target_width() const override {
    return class_ids_ ? ir_.nodes[ir_.output].cells : output_width();
  }
  void set_rows(int rows) override {
    if (rows < 1 || rows > B_)
      throw ShapeError("a batch holds 1 to " + std::to_string(B_) + " samples, got " +
                       std::to_string(rows));
    R_ = rows;
  }
  void set_check_finite(bool on) override { check_finite_ = on; }
  // Data-parallel training on the host path (docs/distributed.md): the loss parts and the
  // gradient arena go through host memory to the MPI reducer between backward and the update.
  void set_grad_reducer(std::shared_ptr<GradReducer> reducer, double weight) override {
    if (reducer) check_data_parallel(ir_, weight);
    reducer_ = std::move(reducer);
    weight_ = weight;
  }
  void set_class_targets(bool on) override {
    const IrNode& o = ir_.nodes[ir_.output];
    if (on && (o.loss != Loss::CrossEntropy || o.cells < 2))
      throw ShapeError("class-id targets need an output with `cells C` (C > 1) and cross_entropy");
    class_ids_ = on;
  }
  void set_device_data(bool on) override { device_data_ = on; }
  bool accepts_device_data() const override { return true; }

  uint64_t build_seed() const override { return seed_; }
  void build(uint64_t seed) override {
    seed_ = seed;
    const size_t n = plan_.n_params;
    params_.resize(n);
    grads_.resize(n);
    opt_state_.resize(opt_.buffers() * n);
    vals_.resize(plan_.n_vals);
    vgrads_.resize(plan_.n_vals);
    zbuf_.resize(plan_.n_z);
    dz_.resize(plan_.n_z ? plan_.n_z : 1);
    carry_.resize(plan_.n_carry);
    group_loss_.resize(size_t(B_) * ir_.nodes[ir_.output].cells);
    aux_.resize(plan_.aux_nodes.size() * size_t(B_) + 1);
    work_.resize(kReduceParts);
    if (use_fused_) fused_scratch_.resize(std::max<size_t>(1, fused_mlp_scratch(fused_, B_)));
    flags_.resize(3);
    for (auto& nd : nodes_)
      if (nd) nd->allocate(B_);
    std::vector<std::vector<std::vector<double>>> drawn;
    const std::vector<double> init = plan_.initial_params(seed, &drawn);
    std::vector<float> host(init.begin(), init.end());
    for (size_t idx = 0; idx < nodes_.size(); ++idx)
      if (nodes_[idx] && ir_.nodes[idx].kind == NodeKind::Energy) {
        std::vector<std::vector<float>> start;
        for (const auto& v : drawn[idx]) start.emplace_back(v.begin(), v.end());
        energy_set_start(nodes_[idx].get(), start);
      }
    upload(params_.ptr, host.data(), n);
    opt_state_.zero(s());
    carry_.zero(s());
    sync();
    steps_ = 0;
    built_ = true;
  }

  int train(const void* x, const void* e, int n, double* losses, const std::atomic<bool>* stop,
            double* parts) override {
    need_built();
    if (n <= 0) return 0;
    Batches data(*this, x, e, n);
    const size_t np = 1 + plan_.aux_nodes.size();
    step_losses_.resize(size_t(n) * np);
    zero_flags();
    const long first = steps_;
    int done = 0;
    for (int k = 0; k < n; ++k) {
      const float* xk = data.x(k);
      const float* ek = data.e(k);
      step(xk, ek, true, step_losses_.ptr + size_t(k) * np, k);
      if (reducer_) all_reduce(step_losses_.ptr + size_t(k) * np, np, k, stop);
      update();
      ++steps_;
      commit_carry(R_);
      ++done;
      if (reducer_ ? stop_all_ : (stop && stop->load(std::memory_order_relaxed))) break;
    }
    finish(losses, parts, done, np);
    if (diverged_at_ >= 0) {
      steps_ = first + diverged_at_;
      throw Diverged("training diverged at batch " + std::to_string(diverged_at_) +
                     ": the loss or a gradient is not finite. The model holds its state from "
                     "before this batch (try a smaller learning rate, or grad_clip)");
    }
    return done;
  }

  void evaluate(const void* x, const void* e, int n, double* losses) override {
    need_built();
    if (n <= 0) return;
    Batches data(*this, x, e, n);
    const size_t np = 1 + plan_.aux_nodes.size();
    step_losses_.resize(size_t(n) * np);
    zero_flags();
    for (int k = 0; k < n; ++k) {
      step(data.x(k), data.e(k), false, step_losses_.ptr + size_t(k) * np, k);
      commit_carry(R_);
    }
    finish(losses, nullptr, n, np);
  }

  void predict(const void* x, int n, void* y) override {
    need_built();
    if (n <= 0) return;
    predict_block(x, n, y);
  }

  void predict_rows(const void* x, int n, void* y) override {
    need_built();
    if (n <= 0) return;
    const int whole = n / B_, rest = n % B_;
    const int in = input_width(), out = output_width();
    if (whole) predict_block(x, whole, y);
    if (rest) {
      const int keep = R_;
      R_ = rest;
      try {
        predict_block(static_cast<const float*>(x) + size_t(whole) * B_ * in, 1,
                      static_cast<float*>(y) + size_t(whole) * B_ * out);
      } catch (...) {
        R_ = keep;
        throw;
      }
      R_ = keep;
    }
  }

  double compute_gradients(const void* x, const void* e) override {
    need_built();
    Batches data(*this, x, e, 1);
    step_losses_.resize(1 + plan_.aux_nodes.size());
    zero_flags();
    step(data.x(0), data.e(0), true, step_losses_.ptr, 0);
    double loss = 0;
    finish(&loss, nullptr, 1, 1 + plan_.aux_nodes.size());
    return loss;
  }

  void reset_state() override {
    carry_.zero(s());
    sync();
  }

  std::vector<std::pair<std::string, std::vector<double>>> node_stats() override {
    std::vector<std::pair<std::string, std::vector<double>>> out;
    sync();
    for (size_t i = 0; i < ir_.nodes.size(); ++i)
      if (ir_.nodes[i].kind == NodeKind::Neuron && nodes_[i])
        out.emplace_back(ir_.nodes[i].name + ".count", nodes_[i]->counts(B_));
    return out;
  }

  std::vector<double> energy_trajectory(const std::string& block, const void* x, int n,
                                        int* steps) override {
    need_built();
    int idx = -1;
    for (size_t i = 0; i < ir_.nodes.size(); ++i)
      if (ir_.nodes[i].name == block && ir_.nodes[i].kind == NodeKind::Energy) idx = int(i);
    if (idx < 0) throw ShapeError("the model has no energy block named '" + block + "'");
    std::vector<double> out;
    DeviceBuffer<float> carry;  // the model is not changed: the stream's state is restored
    carry.resize(carry_.n);
    if (carry_.n)
      NM_CUDA_CHECK(cudaMemcpyAsync(carry.ptr, carry_.ptr, sizeof(float) * carry_.n,
                                    cudaMemcpyDeviceToDevice, s()));
    Batches data(*this, x, nullptr, n);
    training(false);
    nodes_[idx]->record(true);
    try {
      for (int k = 0; k < n; ++k) {
        load_input(data.x(k));
        forward_all(R_);
        sync();
        nodes_[idx]->fetch_record(R_, &out, steps);
        commit_carry(R_);
      }
    } catch (...) {
      nodes_[idx]->record(false);
      restore(carry);
      throw;
    }
    nodes_[idx]->record(false);
    restore(carry);
    return out;
  }

  void get_param(const std::string& name, void* out, bool grad) const override {
    const ParamInfo& p = plan_.param(name);
    if (!built_) throw StateError("model is not built: call build() before reading parameters");
    download(out, (grad ? grads_.ptr : params_.ptr) + p.offset, p.size);
  }
  void set_param(const std::string& name, const void* in) override {
    const ParamInfo& p = plan_.param(name);
    if (!built_) throw StateError("model is not built: call build() before setting parameters");
    upload(params_.ptr + p.offset, in, p.size);
    sync();
  }
  void get_state(const std::string& name, void* out) const override {
    const ParamInfo& p = plan_.state(name);
    if (!built_) throw StateError("model is not built: call build() first");
    download(out, state_base(name) + p.offset, p.size);
  }
  void set_state(const std::string& name, const void* in) override {
    const ParamInfo& p = plan_.state(name);
    if (!built_) throw StateError("model is not built: call build() first");
    upload(state_base(name) + p.offset, in, p.size);
    sync();
  }
  void write_tensor(const std::string& name, bool state, size_t offset, size_t count,
                    const void* in) override {
    const ParamInfo& p = state ? plan_.state(name) : plan_.param(name);
    if (offset + count > p.size) throw ShapeError("tensor '" + name + "' is smaller than written");
    if (!built_) throw StateError("model is not built: call build() first");
    float* base = state ? state_base(name) : params_.ptr;
    upload(base + p.offset + offset, in, count);
    sync();
  }

 private:
  // The batches of one call, on the device: the caller's device pointers as they are, or host
  // data streamed through two pinned staging buffers while earlier batches compute.
  class Batches {
   public:
    Batches(CudaModel& m, const void* x, const void* e, int n)
        : m_(m), n_(n), xw_(size_t(m.B_) * m.input_width()), ew_(size_t(m.B_) * m.target_width()),
          xh_(static_cast<const float*>(x)), eh_(static_cast<const float*>(e)) {
      if (m.device_data_) {  // the producer's work on any stream is finished before we read
        NM_CUDA_CHECK(cudaDeviceSynchronize());
        return;
      }
      if (e && m.class_ids_) m.check_ids(eh_, n);
      if (x && m.has_embed_) m.check_tokens(xh_, n);
      m.xs_.resize(size_t(n) * xw_);
      if (e) m.es_.resize(size_t(n) * ew_);
      m.stage_[0].resize(kStageFloats);
      m.stage_[1].resize(kStageFloats);
    }
    const float* x(int k) {
      if (m_.device_data_) return xh_ + size_t(k) * xw_;
      bring(k);
      return m_.xs_.ptr + size_t(k) * xw_;
    }
    const float* e(int k) {
      if (!eh_) return nullptr;
      if (m_.device_data_) return eh_ + size_t(k) * ew_;
      bring(k);
      return m_.es_.ptr + size_t(k) * ew_;
    }

   private:
    // Copies batches up to k (inputs and targets) to the device, chunk by chunk, and makes the
    // compute stream wait for them.
    void bring(int k) {
      while (next_ <= k) {
        copy(xh_ + size_t(next_) * xw_, m_.xs_.ptr + size_t(next_) * xw_, xw_);
        if (eh_) copy(eh_ + size_t(next_) * ew_, m_.es_.ptr + size_t(next_) * ew_, ew_);
        ++next_;
      }
    }
    void copy(const float* src, float* dst, size_t count) {
      for (size_t done = 0; done < count; done += kStageFloats) {
        const size_t c = std::min(kStageFloats, count - done);
        PinnedBuffer& buf = m_.stage_[slot_];
        Event& ev = m_.staged_[slot_];
        NM_CUDA_CHECK(cudaEventSynchronize(ev.e));  // the buffer's previous copy is done
        std::memcpy(buf.ptr, src + done, sizeof(float) * c);
        NM_CUDA_CHECK(cudaMemcpyAsync(dst + done, buf.ptr, sizeof(float) * c,
                                      cudaMemcpyHostToDevice, m_.copy_.s));
        NM_CUDA_CHECK(cudaEventRecord(ev.e, m_.copy_.s));
        NM_CUDA_CHECK(cudaStreamWaitEvent(m_.compute_.s, ev.e, 0));
        slot_ ^= 1;
      }
    }
    CudaModel& m_;
    int n_, next_ = 0, slot_ = 0;
    size_t xw_, ew_;
    const float* xh_;
    const float* eh_;
  };

  static std::unique_ptr<DeviceNode> make_node(const IrNode& nd, const ParamOffset& off, Ctx ctx) {
    const DeviceMaker make = device_maker(nd.kind);
    if (!make) throw DeviceError("the node '" + nd.name + "' is of a kind the CUDA backend does not run");
    return make(nd, off, ctx);
  }

  cudaStream_t s() const { return compute_.s; }
  void sync() const { NM_CUDA_CHECK(cudaStreamSynchronize(compute_.s)); }
  void need_built() const {
    if (!built_) throw StateError("model is not built: call build() first");
  }
  void upload(float* dst, const void* src, size_t n) const {
    if (n) NM_CUDA_CHECK(cudaMemcpyAsync(dst, src, sizeof(float) * n, cudaMemcpyHostToDevice, s()));
  }
  void download(void* dst, const float* src, size_t n) const {
    sync();
    if (n) NM_CUDA_CHECK(cudaMemcpyAsync(dst, src, sizeof(float) * n, cudaMemcpyDeviceToHost, s()));
    sync();
  }
  float* state_base(const std::string& name) const {
    return name == "optimizer.state" ? opt_state_.ptr : carry_.ptr;
  }
  void restore(DeviceBuffer<float>& carry) {
    if (carry_.n)
      NM_CUDA_CHECK(cudaMemcpyAsync(carry_.ptr, carry.ptr, sizeof(float) * carry_.n,
                                    cudaMemcpyDeviceToDevice, s()));
    sync();
  }

  // Class ids must be integers in 0..n-1 (n: the entries of one cell): checked on the host
  // before anything runs, so a bad id names its place and nothing has changed.
  void check_ids(const float* ids, int n) const {
    const IrNode& o = ir_.nodes[ir_.output];
    const int C = o.cells, width = o.width / C;
    for (int k = 0; k < n; ++k)
      for (int r = 0; r < R_; ++r)
        for (int c = 0; c < C; ++c) {
          const float v = ids[(size_t(k) * B_ + r) * C + c];
          if (!(v >= 0 && v < width) || v != std::floor(v))
            throw DataError("expected class id " + fmt_num(v) + " at batch " + std::to_string(k) +
                            ", sample " + std::to_string(r) + ", cell " + std::to_string(c) +
                            " is not an integer in 0.." + std::to_string(width - 1));
        }
  }
  // Token ids read from the model input by an embed node or an attn2d with a vocabulary:
  // integers in 0..vocab-1, checked on the host before anything runs.
  void check_tokens(const float* x, int n) const {
    const int w = input_width();
    for (size_t idx = 0; idx < ir_.nodes.size(); ++idx) {
      const IrNode& nd = ir_.nodes[idx];
      if (!reads_tokens(nd)) continue;
      const int V = nd.st.geti("vocab");
      for (int k = 0; k < n; ++k)
        for (int r = 0; r < R_; ++r)
          for (int c = 0; c < w; ++c) {
            const float v = x[(size_t(k) * B_ + r) * w + c];
            if (!(v >= 0 && v < V) || v != std::floor(v))
              throw DataError("token id " + fmt_num(v) + " at batch " + std::to_string(k) +
                              ", sample " + std::to_string(r) + ", cell " + std::to_string(c) +
                              " of '" + nd.name + "' is not an integer in 0.." +
                              std::to_string(V - 1));
          }
    }
  }
  bool reads_tokens(const IrNode& nd) const {
    return (nd.kind == NodeKind::Embed || (nd.kind == NodeKind::Attn2d && nd.st.has("vocab"))) &&
           nd.inputs[0].node == ir_.input;
  }
  static std::string fmt_num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
  }

  // A chain input -> dense layers -> output with every width <= 128 takes the fused kernel
  // (cuda/fused_mlp.cu) unless NEUROMORPH_CUDA_PLAIN is set.
  void plan_fused() {
    has_embed_ = false;
    for (const IrNode& nd : ir_.nodes) has_embed_ |= reads_tokens(nd);
    if (ir_.recurrent || plan_.has_structs || env_off("NEUROMORPH_CUDA_PLAIN")) return;
    FusedMlp m;
    int prev = ir_.input;
    for (int idx : ir_.order) {
      const IrNode& nd = ir_.nodes[idx];
      if (idx == ir_.input) continue;
      if (nd.kind != NodeKind::Layer && nd.kind != NodeKind::Output) return;
      if (nd.cells != 1 || nd.inputs.size() != 1 || nd.inputs[0].node != prev) return;
      const LayerPlan& L = plan_.layers[idx];
      m.layers.push_back(FusedLayer{L.W, L.b, L.in, L.out, nd.act, float(nd.act_param)});
      prev = idx;
    }
    if (prev != ir_.output) return;
    const IrNode& out = ir_.nodes[ir_.output];
    m.loss = out.loss;
    m.loss_param = float(out.loss_param);
    m.softmax_xent = plan_.fused_xent;
    if (fused_mlp_supported(m)) {
      fused_ = m;
      use_fused_ = true;
    }
  }

  void zero_flags() {
    flags_.zero(s());
    diverged_at_ = -1;
  }

  // Losses (and parts) of `done` steps: the one read-back of a call.
  void finish(double* losses, double* parts, int done, size_t np) {
    std::vector<float> host(size_t(done) * np);
    std::vector<int> flags(3);
    sync();
    if (done)
      NM_CUDA_CHECK(cudaMemcpyAsync(host.data(), step_losses_.ptr, sizeof(float) * host.size(),
                                    cudaMemcpyDeviceToHost, s()));
    NM_CUDA_CHECK(cudaMemcpyAsync(flags.data(), flags_.ptr, sizeof(int) * 3, cudaMemcpyDeviceToHost, s()));
    sync();
    for (int k = 0; k < done; ++k) {
      const float* row = &host[size_t(k) * np];
      losses[k] = row[0];
      if (parts) {
        double aux = 0;
        for (size_t a = 1; a < np; ++a) {
          parts[size_t(k) * np + a] = row[a];
          aux += row[a];
        }
        parts[size_t(k) * np] = row[0] - aux;
      }
    }
    if (flags[2]) {  // only device-resident targets reach here unchecked
      const int C = ir_.nodes[ir_.output].cells, g = flags[2] - 1;
      throw DataError("expected class id at sample " + std::to_string(g / C) + ", cell " +
                      std::to_string(g % C) + " of a batch is not an integer in 0.." +
                      std::to_string(ir_.nodes[ir_.output].width / C - 1) + " (device data)");
    }
    if (flags[0]) diverged_at_ = flags[0] - 1;
  }

  // ------------------------------------------------------------------------ one batch
  void training(bool on) {
    for (auto& nd : nodes_)
      if (nd) nd->set_training(on);
  }

  // Forward, loss into out[0..np) (device), and with want_grad the gradients.
  void step(const float* x, const float* e, bool want_grad, float* out, int k) {
    training(want_grad);
    const IrNode& o = ir_.nodes[ir_.output];
    if (want_grad) grads_.zero(s());
    if (use_fused_ && e) {
      fused_mlp(s(), fused_, params_.ptr, want_grad ? grads_.ptr : nullptr, x, e, group_loss_.ptr,
                val(ir_.output, 0), R_, 1.f / R_, fused_scratch_.ptr);
      batch_loss(s(), group_loss_.ptr, R_, aux_.ptr, 0, B_, R_, out);
    } else {
      load_input(x);
      forward_all(R_);
      if (want_grad) vgrads_.zero(s());
      const float* ids = class_ids_ ? e : nullptr;
      loss_forward_backward(s(), o.loss, float(o.loss_param), plan_.fused_xent, val(ir_.output, 0),
                            ids ? nullptr : e, ids, flags_.ptr + 2, group_loss_.ptr,
                            want_grad ? vgrad(ir_.output, 0) : nullptr, R_, o.width, o.cells,
                            float(1.0 / (double(R_) * o.cells)));
      batch_loss(s(), group_loss_.ptr, R_ * o.cells, aux_.ptr, int(plan_.aux_nodes.size()), B_, R_, out);
      if (want_grad) backward_all();
    }
    if (want_grad && check_finite_ && !reducer_) {  // distributed: after the sum (all_reduce)
      check_finite(s(), out, 1, flags_.ptr + 1);
      check_finite(s(), grads_.ptr, plan_.n_params, flags_.ptr + 1);
      mark_diverged(k);
    }
  }

  // ---- distributed (begin): the host path of data-parallel training, as the CPU executor's
  // all_reduce (cpu/model.cpp): this rank's weighted loss parts and the stop flag first (a
  // non-finite global loss stops every rank at the same batch), then the weighted gradient
  // arena; every rank then holds the same sums and takes the same update.
  void all_reduce(float* out, size_t np, int k, const std::atomic<bool>* stop) {
    std::vector<float> local(np);
    download(local.data(), out, np);
    std::vector<double> red(np + 1);
    for (size_t i = 0; i < np; ++i) red[i] = weight_ * double(local[i]);
    red[np] = stop && stop->load(std::memory_order_relaxed) ? 1.0 : 0.0;
    reducer_->sum(red.data(), red.size(), DType::F64);
    stop_all_ = red[np] > 0;
    if (check_finite_ && !std::isfinite(red[0]))
      throw Diverged("training diverged at batch " + std::to_string(k) + ": the loss summed over "
                     "the ranks is not finite. The model holds its state from before this batch");
    for (size_t i = 0; i < np; ++i) local[i] = float(red[i]);
    upload(out, local.data(), np);  // the global loss parts, as finish() reports them
    const size_t n = plan_.n_params;
    host_grads_.resize(n);
    download(host_grads_.data(), grads_.ptr, n);
    if (weight_ != 1)
      for (float& g : host_grads_) g *= float(weight_);
    reducer_->sum(host_grads_.data(), n, DType::F32);
    upload(grads_.ptr, host_grads_.data(), n);
    if (check_finite_) {  // the summed gradient: the same verdict on every rank
      check_finite(s(), grads_.ptr, n, flags_.ptr + 1);
      mark_diverged(k);
    }
  }
  // ---- distributed (end)

  // flags[0] = first diverged batch + 1 once flags[1] was raised
  void mark_diverged(int k);

  void update() {
    const size_t n = plan_.n_params;
    const int* halt = check_finite_ ? flags_.ptr : nullptr;
    if (opt_.grad_clip > 0) clip_grad(s(), grads_.ptr, work_.ptr, float(opt_.grad_clip), n);
    const double rate = opt_.rate(lr_, steps_);
    const float wd = float(opt_.weight_decay);
    switch (opt_.kind) {
      case OptimConfig::Sgd: sgd(s(), params_.ptr, grads_.ptr, float(rate), wd, n, halt); break;
      case OptimConfig::Momentum:
        momentum(s(), params_.ptr, grads_.ptr, opt_state_.ptr, float(rate), wd,
                 float(opt_.momentum), steps_ == 0, n, halt);
        break;
      case OptimConfig::Adam:
      case OptimConfig::AdamW: {
        const AdamStep a = adam_step(opt_, lr_, steps_);
        adam(s(), params_.ptr, grads_.ptr, opt_state_.ptr, opt_state_.ptr + n, float(rate), wd,
             float(opt_.beta1), float(opt_.beta2), float(opt_.eps), float(a.step), float(a.sbc2),
             a.decoupled, n, halt);
        break;
      }
    }
  }

  void load_input(const float* x) {
    const size_t n = size_t(R_) * input_width();
    NM_CUDA_CHECK(cudaMemcpyAsync(val(ir_.input, 0), x, sizeof(float) * n, cudaMemcpyDeviceToDevice, s()));
  }

  float* val(int node, int row) const {
    const Slot& sl = plan_.slot(node);
    return vals_.ptr + sl.off + size_t(row) * sl.width;
  }
  float* vgrad(int node, int row) const {
    const Slot& sl = plan_.slot(node);
    return vgrads_.ptr + sl.off + size_t(row) * sl.width;
  }
  // Value read through input `in` at `row` (rows == 1 when delayed): row-1 or the carry.
  float* read(const IrInput& in, int row) const {
    if (!in.delayed) return val(in.node, row);
    return row > 0 ? val(in.node, row - 1) : carry_.ptr + plan_.slot(in.node).carry;
  }
  float* read_grad(const IrInput& in, int row) const {  // null: the carried-in state is a constant
    if (!in.delayed) return vgrad(in.node, row);
    return row > 0 ? vgrad(in.node, row - 1) : nullptr;
  }

  void forward_all(int rows) {
    if (!plan_.aux_nodes.empty()) aux_.zero(s());
    plan_.forward_order(rows, [this](int idx, int row, int n) { forward_node(idx, row, n); });
  }

  void backward_all() {
    plan_.backward_order(R_, [this](int idx, int row, int n) { backward_node(idx, row, n); });
  }

  float* aux_of(int idx, int row) {
    for (size_t a = 0; a < plan_.aux_nodes.size(); ++a)
      if (plan_.aux_nodes[a] == idx) return aux_.ptr + a * size_t(B_) + row;
    return nullptr;
  }

  void forward_node(int idx, int row, int rows) {
    const IrNode& nd = ir_.nodes[idx];
    switch (nd.kind) {
      case NodeKind::Layer:
      case NodeKind::Output: {
        const LayerPlan& L = plan_.layers[idx];
        const int R = rows * L.cells;  // a position-wise layer: every cell is a row
        float* z = zbuf_.ptr + L.z + size_t(row) * L.cells * L.out;
        // z[R, out] = u[R, in] W[out, in]ᵀ, then z += b and a = f(z)
        blas_.gemm(false, true, R, L.out, L.in, 1.f, val(nd.inputs[0].node, row), L.in,
                   params_.ptr + L.W, L.in, 0.f, z, L.out);
        bias_act_forward(s(), nd.act, float(nd.act_param), L.has_alpha ? params_.ptr + L.alpha : nullptr,
                         z, params_.ptr + L.b, val(idx, row), R, L.out);
        break;
      }
      NM_STRUCT_KIND_CASES:
        nodes_[idx]->forward(params_.ptr, val(nd.inputs[0].node, row), val(idx, row), row, rows,
                             aux_of(idx, row));
        break;
      case NodeKind::Merge:
        merge_forward(s(), nd.op, val(nd.inputs[0].node, row), read(nd.inputs[1], row),
                      val(idx, row), size_t(rows) * nd.width);
        break;
      case NodeKind::Input: case NodeKind::Split: case NodeKind::Tap: case NodeKind::kCount:
        break;  // input: loaded; split/tap: aliases
    }
  }

  void backward_node(int idx, int row, int rows) {
    const IrNode& nd = ir_.nodes[idx];
    switch (nd.kind) {
      case NodeKind::Layer:
      case NodeKind::Output: {
        const LayerPlan& L = plan_.layers[idx];
        const int R = rows * L.cells;
        const size_t at = L.z + size_t(row) * L.cells * L.out;
        float* dz = dz_.ptr + at;
        if (idx == ir_.output && plan_.fused_xent) {
          NM_CUDA_CHECK(cudaMemcpyAsync(dz, vgrad(idx, row), sizeof(float) * R * L.out,
                                        cudaMemcpyDeviceToDevice, s()));  // already dL/dz
        } else {
          act_backward(s(), nd.act, float(nd.act_param), L.has_alpha ? params_.ptr + L.alpha : nullptr,
                       zbuf_.ptr + at, val(idx, row), vgrad(idx, row), dz,
                       L.has_alpha ? grads_.ptr + L.alpha : nullptr, R, L.out);
        }
        const int src = nd.inputs[0].node;
        // dW[out, in] += dzᵀ u ; db += Σ dz ; du[R, in] += dz W
        blas_.gemm(true, false, L.out, L.in, R, 1.f, dz, L.out, val(src, row), L.in, 1.f,
                   grads_.ptr + L.W, L.in);
        bias_grad(s(), dz, grads_.ptr + L.b, R, L.out);
        if (ir_.nodes[src].kind != NodeKind::Input)
          blas_.gemm(false, false, R, L.in, L.out, 1.f, dz, L.out, params_.ptr + L.W, L.in, 1.f,
                     vgrad(src, row), L.in);
        break;
      }
      NM_STRUCT_KIND_CASES: {
        const int src = nd.inputs[0].node;
        float* du = ir_.nodes[src].kind == NodeKind::Input ? nullptr : vgrad(src, row);
        nodes_[idx]->backward(params_.ptr, grads_.ptr, val(src, row), vgrad(idx, row), du, row,
                              rows, float(1.0 / R_));
        break;
      }
      case NodeKind::Merge:
        merge_backward(s(), nd.op, val(nd.inputs[0].node, row), read(nd.inputs[1], row),
                       vgrad(idx, row), vgrad(nd.inputs[0].node, row), read_grad(nd.inputs[1], row),
                       size_t(rows) * nd.width);
        break;
      case NodeKind::Input: case NodeKind::Split: case NodeKind::Tap: case NodeKind::kCount:
        break;
    }
  }

  // The window's last sample (of `rows`) becomes the next window's "previous".
  void commit_carry(int rows) {
    for (const Slot& sl : plan_.slots)
      if (sl.carry != SIZE_MAX)
        NM_CUDA_CHECK(cudaMemcpyAsync(carry_.ptr + sl.carry, vals_.ptr + sl.off + size_t(rows - 1) * sl.width,
                                      sizeof(float) * sl.width, cudaMemcpyDeviceToDevice, s()));
  }

  // n batches of R_ rows each into host memory y (inputs on the host or, with device data, on
  // the device); one read-back at the end.
  void predict_block(const void* x, int n, void* y) {
    Batches data(*this, x, nullptr, n);
    training(false);
    const int w = output_width();
    ys_.resize(size_t(n) * R_ * w);
    for (int k = 0; k < n; ++k) {
      if (use_fused_) {
        fused_mlp(s(), fused_, params_.ptr, nullptr, data.x(k), nullptr, nullptr, val(ir_.output, 0),
                  R_, 1.f);
      } else {
        load_input(data.x(k));
        forward_all(R_);
      }
      NM_CUDA_CHECK(cudaMemcpyAsync(ys_.ptr + size_t(k) * R_ * w, val(ir_.output, 0),
                                    sizeof(float) * R_ * w, cudaMemcpyDeviceToDevice, s()));
      commit_carry(R_);
    }
    download(y, ys_.ptr, size_t(n) * R_ * w);
  }

  const Plan plan_;
  const IrModel& ir_;
  int B_, R_;
  double lr_;
  OptimConfig opt_;
  long steps_ = 0;
  bool built_ = false, class_ids_ = false, check_finite_ = true, device_data_ = false;
  bool has_embed_ = false, use_fused_ = false;
  int diverged_at_ = -1;
  uint64_t seed_ = 0;  // of the last build (build_seed)
  std::shared_ptr<GradReducer> reducer_;  // distributed: sums loss parts and gradients over ranks
  double weight_ = 1;                     // this rank's rows / the global batch's rows
  bool stop_all_ = false;                 // a rank was interrupted: every rank stops here
  std::vector<float> host_grads_;         // the host copy of the gradient arena for the sum
  FusedMlp fused_;
  Stream compute_, copy_;
  Blas blas_;
  std::vector<std::unique_ptr<DeviceNode>> nodes_;  // by node index; null for other kinds
  DeviceBuffer<float> params_, grads_, opt_state_, vals_, vgrads_, zbuf_, dz_, carry_, group_loss_,
      aux_, xs_, es_, ys_, step_losses_, fused_scratch_;
  DeviceBuffer<double> work_;  // clip_grad's partial sums of squares
  // [0]: first diverged batch + 1; [1]: a non-finite loss or gradient seen; [2]: 1 + the first
  // bad class id (device-resident targets)
  DeviceBuffer<int> flags_;
  PinnedBuffer stage_[2];
  Event staged_[2];
};

std::array<DeviceMaker, size_t(NodeKind::kCount)>& device_makers() {
  static std::array<DeviceMaker, size_t(NodeKind::kCount)> makers{};
  return makers;
}

__global__ void k_mark(int* flags, int k) {
  if (flags[1] && !flags[0]) flags[0] = k + 1;
}

void CudaModel::mark_diverged(int k) {
  k_mark<<<1, 1, 0, s()>>>(flags_.ptr, k);
  NM_CUDA_LAUNCHED();
}


}  // namespace

// Registration runs at plugin load, one kind per unit, before any model exists.
bool register_device_kind(NodeKind kind, DeviceMaker make) {
  device_makers()[size_t(kind)] = make;
  return true;
}
DeviceMaker device_maker(NodeKind kind) {
  return size_t(kind) < size_t(NodeKind::kCount) ? device_makers()[size_t(kind)] : nullptr;
}

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

// Errors cross the plugin boundary as typed C++ exceptions (both sides share the runtime's
// error classes and the C++ runtime).
nm::ModelBase* nm_cuda_create(const char* ir, int batch, double lr, const nm::OptimConfig* opt) {
  return new nm::cuda::CudaModel(ir, batch, lr, *opt);
}

}  // extern "C"
