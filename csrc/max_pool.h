// 2-D max pooling with torch.nn.functional.max_pool2d's semantics, AlexNet's overlapping 3x3/2
// among them: the same output size rule (floor or ceil mode), the same scan order over the window
// (rows, then columns), and the same update rule `v > best || isnan(v)`, so the first maximum
// wins a tie and the last NaN wins over everything; the gradient goes where torch's goes.
//
// Backward needs no int64 index tensor: forward stores the winner's position inside its window
// as one byte (kh * kW + kw < 256), and backward is a gather: each input element visits the few
// outputs whose window covers it and sums the gradients of those it won, in increasing output
// order (torch's order of accumulation; no atomics, deterministic). Windows of more than 256
// taps store nothing and backward recomputes the winner from x.
//
// Tiling: one thread per output element (forward) or input element (backward), flat index in
// that tensor's memory order (NCHW or channels_last), so stores are coalesced and the overlapping
// window reads are L1 hits. AlexNet's windows have their own unrolled paths (forward: 3x3, any
// stride, no dilation; backward: 3x3/2 with the index): all of a thread's loads (9 taps; the 4
// outputs an input can feed, index and gradient) are independent and issue together, where the
// general loops over runtime bounds leave about one load in flight per thread, and a memory-bound
// kernel needs many (bandwidth x latency: ~20 KB in flight per H100 SM).
//
// Floor, 3x3/2 on [128, 96, 55, 55] fp32 -> [128, 96, 27, 27]: forward reads 142 MiB and writes
// 34 MiB (+ 9 MiB of index when training), 0.063 ms at 2.95 TB/s. Backward reads g and the index
// (43 MiB) and writes dx (142 MiB), 0.066 ms.
#pragma once

#include "common.h"

