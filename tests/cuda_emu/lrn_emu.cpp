// lrn_kernels.cuh's kernels and host planning, run on the CPU by cuda_emu.h:
// tests/test_lrn_emulated.py builds this as a small torch extension and compares its results
// with the CPU kernel and with torch, so the CUDA kernels' indexing, segments and 32/64-bit
// variants are checked on a machine without a GPU. Tensors are CPU tensors.
#include "launch_log.h"  // first: cuda_emu.h defines the CUDA keywords the kernels use

#include <torch/extension.h>

#include "../../csrc/cuda/lrn_kernels.cuh"

namespace ak = alexnet_kernels;
using Cuda = ak::LrnCuda<emu_test::LoggingLauncher>;

ak::PlanOptions options(bool force_64bit, int64_t segments) {
  ak::PlanOptions o;
  o.force_64bit = force_64bit;
  o.segments = static_cast<int>(segments);
  return o;
}

at::Tensor forward(const at::Tensor& x, int64_t size, double alpha, double beta, double k, bool force_64bit,
                   int64_t segments) {
  return ak::lrn_forward<Cuda>(x, size, alpha, beta, k, options(force_64bit, segments));
}

at::Tensor backward(const at::Tensor& grad, const at::Tensor& x, int64_t size, double alpha, double beta, double k,
                    bool force_64bit, int64_t segments) {
  return ak::lrn_backward<Cuda>(grad, x, size, alpha, beta, k, options(force_64bit, segments));
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "lrn through the CUDA kernels and planning, emulated");
  m.def("backward", &backward, "lrn_backward through the CUDA kernels and planning, emulated");
  m.def("launches", &emu_test::take_log, "the kernels launched since the last call, with their grids");
}
