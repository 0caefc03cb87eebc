// What the CUDA model needs of the energy block beyond the DeviceNode interface (energy.cu).
#pragma once
#include <vector>

#include "device_node.cuh"

namespace nm::cuda {

// `init normal`: hands the device node the fixed start state of every layer (layer order, each
// of the layer's size) that the CPU node drew at build; a forward of such a block throws
// StateError until it has them. A no-op for `init zero`; StateError for other nodes.
void energy_set_start(DeviceNode* node, const std::vector<std::vector<float>>& states);

}  // namespace nm::cuda
