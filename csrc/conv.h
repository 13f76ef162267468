// 2-D convolution (groups 1, dilation 1) with an optional fused bias + ReLU epilogue: the direct
// reference kernels, shared by the CPU and CUDA builds (device code only; the host-side checks and
// dispatch are conv_host.h).
//
//   y[n, k, oh, ow] = relu?( b[k] + sum_{c, r, s} x[n, c, oh*sH - pH + r, ow*sW - pW + s] * w[k, c, r, s] )
//
// One thread (or CPU task) per output element: correct for every valid shape, and the oracle the
// fast paths are checked against. The CUDA build runs them where its implicit GEMM does not apply
// (fp64, more than 1024 taps, the input gradient); the CPU build runs its GEMM (cpu/conv_cpu.cpp).
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
  gptr<const scalar_t> x; Strides4 xs;   // [N, C, H, W]
  gptr<const scalar_t> w; Strides4 ws;   // [K, C, R, S]
  gptr<const scalar_t> b;                // [K] or null
  gptr<const scalar_t> g; Strides4 gs;   // grad of y [N, K, OH, OW] (backward)
  gptr<const scalar_t> y; Strides4 ys;   // y, for the ReLU mask (backward with relu), else null
  gptr<scalar_t> out; Strides4 os;       // y, dx, dw or db
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
