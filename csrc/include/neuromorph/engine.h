// The engine's C++ API: models by integer handle, typed errors (errors.h), no Python.
// A model is compiled from IR JSON (written by `mdlc compile`), built (allocated and
// initialised from the engine's RNG), then trained / run on row-major float buffers of
// shape (n_batches, batch_size, width).
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "neuromorph/errors.h"
#include "neuromorph/optim.h"

namespace nm {

enum class DType { F32, F64 };

// Data-parallel training (docs/distributed.md): sums a buffer over every rank of a job, in
// place. Made by the MPI plugin's loader (csrc/mpi/reducer.h); the engine links no MPI.
class GradReducer {
 public:
  virtual ~GradReducer() = default;
  virtual void sum(void* buf, size_t n, DType dtype) = 0;  // throws Error when MPI fails
};

struct ParamInfo {
  std::string name;            // "<layer>.weight" | "<layer>.bias" | "<layer>.alpha"
  std::vector<int64_t> shape;  // weight (out, in); bias (out,); alpha ()
  size_t offset = 0, size = 0; // in the parameter arena
};

// One array of nm.inspect: "<node>.<key>", its shape (the sample dimension first when per
// sample), its kind for numpy ('f' real, 'i' integer, 'b' bool) and its values.
struct InspectArray {
  std::string name;
  std::vector<int64_t> shape;
  char type = 'f';
  bool per_sample = true;
  std::vector<double> data;
};

class ModelBase {
 public:
  virtual ~ModelBase() = default;
  virtual DType dtype() const = 0;
  virtual std::string device() const { return "cpu"; }
  virtual int batch_size() const = 0;
  virtual int input_width() const = 0;
  virtual int output_width() const = 0;
  virtual bool recurrent() const = 0;
  virtual bool built() const = 0;
  virtual const std::string& ir_json() const = 0;

  virtual void build(uint64_t seed) = 0;
  // The seed of the last build. Besides the initial parameters it fixes the tensors a node
  // draws once and never trains (an energy block's `init normal` start states), so a copy of
  // the model (save/load, a move between devices) is built with it to hold the same ones.
  virtual uint64_t build_seed() const { return 0; }
  // Buffers hold elements of dtype(): x (n, B, in), e (n, B, out), y (n, B, out).
  // train/evaluate write each batch's mean loss to losses[n]. train stops after the current
  // batch once *stop is set, and returns the number of batches it trained.
  // With `parts`, also each batch's loss split into loss_parts() (n_batches x parts).
  virtual int train(const void* x, const void* e, int n_batches, double* losses,
                    const std::atomic<bool>* stop = nullptr, double* parts = nullptr) = 0;
  // Names of the parts the training loss sums: "output" (the output's loss), then one per
  // auxiliary loss a node adds ("<node>.wiring").
  virtual std::vector<std::string> loss_parts() const = 0;
  // The energy of an energy block along its descent: for each sample of x (n batches), the
  // block's total energy E^0..E^T (n x B x (T+1) values); the model is not changed.
  // Per-forward statistics of nodes, from the last forward pass (e.g. "<neuron node>.count":
  // the activation count of each sample of the batch).
  virtual std::vector<std::pair<std::string, std::vector<double>>> node_stats() = 0;
  virtual std::vector<double> energy_trajectory(const std::string& block, const void* x, int n,
                                                int* steps) = 0;
  // nm.inspect (docs/inspect.md): one inference forward over n batches of x that records, for
  // each named node (every node when `nodes` is empty), "<node>.output" and what its kind
  // shows; the last batch holds `last` samples (0: a full batch), as predict_rows runs it.
  // The model is not changed. This default inspects a CPU copy (the GPU backend).
  virtual std::vector<InspectArray> inspect(const std::vector<std::string>& nodes, const void* x,
                                            int n, int last = 0);
  virtual void evaluate(const void* x, const void* e, int n_batches, double* losses) = 0;
  virtual void predict(const void* x, int n_batches, void* y) = 0;
  // Outputs of n >= 1 samples x (n, in) into y (n, out), any n (no padding by the caller):
  // whole batches, then a partial one. Recurrent models continue their stream sample by sample.
  virtual void predict_rows(const void* x, int n, void* y);
  // Width of one sample's `expected` row: the output width, or with class-id targets (an
  // output with `cells C` and cross_entropy) C ids. set_class_targets(true) switches to ids.
  virtual int target_width() const { return output_width(); }
  virtual void set_class_targets(bool on);
  // The next train/evaluate/gradients batches hold `rows` (1..batch_size) samples: a partial
  // last batch trains exactly as a model compiled with that batch size would (mean over its
  // rows). Reset to batch_size() after use.
  virtual void set_rows(int rows);
  // With on, train() checks each batch's loss (and gradients) before updating and throws
  // Diverged, naming the batch and the first node holding a non-finite value.
  virtual void set_check_finite(bool on) { (void)on; }
  // With on, the next train/evaluate/predict/gradients calls take device pointers (the data is
  // already on the model's device); only backends with accepts_device_data() allow it.
  virtual bool accepts_device_data() const { return false; }
  virtual void set_device_data(bool on) {
    if (on) throw DeviceError("this model runs on the CPU: its data must be host memory");
  }
  // Data-parallel training: with a reducer, train() sums each batch's loss and gradient arena
  // over the ranks, this rank's share scaled by `weight` (its rows / the global batch's rows),
  // between backward and the optimizer step; null turns it off. Backends without it refuse.
  virtual void set_grad_reducer(std::shared_ptr<GradReducer> reducer, double weight) {
    (void)weight;
    if (reducer)
      throw DeviceError("data-parallel training (distributed=True) runs models on the CPU in "
                        "this version; this model runs on '" + device() + "'");
  }
  // Gradient of one batch's loss, into the gradient arena; no update, state unchanged.
  virtual double compute_gradients(const void* x, const void* e) = 0;
  virtual void reset_state() = 0;

