// Optional backends ship as plugin libraries next to the engine (libneuromorph_cuda,
// libneuromorph_mpi) and are loaded on first use, so the engine loads without their runtimes.
#pragma once
#include <string>

namespace nm {

// dlopen of `file` in the engine library's own directory; null with the loader's reason in
// *error ("cannot load the <what> (...)") when it fails.
void* open_plugin(const std::string& file, const std::string& what, std::string* error);

}  // namespace nm
