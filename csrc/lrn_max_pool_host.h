// Host side of alexnet_kernels::lrn_max_pool2d, shared by the CPU and CUDA entry points: argument
// checks, the output layouts (alexnet_kernels/lrn_max_pool.py's fake kernels mirror them) and the
// kernel arguments. A Backend (LrnPoolCpu in csrc/cpu/lrn_max_pool_cpu.cpp, LrnPoolCuda<Launcher>
// in csrc/cuda/lrn_max_pool_kernels.cuh) runs the kernels:
//   Backend::template forward<T, acc_t>(const LrnPoolFwdArgs<T>&, const LrnCoef<acc_t>&, const PlanOptions&)
//   Backend::template backward<T, acc_t>(const LrnPoolBwdArgs<T>&, const LrnCoef<acc_t>&, const PlanOptions&)
//
// The fused kernels take AlexNet's pair: LRN of size 5 and a 3x3 max pool at stride 2 without
// padding, dilation or ceil mode. alexnet_kernels.lrn_max_pool2d composes alexnet_kernels.lrn and
// alexnet_kernels.max_pool2d for anything else; this op refuses it.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "lrn_max_pool.h"
#include "max_pool_host.h"  // pool_channels_last, pool_strides

namespace alexnet_kernels {

template <typename T>
struct LrnPoolFwdArgs {
  gptr<const T> x;  // [N, C, H, W], any strides
  Strides4 xs;
  gptr<T> y;             // [N, C, OH, OW], dense in the output layout
  gptr<uint8_t> index;   // null when not wanted; y's strides
  Strides4 ys;
  int64_t N, C;
  LrnPoolGeom g;
  bool channels_last;  // the output's layout (and x is dense channels_last)
};

template <typename T>
struct LrnPoolBwdArgs {
  gptr<const T> grad;          // [N, C, OH, OW], dense in the output layout
  gptr<const uint8_t> index;   // the same strides
  Strides4 gs;
  gptr<const T> x;  // any strides
  Strides4 xs;
  gptr<T> dx;  // dense in the output layout's format
  Strides4 ds;
  int64_t N, C;
  LrnPoolGeom g;
  bool channels_last;
};

// The output layout, the composition's: lrn keeps a channels_last x's layout (else it writes
// NCHW), and max_pool2d keeps its input's. So channels_last exactly where max_pool2d's rule
// (pool_channels_last) says so of x.
inline at::MemoryFormat lrn_pool_format(const at::Tensor& x) {
  return pool_channels_last(x) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

inline LrnPoolGeom lrn_pool_check(const at::Tensor& x, int64_t size, at::IntArrayRef kernel_size,
                                  at::IntArrayRef stride) {
  TORCH_CHECK_VALUE(x.dim() == 4, "lrn_max_pool2d: x must be 4-D (N, C, H, W), got shape ", x.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()), "lrn_max_pool2d: x must be a floating-point tensor, got ",
                   x.scalar_type());
  TORCH_CHECK_VALUE(size == 5, "lrn_max_pool2d: the fused kernels take size 5 (AlexNet's), got ", size,
                    "; alexnet_kernels.lrn_max_pool2d composes lrn and max_pool2d for other sizes");
  TORCH_CHECK_VALUE(kernel_size.size() == 2 && stride.size() == 2 && kernel_size[0] == 3 && kernel_size[1] == 3 &&
                        stride[0] == 2 && stride[1] == 2,
                    "lrn_max_pool2d: the fused kernels take kernel_size 3 and stride 2 (AlexNet's), got kernel_size ",
                    kernel_size, " and stride ", stride,
                    "; alexnet_kernels.lrn_max_pool2d composes lrn and max_pool2d for other windows");
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK_VALUE(C > 0 && H > 0 && W > 0,
                    "lrn_max_pool2d: x must have non-zero C, H and W (only the batch may be empty), got shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(H >= 3 && W >= 3, "lrn_max_pool2d: output size would be ", H < 3 ? 0 : (H - 3) / 2 + 1, "x",
                    W < 3 ? 0 : (W - 3) / 2 + 1, " for input ", H, "x", W,
                    ": the kernel_size (with dilation) is larger than the padded input");
  TORCH_CHECK_VALUE(H < kInt32Limit / 4 && W < kInt32Limit / 4, "lrn_max_pool2d: H and W must be below 2^29, got ",
                    x.sizes());
  LrnPoolGeom g;
  g.H = static_cast<int>(H);
  g.W = static_cast<int>(W);
  g.OH = static_cast<int>((H - 3) / 2 + 1);
  g.OW = static_cast<int>((W - 3) / 2 + 1);
  return g;
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor> lrn_max_pool2d_forward(const at::Tensor& x, int64_t size, double alpha,
                                                          double beta, double k, at::IntArrayRef kernel_size,
                                                          at::IntArrayRef stride, bool with_index,
                                                          const PlanOptions& opt = {}) {
  const LrnPoolGeom g = lrn_pool_check(x, size, kernel_size, stride);
  const auto fmt = lrn_pool_format(x);
  const auto opts = x.options().memory_format(fmt);
  const std::vector<int64_t> out_size{x.size(0), x.size(1), g.OH, g.OW};
  at::Tensor y = at::empty(out_size, opts);
  at::Tensor index =
      with_index ? at::empty(out_size, opts.dtype(at::kByte)) : at::empty({0}, x.options().dtype(at::kByte));
  if (y.numel() == 0) return {y, index};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lrn_max_pool2d", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    LrnPoolFwdArgs<scalar_t> a;
    a.x = x.const_data_ptr<scalar_t>();
    a.xs = pool_strides(x);
    a.y = y.mutable_data_ptr<scalar_t>();
    a.index = with_index ? index.mutable_data_ptr<uint8_t>() : nullptr;
    a.ys = pool_strides(y);
    a.N = x.size(0);
    a.C = x.size(1);
    a.g = g;
    a.channels_last = fmt == at::MemoryFormat::ChannelsLast;
    Backend::template forward<scalar_t, acc_t>(a, lrn_coef<acc_t>(size, alpha, beta, k), opt);
  });
  return {y, index};
}

