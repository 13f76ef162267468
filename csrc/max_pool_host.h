// Host side of alexnet_kernels::max_pool2d, shared by the CPU and CUDA entry points: the output
// size rule, argument checks, output layouts and the kernel arguments. A Backend (MaxPoolCpu in
// csrc/cpu/max_pool_cpu.cpp, MaxPoolCuda<Launcher> in csrc/cuda/max_pool_kernels.cuh) runs the
// kernels:
//   Backend::template forward<T, acc_t>(const PoolFwdArgs<T>&, const PlanOptions&)
//   Backend::template backward<T, acc_t>(const PoolBwdArgs<T>&, const PlanOptions&)
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "max_pool.h"

namespace alexnet_kernels {

template <typename T>
struct PoolFwdArgs {
  gptr<const T> x;
  Strides4 xs;
  gptr<T> y;
  gptr<uint8_t> index;  // null when not wanted; the strides of y
  Strides4 ys;
  int64_t N, C;
  PoolGeom g;
  bool channels_last;  // y (and index) are channels_last, and so is x (dense)
  bool x_dense;        // x is dense in y's layout (contiguous, or dense channels_last)
};

template <typename T>
struct PoolBwdArgs {
  gptr<const T> grad;  // [N, C, OH, OW]
  Strides4 gs;
  gptr<const uint8_t> index;  // or null: recompute the winners from x
  Strides4 is;
  gptr<const T> x;
  Strides4 xs;
  gptr<T> dx;  // [N, C, H, W]
  Strides4 ds;
  int64_t N, C;
  PoolGeom g;
  bool channels_last;  // dx's layout
  bool dense;          // grad and index are dense in dx's layout
};

// torch's pooling_output_shape: floor or ceil, and in ceil mode the last window must start
// inside the image (or its left padding).
inline int64_t pool_out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  const int64_t span = in + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
  int64_t out = (span >= 0 ? span / s : -((-span + s - 1) / s)) + 1;  // floor division, like div_rtn
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}