namespace alexnet_kernels {

struct PoolGeom {
  int H, W, OH, OW;
  int kH, kW, sH, sW, pH, pW, dH, dW;
  FastDivmod32 div_sH, div_sW;  // backward divides by the stride for every input element
};

// Position of the window's winner (kh * kW + kw) and its value, scanning like torch.
template <typename scalar_t, typename acc_t>
AK_HD int pool_argmax(const scalar_t* plane, int64_t sH, int64_t sW, const PoolGeom& g, int oh, int ow,
                      acc_t& best) {
  const int h0 = oh * g.sH - g.pH, w0 = ow * g.sW - g.pW;
  const int hend = ak_min(h0 + (g.kH - 1) * g.dH + 1, g.H);
  const int wend = ak_min(w0 + (g.kW - 1) * g.dW + 1, g.W);
  // First tap inside the image (padding is never a candidate).
  const int kh0 = h0 < 0 ? (-h0 + g.dH - 1) / g.dH : 0;
  const int kw0 = w0 < 0 ? (-w0 + g.dW - 1) / g.dW : 0;
  best = -std::numeric_limits<acc_t>::infinity();
  int pos = kh0 * g.kW + kw0;
  for (int kh = kh0, h = h0 + kh0 * g.dH; h < hend; ++kh, h += g.dH) {
    for (int kw = kw0, w = w0 + kw0 * g.dW; w < wend; ++kw, w += g.dW) {
      const acc_t v = static_cast<acc_t>(plane[h * sH + w * sW]);
      if (v > best || ak_isnan(v)) {
        best = v;
        pos = kh * g.kW + kw;
      }
    }
  }
  return pos;
}

// pool_argmax for a K x K window without dilation, unrolled: the same taps in the same order,
// the same first position (the first tap inside the image) and update rule.
template <int K, typename scalar_t, typename acc_t>
AK_HD int pool_argmax_fixed(const scalar_t* plane, int64_t sH, int64_t sW, const PoolGeom& g, int oh, int ow,
                            acc_t& best) {
  const int h0 = oh * g.sH - g.pH, w0 = ow * g.sW - g.pW;
  acc_t v[K][K];
AK_UNROLL
  for (int kh = 0; kh < K; ++kh) {
AK_UNROLL
    for (int kw = 0; kw < K; ++kw) {
      const int h = h0 + kh, w = w0 + kw;
      const bool inside = h >= 0 && h < g.H && w >= 0 && w < g.W;
      v[kh][kw] = inside ? static_cast<acc_t>(plane[h * sH + w * sW]) : acc_t(0);
    }
  }
  best = -std::numeric_limits<acc_t>::infinity();
  int pos = (h0 < 0 ? -h0 : 0) * K + (w0 < 0 ? -w0 : 0);
AK_UNROLL
  for (int kh = 0; kh < K; ++kh) {
AK_UNROLL
    for (int kw = 0; kw < K; ++kw) {
      const int h = h0 + kh, w = w0 + kw;
      if (h >= 0 && h < g.H && w >= 0 && w < g.W && (v[kh][kw] > best || ak_isnan(v[kh][kw]))) {
        best = v[kh][kw];
        pos = kh * K + kw;
      }
    }
  }
  return pos;
}

template <typename scalar_t>
struct PoolFwdArgs {
  const scalar_t* x;
  int64_t x_sN, x_sC, x_sH, x_sW;
  scalar_t* y;
  uint8_t* index;  // null when not needed; same shape and strides as y
  int64_t y_sN, y_sC, y_sH, y_sW;
  PoolGeom g;
  bool channels_last;  // flat index order: (n, oh, ow, c) if true, else (n, c, oh, ow)
};

// Flat index -> (n, c, a, b) for a tensor of spatial size (A, B) in NCHW or NHWC order.
template <typename index_t, typename Div>
AK_HD void pool_coords(bool channels_last, const Div& d0, const Div& d1, const Div& d2, index_t i,
                       int64_t& n, int64_t& c, int& a, int& b) {
  index_t q0, r0, q1, r1, q2, r2;
  d0.divmod(i, q0, r0);
  d1.divmod(q0, q1, r1);
  d2.divmod(q1, q2, r2);
  n = q2;
  if (channels_last) {  // d0 = C, d1 = B, d2 = A
    c = r0; b = static_cast<int>(r1); a = static_cast<int>(r2);
  } else {              // d0 = B, d1 = A, d2 = C
    b = static_cast<int>(r0); a = static_cast<int>(r1); c = r2;
  }
}

// K: 0 for any window, else the K x K window without dilation (pool_argmax_fixed).
template <int K, typename scalar_t, typename acc_t, typename index_t, typename Div>
AK_HD void max_pool_forward_element(const PoolFwdArgs<scalar_t>& a, const Div& d0, const Div& d1, const Div& d2,
                                    index_t i) {
  int64_t n, c;
  int oh, ow;
  pool_coords<index_t, Div>(a.channels_last, d0, d1, d2, i, n, c, oh, ow);
  acc_t best;
  const scalar_t* plane = a.x + n * a.x_sN + c * a.x_sC;
  int pos;
  if constexpr (K > 0) {
    pos = pool_argmax_fixed<K, scalar_t, acc_t>(plane, a.x_sH, a.x_sW, a.g, oh, ow, best);
  } else {
    pos = pool_argmax<scalar_t, acc_t>(plane, a.x_sH, a.x_sW, a.g, oh, ow, best);
  }
  const int64_t o = n * a.y_sN + c * a.y_sC + oh * a.y_sH + ow * a.y_sW;
  a.y[o] = static_cast<scalar_t>(best);
  if (a.index) a.index[o] = static_cast<uint8_t>(pos);
}

template <typename scalar_t>
struct PoolBwdArgs {
  const scalar_t* grad;  // [N, C, OH, OW]
  int64_t g_sN, g_sC, g_sH, g_sW;
  const uint8_t* index;  // strides i_s*, or null: then recompute from x
  int64_t i_sN, i_sC, i_sH, i_sW;
  const scalar_t* x;
  int64_t x_sN, x_sC, x_sH, x_sW;
  scalar_t* dx;          // [N, C, H, W]
  int64_t d_sN, d_sC, d_sH, d_sW;
  PoolGeom g;
  bool channels_last;    // flat index order of dx
};

// Outputs whose window covers input coordinate h along one axis: oh in [lo, hi].
AK_HD void pool_covering(int h, int p, int k, const FastDivmod32& div_s, int d, int out, int& lo, int& hi) {
  const int top = h + p;  // = oh * s + kh * d
  const int reach = (k - 1) * d;
  int q, r;
  if (top > reach) {
    div_s.divmod(top - reach, q, r);
    lo = q + (r != 0);
  } else {
    lo = 0;
  }
  div_s.divmod(top, q, r);
  hi = ak_min(q, out - 1);
}

// Backward of a K x K window at stride S without dilation, from the index: an input is covered
// by at most M = ceil(K / S) outputs along each axis. Unrolled over those M x M, in the general
// path's order (increasing oh, then ow), so the sums are the same.
template <int K, int S, typename scalar_t, typename acc_t>
AK_HD acc_t pool_backward_fixed(const PoolBwdArgs<scalar_t>& a, int64_t n, int64_t c, int h, int w, int oh_lo,
                                int oh_hi, int ow_lo, int ow_hi) {
  constexpr int M = (K + S - 1) / S;
  const PoolGeom& g = a.g;
  const scalar_t* gplane = a.grad + n * a.g_sN + c * a.g_sC;
  const uint8_t* iplane = a.index + n * a.i_sN + c * a.i_sC;
  int pos[M][M];
  acc_t gv[M][M];
AK_UNROLL
  for (int u = 0; u < M; ++u) {
AK_UNROLL
    for (int v = 0; v < M; ++v) {
      const int oh = oh_lo + u, ow = ow_lo + v;
      const bool covers = oh <= oh_hi && ow <= ow_hi;
      pos[u][v] = covers ? iplane[oh * a.i_sH + ow * a.i_sW] : K * K;  // K * K: matches no tap
      gv[u][v] = covers ? static_cast<acc_t>(gplane[oh * a.g_sH + ow * a.g_sW]) : acc_t(0);
    }
  }
  acc_t acc = 0;
AK_UNROLL
  for (int u = 0; u < M; ++u) {
AK_UNROLL
    for (int v = 0; v < M; ++v) {
      const int kh = h + g.pH - (oh_lo + u) * S, kw = w + g.pW - (ow_lo + v) * S;
      if (pos[u][v] == kh * K + kw) acc += gv[u][v];
    }
  }
  return acc;
}

// K, S: 0 for any window, else K x K at stride S without dilation, with the index
// (pool_backward_fixed).
template <int K, int S, typename scalar_t, typename acc_t, typename index_t, typename Div>
AK_HD void max_pool_backward_element(const PoolBwdArgs<scalar_t>& a, const Div& d0, const Div& d1, const Div& d2,
                                     index_t i) {
  int64_t n, c;
  int h, w;
  pool_coords<index_t, Div>(a.channels_last, d0, d1, d2, i, n, c, h, w);
  const PoolGeom& g = a.g;
  int oh_lo, oh_hi, ow_lo, ow_hi;
  pool_covering(h, g.pH, g.kH, g.div_sH, g.dH, g.OH, oh_lo, oh_hi);
  pool_covering(w, g.pW, g.kW, g.div_sW, g.dW, g.OW, ow_lo, ow_hi);
  if constexpr (K > 0) {
    a.dx[n * a.d_sN + c * a.d_sC + h * a.d_sH + w * a.d_sW] =
        static_cast<scalar_t>(pool_backward_fixed<K, S, scalar_t, acc_t>(a, n, c, h, w, oh_lo, oh_hi, ow_lo, ow_hi));
    return;
  }
  const scalar_t* gplane = a.grad + n * a.g_sN + c * a.g_sC;
  acc_t acc = 0;
  for (int oh = oh_lo; oh <= oh_hi; ++oh) {
    const int dh = h + g.pH - oh * g.sH;  // = kh * dH
    if (g.dH != 1 && dh % g.dH != 0) continue;
    const int kh = g.dH == 1 ? dh : dh / g.dH;
    for (int ow = ow_lo; ow <= ow_hi; ++ow) {
      const int dw = w + g.pW - ow * g.sW;
      if (g.dW != 1 && dw % g.dW != 0) continue;
      const int kw = g.dW == 1 ? dw : dw / g.dW;
      int pos;
      if (a.index) {
        pos = a.index[n * a.i_sN + c * a.i_sC + oh * a.i_sH + ow * a.i_sW];
      } else {
        acc_t unused;
        pos = pool_argmax<scalar_t, acc_t>(a.x + n * a.x_sN + c * a.x_sC, a.x_sH, a.x_sW, g, oh, ow, unused);
      }
      if (pos == kh * g.kW + kw) acc += static_cast<acc_t>(gplane[oh * a.g_sH + ow * a.g_sW]);
    }
  }
  a.dx[n * a.d_sN + c * a.d_sC + h * a.d_sH + w * a.d_sW] = static_cast<scalar_t>(acc);
}

}  // namespace alexnet_kernels

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

