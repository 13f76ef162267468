// CUDA kernels of alexnet_kernels::lrn and lrn_backward. Tiling, floor and the math: csrc/lrn.h.
#include <ATen/OpMathType.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "../lrn.h"
#include "launch.cuh"

namespace alexnet_kernels {
namespace {

// kPass: kLrnForward, or backward with the window size known at compile time (0: any size).
constexpr int kLrnForward = -1;

template <typename scalar_t, typename acc_t, typename Div, int kPass>
struct LrnOp {
  LrnArgs<scalar_t> a;
  LrnCoef<acc_t> coef;
  Div inner, mid;
  template <typename index_t>
  __device__ void operator()(index_t i) const {
    if constexpr (kPass != kLrnForward) {
      lrn_backward_element<scalar_t, acc_t, kPass>(a, coef, inner, mid, i);
    } else {
      lrn_forward_element<scalar_t, acc_t>(a, coef, inner, mid, i);
    }
  }
};

template <typename scalar_t, typename acc_t, int kPass>
void launch_lrn(const LrnArgs<scalar_t>& a, const LrnCoef<acc_t>& coef, int64_t numel) {
  with_lrn_dividers(a, numel, [&](auto inner, auto mid, auto tag) {
    using Div = decltype(inner);
    launch_flat<decltype(tag)>(numel, LrnOp<scalar_t, acc_t, Div, kPass>{a, coef, inner, mid});
  });
}

at::Tensor lrn_cuda(const at::Tensor& x, int64_t size, double alpha, double beta, double k) {
  lrn_check(x, size);
  TORCH_CHECK(x.is_cuda(), "lrn (CUDA kernel): x must be a CUDA tensor, got ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  const auto fmt = lrn_out_format(x);
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(fmt));
  if (x.numel() == 0) return y;
  at::Tensor x3 = lrn_as_3d(x);
  at::Tensor y3 = lrn_as_3d(y);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lrn_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch_lrn<scalar_t, acc_t, kLrnForward>(lrn_args<scalar_t>(x3, nullptr, y3, fmt, size),
                                       lrn_coef<acc_t>(size, alpha, beta, k), x.numel());
  });
  return y;
}

at::Tensor lrn_backward_cuda(const at::Tensor& grad, const at::Tensor& x, int64_t size, double alpha, double beta,
                             double k) {
  lrn_backward_check(grad, x, size);
  TORCH_CHECK(x.is_cuda(), "lrn_backward (CUDA kernel): x must be a CUDA tensor, got ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  const auto fmt = lrn_out_format(x);
  at::Tensor dx = at::empty(x.sizes(), x.options().memory_format(fmt));
  if (x.numel() == 0) return dx;
  at::Tensor x3 = lrn_as_3d(x);
  at::Tensor g3 = lrn_as_3d(grad);
  at::Tensor dx3 = lrn_as_3d(dx);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lrn_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto a = lrn_args<scalar_t>(x3, &g3, dx3, fmt, size);
    const auto coef = lrn_coef<acc_t>(size, alpha, beta, k);
    if (size == 5) {
      launch_lrn<scalar_t, acc_t, 5>(a, coef, x.numel());
    } else {
      launch_lrn<scalar_t, acc_t, 0>(a, coef, x.numel());
    }
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_kernels, CUDA, m) {
  m.impl("lrn", &lrn_cuda);
  m.impl("lrn_backward", &lrn_backward_cuda);
}

}  // namespace alexnet_kernels
