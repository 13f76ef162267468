// Host side of alexnet_kernels::lrn, shared by the CPU and CUDA entry points: argument checks,
// the output's layout (alexnet_kernels/lrn.py's fake kernels mirror it), the kernel arguments,
// and the choice between the column path and the element path. A Backend (LrnCpu in
// csrc/cpu/lrn_cpu.cpp, LrnCuda<Launcher> in csrc/cuda/lrn_kernels.cuh) runs the kernels:
//   Backend::template forward<T, acc_t>(const LrnArgs<T>&, const LrnCoef<acc_t>&, const PlanOptions&)
//   Backend::template backward<T, acc_t>(same)
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "lrn.h"

namespace alexnet_kernels {

// The kernels' view of the tensors: [N, C, 1, S], the spatial dims merged into one.
template <typename T>
struct LrnArgs {
  gptr<const T> x;
  Strides4 xs;
  gptr<const T> g;  // backward: the gradient of y
  Strides4 gs;
  gptr<T> out;      // y or dx
  Strides4 os;
  int64_t N, C, S;
  int64_t size;
  bool channels_last;  // the output's memory order is (n, s, c), not (n, c, s)
};

inline at::MemoryFormat lrn_out_format(const at::Tensor& x) {
  if (x.is_contiguous()) return at::MemoryFormat::Contiguous;
  if (x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast)) return at::MemoryFormat::ChannelsLast;
  if (x.dim() == 5 && x.is_contiguous(at::MemoryFormat::ChannelsLast3d)) return at::MemoryFormat::ChannelsLast3d;
  return at::MemoryFormat::Contiguous;
}

inline void lrn_check(const at::Tensor& x, int64_t size) {
  TORCH_CHECK_VALUE(x.dim() >= 3, "lrn: x must have 3 or more dims (N, C, ...), got shape ", x.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()), "lrn: x must be a floating-point tensor, got ",
                   x.scalar_type());
  TORCH_CHECK_VALUE(size > 0, "lrn: size must be positive, got ", size);
}

inline void lrn_backward_check(const at::Tensor& grad, const at::Tensor& x, int64_t size) {
  lrn_check(x, size);
  TORCH_CHECK(grad.device() == x.device(), "lrn_backward: grad is on ", grad.device(), " but x is on ", x.device());
  TORCH_CHECK_VALUE(grad.sizes() == x.sizes(), "lrn_backward: grad shape ", grad.sizes(), " does not match x shape ",
                    x.sizes());
  TORCH_CHECK_TYPE(grad.scalar_type() == x.scalar_type(), "lrn_backward: grad dtype ", grad.scalar_type(),
                   " does not match x dtype ", x.scalar_type());
}

// [N, C, S] view of a 3+-dim tensor (a copy only where the spatial dims cannot be merged).
inline at::Tensor lrn_as_3d(const at::Tensor& t) {
  const int64_t N = t.size(0), C = t.size(1);
  return t.reshape({N, C, N * C == 0 ? 0 : t.numel() / (N * C)});
}

inline Strides4 lrn_strides(const at::Tensor& t3) { return {t3.stride(0), t3.stride(1), 0, t3.stride(2)}; }

template <typename T>
LrnArgs<T> lrn_args(const at::Tensor& x3, const at::Tensor* g3, at::Tensor& out3, at::MemoryFormat fmt,
                    int64_t size) {
  LrnArgs<T> a;
  a.x = x3.const_data_ptr<T>();
  a.xs = lrn_strides(x3);
  a.g = g3 ? g3->const_data_ptr<T>() : nullptr;
  a.gs = g3 ? lrn_strides(*g3) : Strides4{0, 0, 0, 0};
  a.out = out3.mutable_data_ptr<T>();
  a.os = lrn_strides(out3);
  a.N = x3.size(0);
  a.C = x3.size(1);
  a.S = x3.size(2);
  a.size = size;
  a.channels_last = fmt != at::MemoryFormat::Contiguous;
  return a;
}

// The column path: AlexNet's size 5 on an output whose spatial index is fastest (NCHW), so that
// neighbouring columns are neighbours in memory.
template <typename T>
bool lrn_by_column(const LrnArgs<T>& a) {
  return a.size == 5 && !a.channels_last;
}

template <typename Backend>
at::Tensor lrn_forward(const at::Tensor& x, int64_t size, double alpha, double beta, double k,
                       const PlanOptions& opt = {}) {
  lrn_check(x, size);
  const auto fmt = lrn_out_format(x);
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(fmt));
  if (x.numel() == 0) return y;
  at::Tensor x3 = lrn_as_3d(x), y3 = lrn_as_3d(y);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lrn", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    Backend::template forward<scalar_t, acc_t>(lrn_args<scalar_t>(x3, nullptr, y3, fmt, size),
                                               lrn_coef<acc_t>(size, alpha, beta, k), opt);
  });
  return y;
}

template <typename Backend>
at::Tensor lrn_backward(const at::Tensor& grad, const at::Tensor& x, int64_t size, double alpha, double beta,
                        double k, const PlanOptions& opt = {}) {
  lrn_backward_check(grad, x, size);
  const auto fmt = lrn_out_format(x);
  at::Tensor dx = at::empty(x.sizes(), x.options().memory_format(fmt));
  if (x.numel() == 0) return dx;
  at::Tensor x3 = lrn_as_3d(x), g3 = lrn_as_3d(grad), dx3 = lrn_as_3d(dx);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lrn_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    Backend::template backward<scalar_t, acc_t>(lrn_args<scalar_t>(x3, &g3, dx3, fmt, size),
                                                lrn_coef<acc_t>(size, alpha, beta, k), opt);
  });
  return dx;
}

}  // namespace alexnet_kernels
