// CUDA entry points of alexnet_kernels::lrn_max_pool2d and lrn_max_pool2d_backward: the kernels and
// planning of lrn_max_pool_kernels.cuh, launched on the current stream.
#include <torch/library.h>

#include "launch.cuh"
#include "lrn_max_pool_kernels.cuh"

namespace alexnet_kernels {
namespace {

std::tuple<at::Tensor, at::Tensor> lrn_max_pool2d_cuda(const at::Tensor& x, int64_t size, double alpha, double beta,
                                                       double k, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                                       bool with_index) {
  const c10::cuda::CUDAGuard guard(cuda_device_of({&x}));
  return lrn_max_pool2d_forward<LrnPoolCuda<CudaLauncher>>(x, size, alpha, beta, k, kernel_size, stride, with_index);
}

at::Tensor lrn_max_pool2d_backward_cuda(const at::Tensor& grad, const at::Tensor& index, const at::Tensor& x,
                                        int64_t size, double alpha, double beta, double k,
                                        at::IntArrayRef kernel_size, at::IntArrayRef stride) {
  const c10::cuda::CUDAGuard guard(cuda_device_of({&grad, &index, &x}));
  return lrn_max_pool2d_backward<LrnPoolCuda<CudaLauncher>>(grad, index, x, size, alpha, beta, k, kernel_size,
                                                             stride);
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_kernels, CUDA, m) {
  m.impl("lrn_max_pool2d", &lrn_max_pool2d_cuda);
  m.impl("lrn_max_pool2d_backward", &lrn_max_pool2d_backward_cuda);
}

}  // namespace alexnet_kernels
