// Device selection: the CUDA backend is a plugin (libneuromorph_cuda, next to this library),
// loaded with dlopen the first time a model asks for device "cuda". The core never links CUDA,
// so the engine loads on machines without a CUDA runtime; asking for the GPU there, or in a
// build made without a CUDA compiler, or on a machine without a device, is a DeviceError that
// says which.
#include "neuromorph/device.h"

#include <dlfcn.h>

#include <mutex>
#include <string>
#include <vector>

#include "neuromorph/errors.h"
#include "plugin.h"

namespace nm {
namespace {

struct Plugin {
  void* lib = nullptr;
  int (*count)(char*, int) = nullptr;
  void (*name)(char*, int) = nullptr;
  ModelBase* (*create)(const char*, int, double, const OptimConfig*) = nullptr;
  std::string error;
};

Plugin& plugin() {
  static Plugin p;
  static std::once_flag once;
  std::call_once(once, [] {
#if NM_CUDA_BUILT
    p.lib = open_plugin("libneuromorph_cuda.so", "CUDA backend", &p.error);
    if (!p.lib) return;
    p.count = reinterpret_cast<int (*)(char*, int)>(dlsym(p.lib, "nm_cuda_device_count"));
    p.name = reinterpret_cast<void (*)(char*, int)>(dlsym(p.lib, "nm_cuda_device_name"));
    p.create = reinterpret_cast<ModelBase* (*)(const char*, int, double, const OptimConfig*)>(
        dlsym(p.lib, "nm_cuda_create"));
    if (!p.count || !p.create || !p.name) p.error = "the CUDA backend library is incomplete";
#else
    p.error = "this build of neuromorph has no CUDA backend (no CUDA compiler was found when "
              "it was built); reinstall on a machine with the CUDA toolkit (nvcc) to use device='cuda'";
#endif
  });
  return p;
}

}  // namespace

void* open_plugin(const std::string& file, const std::string& what, std::string* error) {
  std::string dir;
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&open_plugin), &info) && info.dli_fname) {
    const std::string self = info.dli_fname;
    const size_t slash = self.rfind('/');
    if (slash != std::string::npos) dir = self.substr(0, slash + 1);
  }
  const std::string path = dir + file;
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* e = dlerror();
    *error = "cannot load the " + what + " (" + (e ? e : path.c_str()) + ")";
  }
  return lib;
}

bool cuda_built() { return NM_CUDA_BUILT != 0; }

std::string cuda_available(std::string* device_name) {
  Plugin& p = plugin();
  if (!p.error.empty()) return p.error;
  char why[256] = {0};
  if (p.count(why, int(sizeof why)) <= 0)
    return std::string("no CUDA device is available: ") + why;
  if (device_name) {
    char name[256] = {0};
    p.name(name, int(sizeof name));
    *device_name = name;
  }
  return "";
}

std::unique_ptr<ModelBase> make_cuda_model(const std::string& ir_json, int batch, double lr,
                                           const OptimConfig& opt) {
  const std::string why = cuda_available(nullptr);
  if (!why.empty()) throw DeviceError(why);
  return std::unique_ptr<ModelBase>(plugin().create(ir_json.c_str(), batch, lr, &opt));
}

std::unique_ptr<ModelBase> move_model(const ModelBase& src, const std::string& device) {
  if (device != "cpu" && device != "cuda")
    throw DeviceError("device must be 'cpu' or 'cuda', got '" + device + "'");
  if (!src.built()) throw StateError("model is not built: call build() first");
  if (device == "cuda" && src.dtype() != DType::F32)
    throw DeviceError("float64 models run on the CPU only; compile with dtype='float32' for cuda");
  std::unique_ptr<ModelBase> moved =
      device == "cuda" ? make_cuda_model(src.ir_json(), src.batch_size(), src.learning_rate(), src.optimizer())
                       : make_model(src.ir_json(), src.batch_size(), src.learning_rate(), src.dtype(),
                                    src.optimizer());
  moved->build(src.build_seed());  // the same drawn start states (`init normal`)
  const size_t es = src.dtype() == DType::F64 ? 8 : 4;
  std::vector<unsigned char> buf;
  for (const auto& p : src.params()) {
    buf.resize(p.size * es);
    src.get_param(p.name, buf.data());
    moved->set_param(p.name, buf.data());
  }
  for (const auto& st : src.state_tensors())
    for (const auto& dt : moved->state_tensors())
      if (dt.name == st.name && dt.size == st.size) {
        buf.resize(st.size * es);
        src.get_state(st.name, buf.data());
        moved->set_state(st.name, buf.data());
      }
  moved->set_steps(src.steps());
  return moved;
}

// A backend without its own recording (the GPU) is inspected on a CPU copy of itself.
std::vector<InspectArray> ModelBase::inspect(const std::vector<std::string>& nodes, const void* x,
                                             int n, int last) {
  return move_model(*this, "cpu")->inspect(nodes, x, n, last);
}

}  // namespace nm
