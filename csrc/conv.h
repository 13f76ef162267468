// 2-D convolution (groups 1, dilation 1) with optional fused bias + ReLU epilogue: the reference
// kernels of alexnet_kernels::conv2d.
//
//   y[n, k, oh, ow] = relu?( b[k] + sum_{c, r, s} x[n, c, oh*sH - pH + r, ow*sW - pW + s] * w[k, c, r, s] )
//
// These are the direct, one-thread-per-output-element kernels: correct for every valid shape,
// run by the CPU kernel (at::parallel_for) and by the CUDA kernel where its implicit GEMM does
// not apply (fp64, more than 1024 taps, the input gradient). They are not the fast path: that is
// csrc/cuda/conv_cuda.cu, which these check.
//
// With relu, the gradient of the pre-activation is g * (y > 0): backward reads the saved output y
// (which in AlexNet the next layer keeps anyway) rather than recomputing the convolution.
//
// Reductions: forward sums C*R*S products (363 for conv1); the weight gradient sums N*OH*OW
// (387,200 for conv1 at batch 128), so fp32 weight and bias gradients accumulate in fp64.
#pragma once

#include <type_traits>

#include "common.h"

namespace alexnet_kernels {

struct ConvGeom {
  int64_t N, C, H, W, K, R, S, OH, OW;
  int64_t sH, sW, pH, pW;
};

template <typename scalar_t>
struct ConvArgs {
  const scalar_t* x; Strides4 xs;    // [N, C, H, W]
  const scalar_t* w; Strides4 ws;    // [K, C, R, S]
  const scalar_t* b;                 // [K] or null
  const scalar_t* g; Strides4 gs;    // grad of y [N, K, OH, OW] (backward)
  const scalar_t* y; Strides4 ys;    // y, for the ReLU mask (backward with relu), else null
  scalar_t* out; Strides4 os;        // y, dx, dw or db
  ConvGeom geo;
  bool relu;
};

// Accumulator of the long reductions (weight and bias gradients): fp64 for fp32 and fp64 data.
template <typename scalar_t>
using conv_wacc_t = std::conditional_t<std::is_same_v<scalar_t, double> || std::is_same_v<scalar_t, float>, double, float>;

// Flat index -> four coordinates, the last fastest (sizes d3, d2, d1 of the inner dims).
template <typename index_t, typename Div>
AK_HD void conv_coords(const Div& d3, const Div& d2, const Div& d1, index_t i, int64_t& a, int64_t& b, int64_t& c,
                       int64_t& d) {
  index_t q0, r0, q1, r1, q2, r2;
  d3.divmod(i, q0, r0);
  d2.divmod(q0, q1, r1);
  d1.divmod(q1, q2, r2);
  a = q2; b = r2; c = r1; d = r0;
}

// The gradient reaching the pre-activation: g, masked where the ReLU was off.
template <typename scalar_t, typename acc_t>
AK_HD acc_t conv_grad_pre(const ConvArgs<scalar_t>& a, int64_t n, int64_t k, int64_t oh, int64_t ow) {
  // torch.relu's backward (threshold_backward): zero where y <= 0, pass where y > 0 or NaN.
  if (a.relu && static_cast<acc_t>(a.y[a.ys.at(n, k, oh, ow)]) <= acc_t(0)) return acc_t(0);
  return static_cast<acc_t>(a.g[a.gs.at(n, k, oh, ow)]);
}

// Output element (n, k, oh, ow); flat order given by the caller's dividers (NCHW or NHWC: the
// dividers are set so that (a, b, c, d) = (n, k, oh, ow) or (n, oh, ow, k)).
template <typename scalar_t, typename acc_t>
AK_HD void conv_forward_at(const ConvArgs<scalar_t>& a, int64_t n, int64_t k, int64_t oh, int64_t ow) {
  const ConvGeom& g = a.geo;
  acc_t acc = a.b ? static_cast<acc_t>(a.b[k]) : acc_t(0);
  const int64_t h0 = oh * g.sH - g.pH, w0 = ow * g.sW - g.pW;
  for (int64_t c = 0; c < g.C; ++c) {
    for (int64_t r = 0; r < g.R; ++r) {
      const int64_t h = h0 + r;
      if (h < 0 || h >= g.H) continue;
      for (int64_t s = 0; s < g.S; ++s) {
        const int64_t w = w0 + s;
        if (w < 0 || w >= g.W) continue;
        acc += static_cast<acc_t>(a.x[a.xs.at(n, c, h, w)]) * static_cast<acc_t>(a.w[a.ws.at(k, c, r, s)]);
      }
    }
  }
  if (a.relu && acc < acc_t(0)) acc = acc_t(0);  // NaN stays NaN, as in torch.relu
  a.out[a.os.at(n, k, oh, ow)] = static_cast<scalar_t>(acc);
}

// Input-gradient element (n, c, h, w): a gather over the outputs whose window covers it.
template <typename scalar_t, typename acc_t>
AK_HD void conv_grad_input_at(const ConvArgs<scalar_t>& a, int64_t n, int64_t c, int64_t h, int64_t w) {
  const ConvGeom& g = a.geo;
  acc_t acc = 0;
  for (int64_t r = 0; r < g.R; ++r) {
    const int64_t th = h + g.pH - r;  // = oh * sH
    if (th < 0 || th % g.sH != 0) continue;
    const int64_t oh = th / g.sH;
    if (oh >= g.OH) continue;
    for (int64_t s = 0; s < g.S; ++s) {
      const int64_t tw = w + g.pW - s;
      if (tw < 0 || tw % g.sW != 0) continue;
      const int64_t ow = tw / g.sW;
      if (ow >= g.OW) continue;
      for (int64_t k = 0; k < g.K; ++k) {
        acc += conv_grad_pre<scalar_t, acc_t>(a, n, k, oh, ow) * static_cast<acc_t>(a.w[a.ws.at(k, c, r, s)]);
      }
    }
  }
  a.out[a.os.at(n, c, h, w)] = static_cast<scalar_t>(acc);
}

// Weight-gradient element (k, c, r, s): a reduction over the batch and the output plane.
template <typename scalar_t>
AK_HD void conv_grad_weight_at(const ConvArgs<scalar_t>& a, int64_t k, int64_t c, int64_t r, int64_t s) {
  using wacc_t = conv_wacc_t<scalar_t>;
  const ConvGeom& g = a.geo;
  wacc_t acc = 0;
  for (int64_t n = 0; n < g.N; ++n) {
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      const int64_t h = oh * g.sH - g.pH + r;
      if (h < 0 || h >= g.H) continue;
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        const int64_t w = ow * g.sW - g.pW + s;
        if (w < 0 || w >= g.W) continue;
        acc += conv_grad_pre<scalar_t, wacc_t>(a, n, k, oh, ow) * static_cast<wacc_t>(a.x[a.xs.at(n, c, h, w)]);
      }
    }
  }
  a.out[a.os.at(k, c, r, s)] = static_cast<scalar_t>(acc);
}

