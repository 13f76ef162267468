// CUDA entry points of alexnet_kernels::max_pool2d and max_pool2d_backward: the kernels and
// planning of max_pool_kernels.cuh, launched on the current stream.
#include <torch/library.h>

#include "launch.cuh"
#include "max_pool_kernels.cuh"

namespace alexnet_kernels {
namespace {

std::tuple<at::Tensor, at::Tensor> max_pool2d_cuda(const at::Tensor& x, at::IntArrayRef kernel_size,
                                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                                   at::IntArrayRef dilation, bool ceil_mode, bool with_index) {
  const c10::cuda::CUDAGuard guard(cuda_device_of({&x}));
  return max_pool2d_forward<MaxPoolCuda<CudaLauncher>>(x, kernel_size, stride, padding, dilation, ceil_mode,
                                                       with_index);
}

at::Tensor max_pool2d_backward_cuda(const at::Tensor& grad, const c10::optional<at::Tensor>& index,
                                    const c10::optional<at::Tensor>& x, at::IntArrayRef input_size,
                                    at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                    at::IntArrayRef dilation, bool ceil_mode, bool channels_last) {
  const c10::cuda::CUDAGuard guard(cuda_device_of({&grad, index ? &*index : nullptr, x ? &*x : nullptr}));
  return max_pool2d_backward<MaxPoolCuda<CudaLauncher>>(grad, index, x, input_size, kernel_size, stride, padding,
                                                        dilation, ceil_mode, channels_last);
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_kernels, CUDA, m) {
  m.impl("max_pool2d", &max_pool2d_cuda);
  m.impl("max_pool2d_backward", &max_pool2d_backward_cuda);
}

}  // namespace alexnet_kernels
