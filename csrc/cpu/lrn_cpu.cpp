// CPU kernels of alexnet_kernels::lrn and lrn_backward: the per-element bodies of lrn.h in an
// at::parallel_for over the output's flat index. Correct and parallel, not tuned: the CPU path
// exists for machines without a GPU, for gradcheck in float64 and as the tested twin of the
// CUDA kernel (same element functions).
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../lrn.h"

namespace alexnet_kernels {
namespace {

// The element function fn(args, inner, mid, i), in parallel over the flat index.
template <typename scalar_t, typename Fn>
void run_lrn_cpu(const LrnArgs<scalar_t>& a, int64_t numel, Fn fn) {
  with_lrn_dividers(a, numel, [&](const auto& inner, const auto& mid, auto tag) {
    using index_t = decltype(tag);
    // ~16k elements a task: each costs a few dozen flops, well above the hand-off cost.
    at::parallel_for(0, numel, 16384, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) fn(a, inner, mid, static_cast<index_t>(i));
    });
  });
}

at::Tensor lrn_cpu(const at::Tensor& x, int64_t size, double alpha, double beta, double k) {
  lrn_check(x, size);
  TORCH_CHECK(x.device().is_cpu(), "lrn (CPU kernel): x must be a CPU tensor, got ", x.device());
  const auto fmt = lrn_out_format(x);
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(fmt));
  if (x.numel() == 0) return y;
  at::Tensor x3 = lrn_as_3d(x);
  at::Tensor y3 = lrn_as_3d(y);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lrn_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto a = lrn_args<scalar_t>(x3, nullptr, y3, fmt, size);
    const auto coef = lrn_coef<acc_t>(size, alpha, beta, k);
    run_lrn_cpu(a, x.numel(), [&](const LrnArgs<scalar_t>& args, const auto& di, const auto& dm, auto i) {
      lrn_forward_element<scalar_t, acc_t>(args, coef, di, dm, i);
    });
  });
  return y;
}

at::Tensor lrn_backward_cpu(const at::Tensor& grad, const at::Tensor& x, int64_t size, double alpha,
                            double beta, double k) {
  lrn_backward_check(grad, x, size);
  TORCH_CHECK(x.device().is_cpu(), "lrn_backward (CPU kernel): x must be a CPU tensor, got ", x.device());
  const auto fmt = lrn_out_format(x);
  at::Tensor dx = at::empty(x.sizes(), x.options().memory_format(fmt));
  if (x.numel() == 0) return dx;
  at::Tensor x3 = lrn_as_3d(x);
  at::Tensor g3 = lrn_as_3d(grad);
  at::Tensor dx3 = lrn_as_3d(dx);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lrn_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto a = lrn_args<scalar_t>(x3, &g3, dx3, fmt, size);
    const auto coef = lrn_coef<acc_t>(size, alpha, beta, k);
    if (size == 5) {
      run_lrn_cpu(a, x.numel(), [&](const LrnArgs<scalar_t>& args, const auto& di, const auto& dm, auto i) {
        lrn_backward_element<scalar_t, acc_t, 5>(args, coef, di, dm, i);
      });
    } else {
      run_lrn_cpu(a, x.numel(), [&](const LrnArgs<scalar_t>& args, const auto& di, const auto& dm, auto i) {
        lrn_backward_element<scalar_t, acc_t, 0>(args, coef, di, dm, i);
      });
    }
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_kernels, CPU, m) {
  m.impl("lrn", &lrn_cpu);
  m.impl("lrn_backward", &lrn_backward_cpu);
}

}  // namespace alexnet_kernels
