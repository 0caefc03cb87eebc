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
// The model on the GPU (float32, every node kind). DeviceError when CUDA is unavailable.
std::unique_ptr<ModelBase> make_cuda_model(const std::string& ir_json, int batch, double lr,
                                           const OptimConfig& opt);
// The same model on `device` ("cpu" or "cuda"): parameters, recurrent state, optimizer state and
// step count copied exactly (tensor by tensor, never through a file). src must be built; a
// float64 model cannot go to "cuda" (DeviceError).
std::unique_ptr<ModelBase> move_model(const ModelBase& src, const std::string& device);

}  // namespace nm
