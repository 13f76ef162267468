// CPU kernels of alexnet_kernels::lrn and lrn_backward: the element functions of lrn.h in an
// at::parallel_for. Correct and parallel, not tuned: the CPU path serves machines without a
// GPU, float64 gradcheck, and, running the same element functions, tests the CUDA kernels' math.
#include <torch/library.h>

#include "../lrn.h"
#include "runner.h"

namespace alexnet_kernels {

TORCH_LIBRARY_IMPL(alexnet_kernels, CPU, m) {
  m.impl("lrn", &lrn_forward<CpuRunner>);
  m.impl("lrn_backward", &lrn_backward<CpuRunner>);
}

}  // namespace alexnet_kernels
