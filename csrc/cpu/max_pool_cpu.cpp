// CPU kernels of alexnet_kernels::max_pool2d and max_pool2d_backward: the element functions of
// max_pool.h in an at::parallel_for. Correct and parallel, not tuned.
#include <torch/library.h>

#include "../max_pool.h"
#include "runner.h"

namespace alexnet_kernels {

TORCH_LIBRARY_IMPL(alexnet_kernels, CPU, m) {
  m.impl("max_pool2d", &max_pool2d_forward<CpuRunner>);
  m.impl("max_pool2d_backward", &max_pool2d_backward<CpuRunner>);
}

}  // namespace alexnet_kernels
