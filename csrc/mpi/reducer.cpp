// mpi_reducer (mpi/reducer.h): loads libneuromorph_mpi next to this library on first use and
// wraps its C interface in an nm::GradReducer. It sums in place (MPI_IN_PLACE, its value from
// mpi4py); where that value is unknown it keeps one send buffer, grown to the largest arena it
// sums, so a train step allocates nothing.
#include "reducer.h"

#include <dlfcn.h>

#include <cstring>
#include <mutex>
#include <vector>

#include "../core/plugin.h"
#include "neuromorph/errors.h"

namespace nm {
namespace {

struct Plugin {
  void* lib = nullptr;
  void* (*open)(const char*, int, int64_t, int64_t, int64_t, int64_t, int64_t, char*, int) = nullptr;
  int (*in_place)(void*) = nullptr;
  int (*sum)(void*, const void*, void*, size_t, int, char*, int) = nullptr;
  void (*close)(void*) = nullptr;
  std::string error;
};

Plugin& plugin() {
  static Plugin p;
  static std::once_flag once;
  std::call_once(once, [] {
    p.lib = open_plugin("libneuromorph_mpi.so", "MPI plugin", &p.error);
    if (!p.lib) return;
    p.open = reinterpret_cast<decltype(p.open)>(dlsym(p.lib, "nm_mpi_open"));
    p.sum = reinterpret_cast<decltype(p.sum)>(dlsym(p.lib, "nm_mpi_allreduce_sum"));
    p.close = reinterpret_cast<decltype(p.close)>(dlsym(p.lib, "nm_mpi_close"));
    p.in_place = reinterpret_cast<decltype(p.in_place)>(dlsym(p.lib, "nm_mpi_in_place"));
    if (!p.open || !p.sum || !p.close || !p.in_place) p.error = "the MPI plugin library is incomplete";
  });
  return p;
}

class MpiReducer final : public GradReducer {
 public:
  MpiReducer(const MpiSpec& spec, void* ctx)
      : spec_(spec), ctx_(ctx), in_place_(plugin().in_place(ctx) != 0) {}
  ~MpiReducer() override { plugin().close(ctx_); }
  const MpiSpec& spec() const { return spec_; }

  void sum(void* buf, size_t n, DType dtype) override {
    const size_t bytes = n * (dtype == DType::F64 ? 8 : 4);
    std::lock_guard<std::mutex> lock(mu_);
    const void* send = nullptr;  // in place
    if (!in_place_) {
      if (send_.size() < bytes) send_.resize(bytes);
      std::memcpy(send_.data(), buf, bytes);
      send = send_.data();
    }
    char err[256] = {0};
    if (plugin().sum(ctx_, send, buf, n, dtype == DType::F64, err, int(sizeof err)) != 0)
      throw Error(std::string("data-parallel training: ") + err);
  }

 private:
  MpiSpec spec_;
  void* ctx_;
  bool in_place_;
  std::mutex mu_;
  std::vector<unsigned char> send_;
};

bool same(const MpiSpec& a, const MpiSpec& b) {
  return a.library == b.library && a.handle_width == b.handle_width && a.comm == b.comm &&
         a.float_type == b.float_type && a.double_type == b.double_type && a.sum_op == b.sum_op &&
         a.in_place == b.in_place;
}

}  // namespace

std::shared_ptr<GradReducer> mpi_reducer(const MpiSpec& spec) {
  static std::mutex mu;
  static std::shared_ptr<MpiReducer> last;
  std::lock_guard<std::mutex> lock(mu);
  if (last && same(last->spec(), spec)) return last;
  Plugin& p = plugin();
  if (!p.error.empty()) throw DeviceError(p.error);
  char err[512] = {0};
  void* ctx = p.open(spec.library.c_str(), spec.handle_width, spec.comm, spec.float_type,
                     spec.double_type, spec.sum_op, spec.in_place, err, int(sizeof err));
  if (!ctx) throw DeviceError(std::string("cannot use MPI through ") + spec.library + ": " + err);
  last = std::make_shared<MpiReducer>(spec, ctx);
  return last;
}

}  // namespace nm
