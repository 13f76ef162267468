// CPU kernels of alexnet_kernels::conv2d and conv2d_backward: the direct element functions of
// conv.h in an at::parallel_for. Correct and parallel, not fast.
#include <torch/library.h>

#include "../conv.h"
#include "runner.h"

namespace alexnet_kernels {

TORCH_LIBRARY_IMPL(alexnet_kernels, CPU, m) {
  m.impl("conv2d", &conv2d_forward<CpuRunner>);
  m.impl("conv2d_backward", &conv2d_backward<CpuRunner>);
}

}  // namespace alexnet_kernels
