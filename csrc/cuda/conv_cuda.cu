// CUDA entry points of alexnet_kernels::conv2d and conv2d_backward: the implicit-GEMM kernels of
// conv_igemm.cuh where they apply, the direct reference kernels of conv.h elsewhere.
#include <torch/library.h>

#include "conv_igemm.cuh"
#include "launch.cuh"

namespace alexnet_kernels {
namespace {

at::Tensor conv2d_forward_cuda(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                               at::IntArrayRef stride, at::IntArrayRef padding, bool relu) {
  const c10::cuda::CUDAGuard guard(cuda_device_of({&x, &w, b ? &*b : nullptr}));
  const ConvGeom g = conv_geom(x, w, b, stride, padding);
  if (igemm_eligible(x, g)) return conv2d_forward_igemm<CudaLauncher>(x, w, b, g, relu);
  return conv2d_forward<CudaRunner>(x, w, b, stride, padding, relu);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward_cuda(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& y,
    at::IntArrayRef stride, at::IntArrayRef padding, bool relu, std::array<bool, 3> output_mask) {
  const c10::cuda::CUDAGuard guard(cuda_device_of({&grad, &x, &w, y ? &*y : nullptr}));
  const ConvGeom g = conv_geom(x, w, c10::nullopt, stride, padding);
  // The weight gradient (with the bias's) takes the implicit GEMM where the forward does and
  // the reduction is not empty; the input gradient is always the reference kernel's.
  if (!output_mask[1] || !igemm_eligible(x, g) || x.scalar_type() == at::kDouble || g.N * g.OH * g.OW == 0 ||
      grad.scalar_type() != x.scalar_type()) {
    return conv2d_backward<CudaRunner>(grad, x, w, y, stride, padding, relu, output_mask);
  }
  // The checks of the reference path (shapes, dtypes, devices, y with relu), then only the
  // input gradient from it.
  auto [dx, unused_dw, unused_db] =
      conv2d_backward<CudaRunner>(grad, x, w, y, stride, padding, relu, {output_mask[0], false, false});
  at::Tensor dw = at::empty(w.sizes(), w.options().memory_format(conv_format(w)));
  at::Tensor db = at::empty({output_mask[2] ? g.K : 0}, w.options());
  conv2d_wgrad_igemm<CudaLauncher>(grad, x, y, g, relu, dw, output_mask[2] ? &db : nullptr);
  return {dx, dw, db};
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_kernels, CUDA, m) {
  m.impl("conv2d", &conv2d_forward_cuda);
  m.impl("conv2d_backward", &conv2d_backward_cuda);
}

}  // namespace alexnet_kernels