namespace alexnet_kernels {

// torch's pooling_output_shape: floor or ceil, and in ceil mode the last window must start
// inside the image (or its left padding).
inline int64_t pool_out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  const int64_t span = in + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
  // floor division that rounds towards -inf, like torch's div_rtn
  int64_t out = (span >= 0 ? span / s : -((-span + s - 1) / s)) + 1;
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}

inline bool pool_channels_last(const at::Tensor& x) {
  return x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

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
  g.H = static_cast<int>(H); g.W = static_cast<int>(W);
  g.OH = static_cast<int>(OH); g.OW = static_cast<int>(OW);
  g.kH = static_cast<int>(kernel_size[0]); g.kW = static_cast<int>(kernel_size[1]);
  g.sH = static_cast<int>(stride[0]); g.sW = static_cast<int>(stride[1]);
  g.pH = static_cast<int>(padding[0]); g.pW = static_cast<int>(padding[1]);
  g.dH = static_cast<int>(dilation[0]); g.dW = static_cast<int>(dilation[1]);
  g.div_sH = FastDivmod32(g.sH); g.div_sW = FastDivmod32(g.sW);
  return g;
}

// Dividers for the flat index of an [N, C, A, B] tensor in its memory order.
template <typename Div>
inline void pool_dividers(bool channels_last, int64_t C, int64_t A, int64_t B, Div& d0, Div& d1, Div& d2) {
  if (channels_last) { d0 = Div(C); d1 = Div(B); d2 = Div(A); }
  else { d0 = Div(B); d1 = Div(A); d2 = Div(C); }
}

