// Devices: the CPU backend is always there; the CUDA backend is an optional plugin.
#pragma once
#include <memory>
#include <string>

#include "neuromorph/engine.h"

namespace nm {

bool cuda_built();  // whether this build compiled the CUDA backend
// "" when a CUDA model can be made here (and the device's name into *device_name); otherwise
// why not: no CUDA backend in this build, the backend cannot be loaded, or no device.
std::string cuda_available(std::string* device_name = nullptr);
// The model on the GPU (float32, non-recurrent, dense nodes in this version). DeviceError when
// CUDA is unavailable or the model has a node the CUDA backend does not run.
std::unique_ptr<ModelBase> make_cuda_model(const std::string& ir_json, int batch, double lr,
                                           const OptimConfig& opt);

}  // namespace nm
