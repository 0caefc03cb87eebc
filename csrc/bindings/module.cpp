// pybind11 module `neuromorph._core`: conversions and GIL handling only.
#include <pybind11/pybind11.h>

#include "neuromorph/version.h"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "Neuromorph engine (private; use the `neuromorph` package)";
  m.def("version", &nm::version_string, "Engine version string");
  m.def("build_info", [] {
    py::dict d;
    d["version"] = nm::version_string();
    d["ir_version"] = nm::kIrVersion;
    d["cuda_compiler_found"] = nm::cuda_compiler_found();
    return d;
  });
}