template <typename scalar_t>
inline PoolFwdArgs<scalar_t> pool_fwd_args(const at::Tensor& x, at::Tensor& y, at::Tensor* index,
                                           const PoolGeom& g, bool channels_last) {
  PoolFwdArgs<scalar_t> a;
  a.x = x.const_data_ptr<scalar_t>();
  a.x_sN = x.stride(0); a.x_sC = x.stride(1); a.x_sH = x.stride(2); a.x_sW = x.stride(3);
  a.y = y.mutable_data_ptr<scalar_t>();
  a.index = index ? index->mutable_data_ptr<uint8_t>() : nullptr;
  a.y_sN = y.stride(0); a.y_sC = y.stride(1); a.y_sH = y.stride(2); a.y_sW = y.stride(3);
  a.g = g;
  a.channels_last = channels_last;
  return a;
}

struct PoolForwardPlan {
  PoolGeom g;
  bool channels_last;
  at::Tensor y, index;
};

inline PoolForwardPlan max_pool_forward_plan(const at::Tensor& x, at::IntArrayRef kernel_size,
                                             at::IntArrayRef stride, at::IntArrayRef padding,
                                             at::IntArrayRef dilation, bool ceil_mode, bool with_index) {
  PoolForwardPlan p;
  p.g = pool_geom(x, kernel_size, stride, padding, dilation, ceil_mode);
  TORCH_CHECK_VALUE(!with_index || p.g.kH * p.g.kW <= 256, "max_pool2d: with_index needs a window of at most ",
                    "256 taps (one byte per output), got kernel_size ", kernel_size);
  p.channels_last = pool_channels_last(x);
  const auto opts = x.options().memory_format(p.channels_last ? at::MemoryFormat::ChannelsLast
                                                              : at::MemoryFormat::Contiguous);
  const std::vector<int64_t> out_size{x.size(0), x.size(1), p.g.OH, p.g.OW};
  p.y = at::empty(out_size, opts);
  p.index = with_index ? at::empty(out_size, opts.dtype(at::kByte)) : at::empty({0}, x.options().dtype(at::kByte));
  return p;
}