template <typename scalar_t>
AK_HD void conv_grad_bias_at(const ConvArgs<scalar_t>& a, int64_t k) {
  using wacc_t = conv_wacc_t<scalar_t>;
  const ConvGeom& g = a.geo;
  wacc_t acc = 0;
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow) acc += conv_grad_pre<scalar_t, wacc_t>(a, n, k, oh, ow);
  a.out[k] = static_cast<scalar_t>(acc);
}

enum ConvPass { kConvForward, kConvGradInput, kConvGradWeight, kConvGradBias };

// One element of one pass, from a flat index in the written tensor's memory order: (a, b, c, d)
// is (n, k, oh, ow), (n, c, h, w) or (k, c, r, s), or with channels_last the channel dim last.
template <typename scalar_t, typename acc_t, typename Div, int PASS>
struct ConvOp {
  // Each element is a reduction of hundreds (forward) to hundreds of thousands (weight
  // gradient) of products: small CPU tasks keep both cores busy on small outputs.
  static constexpr int64_t kCpuGrain = 16;
  ConvArgs<scalar_t> a;
  Div d3, d2, d1;
  bool channels_last;
  template <typename index_t>
  AK_HD void operator()(index_t i) const {
    if constexpr (PASS == kConvGradBias) {
      conv_grad_bias_at<scalar_t>(a, static_cast<int64_t>(i));
    } else {
      int64_t p, q, r, s;
      conv_coords<index_t, Div>(d3, d2, d1, i, p, q, r, s);
      if (channels_last) {  // (p, q, r, s) = (outer, h, w, channel)
        const int64_t ch = s;
        s = r; r = q; q = ch;
      }
      if constexpr (PASS == kConvForward) conv_forward_at<scalar_t, acc_t>(a, p, q, r, s);
      if constexpr (PASS == kConvGradInput) conv_grad_input_at<scalar_t, acc_t>(a, p, q, r, s);
      if constexpr (PASS == kConvGradWeight) conv_grad_weight_at<scalar_t>(a, p, q, r, s);
    }
  }
};

}  // namespace alexnet_kernels

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

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

// Gradients of input, weight and bias, each computed only where output_mask asks (an empty
// tensor stands for one not asked for). With relu, y is the forward output.
template <typename Runner>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& y,
    at::IntArrayRef stride, at::IntArrayRef padding, bool relu, std::array<bool, 3> output_mask) {
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