  virtual const std::vector<ParamInfo>& params() const = 0;
  virtual void get_param(const std::string& name, void* out, bool grad = false) const = 0;
  virtual void set_param(const std::string& name, const void* in) = 0;
  virtual double learning_rate() const = 0;

  virtual const OptimConfig& optimizer() const = 0;
  virtual long steps() const = 0;          // optimizer steps taken since build
  virtual void set_steps(long steps) = 0;

  // Recurrent state: one tensor per value read by a delayed edge ("state.<node>", (width,)),
  // then the optimizer's buffers ("optimizer.state", (buffers, n_params)) when it has any.
  virtual const std::vector<ParamInfo>& state_tensors() const = 0;
  virtual void get_state(const std::string& name, void* out) const = 0;
  virtual void set_state(const std::string& name, const void* in) = 0;
  // Part of a parameter (or, with state, a state tensor): `count` elements from element
  // `offset` on, so a load streams a file in small chunks. The default goes through a whole
  // tensor copy; the CPU model writes in place.
  virtual void write_tensor(const std::string& name, bool state, size_t offset, size_t count,
                            const void* in);
};

// Save a built model (parameters, recurrent state, IR and settings) as one safetensors file,
// written to a temporary file and renamed over `path`. `metadata` adds string entries.
void save_model(const ModelBase& model, const std::string& path,
                const std::vector<std::pair<std::string, std::string>>& metadata = {});
// Load a file written by save_model: a built model that continues exactly where it was.
std::unique_ptr<ModelBase> load_model(const std::string& path);

std::unique_ptr<ModelBase> make_model(const std::string& ir_json, int batch_size,
                                      double learning_rate, DType dtype,
                                      const OptimConfig& optimizer = OptimConfig{});

// Handles. Numbers are never reused, so a released handle stays an error.
int registry_add(std::unique_ptr<ModelBase> model);
// A use of a model: keeps it alive even if another thread releases the handle meanwhile, and
// holds the model's lock, so a second concurrent use gets StateError("busy") instead of a race.
class ModelRef {
 public:
  ModelRef(std::shared_ptr<ModelBase> m, std::shared_ptr<std::mutex> mu);
  ModelRef(ModelRef&&) = default;
  ~ModelRef();
  ModelBase& operator*() const { return *m_; }
  ModelBase* operator->() const { return m_.get(); }

 private:
  std::shared_ptr<ModelBase> m_;
  std::shared_ptr<std::mutex> mu_;
};
ModelRef registry_get(int handle);     // throws HandleError, StateError when busy
void registry_release(int handle);     // throws HandleError
// Puts another model (e.g. the same model on another device) behind an existing handle.
void registry_replace(int handle, std::unique_ptr<ModelBase> model);
size_t registry_size();

// The engine RNG: seed() makes every later build reproducible; build draws from it.
void seed(uint64_t s);
uint64_t draw_seed();

}  // namespace nm