template <typename Backend>
at::Tensor lrn_max_pool2d_backward(const at::Tensor& grad, const at::Tensor& index, const at::Tensor& x, int64_t size,
                                   double alpha, double beta, double k, at::IntArrayRef kernel_size,
                                   at::IntArrayRef stride, const PlanOptions& opt = {}) {
  const LrnPoolGeom g = lrn_pool_check(x, size, kernel_size, stride);
  const std::vector<int64_t> out_size{x.size(0), x.size(1), g.OH, g.OW};
  TORCH_CHECK_VALUE(grad.sizes() == at::IntArrayRef(out_size), "lrn_max_pool2d_backward: grad has shape ",
                    grad.sizes(), ", expected ", at::IntArrayRef(out_size));
  TORCH_CHECK_TYPE(grad.scalar_type() == x.scalar_type(), "lrn_max_pool2d_backward: grad dtype ",
                   grad.scalar_type(), " does not match x dtype ", x.scalar_type());
  TORCH_CHECK_TYPE(index.scalar_type() == at::kByte, "lrn_max_pool2d_backward: index must be uint8, got ",
                   index.scalar_type());
  TORCH_CHECK_VALUE(index.sizes() == grad.sizes(), "lrn_max_pool2d_backward: index shape ", index.sizes(),
                    " does not match grad shape ", grad.sizes());
  TORCH_CHECK(grad.device() == x.device() && index.device() == x.device(), "lrn_max_pool2d_backward: grad (",
              grad.device(), "), index (", index.device(), ") and x (", x.device(), ") must be on one device");
  const auto fmt = lrn_pool_format(x);
  at::Tensor dx = at::empty(x.sizes(), x.options().memory_format(fmt));
  if (dx.numel() == 0) return dx;
  // The kernels read the gradient and the index at one offset, in the output's layout: the index
  // is forward's, and a gradient in another layout (an expanded one, from y.sum()) is copied.
  const at::Tensor idx = index.contiguous(fmt);
  const at::Tensor gd = grad.contiguous(fmt);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lrn_max_pool2d_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    LrnPoolBwdArgs<scalar_t> a;
    a.grad = gd.const_data_ptr<scalar_t>();
    a.index = idx.const_data_ptr<uint8_t>();
    a.gs = pool_strides(gd);
    a.x = x.const_data_ptr<scalar_t>();
    a.xs = pool_strides(x);
    a.dx = dx.mutable_data_ptr<scalar_t>();
    a.ds = pool_strides(dx);
    a.N = x.size(0);
    a.C = x.size(1);
    a.g = g;
    a.channels_last = fmt == at::MemoryFormat::ChannelsLast;
    Backend::template backward<scalar_t, acc_t>(a, lrn_coef<acc_t>(size, alpha, beta, k), opt);
  });
  return dx;
}

}  // namespace alexnet_kernels