inline bool pool_channels_last(const at::Tensor& x) {
  return x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// Whether t is laid out densely in the given format (contiguous or channels_last).
inline bool pool_dense(const at::Tensor& t, bool channels_last) {
  return t.is_contiguous(channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
}

inline Strides4 pool_strides(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

inline PoolGeom pool_geom(const at::Tensor& x, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                          at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  TORCH_CHECK_VALUE(x.dim() == 4, "max_pool2d: x must be 4-D (N, C, H, W), got shape ", x.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()), "max_pool2d: x must be a floating-point tensor, got ",
                   x.scalar_type());
  TORCH_CHECK_VALUE(kernel_size.size() == 2 && stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
                    "max_pool2d: kernel_size, stride, padding and dilation must have 2 values each");
  constexpr int64_t kMaxParam = int64_t(1) << 29;  // window math is in 32 bits
  for (int i = 0; i < 2; ++i) {
    TORCH_CHECK_VALUE(kernel_size[i] < kMaxParam && stride[i] < kMaxParam && dilation[i] < kMaxParam,
                      "max_pool2d: kernel_size, stride and dilation must be below 2^29");
    TORCH_CHECK_VALUE(kernel_size[i] > 0, "max_pool2d: kernel_size must be positive, got ", kernel_size);
    TORCH_CHECK_VALUE(stride[i] > 0, "max_pool2d: stride must be positive, got ", stride);
    TORCH_CHECK_VALUE(dilation[i] > 0, "max_pool2d: dilation must be positive, got ", dilation);
    TORCH_CHECK_VALUE(padding[i] >= 0 && padding[i] <= kernel_size[i] / 2,
                      "max_pool2d: padding must be non-negative and at most half of kernel_size, got padding ",
                      padding, " for kernel_size ", kernel_size);
  }
  const int64_t H = x.size(2), W = x.size(3);
  TORCH_CHECK_VALUE(x.size(1) > 0 && H > 0 && W > 0,
                    "max_pool2d: x must have non-zero C, H and W (only the batch may be empty), got shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(H < kInt32Limit / 4 && W < kInt32Limit / 4, "max_pool2d: H and W must be below 2^29, got ",
                    x.sizes());
  const int64_t OH = pool_out_size(H, kernel_size[0], stride[0], padding[0], dilation[0], ceil_mode);
  const int64_t OW = pool_out_size(W, kernel_size[1], stride[1], padding[1], dilation[1], ceil_mode);
  TORCH_CHECK_VALUE(OH > 0 && OW > 0, "max_pool2d: output size would be ", OH, "x", OW, " for input ", H, "x", W,
                    ": the kernel_size (with dilation) is larger than the padded input");
  PoolGeom g;
  g.H = static_cast<int>(H);
  g.W = static_cast<int>(W);
  g.OH = static_cast<int>(OH);
  g.OW = static_cast<int>(OW);
  g.kH = static_cast<int>(kernel_size[0]);
  g.kW = static_cast<int>(kernel_size[1]);
  g.sH = static_cast<int>(stride[0]);
  g.sW = static_cast<int>(stride[1]);
  g.pH = static_cast<int>(padding[0]);
  g.pW = static_cast<int>(padding[1]);
  g.dH = static_cast<int>(dilation[0]);
  g.dW = static_cast<int>(dilation[1]);
  g.div_sH = FastDivmod32(g.sH);
  g.div_sW = FastDivmod32(g.sW);
  return g;
}

// AlexNet's window: 3x3 at stride 2 without dilation, the unrolled kernels' case.
inline bool pool_3x3s2(const PoolGeom& g) {
  return g.kH == 3 && g.kW == 3 && g.sH == 2 && g.sW == 2 && g.dH == 1 && g.dW == 1;
}

// ... and every window inside the image (no padding, and no ceil-mode window past the edge).
inline bool pool_3x3s2_inside(const PoolGeom& g) {
  return pool_3x3s2(g) && g.pH == 0 && g.pW == 0 && 2 * (g.OH - 1) + 2 < g.H && 2 * (g.OW - 1) + 2 < g.W;
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor> max_pool2d_forward(const at::Tensor& x, at::IntArrayRef kernel_size,
                                                      at::IntArrayRef stride, at::IntArrayRef padding,
                                                      at::IntArrayRef dilation, bool ceil_mode, bool with_index,
                                                      const PlanOptions& opt = {}) {
  const PoolGeom g = pool_geom(x, kernel_size, stride, padding, dilation, ceil_mode);
  TORCH_CHECK_VALUE(!with_index || g.kH * g.kW <= 256, "max_pool2d: with_index needs a window of at most ",
                    "256 taps (one byte per output), got kernel_size ", kernel_size);
  const bool cl = pool_channels_last(x);
  const auto opts = x.options().memory_format(cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  const std::vector<int64_t> out_size{x.size(0), x.size(1), g.OH, g.OW};
  at::Tensor y = at::empty(out_size, opts);
  at::Tensor index = with_index ? at::empty(out_size, opts.dtype(at::kByte)) : at::empty({0}, x.options().dtype(at::kByte));
  if (y.numel() == 0) return {y, index};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "max_pool2d", [&] {
    PoolFwdArgs<scalar_t> a;
    a.x = x.const_data_ptr<scalar_t>();
    a.xs = pool_strides(x);
    a.y = y.mutable_data_ptr<scalar_t>();
    a.index = with_index ? index.mutable_data_ptr<uint8_t>() : nullptr;
    a.ys = pool_strides(y);
    a.N = x.size(0);
    a.C = x.size(1);
    a.g = g;
    a.channels_last = cl;
    a.x_dense = pool_dense(x, cl);
    Backend::template forward<scalar_t, at::opmath_type<scalar_t>>(a, opt);
  });
  return {y, index};
}

template <typename Backend>
at::Tensor max_pool2d_backward(const at::Tensor& grad, const c10::optional<at::Tensor>& index,
                               const c10::optional<at::Tensor>& x, at::IntArrayRef input_size,
                               at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, bool ceil_mode, bool channels_last,
                               const PlanOptions& opt = {}) {
  TORCH_CHECK_VALUE(input_size.size() == 4, "max_pool2d_backward: input_size must have 4 values, got ", input_size);
  TORCH_CHECK_VALUE(index.has_value() || x.has_value(), "max_pool2d_backward: needs index or x");
  // The geometry from a meta stand-in of the input: the same checks, no data.
  const PoolGeom g = pool_geom(at::empty(input_size, grad.options().device(at::kMeta)), kernel_size, stride, padding,
                               dilation, ceil_mode);
  const std::vector<int64_t> out_size{input_size[0], input_size[1], g.OH, g.OW};
  TORCH_CHECK_VALUE(grad.sizes() == at::IntArrayRef(out_size), "max_pool2d_backward: grad has shape ", grad.sizes(),
                    ", expected ", at::IntArrayRef(out_size));
  if (index.has_value()) {
    TORCH_CHECK_TYPE(index->scalar_type() == at::kByte, "max_pool2d_backward: index must be uint8");
    TORCH_CHECK_VALUE(index->sizes() == grad.sizes(), "max_pool2d_backward: index shape ", index->sizes(),
                      " does not match grad shape ", grad.sizes());
    TORCH_CHECK(index->device() == grad.device(), "max_pool2d_backward: index is on ", index->device(), ", grad on ",
                grad.device());
  } else {
    TORCH_CHECK_VALUE(x->sizes() == input_size, "max_pool2d_backward: x shape ", x->sizes(), " != input_size ",
                      input_size);
    TORCH_CHECK_TYPE(x->scalar_type() == grad.scalar_type(), "max_pool2d_backward: x dtype ", x->scalar_type(),
                     " != grad dtype ", grad.scalar_type());
    TORCH_CHECK(x->device() == grad.device(), "max_pool2d_backward: x is on ", x->device(), ", grad on ",
                grad.device());
  }
  at::Tensor dx = at::empty(input_size, grad.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                                   : at::MemoryFormat::Contiguous));
  if (dx.numel() == 0) return dx;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "max_pool2d_backward", [&] {
    PoolBwdArgs<scalar_t> a;
    a.grad = grad.const_data_ptr<scalar_t>();
    a.gs = pool_strides(grad);
    a.index = index.has_value() ? index->const_data_ptr<uint8_t>() : nullptr;
    a.is = index.has_value() ? pool_strides(*index) : Strides4{0, 0, 0, 0};
    a.x = index.has_value() ? nullptr : x->const_data_ptr<scalar_t>();
    a.xs = index.has_value() ? Strides4{0, 0, 0, 0} : pool_strides(*x);
    a.dx = dx.mutable_data_ptr<scalar_t>();
    a.ds = pool_strides(dx);
    a.N = input_size[0];
    a.C = input_size[1];
    a.g = g;
    a.channels_last = channels_last;
    a.dense = pool_dense(grad, channels_last) && (!index.has_value() || pool_dense(*index, channels_last));
    Backend::template backward<scalar_t, at::opmath_type<scalar_t>>(a, opt);
  });
  return dx;
}

}  // namespace alexnet_kernels
