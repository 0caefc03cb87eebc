// The C API (include/neuromorph/neuromorph.h): every C++ error becomes a status code and a
// per-thread message; nothing escapes, nothing exits.
#include "neuromorph/neuromorph.h"

#include <cmath>
#include <fstream>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "neuromorph/device.h"
#include "neuromorph/engine.h"

namespace {
thread_local std::string g_error;

template <class F>
int guarded(F&& f) {
  try {
    f();
    g_error.clear();
    return NM_OK;
  } catch (...) {  // the one error table: nm::describe (errors.h)
    nm::ErrorInfo info = nm::describe(std::current_exception());
    g_error = std::move(info.message);
    return info.status;
  }
}

void need(const void* p, const char* what) {
  if (!p) throw std::invalid_argument(std::string(what) + " is NULL");
}

nm::ModelRef f32_model(nm_handle h) {
  nm::ModelRef m = nm::registry_get(h);
  if (m->dtype() != nm::DType::F32) throw nm::DataError("the C API drives float32 models only");
  return m;
}
}  // namespace

extern "C" {

int nm_api_version(void) { return NM_API_VERSION; }
const char* nm_last_error(void) { return g_error.c_str(); }

int nm_seed(uint64_t seed) {
  return guarded([&] { nm::seed(seed); });
}

int nm_load_ir(const char* ir_json, int batch_size, double lr, nm_handle* out) {
  return guarded([&] {
    need(ir_json, "ir_json");
    need(out, "out");
    *out = nm::registry_add(nm::make_model(ir_json, batch_size, lr, nm::DType::F32));
  });
}

int nm_load_ir_file(const char* path, int batch_size, double lr, nm_handle* out) {
  return guarded([&] {
    need(path, "path");
    need(out, "out");
    std::ifstream f(path, std::ios::binary);
    if (!f) throw nm::FileError(std::string("cannot open ") + path);
    std::ostringstream s;
    s << f.rdbuf();
    *out = nm::registry_add(nm::make_model(s.str(), batch_size, lr, nm::DType::F32));
  });
}

int nm_build(nm_handle h) {
  return guarded([&] { nm::registry_get(h)->build(nm::draw_seed()); });
}

int nm_shape(nm_handle h, int* batch, int* in, int* out) {
  return guarded([&] {
    nm::ModelRef m = nm::registry_get(h);
    if (batch) *batch = m->batch_size();
    if (in) *in = m->input_width();
    if (out) *out = m->output_width();
  });
}

int nm_train(nm_handle h, const float* x, const float* e, int n, double* mean_loss) {
  return guarded([&] {
    need(x, "inputs");
    need(e, "expected");
    if (n <= 0) throw nm::ShapeError("n_batches must be positive");
    nm::ModelRef ref = f32_model(h);
    nm::ModelBase& m = *ref;
    size_t nx = size_t(n) * m.batch_size() * m.input_width();
    size_t ne = size_t(n) * m.batch_size() * m.output_width();
    for (size_t i = 0; i < nx; ++i)
      if (!std::isfinite(x[i])) throw nm::DataError("inputs hold NaN or inf");
    for (size_t i = 0; i < ne; ++i)
      if (!std::isfinite(e[i])) throw nm::DataError("expected holds NaN or inf");
    std::vector<double> losses(static_cast<size_t>(n));
    m.train(x, e, n, losses.data());
    double s = 0;
    for (double l : losses) s += l;
    if (mean_loss) *mean_loss = s / n;
  });
}

int nm_predict(nm_handle h, const float* x, int n, float* y) {
  return guarded([&] {
    need(x, "inputs");
    need(y, "outputs");
    if (n <= 0) throw nm::ShapeError("n_batches must be positive");
    nm::ModelRef m = f32_model(h);
    const size_t count = size_t(n) * size_t(m->batch_size()) * size_t(m->input_width());
    for (size_t i = 0; i < count; ++i)  // as nm_train: NaN/inf inputs are refused, not predicted
      if (!std::isfinite(x[i])) throw nm::DataError("inputs hold NaN or inf at index " + std::to_string(i));
    m->predict(x, n, y);
  });
}

int nm_reset_state(nm_handle h) {
  return guarded([&] { nm::registry_get(h)->reset_state(); });
}

int nm_save(nm_handle h, const char* path) {
  return guarded([&] {
    need(path, "path");
    nm::save_model(*nm::registry_get(h), path, {{"saved_by", "C API"}});
  });
}

int nm_load(const char* path, nm_handle* out) {
  return guarded([&] {
    need(path, "path");
    need(out, "out");
    *out = nm::registry_add(nm::load_model(path));
  });
}

int nm_to_device(nm_handle h, const char* device) {
  return guarded([&] {
    need(device, "device");
    std::unique_ptr<nm::ModelBase> moved;
    {
      nm::ModelRef ref = nm::registry_get(h);
      if (ref->built() && ref->device() == device) return;
      moved = nm::move_model(*ref, device);
    }
    nm::registry_replace(h, std::move(moved));
  });
}

int nm_release(nm_handle h) {
  return guarded([&] { nm::registry_release(h); });
}

}  // extern "C"
