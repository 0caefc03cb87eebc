// libneuromorph_mpi: the all-reduce plugin of data-parallel training (docs/distributed.md),
// loaded with dlopen by the runtime (mpi/reducer.cpp) the first time a model trains with
// distributed=True. It is not linked against any MPI and needs no MPI headers to build: it
// opens the MPI library the Python process already loaded (mpi4py's, found by the caller) and
// takes MPI_Allreduce from it with dlsym. The communicator, datatypes and op arrive as integer
// handles read from mpi4py (MPI._handleof), whose width is the MPI's own ABI: 4 bytes (MPICH,
// Intel MPI: handles are ints) or 8 (Open MPI, the MPI standard ABI: handles are pointers).
// Not here: anything of the model (the runtime scales and hands over one contiguous buffer).
//
// A plain C interface: no C++ object or exception crosses the plugin boundary.
#include <dlfcn.h>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>

namespace {

// MPI_Allreduce(sendbuf, recvbuf, count, datatype, op, comm) in the two handle widths
using Allreduce4 = int (*)(const void*, void*, int, int32_t, int32_t, int32_t);
using Allreduce8 = int (*)(const void*, void*, int, void*, void*, void*);

struct Ctx {
  void* lib = nullptr;
  void* fn = nullptr;
  int width = 4;
  int64_t comm = 0, f32 = 0, f64 = 0, sum = 0;
  int64_t in_place = 0;  // the MPI's MPI_IN_PLACE (0: unknown)
};

void say(char* err, int len, const char* text) {
  if (err && len > 0) std::snprintf(err, size_t(len), "%s", text);
}

}  // namespace

extern "C" {

// Whether the context sums in place (it knows MPI_IN_PLACE): then send may be null.
__attribute__((visibility("default"))) int nm_mpi_in_place(void* ctx) {
  return static_cast<const Ctx*>(ctx)->in_place != 0;
}

// A context over the MPI library at `lib` (already loaded by mpi4py), or null with the reason
// in err. width: sizeof(MPI_Comm) of that MPI (4 or 8); in_place: the address MPI_IN_PLACE
// stands for in that MPI (int(mpi4py.MPI.IN_PLACE); 0 when unknown).
__attribute__((visibility("default"))) void* nm_mpi_open(const char* lib, int width,
                                                         int64_t comm, int64_t f32, int64_t f64,
                                                         int64_t sum, int64_t in_place,
                                                         char* err, int errlen) {
  if (width != 4 && width != 8) {
    say(err, errlen, "unsupported MPI handle width (expected 4 or 8 bytes)");
    return nullptr;
  }
  void* h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);  // the loaded library: its handle, no re-init
  if (!h) {
    const char* e = dlerror();
    say(err, errlen, e ? e : "cannot open the MPI library");
    return nullptr;
  }
  void* fn = dlsym(h, "MPI_Allreduce");
  if (!fn) {
    say(err, errlen, "the MPI library has no MPI_Allreduce");
    dlclose(h);
    return nullptr;
  }
  Ctx* c = new Ctx;
  c->lib = h, c->fn = fn, c->width = width;
  c->comm = comm, c->f32 = f32, c->f64 = f64, c->sum = sum, c->in_place = in_place;
  return c;
}

// recv[i] = sum over the ranks of send[i], n elements of float (f64 == 0) or double; 0 on
// success, else MPI's error code with a message in err. Counts above INT_MAX go in chunks.
// send null: in place (MPI_IN_PLACE; only when the context knows its value).
__attribute__((visibility("default"))) int nm_mpi_allreduce_sum(void* ctx, const void* send,
                                                                void* recv, size_t n, int f64,
                                                                char* err, int errlen) {
  const Ctx* c = static_cast<const Ctx*>(ctx);
  const size_t es = f64 ? 8 : 4;
  const int64_t type = f64 ? c->f64 : c->f32;
  const size_t chunk = size_t(INT_MAX) / 2;
  for (size_t done = 0; done < n;) {
    const int count = int(n - done < chunk ? n - done : chunk);
    const char* s = send ? static_cast<const char*>(send) + done * es
                         : reinterpret_cast<const char*>(c->in_place);
    char* r = static_cast<char*>(recv) + done * es;
    const int rc = c->width == 4
        ? reinterpret_cast<Allreduce4>(c->fn)(s, r, count, int32_t(type), int32_t(c->sum),
                                              int32_t(c->comm))
        : reinterpret_cast<Allreduce8>(c->fn)(s, r, count, reinterpret_cast<void*>(type),
                                              reinterpret_cast<void*>(c->sum),
                                              reinterpret_cast<void*>(c->comm));
    if (rc != 0) {  // MPI_SUCCESS is 0 in every ABI
      char text[96];
      std::snprintf(text, sizeof text, "MPI_Allreduce failed with MPI error code %d", rc);
      say(err, errlen, text);
      return rc;
    }
    done += size_t(count);
  }
  return 0;
}

__attribute__((visibility("default"))) void nm_mpi_close(void* ctx) {
  Ctx* c = static_cast<Ctx*>(ctx);
  if (!c) return;
  if (c->lib) dlclose(c->lib);
  delete c;
}

}  // extern "C"
