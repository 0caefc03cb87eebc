// Version and build facts of the engine.
#include "neuromorph/version.h"

namespace nm {
std::string version_string() {
  return std::to_string(kVersionMajor) + "." + std::to_string(kVersionMinor) + "." +
         std::to_string(kVersionPatch);
}
bool cuda_compiler_found() { return NM_CUDA_COMPILER_FOUND != 0; }
}  // namespace nm
