// CUDA kernels of alexnet_kernels::max_pool2d and max_pool2d_backward. Tiling, floor and the
// tie rules: csrc/max_pool.h.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../max_pool.h"
#include "launch.cuh"

namespace alexnet_kernels {
namespace {

template <typename scalar_t, typename acc_t, typename Div>
struct PoolFwdOp {
  PoolFwdArgs<scalar_t> a;
  Div d0, d1, d2;
  template <typename index_t>
  __device__ void operator()(index_t i) const {
    max_pool_forward_element<scalar_t, acc_t>(a, d0, d1, d2, i);
  }
};

template <typename scalar_t, typename acc_t, typename Div>
struct PoolBwdOp {
  PoolBwdArgs<scalar_t> a;
  Div d0, d1, d2;
  template <typename index_t>
  __device__ void operator()(index_t i) const {
    max_pool_backward_element<scalar_t, acc_t>(a, d0, d1, d2, i);
  }
};

std::tuple<at::Tensor, at::Tensor> max_pool2d_cuda(const at::Tensor& x, at::IntArrayRef kernel_size,
                                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                                   at::IntArrayRef dilation, bool ceil_mode, bool with_index) {
  TORCH_CHECK(x.is_cuda(), "max_pool2d (CUDA kernel): x must be a CUDA tensor, got ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  auto p = max_pool_forward_plan(x, kernel_size, stride, padding, dilation, ceil_mode, with_index);
  const int64_t numel = p.y.numel();
  if (numel == 0) return {p.y, p.index};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "max_pool2d_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto a = pool_fwd_args<scalar_t>(x, p.y, with_index ? &p.index : nullptr, p.g, p.channels_last);
    with_pool_dividers(numel, p.channels_last, x.size(1), p.g.OH, p.g.OW, [&](auto d0, auto d1, auto d2, auto tag) {
      launch_flat<decltype(tag)>(numel, PoolFwdOp<scalar_t, acc_t, decltype(d0)>{a, d0, d1, d2});
    });
  });
  return {p.y, p.index};
}

at::Tensor max_pool2d_backward_cuda(const at::Tensor& grad, const c10::optional<at::Tensor>& index,
                                    const c10::optional<at::Tensor>& x, at::IntArrayRef input_size,
                                    at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                    at::IntArrayRef dilation, bool ceil_mode, bool channels_last) {
  TORCH_CHECK(grad.is_cuda(), "max_pool2d_backward (CUDA kernel): grad must be a CUDA tensor, got ", grad.device());
  const c10::cuda::CUDAGuard guard(grad.device());
  auto p = max_pool_backward_plan(grad, index, x, input_size, kernel_size, stride, padding, dilation, ceil_mode,
                                  channels_last);
  const int64_t numel = p.dx.numel();
  if (numel == 0) return p.dx;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "max_pool2d_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto a = pool_bwd_args<scalar_t>(grad, index, x, p.dx, p.g, channels_last);
    with_pool_dividers(numel, channels_last, input_size[1], p.g.H, p.g.W, [&](auto d0, auto d1, auto d2, auto tag) {
      launch_flat<decltype(tag)>(numel, PoolBwdOp<scalar_t, acc_t, decltype(d0)>{a, d0, d1, d2});
    });
  });
  return p.dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_kernels, CUDA, m) {
  m.impl("max_pool2d", &max_pool2d_cuda);
  m.impl("max_pool2d_backward", &max_pool2d_backward_cuda);
}

}  // namespace alexnet_kernels
