// describe() (errors.h): the one table from engine errors to C status codes and Python classes.
#include "neuromorph/errors.h"

#include <new>

#include "neuromorph/neuromorph.h"

namespace nm {

ErrorInfo describe(std::exception_ptr error) noexcept {
  try {
    if (error) std::rethrow_exception(error);
    return {NM_ERR_INTERNAL, nullptr, "unknown error"};
  } catch (const IRError& e) { return {NM_ERR_IR, "IRError", e.what()};
  } catch (const HandleError& e) { return {NM_ERR_HANDLE, "HandleError", e.what()};
  } catch (const StateError& e) { return {NM_ERR_STATE, "StateError", e.what()};
  } catch (const ShapeError& e) { return {NM_ERR_SHAPE, "ShapeError", e.what()};
  } catch (const DataError& e) { return {NM_ERR_DATA, "DataError", e.what()};
  } catch (const DeviceError& e) { return {NM_ERR_DEVICE, "DeviceError", e.what()};
  } catch (const FileError& e) { return {NM_ERR_FILE, "ModelFileError", e.what()};
  } catch (const OutOfMemory& e) { return {NM_ERR_MEMORY, "OutOfMemoryError", e.what()};
  } catch (const Diverged& e) { return {NM_ERR_DIVERGED, "DivergedError", e.what()};
  } catch (const Error& e) { return {NM_ERR_INTERNAL, "NeuromorphError", e.what()};
  } catch (const std::bad_alloc&) { return {NM_ERR_MEMORY, "OutOfMemoryError", "out of memory"};
  } catch (const std::invalid_argument& e) { return {NM_ERR_ARGUMENT, nullptr, e.what()};
  } catch (const std::exception& e) { return {NM_ERR_INTERNAL, nullptr, e.what()};
  } catch (...) { return {NM_ERR_INTERNAL, nullptr, "unknown error"};
  }
}

}  // namespace nm
