// What the implicit-GEMM convolution kernels share (conv_igemm_fwd.cuh, conv_igemm_wgrad.cuh):
// their parameters and the decode of output pixels and taps.
//
//   y[m, k] = sum_q A[m, q] * B[q, k]   m = (n, oh, ow) an output pixel, q = (c, r, s) a tap,
//   A[m, q] = x[n, c, oh*sH - pH + r, ow*sW - pW + s] (0 outside the image), B[q, k] = w[k, c, r, s]
#pragma once

#include <cstdint>

#include "../conv.h"

namespace alexnet_kernels {

constexpr int kIgBM = 128;     // output pixels per block
constexpr int kIgThreads = 256;
constexpr int kIgMaxQ = 1024;  // taps (C*R*S) whose offset table fits shared memory

constexpr int ig_cmax(int a, int b) { return a > b ? a : b; }

struct IgParams {
  gptr<const void> x;
  gptr<const void> w;  // packed weights (the layout is the kernel's)
  gptr<const void> b;  // [K] or null
  gptr<void> y;
  int64_t xsn;                  // x's batch stride (the only one that may pass 2^31)
  int32_t xsc, xsh, xsw;        // x's channel, row and column strides
  int64_t ysn, ysc, ysh, ysw;   // y's strides
  int64_t M;                    // N * OH * OW
  int32_t OH, OW, H, W, sH, sW, pH, pW;
  int32_t R, S, K, Q, Qpad;
  bool has_bias, relu;
};

// What the gather needs per tap q = (c, r, s): the offset of x[0, c, r, s] from x[0, 0, 0, 0]
// (strides of the real layout, so NCHW and channels_last gather alike) and (r, s) for the bounds
// test.
struct IgTap {
  int32_t off;
  int16_t r, s;
};

// Tap q = (c, r, s) of the gather (q < Q).
__device__ __forceinline__ IgTap ig_tap(const IgParams& p, int q) {
  const int RS = p.R * p.S;
  const int c = q / RS, r = (q - c * RS) / p.S, s = q - c * RS - r * p.S;
  return IgTap{c * p.xsc + r * p.xsh + s * p.xsw, static_cast<int16_t>(r), static_cast<int16_t>(s)};
}

// Output pixel m = (n, oh, ow) of the implicit GEMM's rows.
struct IgCoord {
  int64_t n;
  int32_t oh, ow;
};

__device__ __forceinline__ IgCoord ig_coord(const IgParams& p, int64_t m) {
  const int64_t plane = static_cast<int64_t>(p.OH) * p.OW;
  const int64_t n = m / plane;
  const int32_t rest = static_cast<int32_t>(m - n * plane);
  const int32_t oh = rest / p.OW;
  return IgCoord{n, oh, rest - oh * p.OW};
}

}  // namespace alexnet_kernels
