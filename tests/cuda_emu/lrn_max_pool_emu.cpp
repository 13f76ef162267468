// lrn_max_pool_kernels.cuh's kernels and host planning, run on the CPU by cuda_emu.h:
// tests/test_lrn_max_pool_emulated.py builds this as a small torch extension and compares its
// results with the CPU kernel, with lrn followed by max_pool2d and with torch, so the CUDA kernels'
// lane mapping, shuffles, segments, layouts and 32/64-bit variants are checked on a machine
// without a GPU, under the emulator's sanitizers. Tensors are CPU tensors.
#include "launch_log.h"  // first: cuda_emu.h defines the CUDA keywords the kernels use

#include <torch/extension.h>

#include "../../csrc/cuda/lrn_max_pool_kernels.cuh"

namespace ak = alexnet_kernels;
using Cuda = ak::LrnPoolCuda<emu_test::LoggingLauncher>;

ak::PlanOptions options(bool force_64bit, int64_t segments) {
  ak::PlanOptions o;
  o.force_64bit = force_64bit;
  o.segments = static_cast<int>(segments);
  return o;
}

std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& x, int64_t size, double alpha, double beta, double k,
                                           bool with_index, bool force_64bit, int64_t segments) {
  return ak::lrn_max_pool2d_forward<Cuda>(x, size, alpha, beta, k, {3, 3}, {2, 2}, with_index,
                                          options(force_64bit, segments));
}

at::Tensor backward(const at::Tensor& grad, const at::Tensor& index, const at::Tensor& x, int64_t size, double alpha,
                    double beta, double k, bool force_64bit, int64_t segments) {
  return ak::lrn_max_pool2d_backward<Cuda>(grad, index, x, size, alpha, beta, k, {3, 3}, {2, 2},
                                           options(force_64bit, segments));
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "lrn_max_pool2d through the CUDA kernels and planning, emulated");
  m.def("backward", &backward, "lrn_max_pool2d_backward through the CUDA kernels and planning, emulated");
  m.def("launches", &emu_test::take_log, "the kernels launched since the last call, with their grids");
}
