// Version and build facts of the engine. Not the API itself (see engine.h).
#pragma once
#include <string>

namespace nm {
constexpr int kVersionMajor = 0, kVersionMinor = 1, kVersionPatch = 0;
constexpr int kIrVersion = 3;  // the IR JSON version this engine reads
std::string version_string();
bool cuda_compiler_found();  // whether the build found a CUDA compiler
}  // namespace nm