struct PoolBackwardPlan {
  PoolGeom g;
  at::Tensor dx;
};

inline PoolBackwardPlan max_pool_backward_plan(const at::Tensor& grad, const c10::optional<at::Tensor>& index,
                                               const c10::optional<at::Tensor>& x, at::IntArrayRef input_size,
                                               at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                               at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode,
                                               bool channels_last) {
  TORCH_CHECK_VALUE(input_size.size() == 4, "max_pool2d_backward: input_size must have 4 values, got ", input_size);
  TORCH_CHECK_VALUE(index.has_value() || x.has_value(), "max_pool2d_backward: needs index or x");
  // Geometry from a meta stand-in of the input: same checks, no data.
  const at::Tensor proto = at::empty(input_size, grad.options().device(at::kMeta));
  PoolBackwardPlan p;
  p.g = pool_geom(proto, kernel_size, stride, padding, dilation, ceil_mode);
  const std::vector<int64_t> out_size{input_size[0], input_size[1], p.g.OH, p.g.OW};
  TORCH_CHECK_VALUE(grad.sizes() == at::IntArrayRef(out_size), "max_pool2d_backward: grad has shape ", grad.sizes(),
                    ", expected ", at::IntArrayRef(out_size));
  if (index.has_value()) {
    TORCH_CHECK_TYPE(index->scalar_type() == at::kByte, "max_pool2d_backward: index must be uint8");
    TORCH_CHECK_VALUE(index->sizes() == grad.sizes(), "max_pool2d_backward: index shape ", index->sizes(),
                      " does not match grad shape ", grad.sizes());
    TORCH_CHECK(index->device() == grad.device(), "max_pool2d_backward: index is on ", index->device(),
                ", grad on ", grad.device());
  } else {
    TORCH_CHECK_VALUE(x->sizes() == input_size, "max_pool2d_backward: x shape ", x->sizes(), " != input_size ",
                      input_size);
    TORCH_CHECK_TYPE(x->scalar_type() == grad.scalar_type(), "max_pool2d_backward: x dtype ", x->scalar_type(),
                     " != grad dtype ", grad.scalar_type());
    TORCH_CHECK(x->device() == grad.device(), "max_pool2d_backward: x is on ", x->device(), ", grad on ",
                grad.device());
  }
  p.dx = at::empty(input_size, grad.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                          : at::MemoryFormat::Contiguous));
  return p;
}

template <typename scalar_t>
inline PoolBwdArgs<scalar_t> pool_bwd_args(const at::Tensor& grad, const c10::optional<at::Tensor>& index,
                                           const c10::optional<at::Tensor>& x, at::Tensor& dx, const PoolGeom& g,
                                           bool channels_last) {
  PoolBwdArgs<scalar_t> a;
  a.grad = grad.const_data_ptr<scalar_t>();
  a.g_sN = grad.stride(0); a.g_sC = grad.stride(1); a.g_sH = grad.stride(2); a.g_sW = grad.stride(3);
  a.index = nullptr; a.i_sN = a.i_sC = a.i_sH = a.i_sW = 0;
  a.x = nullptr; a.x_sN = a.x_sC = a.x_sH = a.x_sW = 0;
  if (index.has_value()) {
    a.index = index->const_data_ptr<uint8_t>();
    a.i_sN = index->stride(0); a.i_sC = index->stride(1); a.i_sH = index->stride(2); a.i_sW = index->stride(3);
  } else {
    a.x = x->const_data_ptr<scalar_t>();
    a.x_sN = x->stride(0); a.x_sC = x->stride(1); a.x_sH = x->stride(2); a.x_sW = x->stride(3);
  }
  a.dx = dx.mutable_data_ptr<scalar_t>();
  a.d_sN = dx.stride(0); a.d_sC = dx.stride(1); a.d_sH = dx.stride(2); a.d_sW = dx.stride(3);
  a.g = g;
  a.channels_last = channels_last;
  return a;
}

