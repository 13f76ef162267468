// CUDA entry points of alexnet_kernels::lrn and lrn_backward: the kernels and planning of
// lrn_kernels.cuh, launched on the current stream.
#include <torch/library.h>

#include "launch.cuh"
#include "lrn_kernels.cuh"

namespace alexnet_kernels {
namespace {

at::Tensor lrn_cuda(const at::Tensor& x, int64_t size, double alpha, double beta, double k) {
  const c10::cuda::CUDAGuard guard(cuda_device_of({&x}));
  return lrn_forward<LrnCuda<CudaLauncher>>(x, size, alpha, beta, k);
}

at::Tensor lrn_backward_cuda(const at::Tensor& grad, const at::Tensor& x, int64_t size, double alpha, double beta,
                             double k) {
  const c10::cuda::CUDAGuard guard(cuda_device_of({&grad, &x}));
  return lrn_backward<LrnCuda<CudaLauncher>>(grad, x, size, alpha, beta, k);
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_kernels, CUDA, m) {
  m.impl("lrn", &lrn_cuda);
  m.impl("lrn_backward", &lrn_backward_cuda);
}

}  // namespace alexnet_kernels
