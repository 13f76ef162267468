// Host side of alexnet_kernels::conv2d: the argument checks shared by the CPU and CUDA entry
// points (the Python fake mirrors them, conv.py) and the dispatch of the direct reference kernels of
// conv.h through a Runner (cpu/runner.h, cuda/launch.cuh).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "conv.h"

namespace alexnet_kernels {

inline Strides4 strides4(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

inline bool conv_channels_last(const at::Tensor& x) {
  return x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

inline int64_t conv_out_size(int64_t in, int64_t k, int64_t s, int64_t p) { return (in + 2 * p - k) / s + 1; }

// Checks shared by the CPU and CUDA entry points; the Python fake mirrors them (conv.py).
inline ConvGeom conv_geom(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                          at::IntArrayRef stride, at::IntArrayRef padding) {
  TORCH_CHECK_VALUE(x.dim() == 4, "conv2d: input must be 4-D (N, C, H, W), got shape ", x.sizes());
  TORCH_CHECK_VALUE(w.dim() == 4, "conv2d: weight must be 4-D (K, C, R, S), got shape ", w.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()), "conv2d: input must be floating point, got ", x.scalar_type());
  TORCH_CHECK_TYPE(w.scalar_type() == x.scalar_type(), "conv2d: weight dtype ", w.scalar_type(),
                   " does not match input dtype ", x.scalar_type());
  TORCH_CHECK(w.device() == x.device(), "conv2d: weight is on ", w.device(), " but input is on ", x.device());
  TORCH_CHECK_VALUE(w.size(1) == x.size(1), "conv2d: weight expects ", w.size(1), " input channels, input has ",
                    x.size(1));
  TORCH_CHECK_VALUE(stride.size() == 2 && padding.size() == 2, "conv2d: stride and padding must have 2 values");
  TORCH_CHECK_VALUE(stride[0] > 0 && stride[1] > 0, "conv2d: stride must be positive, got ", stride);
  TORCH_CHECK_VALUE(padding[0] >= 0 && padding[1] >= 0, "conv2d: padding must be non-negative, got ", padding);
  TORCH_CHECK_VALUE(w.size(0) > 0 && w.size(1) > 0 && w.size(2) > 0 && w.size(3) > 0,
                    "conv2d: weight must have no empty dims, got shape ", w.sizes());
  if (b.has_value()) {
    TORCH_CHECK_VALUE(b->dim() == 1 && b->size(0) == w.size(0), "conv2d: bias must have shape [", w.size(0),
                      "], got ", b->sizes());
    TORCH_CHECK_TYPE(b->scalar_type() == x.scalar_type(), "conv2d: bias dtype ", b->scalar_type(),
                     " does not match input dtype ", x.scalar_type());
    TORCH_CHECK(b->device() == x.device(), "conv2d: bias is on ", b->device(), " but input is on ", x.device());
  }
  ConvGeom g;
  g.N = x.size(0); g.C = x.size(1); g.H = x.size(2); g.W = x.size(3);
  g.K = w.size(0); g.R = w.size(2); g.S = w.size(3);
  g.sH = stride[0]; g.sW = stride[1]; g.pH = padding[0]; g.pW = padding[1];
  TORCH_CHECK_VALUE(g.H + 2 * g.pH >= g.R && g.W + 2 * g.pW >= g.S, "conv2d: weight's kernel ", g.R, "x", g.S,
                    " is larger than the padded input ", g.H + 2 * g.pH, "x", g.W + 2 * g.pW);
  g.OH = conv_out_size(g.H, g.R, g.sH, g.pH);
  g.OW = conv_out_size(g.W, g.S, g.sW, g.pW);
  return g;
}

template <typename scalar_t>
inline ConvArgs<scalar_t> conv_args(const ConvGeom& geo, const at::Tensor& x, const at::Tensor& w,
                                    const c10::optional<at::Tensor>& b, bool relu) {
  ConvArgs<scalar_t> a{};
  a.x = x.const_data_ptr<scalar_t>(); a.xs = strides4(x);
  a.w = w.const_data_ptr<scalar_t>(); a.ws = strides4(w);
  a.b = b.has_value() ? b->const_data_ptr<scalar_t>() : nullptr;
  a.geo = geo;
  a.relu = relu;
  return a;
}

// Runs one pass over `out` (a 4-D tensor, or the 1-D bias gradient) with Runner::run<index_t>(
// numel, op): an at::parallel_for on the CPU, a grid-stride kernel on the GPU.
template <typename Runner, int PASS, typename scalar_t, typename acc_t>
inline void conv_run_pass(ConvArgs<scalar_t> a, at::Tensor& out) {
  const int64_t numel = out.numel();
  if (numel == 0) return;
  a.out = out.mutable_data_ptr<scalar_t>();
  const bool cl = out.dim() == 4 && conv_channels_last(out);
  if (out.dim() == 4) a.os = strides4(out);
  // Inner sizes in memory order (the last fastest).
  const int64_t d1 = out.dim() == 4 ? (cl ? out.size(2) : out.size(1)) : 1;
  const int64_t d2 = out.dim() == 4 ? (cl ? out.size(3) : out.size(2)) : 1;
  const int64_t d3 = out.dim() == 4 ? (cl ? out.size(1) : out.size(3)) : numel;
  auto launch = [&](auto div3, auto div2, auto div1, auto tag) {
    Runner::template run<decltype(tag)>(numel, ConvOp<scalar_t, acc_t, decltype(div3), PASS>{a, div3, div2, div1, cl});
  };
  if (numel < kInt32Limit) {
    launch(FastDivmod32(d3), FastDivmod32(d2), FastDivmod32(d1), int32_t{});
  } else {
    launch(Divmod64(d3), Divmod64(d2), Divmod64(d1), int64_t{});
  }
}

inline at::MemoryFormat conv_format(const at::Tensor& like) {
  return conv_channels_last(like) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

template <typename Runner>
at::Tensor conv2d_forward(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                          at::IntArrayRef stride, at::IntArrayRef padding, bool relu) {
  const ConvGeom g = conv_geom(x, w, b, stride, padding);
  at::Tensor y = at::empty({g.N, g.K, g.OH, g.OW}, x.options().memory_format(conv_format(x)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "conv2d", [&] {
    conv_run_pass<Runner, kConvForward, scalar_t, at::opmath_type<scalar_t>>(conv_args<scalar_t>(g, x, w, b, relu), y);
  });
  return y;
}

// The backward's checks (the forward's, and grad, y against them); the geometry.
inline ConvGeom conv_backward_geom(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w,
                                   const c10::optional<at::Tensor>& y, at::IntArrayRef stride, at::IntArrayRef padding,
                                   bool relu) {
  const ConvGeom g = conv_geom(x, w, c10::nullopt, stride, padding);
  const std::vector<int64_t> out_size{g.N, g.K, g.OH, g.OW};
  TORCH_CHECK_VALUE(grad.sizes() == at::IntArrayRef(out_size), "conv2d_backward: grad has shape ", grad.sizes(),
                    ", expected ", at::IntArrayRef(out_size));
  TORCH_CHECK_TYPE(grad.scalar_type() == x.scalar_type(), "conv2d_backward: grad dtype ", grad.scalar_type(),
                   " does not match input dtype ", x.scalar_type());
  TORCH_CHECK(grad.device() == x.device(), "conv2d_backward: grad is on ", grad.device(), " but input is on ",
              x.device());
  if (relu) {
    TORCH_CHECK_VALUE(y.has_value() && y->sizes() == grad.sizes() && y->scalar_type() == grad.scalar_type() &&
                          y->device() == grad.device(),
                      "conv2d_backward: relu=True needs the forward output y, shaped like grad");
  }
  return g;
}

// Gradients of input, weight and bias, each computed only where output_mask asks (an empty
// tensor stands for one not asked for). With relu, y is the forward output.
template <typename Runner>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& y,
    at::IntArrayRef stride, at::IntArrayRef padding, bool relu, std::array<bool, 3> output_mask) {
  const ConvGeom g = conv_backward_geom(grad, x, w, y, stride, padding, relu);
  at::Tensor dx = at::empty(output_mask[0] ? x.sizes() : at::IntArrayRef{0}, x.options().memory_format(
                                output_mask[0] ? conv_format(x) : at::MemoryFormat::Contiguous));
  at::Tensor dw = at::empty(output_mask[1] ? w.sizes() : at::IntArrayRef{0}, w.options().memory_format(
                                output_mask[1] ? conv_format(w) : at::MemoryFormat::Contiguous));
  at::Tensor db = at::empty({output_mask[2] ? g.K : 0}, w.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "conv2d_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto a = conv_args<scalar_t>(g, x, w, c10::nullopt, relu);
    a.g = grad.const_data_ptr<scalar_t>();
    a.gs = strides4(grad);
    if (relu) {
      a.y = y->const_data_ptr<scalar_t>();
      a.ys = strides4(*y);
    }
    if (output_mask[0]) conv_run_pass<Runner, kConvGradInput, scalar_t, acc_t>(a, dx);
    if (output_mask[1]) conv_run_pass<Runner, kConvGradWeight, scalar_t, acc_t>(a, dw);
    if (output_mask[2]) conv_run_pass<Runner, kConvGradBias, scalar_t, acc_t>(a, db);
  });
  return {dx, dw, db};
}

}  // namespace alexnet_kernels
