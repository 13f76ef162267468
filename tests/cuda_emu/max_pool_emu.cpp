// max_pool_kernels.cuh's kernels and host planning, run on the CPU by cuda_emu.h:
// tests/test_max_pool_emulated.py builds this as a small torch extension and compares its
// results with the CPU kernel and with torch, so the CUDA kernels' indexing, layouts and
// 32/64-bit variants are checked on a machine without a GPU. Tensors are CPU tensors.
#include "launch_log.h"  // first: cuda_emu.h defines the CUDA keywords the kernels use

#include <torch/extension.h>

#include "../../csrc/cuda/max_pool_kernels.cuh"

namespace ak = alexnet_kernels;
using Cuda = ak::MaxPoolCuda<emu_test::LoggingLauncher>;

ak::PlanOptions options(bool force_64bit, int64_t segments) {
  ak::PlanOptions o;
  o.force_64bit = force_64bit;
  o.segments = static_cast<int>(segments);
  return o;
}

std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& x, std::vector<int64_t> kernel_size,
                                           std::vector<int64_t> stride, std::vector<int64_t> padding,
                                           std::vector<int64_t> dilation, bool ceil_mode, bool with_index,
                                           bool force_64bit, int64_t segments) {
  return ak::max_pool2d_forward<Cuda>(x, kernel_size, stride, padding, dilation, ceil_mode, with_index,
                                      options(force_64bit, segments));
}

at::Tensor backward(const at::Tensor& grad, const c10::optional<at::Tensor>& index, const c10::optional<at::Tensor>& x,
                    std::vector<int64_t> input_size, std::vector<int64_t> kernel_size, std::vector<int64_t> stride,
                    std::vector<int64_t> padding, std::vector<int64_t> dilation, bool ceil_mode, bool channels_last,
                    bool force_64bit) {
  return ak::max_pool2d_backward<Cuda>(grad, index, x, input_size, kernel_size, stride, padding, dilation, ceil_mode,
                                       channels_last, options(force_64bit, 0));
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "max_pool2d through the CUDA kernels and planning, emulated");
  m.def("backward", &backward, "max_pool2d_backward through the CUDA kernels and planning, emulated");
  m.def("launches", &emu_test::take_log, "the kernels launched since the last call, with their grids");
}