// K, S: the unrolled window (0: the general loops), as in the element functions.
template <bool kForward, int K, int S, typename scalar_t, typename acc_t, typename Div>
struct PoolOp {
  static constexpr int64_t kCpuGrain = 4096;
  std::conditional_t<kForward, PoolFwdArgs<scalar_t>, PoolBwdArgs<scalar_t>> a;
  Div d0, d1, d2;
  template <typename index_t>
  AK_HD void operator()(index_t i) const {
    if constexpr (kForward) {
      max_pool_forward_element<K, scalar_t, acc_t>(a, d0, d1, d2, i);
    } else {
      max_pool_backward_element<K, S, scalar_t, acc_t>(a, d0, d1, d2, i);
    }
  }
};

// One pass over the flat index of an [N, C, A, B] tensor in its memory order, with 32-bit fast
// dividers where the index fits; Runner as in lrn.h.
template <typename Runner, bool kForward, int K, int S, typename scalar_t, typename acc_t, typename Args>
inline void pool_run(const Args& a, int64_t numel, bool channels_last, int64_t C, int64_t A, int64_t B) {
  if (numel < kInt32Limit) {
    PoolOp<kForward, K, S, scalar_t, acc_t, FastDivmod32> op{a};
    pool_dividers(channels_last, C, A, B, op.d0, op.d1, op.d2);
    Runner::template run<int32_t>(numel, op);
  } else {
    PoolOp<kForward, K, S, scalar_t, acc_t, Divmod64> op{a};
    pool_dividers(channels_last, C, A, B, op.d0, op.d1, op.d2);
    Runner::template run<int64_t>(numel, op);
  }
}

// AlexNet's window, 3x3 without dilation (forward: any stride; backward: stride 2, with the index).
inline bool pool_3x3(const PoolGeom& g) { return g.kH == 3 && g.kW == 3 && g.dH == 1 && g.dW == 1; }

template <typename Runner>
std::tuple<at::Tensor, at::Tensor> max_pool2d_forward(const at::Tensor& x, at::IntArrayRef kernel_size,
                                                      at::IntArrayRef stride, at::IntArrayRef padding,
                                                      at::IntArrayRef dilation, bool ceil_mode, bool with_index) {
  auto p = max_pool_forward_plan(x, kernel_size, stride, padding, dilation, ceil_mode, with_index);
  if (p.y.numel() == 0) return {p.y, p.index};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "max_pool2d", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto a = pool_fwd_args<scalar_t>(x, p.y, with_index ? &p.index : nullptr, p.g, p.channels_last);
    if (pool_3x3(p.g)) {
      pool_run<Runner, true, 3, 0, scalar_t, acc_t>(a, p.y.numel(), p.channels_last, x.size(1), p.g.OH, p.g.OW);
    } else {
      pool_run<Runner, true, 0, 0, scalar_t, acc_t>(a, p.y.numel(), p.channels_last, x.size(1), p.g.OH, p.g.OW);
    }
  });
  return {p.y, p.index};
}

template <typename Runner>
at::Tensor max_pool2d_backward(const at::Tensor& grad, const c10::optional<at::Tensor>& index,
                               const c10::optional<at::Tensor>& x, at::IntArrayRef input_size,
                               at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, bool ceil_mode, bool channels_last) {
  auto p = max_pool_backward_plan(grad, index, x, input_size, kernel_size, stride, padding, dilation, ceil_mode,
                                  channels_last);
  if (p.dx.numel() == 0) return p.dx;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "max_pool2d_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto a = pool_bwd_args<scalar_t>(grad, index, x, p.dx, p.g, channels_last);
    const int64_t numel = p.dx.numel(), C = input_size[1];
    if (pool_3x3(p.g) && p.g.sH == 2 && p.g.sW == 2 && index.has_value()) {
      pool_run<Runner, false, 3, 2, scalar_t, acc_t>(a, numel, channels_last, C, p.g.H, p.g.W);
    } else {
      pool_run<Runner, false, 0, 0, scalar_t, acc_t>(a, numel, channels_last, C, p.g.H, p.g.W);
    }
  });
  return p.dx;
}

}  // namespace alexnet_kernels
