// The runtime side of data-parallel training: an nm::GradReducer over MPI, made through the
// plugin libneuromorph_mpi (mpi/plugin.cpp), which is loaded with dlopen on first use so the
// runtime never links MPI. Not here: sharding data, broadcasting parameters, checking the
// ranks agree (python/neuromorph/distributed.py); the allreduce hook in the executor
// (cpu/model.cpp).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "neuromorph/engine.h"

namespace nm {

// Where MPI is and its handles, as mpi4py sees them (MPI._handleof, MPI._sizeof(MPI.Comm)).
struct MpiSpec {
  std::string library;  // path of the MPI library loaded in this process
  int handle_width = 4; // sizeof(MPI_Comm): 4 (MPICH ABI) or 8 (Open MPI, MPI standard ABI)
  int64_t comm = 0, float_type = 0, double_type = 0, sum_op = 0;
  int64_t in_place = 0; // MPI_IN_PLACE of that MPI (int(MPI.IN_PLACE)); 0: unknown, copy
};

// A reducer summing over the ranks of spec.comm; the same one while the spec is unchanged.
// DeviceError when the plugin or the MPI library cannot be loaded.
std::shared_ptr<GradReducer> mpi_reducer(const MpiSpec& spec);

}  // namespace nm
