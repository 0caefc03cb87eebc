// Typed engine errors. Library code throws these and never exits; the bindings map each to
// a Python exception class of the same name, the C API to a status code.
#pragma once
#include <exception>
#include <stdexcept>
#include <string>

namespace nm {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct IRError : Error { using Error::Error; };       // malformed or wrong-version IR
struct HandleError : Error { using Error::Error; };   // unknown or released handle
struct StateError : Error { using Error::Error; };    // e.g. train before build
struct ShapeError : Error { using Error::Error; };    // wrong data or parameter shape
struct DataError : Error { using Error::Error; };     // NaN/inf in data
struct DeviceError : Error { using Error::Error; };    // unsupported or missing device
struct FileError : Error { using Error::Error; };      // unreadable, corrupt or foreign model file
struct OutOfMemory : Error { using Error::Error; };    // device (or host) memory exhausted
struct Diverged : Error { using Error::Error; };       // training produced a non-finite loss/gradient

// The one table from an engine error to what each interface shows: the C API's status code
// (neuromorph.h) and the Python exception class (neuromorph/errors.py). Both the C API and the
// Python bindings call describe(); nothing else maps errors. python is null for exceptions that
// are not the engine's (the bindings let pybind11 translate those).
struct ErrorInfo {
  int status;          // NM_ERR_* of neuromorph.h
  const char* python;  // class name in neuromorph.errors, or null
  std::string message;
};
ErrorInfo describe(std::exception_ptr error) noexcept;

}  // namespace nm
