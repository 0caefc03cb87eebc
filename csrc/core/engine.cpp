// Handle registry and the engine-wide seed. Handles are never reused.
#include <algorithm>
#include <cstring>
#include <map>
#include <vector>
#include <mutex>
#include <random>

#include "neuromorph/engine.h"
#include "rng.h"

namespace nm {
namespace {
std::mutex g_mu;
struct Slot {
  std::shared_ptr<ModelBase> model;
  std::shared_ptr<std::mutex> mu;
};
std::map<int, Slot> g_models;
int g_next = 1;
Rng& global_rng() {
  static Rng rng(std::random_device{}());  // unseeded runs differ, like PyTorch's default
  return rng;
}
// Caller holds g_mu. Handles below g_next were issued once and are gone now.
HandleError missing(int handle, const char* gone) {
  return HandleError(handle > 0 && handle < g_next
                         ? "model handle " + std::to_string(handle) + " was " + gone
                         : "unknown model handle " + std::to_string(handle));
}
}  // namespace

// Fallback for backends without a partial-batch path: pad each chunk to a whole batch (only
// sound when samples do not interact, so never for a recurrent stream).
void ModelBase::predict_rows(const void* x, int n, void* y) {
  if (recurrent())
    throw StateError("this backend predicts recurrent models in whole batches only");
  const int B = batch_size(), in = input_width(), out = output_width();
  const size_t es = dtype() == DType::F64 ? 8 : 4;
  std::vector<unsigned char> xb(es * B * in), yb(es * B * out);
  const auto* src = static_cast<const unsigned char*>(x);
  auto* dst = static_cast<unsigned char*>(y);
  for (int done = 0; done < n; done += B) {
    const int rows = std::min(B, n - done);
    std::fill(xb.begin(), xb.end(), 0);
    std::memcpy(xb.data(), src + es * size_t(done) * in, es * size_t(rows) * in);
    predict(xb.data(), 1, yb.data());
    std::memcpy(dst + es * size_t(done) * out, yb.data(), es * size_t(rows) * out);
  }
}

void ModelBase::write_tensor(const std::string& name, bool state, size_t offset, size_t count,
                             const void* in) {
  const auto& list = state ? state_tensors() : params();
  const ParamInfo* info = nullptr;
  for (const auto& p : list)
    if (p.name == name) info = &p;
  if (!info || offset + count > info->size) throw ShapeError("no tensor part '" + name + "'");
  const size_t es = dtype() == DType::F64 ? 8 : 4;
  std::vector<unsigned char> whole(info->size * es);
  if (state) get_state(name, whole.data());
  else get_param(name, whole.data());
  std::memcpy(whole.data() + offset * es, in, count * es);
  if (state) set_state(name, whole.data());
  else set_param(name, whole.data());
}

void ModelBase::set_rows(int rows) {
  if (rows != batch_size()) throw DeviceError("this backend trains whole batches only");
}

void ModelBase::set_class_targets(bool on) {
  if (on) throw ShapeError("this backend takes one-hot targets only");
}

ModelRef::ModelRef(std::shared_ptr<ModelBase> m, std::shared_ptr<std::mutex> mu)
    : m_(std::move(m)), mu_(std::move(mu)) {}

ModelRef::~ModelRef() {
  if (mu_) mu_->unlock();
}

int registry_add(std::unique_ptr<ModelBase> model) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_models.emplace(g_next, Slot{std::move(model), std::make_shared<std::mutex>()});
  return g_next++;
}

ModelRef registry_get(int handle) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_models.find(handle);
  if (it == g_models.end()) throw missing(handle, "released");
  if (!it->second.mu->try_lock())
    throw StateError("model " + std::to_string(handle) + " is busy: another thread is using it");
  return ModelRef(it->second.model, it->second.mu);
}

void registry_replace(int handle, std::unique_ptr<ModelBase> model) {
  Slot doomed;
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_models.find(handle);
  if (it == g_models.end()) throw missing(handle, "released");
  doomed.model = std::move(it->second.model);
  it->second.model = std::move(model);
}

void registry_release(int handle) {
  Slot doomed;  // destroyed outside the lock (or later, by a call still using it)
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_models.find(handle);
  if (it == g_models.end()) throw missing(handle, "already released");
  doomed = std::move(it->second);
  g_models.erase(it);
}

size_t registry_size() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_models.size();
}

void seed(uint64_t s) {
  std::lock_guard<std::mutex> lock(g_mu);
  global_rng().reseed(s);
}

uint64_t draw_seed() {
  std::lock_guard<std::mutex> lock(g_mu);
  return global_rng().next();
}

}  // namespace nm
