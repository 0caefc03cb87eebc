// pybind11 module `neuromorph._core`: conversions and GIL handling only. Shapes and values
// are validated in `neuromorph/__init__.py`; this layer re-checks sizes so a wrong call from
// Python can never read past a buffer.
#include <signal.h>

#include <atomic>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "../core/struct_node.h"
#include "../cpu/gemm.h"
#include "../cpu/threads.h"
#include "../mpi/reducer.h"
#include "neuromorph/device.h"
#include "neuromorph/engine.h"
#include "neuromorph/version.h"

namespace py = pybind11;
using nm::ModelBase;

namespace {

template <class T>
using Arr = py::array_t<T, py::array::c_style | py::array::forcecast>;

// Float data of one call: a host array (converted to T, C order) or, for an object with
// __cuda_array_interface__ (a CuPy array, a PyTorch CUDA tensor), the device memory in place:
// float32, C-contiguous.
template <class T>
struct Data {
  py::object keep;
  const T* ptr = nullptr;
  std::vector<ssize_t> shape;
  bool device = false;
  explicit Data(const py::object& o, const char* what) {
    if (py::hasattr(o, "__cuda_array_interface__")) {
      py::dict cai = o.attr("__cuda_array_interface__");
      const std::string type = py::str(cai["typestr"]);
      if (type != "<f4" || sizeof(T) != 4)
        throw nm::DataError(std::string(what) + " on the device must be float32 (typestr '<f4'), got '" + type + "'");
      for (auto d : cai["shape"].cast<py::tuple>()) shape.push_back(d.cast<ssize_t>());
      if (cai.contains("strides") && !cai["strides"].is_none()) {
        ssize_t want = sizeof(float);
        auto strides = cai["strides"].cast<std::vector<ssize_t>>();
        for (size_t i = shape.size(); i-- > 0;) {
          if (shape[i] > 1 && strides[i] != want)
            throw nm::DataError(std::string(what) + " on the device must be C-contiguous");
          want *= shape[i];
        }
      }
      ptr = reinterpret_cast<const T*>(cai["data"].cast<py::tuple>()[0].cast<uintptr_t>());
      device = true;
      keep = o;
      return;
    }
    Arr<T> a(o);
    keep = a;
    ptr = a.data();
    shape.assign(a.shape(), a.shape() + a.ndim());
  }
};

template <class T>
ssize_t expect(const Data<T>& a, int width, int batch, const char* what) {
  if (a.shape.size() != 3 || a.shape[1] != batch || a.shape[2] != width || batch < 1)
    throw nm::ShapeError(std::string(what) + ": expected shape (n, " + std::to_string(batch) + ", " +
                         std::to_string(width) + ")");
  return a.shape[0];
}
ssize_t expect(const py::array& a, int width, int batch, const char* what) {
  if (a.ndim() != 3 || a.shape(1) != batch || a.shape(2) != width || batch < 1)
    throw nm::ShapeError(std::string(what) + ": internal shape check failed");
  return a.shape(0);
}

// Device-resident data for the length of one call.
struct OnDevice {
  ModelBase& m;
  bool on;
  OnDevice(ModelBase& model, bool x_dev, bool e_dev) : m(model), on(x_dev) {
    if (x_dev != e_dev)
      throw nm::DeviceError("inputs and expected must both be on the device or both in host memory");
    if (!on) return;
    if (!m.accepts_device_data())
      throw nm::DeviceError("data on a CUDA device needs a model on device 'cuda' (this one runs on '" +
                            m.device() + "'); move it with to_device or pass host arrays");
    m.set_device_data(true);
  }
  ~OnDevice() {
    if (on) m.set_device_data(false);
  }
};

// Ctrl-C while the engine trains without the GIL: a C-level SIGINT handler, installed for the
// call, sets a flag the train loop checks after each batch. Python sees KeyboardInterrupt after.
std::atomic<bool> g_stop{false};
extern "C" void on_sigint(int) { g_stop.store(true); }

struct SigintGuard {
  struct sigaction old {};
  bool installed = false;
  SigintGuard() {
    g_stop.store(false);
    if (PyGILState_Check() && PyOS_getsig(SIGINT) != SIG_IGN) {
      struct sigaction sa {};
      sa.sa_handler = on_sigint;
      sigemptyset(&sa.sa_mask);
      installed = sigaction(SIGINT, &sa, &old) == 0;
    }
  }
  ~SigintGuard() {
    if (installed) sigaction(SIGINT, &old, nullptr);
  }
};

// A partial batch of `rows` samples for the length of one call (0: whole batches).
struct Rows {
  ModelBase& m;
  int rows;
  Rows(ModelBase& model, int r) : m(model), rows(r ? r : model.batch_size()) {
    if (r) m.set_rows(r);
  }
  ~Rows() {
    if (rows != m.batch_size()) m.set_rows(m.batch_size());
  }
};

// Class-id targets for the length of one call (the model reads one-hot targets otherwise).
struct ClassTargets {
  ModelBase& m;
  ClassTargets(ModelBase& model, bool on) : m(model) { m.set_class_targets(on); }
  ~ClassTargets() { m.set_class_targets(false); }
};

template <class T>
py::object run_losses(ModelBase& m, const py::object& x, const py::object& e, bool train, bool ids,
                      int rows) {
  ClassTargets targets(m, ids);
  Rows partial(m, rows);
  Data<T> xa(x, "inputs"), ea(e, "expected");
  OnDevice dev(m, xa.device, ea.device);
  ssize_t n = expect(xa, m.input_width(), partial.rows, "inputs");
  if (rows && n != 1) throw nm::ShapeError("a partial batch is one batch");
  if (expect(ea, m.target_width(), partial.rows, "expected") != n)
    throw nm::ShapeError("inputs and expected hold different numbers of batches");
  py::array_t<double> losses(n);
  if (!train) {
    py::gil_scoped_release nogil;
    m.evaluate(xa.ptr, ea.ptr, int(n), losses.mutable_data());
    return std::move(losses);
  }
  const ssize_t np = ssize_t(m.loss_parts().size());
  py::array_t<double> parts({n, np});
  int done;
  {
    SigintGuard guard;
    py::gil_scoped_release nogil;
    done = m.train(xa.ptr, ea.ptr, int(n), losses.mutable_data(), &g_stop, parts.mutable_data());
  }
  // (losses, parts, interrupted): Ctrl-C stops after a whole batch; only finished ones count
  // a Ctrl-C during the call's last batch still counts (the flag is checked after each batch)
  return py::make_tuple(losses[py::slice(0, done, 1)], parts[py::slice(0, done, 1)],
                        done < n || g_stop.load());
}

template <class T>
py::object run_predict_rows(ModelBase& m, const py::object& x) {
  Data<T> xa(x, "inputs");
  if (xa.shape.size() != 2 || xa.shape[1] != m.input_width() || xa.shape[0] < 1)
    throw nm::ShapeError("inputs: expected shape (n, " + std::to_string(m.input_width()) + ")");
  OnDevice dev(m, xa.device, xa.device);
  const ssize_t n = xa.shape[0];
  Arr<T> y({n, ssize_t(m.output_width())});
  {
    py::gil_scoped_release nogil;
    m.predict_rows(xa.ptr, int(n), y.mutable_data());
  }
  return std::move(y);
}

template <class T>
py::object run_predict(ModelBase& m, const py::object& x) {
  Data<T> xa(x, "inputs");
  ssize_t n = expect(xa, m.input_width(), m.batch_size(), "inputs");
  OnDevice dev(m, xa.device, xa.device);
  Arr<T> y({n, ssize_t(m.batch_size()), ssize_t(m.output_width())});
  {
    py::gil_scoped_release nogil;
    m.predict(xa.ptr, int(n), y.mutable_data());
  }
  return std::move(y);
}

bool f64(const ModelBase& m) { return m.dtype() == nm::DType::F64; }

// fn(data, n_batches) on x as whole input batches of the model's dtype (checked), without the
// GIL: the reading calls that take host batches only (energy, inspect).
template <class F>
auto with_input_batches(ModelBase& mm, const py::array& x, F&& fn) {
  auto run = [&](auto typed) {
    using T = decltype(typed);
    Arr<T> xa(x);
    const ssize_t n = expect(xa, mm.input_width(), mm.batch_size(), "inputs");
    py::gil_scoped_release nogil;
    return fn(static_cast<const void*>(xa.data()), int(n));
  };
  return f64(mm) ? run(double{}) : run(float{});
}

py::dict params_dict(ModelBase& m, bool grad) {
  py::dict d;
  for (const auto& p : m.params()) {
    std::vector<ssize_t> shape(p.shape.begin(), p.shape.end());
    py::array a = f64(m) ? py::array(py::array_t<double>(shape)) : py::array(py::array_t<float>(shape));
    m.get_param(p.name, a.mutable_data(), grad);
    d[py::str(p.name)] = a;
  }
  return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "Neuromorph engine (private; use the `neuromorph` package)";
  py::register_exception_translator([](std::exception_ptr p) {
    const nm::ErrorInfo info = nm::describe(p);  // the one error table (errors.h)
    if (!info.python) std::rethrow_exception(p);  // not the engine's: pybind11 translates it
    py::object type = py::module_::import("neuromorph.errors").attr(info.python);
    PyErr_SetString(type.ptr(), info.message.c_str());
  });

  m.def("version", &nm::version_string, "Engine version string");
  m.def("build_info", [] {
    py::dict d;
    d["version"] = nm::version_string();
    d["ir_version"] = nm::kIrVersion;
    d["cuda_compiler_found"] = nm::cuda_compiler_found();
    d["cuda_built"] = nm::cuda_built();
    return d;
  });
  // The IR names the engine reads, per table, and the structured kinds registered by their
  // units (tests/test_registry.py checks them against the compiler's tables).
  m.def("tables", [] {
    py::dict d;
    for (const auto& [table, names] : nm::ir_tables()) d[py::str(table)] = names;
    std::vector<std::string> kinds;
    for (int k = 0; k < int(nm::NodeKind::kCount); ++k)
      if (const nm::KindEntry* e = nm::registered_kind(nm::NodeKind(k))) kinds.push_back(e->name);
    d["registered_kinds"] = kinds;
    return d;
  });
  m.def("seed", [](uint64_t s) { nm::seed(s); });
  m.def("set_threads", [](int n) {  // the engine's worker pool (cpu/threads.h) and its product cutting
    nm::cpu::set_blas_threads(n);
    nm::cpu::set_pool_threads(n);
  });
  m.def("have_blas", &nm::cpu::have_blas);
  m.def("create", [](const std::string& ir, int batch, double lr, bool use_f64, const py::dict& o) {
    nm::OptimConfig c;  // validated in Python; keys as in neuromorph.compile
    c.kind = nm::OptimConfig::Kind(o["kind"].cast<int>());
    c.momentum = o["momentum"].cast<double>();
    c.beta1 = o["beta1"].cast<double>();
    c.beta2 = o["beta2"].cast<double>();
    c.eps = o["eps"].cast<double>();
    c.weight_decay = o["weight_decay"].cast<double>();
    c.grad_clip = o["grad_clip"].cast<double>();
    c.schedule = nm::OptimConfig::Sched(o["schedule"].cast<int>());
    c.warmup = o["warmup"].cast<long>();
    c.step_size = o["step_size"].cast<long>();
    c.gamma = o["gamma"].cast<double>();
    c.total_steps = o["total_steps"].cast<long>();
    c.min_lr = o["min_lr"].cast<double>();
    return nm::registry_add(
        nm::make_model(ir, batch, lr, use_f64 ? nm::DType::F64 : nm::DType::F32, c));
  });
  m.def("energy", [](int h, const std::string& block, const py::array& x) {
    auto ref = nm::registry_get(h);
    ModelBase& mm = *ref;
    int steps = 0;
    const std::vector<double> e = with_input_batches(mm, x, [&](const void* data, int n) {
      return mm.energy_trajectory(block, data, n, &steps);
    });
    py::array_t<double> out({ssize_t(e.size() / (steps + 1)), ssize_t(steps + 1)});
    std::copy(e.begin(), e.end(), out.mutable_data());
    return out;
  });
  m.def("inspect", [](int h, const std::vector<std::string>& nodes, const py::array& x, int last) {
    auto ref = nm::registry_get(h);
    ModelBase& mm = *ref;
    std::vector<nm::InspectArray> got = with_input_batches(mm, x, [&](const void* data, int n) {
      return mm.inspect(nodes, data, n, last);
    });
    py::list out;
    for (nm::InspectArray& a : got) {
      std::vector<ssize_t> shape(a.shape.begin(), a.shape.end());
      py::array_t<double> v(shape);
      std::copy(a.data.begin(), a.data.end(), v.mutable_data());
      out.append(py::make_tuple(a.name, std::string(1, a.type), a.per_sample, v));
    }
    return out;
  });
  m.def("stats", [](int h) {
    auto ref = nm::registry_get(h);
    py::dict d;
    for (auto& [name, v] : ref->node_stats()) {
      py::array_t<double> a(ssize_t(v.size()));
      std::copy(v.begin(), v.end(), a.mutable_data());
      d[py::str(name)] = a;
    }
    return d;
  });
  m.def("release", &nm::registry_release);
  m.def("live_models", &nm::registry_size);
  m.def("info", [](int h) {
    auto ref = nm::registry_get(h);
    ModelBase& mm = *ref;
    py::dict d;
    d["batch_size"] = mm.batch_size();
    d["input_width"] = mm.input_width();
    d["output_width"] = mm.output_width();
    d["recurrent"] = mm.recurrent();
    d["built"] = mm.built();
    d["dtype"] = f64(mm) ? "float64" : "float32";
    d["learning_rate"] = mm.learning_rate();
    d["steps"] = mm.steps();
    py::list names;
    for (const auto& p : mm.params()) names.append(py::make_tuple(p.name, p.shape));
    d["params"] = names;
    d["loss_parts"] = mm.loss_parts();
    d["device"] = mm.device();
    return d;
  });
  m.def("build", [](int h, const std::string& device) {
    if (device == "cpu") {
      std::unique_ptr<ModelBase> cpu;
      {
        auto ref = nm::registry_get(h);
        if (ref->device() == "cpu") {
          ref->build(nm::draw_seed());
          return;
        }
        // back from the GPU: a fresh CPU model behind the same handle
        cpu = nm::make_model(ref->ir_json(), ref->batch_size(), ref->learning_rate(), ref->dtype(),
                             ref->optimizer());
      }
      cpu->build(nm::draw_seed());
      nm::registry_replace(h, std::move(cpu));
      return;
    }
    if (device != "cuda")
      throw nm::DeviceError("device must be 'cpu' or 'cuda', got '" + device + "'");
    std::string ir;
    int batch;
    double lr;
    nm::OptimConfig opt;
    {
      auto ref = nm::registry_get(h);
      if (ref->dtype() != nm::DType::F32)
        throw nm::DeviceError("float64 models run on the CPU only; compile with dtype='float32' for cuda");
      ir = ref->ir_json(), batch = ref->batch_size(), lr = ref->learning_rate(), opt = ref->optimizer();
    }
    auto gpu = nm::make_cuda_model(ir, batch, lr, opt);
    gpu->build(nm::draw_seed());
    nm::registry_replace(h, std::move(gpu));
  });
  m.def("to_device", [](int h, const std::string& device) {
    if (device != "cpu" && device != "cuda")
      throw nm::DeviceError("device must be 'cpu' or 'cuda', got '" + device + "'");
    std::unique_ptr<ModelBase> moved;
    {
      auto ref = nm::registry_get(h);
      if (ref->built() && ref->device() == device) return;
      moved = nm::move_model(*ref, device);
    }
    nm::registry_replace(h, std::move(moved));
  });
  m.def("cuda_available", [] {
    std::string name;
    const std::string why = nm::cuda_available(&name);
    return py::make_tuple(why.empty(), why.empty() ? name : why);
  });
  m.def("train", [](int h, const py::object& x, const py::object& e, bool ids, int rows) {
    auto ref = nm::registry_get(h);
    ModelBase& mm = *ref;
    return f64(mm) ? run_losses<double>(mm, x, e, true, ids, rows)
                   : run_losses<float>(mm, x, e, true, ids, rows);
  }, py::arg("h"), py::arg("x"), py::arg("e"), py::arg("class_ids") = false, py::arg("rows") = 0);
  m.def("evaluate", [](int h, const py::object& x, const py::object& e, bool ids, int rows) {
    auto ref = nm::registry_get(h);
    ModelBase& mm = *ref;
    return f64(mm) ? run_losses<double>(mm, x, e, false, ids, rows)
                   : run_losses<float>(mm, x, e, false, ids, rows);
  }, py::arg("h"), py::arg("x"), py::arg("e"), py::arg("class_ids") = false, py::arg("rows") = 0);
  // The recurrent state ("state.<node>" tensors, not the optimizer's), to set aside and restore.
  m.def("get_states", [](int h) {
    auto ref = nm::registry_get(h);
    ModelBase& mm = *ref;
    py::dict d;
    for (const auto& st : mm.state_tensors()) {
      if (st.name.rfind("state.", 0) != 0) continue;
      py::array a = f64(mm) ? py::array(py::array_t<double>(ssize_t(st.size)))
                            : py::array(py::array_t<float>(ssize_t(st.size)));
      mm.get_state(st.name, a.mutable_data());
      d[py::str(st.name)] = a;
    }
    return d;
  });
  m.def("set_states", [](int h, const py::dict& states) {
    auto ref = nm::registry_get(h);
    ModelBase& mm = *ref;
    for (const auto& st : mm.state_tensors()) {
      if (!states.contains(st.name)) continue;
      py::array a = states[py::str(st.name)].cast<py::array>();
      if (a.size() != ssize_t(st.size)) throw nm::ShapeError("state '" + st.name + "' has the wrong size");
      if (f64(mm)) mm.set_state(st.name, Arr<double>(a).data());
      else mm.set_state(st.name, Arr<float>(a).data());
    }
  });
  m.def("set_check_finite", [](int h, bool on) { nm::registry_get(h)->set_check_finite(on); });
  // Data-parallel training (neuromorph/distributed.py): the MPI handles mpi4py reads, and this
  // rank's share of the global batch; None turns it off.
  m.def("set_distributed", [](int h, const py::object& spec, double weight) {
    std::shared_ptr<nm::GradReducer> r;
    if (!spec.is_none()) {
      py::dict d = spec.cast<py::dict>();
      nm::MpiSpec s;
      s.library = d["library"].cast<std::string>();
      s.handle_width = d["handle_width"].cast<int>();
      s.comm = d["comm"].cast<int64_t>();
      s.float_type = d["float"].cast<int64_t>();
      s.double_type = d["double"].cast<int64_t>();
      s.sum_op = d["sum"].cast<int64_t>();
      s.in_place = d["in_place"].cast<int64_t>();
      r = nm::mpi_reducer(s);
    }
    nm::registry_get(h)->set_grad_reducer(std::move(r), weight);
  });
  m.def("predict_rows", [](int h, const py::object& x) {
    auto ref = nm::registry_get(h);
    ModelBase& mm = *ref;
    return f64(mm) ? run_predict_rows<double>(mm, x) : run_predict_rows<float>(mm, x);
  });
  m.def("predict", [](int h, const py::object& x) {
    auto ref = nm::registry_get(h);
    ModelBase& mm = *ref;
    return f64(mm) ? run_predict<double>(mm, x) : run_predict<float>(mm, x);
  });
  m.def("gradients", [](int h, const py::object& x, const py::object& e, bool ids, int rows) {
    auto ref = nm::registry_get(h);
    ModelBase& mm = *ref;
    ClassTargets targets(mm, ids);
    Rows partial(mm, rows);
    double loss;
    if (f64(mm)) {
      Data<double> xa(x, "inputs"), ea(e, "expected");
      expect(xa, mm.input_width(), partial.rows, "inputs");
      expect(ea, mm.target_width(), partial.rows, "expected");
      loss = mm.compute_gradients(xa.ptr, ea.ptr);
    } else {
      Data<float> xa(x, "inputs"), ea(e, "expected");
      expect(xa, mm.input_width(), partial.rows, "inputs");
      expect(ea, mm.target_width(), partial.rows, "expected");
      OnDevice dev(mm, xa.device, ea.device);
      loss = mm.compute_gradients(xa.ptr, ea.ptr);
    }
    return py::make_tuple(loss, params_dict(mm, true));
  }, py::arg("h"), py::arg("x"), py::arg("e"), py::arg("class_ids") = false, py::arg("rows") = 0);
  m.def("reset_state", [](int h) { nm::registry_get(h)->reset_state(); });
  m.def("ir_json", [](int h) { return nm::registry_get(h)->ir_json(); });
  m.def("save", [](int h, const std::string& path,
                   const std::vector<std::pair<std::string, std::string>>& meta) {
    auto ref = nm::registry_get(h);
    ModelBase& mm = *ref;
    py::gil_scoped_release nogil;
    nm::save_model(mm, path, meta);
  });
  m.def("load", [](const std::string& path) {
    std::unique_ptr<ModelBase> mm;
    {
      py::gil_scoped_release nogil;
      mm = nm::load_model(path);
    }
    return nm::registry_add(std::move(mm));
  });
  m.def("get_params", [](int h) { auto ref = nm::registry_get(h);
    return params_dict(*ref, false); });
  m.def("set_param", [](int h, const std::string& name, const py::array& value) {
    auto ref = nm::registry_get(h);
    ModelBase& mm = *ref;
    for (const auto& p : mm.params())  // never read past the caller's array
      if (p.name == name && value.size() != ssize_t(p.size))
        throw nm::ShapeError("parameter '" + name + "' holds " + std::to_string(p.size) +
                             " numbers, got " + std::to_string(value.size()));
    if (f64(mm)) mm.set_param(name, Arr<double>(value).data());
    else mm.set_param(name, Arr<float>(value).data());
  });
}
