// CPU kernels of alexnet_kernels::max_pool2d and max_pool2d_backward: the per-element bodies of
// max_pool.h in an at::parallel_for over the flat index. Correct and parallel, not tuned.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../max_pool.h"

namespace alexnet_kernels {
namespace {

// The element functions, in parallel over the flat index.
template <typename Fn>
void run_pool_cpu(int64_t numel, bool channels_last, int64_t C, int64_t A, int64_t B, Fn fn) {
  with_pool_dividers(numel, channels_last, C, A, B, [&](const auto& d0, const auto& d1, const auto& d2, auto tag) {
    using index_t = decltype(tag);
    at::parallel_for(0, numel, 16384, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) fn(d0, d1, d2, static_cast<index_t>(i));
    });
  });
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_cpu(const at::Tensor& x, at::IntArrayRef kernel_size,
                                                  at::IntArrayRef stride, at::IntArrayRef padding,
                                                  at::IntArrayRef dilation, bool ceil_mode, bool with_index) {
  TORCH_CHECK(x.device().is_cpu(), "max_pool2d (CPU kernel): x must be a CPU tensor, got ", x.device());
  auto p = max_pool_forward_plan(x, kernel_size, stride, padding, dilation, ceil_mode, with_index);
  if (p.y.numel() == 0) return {p.y, p.index};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "max_pool2d_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto a = pool_fwd_args<scalar_t>(x, p.y, with_index ? &p.index : nullptr, p.g, p.channels_last);
    run_pool_cpu(p.y.numel(), p.channels_last, x.size(1), p.g.OH, p.g.OW,
                 [&](const auto& d0, const auto& d1, const auto& d2, auto i) {
                   max_pool_forward_element<scalar_t, acc_t>(a, d0, d1, d2, i);
                 });
  });
  return {p.y, p.index};
}

at::Tensor max_pool2d_backward_cpu(const at::Tensor& grad, const c10::optional<at::Tensor>& index,
                                   const c10::optional<at::Tensor>& x, at::IntArrayRef input_size,
                                   at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation, bool ceil_mode, bool channels_last) {
  TORCH_CHECK(grad.device().is_cpu(), "max_pool2d_backward (CPU kernel): grad must be a CPU tensor, got ",
              grad.device());
  auto p = max_pool_backward_plan(grad, index, x, input_size, kernel_size, stride, padding, dilation, ceil_mode,
                                  channels_last);
  if (p.dx.numel() == 0) return p.dx;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "max_pool2d_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto a = pool_bwd_args<scalar_t>(grad, index, x, p.dx, p.g, channels_last);
    run_pool_cpu(p.dx.numel(), channels_last, input_size[1], p.g.H, p.g.W,
                 [&](const auto& d0, const auto& d1, const auto& d2, auto i) {
                   max_pool_backward_element<scalar_t, acc_t>(a, d0, d1, d2, i);
                 });
  });
  return p.dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_kernels, CPU, m) {
  m.impl("max_pool2d", &max_pool2d_cpu);
  m.impl("max_pool2d_backward", &max_pool2d_backward_cpu);
}

}  // namespace alexnet_kernels
