// Cross-channel local response normalization (AlexNet section 3.3), the semantics of
// torch.nn.functional.local_response_norm:
//
//   d[c] = k + alpha * (1/size) * sum_{q = c - size/2}^{c + (size-1)/2} x[q]^2   (zero outside [0, C))
//   y[c] = x[c] / d[c]^beta
//
// Backward, with W(i) the window of output i and t[i] = g[i] * x[i] * d[i]^(-beta-1):
//
//   dx[j] = g[j] * d[j]^(-beta) - (2 * alpha * beta / size) * x[j] * sum_{i : j in W(i)} t[i]
//
// Only x is saved for backward; d is recomputed from it (cheaper than storing it: the window
// reads hit L1/L2, and HBM traffic is what bounds this op).
//
// Tiling. Size 5 (AlexNet's) on NCHW: one thread per (n, s) column, walking the C channels with
// the window in registers (shift registers of x, and in backward of g, t and d^-beta), so each
// element of x (and g) is loaded once, kLrnPrefetch channels ahead; neighbouring threads take
// neighbouring s, so every load is coalesced. Other sizes and layouts: one thread per output element, flat index taken in the
// output's memory order ((n, c, s) with s fastest for NCHW, (n, s, c) with c fastest for
// channels_last, where the window's taps share cache lines). The column and element paths
// compute the same expressions in the same order (up to the compiler's choice of FMAs).
//
// Floor, [128, 96, 55, 55] fp32 (142 MiB): forward reads x and writes y, 297 MB, 0.10 ms at
// 2.95 TB/s. Backward reads x and g and writes dx, 446 MB, 0.15 ms. Arithmetic: forward one pow
// and `size` FMAs per element; backward, by column, one pow and about 3 * size FMAs per element
// (by element: `size` pows and size^2 FMAs). Loads: by column, one of x (and one of g) per
// element, from HBM; by element, the window's neighbours again, from L1/L2 (for size 5 the
// backward element keeps its 9 inputs in registers: 14 cached loads an element, not 30). On
// the GPU pow is __powf (2 MUFU ops, error a few ulp).
#pragma once

#include "common.h"

namespace alexnet_kernels {

template <typename scalar_t>
struct LrnArgs {
  const scalar_t* x;   // [N, C, S] with strides x_s*
  const scalar_t* g;   // backward only: grad of y, strides g_s*
  scalar_t* out;       // y (forward) or dx (backward), strides o_s*
  int64_t N, C, S;
  int64_t x_sN, x_sC, x_sS;
  int64_t g_sN, g_sC, g_sS;
  int64_t o_sN, o_sC, o_sS;
  bool channels_last;  // flat index order of out: (n, s, c) if true, else (n, c, s)
  int64_t size, pre, post;
};

template <typename acc_t>
struct LrnCoef {
  acc_t alpha, beta, k, inv_size_scale;  // inv_size_scale = 2 * alpha * beta / size
  int64_t size;
};

template <typename scalar_t, typename index_t, typename Div>
AK_HD void lrn_coords(const LrnArgs<scalar_t>& a, const Div& d_inner, const Div& d_mid, index_t i,
                      int64_t& n, int64_t& c, int64_t& s) {
  index_t t, inner, nn, mid;
  d_inner.divmod(i, t, inner);
  d_mid.divmod(t, nn, mid);
  n = nn;
  if (a.channels_last) {
    c = inner;
    s = mid;
  } else {
    s = inner;
    c = mid;
  }
}

// Sum of squares over the window of channel c of one (n, s) column.
template <typename scalar_t, typename acc_t>
AK_HD acc_t lrn_window_sumsq(const scalar_t* col, int64_t sC, int64_t C, int64_t c, int64_t pre,
                             int64_t post) {
  const int64_t lo = ak_max<int64_t>(c - pre, 0);
  const int64_t hi = ak_min<int64_t>(c + post, C - 1);
  acc_t sum = 0;
  for (int64_t q = lo; q <= hi; ++q) {
    const acc_t v = static_cast<acc_t>(col[q * sC]);
    sum += v * v;
  }
  return sum;
}

// The denominator before the power, in torch's order of operations: avg * alpha + k.
template <typename acc_t>
AK_HD acc_t lrn_denominator(acc_t sumsq, const LrnCoef<acc_t>& k) {
  return (sumsq / static_cast<acc_t>(k.size)) * k.alpha + k.k;
}

template <typename scalar_t, typename acc_t, typename index_t, typename Div>
AK_HD void lrn_forward_element(const LrnArgs<scalar_t>& a, const LrnCoef<acc_t>& k,
                               const Div& d_inner, const Div& d_mid, index_t i) {
  int64_t n, c, s;
  lrn_coords<scalar_t, index_t, Div>(a, d_inner, d_mid, i, n, c, s);
  const scalar_t* col = a.x + n * a.x_sN + s * a.x_sS;
  const acc_t d = lrn_denominator(lrn_window_sumsq<scalar_t, acc_t>(col, a.x_sC, a.C, c, a.pre, a.post), k);
  const acc_t xc = static_cast<acc_t>(col[c * a.x_sC]);
  a.out[n * a.o_sN + c * a.o_sC + s * a.o_sS] = static_cast<scalar_t>(xc / ak_pow(d, k.beta));
}

// Backward of one element. SIZE > 0 is the window size known at compile time (5 in AlexNet):
// the 2*SIZE-1 inputs the element depends on are loaded once into registers and the SIZE
// neighbouring denominators computed from them, instead of re-reading each window from cache
// (SIZE^2 loads). SIZE == 0 is the general path for any runtime size.
template <typename scalar_t, typename acc_t, int SIZE, typename index_t, typename Div>
AK_HD void lrn_backward_element(const LrnArgs<scalar_t>& a, const LrnCoef<acc_t>& k,
                                const Div& d_inner, const Div& d_mid, index_t i) {
  int64_t n, j, s;
  lrn_coords<scalar_t, index_t, Div>(a, d_inner, d_mid, i, n, j, s);
  const scalar_t* xcol = a.x + n * a.x_sN + s * a.x_sS;
  const scalar_t* gcol = a.g + n * a.g_sN + s * a.g_sS;
  acc_t acc = 0, dpow_j = 0;
  if constexpr (SIZE > 0) {
    constexpr int PRE = SIZE / 2, POST = (SIZE - 1) / 2, SPAN = 2 * SIZE - 1;
    // xv[o] = x[j - (SIZE-1) + o], zero outside [0, C) (the same as clamping the windows).
    acc_t xv[SPAN], sq[SPAN];
AK_UNROLL
    for (int o = 0; o < SPAN; ++o) {
      const int64_t c = j - (SIZE - 1) + o;
      xv[o] = (c >= 0 && c < a.C) ? static_cast<acc_t>(xcol[c * a.x_sC]) : acc_t(0);
      sq[o] = xv[o] * xv[o];
    }
    // Output q = j - POST + r has window x[q - PRE .. q + POST] = xv[r .. r + SIZE - 1].
AK_UNROLL
    for (int r = 0; r < SIZE; ++r) {
      const int64_t q = j - POST + r;
      if (q < 0 || q >= a.C) continue;
      acc_t sum = 0;
AK_UNROLL
      for (int w = 0; w < SIZE; ++w) sum += sq[r + w];
      const acc_t d = lrn_denominator(sum, k);
      const acc_t dpow = ak_pow(d, -k.beta);
      if (r == POST) dpow_j = dpow;
      acc += static_cast<acc_t>(gcol[q * a.g_sC]) * xv[r + PRE] * (dpow / d);
    }
  } else {
    // Outputs q whose window holds j: q - pre <= j <= q + post.
    const int64_t lo = ak_max<int64_t>(j - a.post, 0);
    const int64_t hi = ak_min<int64_t>(j + a.pre, a.C - 1);
    for (int64_t q = lo; q <= hi; ++q) {
      const acc_t d =
          lrn_denominator(lrn_window_sumsq<scalar_t, acc_t>(xcol, a.x_sC, a.C, q, a.pre, a.post), k);
      const acc_t dpow = ak_pow(d, -k.beta);
      if (q == j) dpow_j = dpow;
      acc += static_cast<acc_t>(gcol[q * a.g_sC]) * static_cast<acc_t>(xcol[q * a.x_sC]) * (dpow / d);
    }
  }
  const acc_t gj = static_cast<acc_t>(gcol[j * a.g_sC]);
  const acc_t xj = static_cast<acc_t>(xcol[j * a.x_sC]);
  a.out[n * a.o_sN + j * a.o_sC + s * a.o_sS] = static_cast<scalar_t>(gj * dpow_j - k.inv_size_scale * xj * acc);
}

// Channels a column thread loads ahead, all at once: each step's load feeds the very next step,
// so one load at a time would leave a thread about one load in flight, and with 2048 threads an
// SM that is 8 KB (fp32; 4 KB bf16), against the ~20 KB (bandwidth x latency) an H100 SM needs
// to stream at full speed. Loading 8 ahead gives 64 KB.
constexpr int kLrnPrefetch = 8;

// Forward of one (n, s) column, window size SIZE known at compile time, NCHW-style strides (any
// strides work; the column path is chosen where consecutive s are adjacent in memory).
// xv[w] = x[c - PRE + w] (0 outside [0, C)): the window of output c.
template <typename scalar_t, typename acc_t, int SIZE>
AK_HD void lrn_forward_column(const LrnArgs<scalar_t>& a, const LrnCoef<acc_t>& k, int64_t n, int64_t s) {
  constexpr int PRE = SIZE / 2;
  const scalar_t* col = a.x + n * a.x_sN + s * a.x_sS;
  scalar_t* out = a.out + n * a.o_sN + s * a.o_sS;
  const int64_t C = a.C;
  auto load = [&](int64_t c) { return (c >= 0 && c < C) ? static_cast<acc_t>(col[c * a.x_sC]) : acc_t(0); };
  acc_t xv[SIZE];
AK_UNROLL
  for (int w = 0; w < SIZE; ++w) xv[w] = load(w - PRE);
  for (int64_t c0 = 0; c0 < C; c0 += kLrnPrefetch) {
    // The values steps c0 .. c0 + kLrnPrefetch - 1 shift in, loaded together (see kLrnPrefetch).
    acc_t next[kLrnPrefetch];
AK_UNROLL
    for (int u = 0; u < kLrnPrefetch; ++u) next[u] = load(c0 + u + SIZE - PRE);
AK_UNROLL
    for (int u = 0; u < kLrnPrefetch; ++u) {
      const int64_t c = c0 + u;
      if (c >= C) break;
      acc_t sum = 0;
AK_UNROLL
      for (int w = 0; w < SIZE; ++w) sum += xv[w] * xv[w];
      const acc_t d = lrn_denominator(sum, k);
      out[c * a.o_sC] = static_cast<scalar_t>(xv[PRE] / ak_pow(d, k.beta));
AK_UNROLL
      for (int w = 0; w + 1 < SIZE; ++w) xv[w] = xv[w + 1];
      xv[SIZE - 1] = next[u];
    }
  }
}

// Backward of one (n, s) column for window size SIZE, with the same expressions, in the same
// order, as lrn_backward_element<SIZE>. At output j:
//   xs[o] = x[j - (SIZE-1) + o], o < 2*SIZE-1       (every input the SIZE windows below touch)
//   gs[r], ts[r], dp[r] = g[q], g[q] * x[q] * d[q]^(-beta) / d[q], d[q]^(-beta) for q = j - POST + r
// so dx[j] = gs[POST] * dp[POST] - scale * x[j] * sum_r ts[r]. Each step loads one new x and g.
template <typename scalar_t, typename acc_t, int SIZE>
AK_HD void lrn_backward_column(const LrnArgs<scalar_t>& a, const LrnCoef<acc_t>& k, int64_t n, int64_t s) {
  constexpr int PRE = SIZE / 2, POST = (SIZE - 1) / 2, SPAN = 2 * SIZE - 1;
  const scalar_t* xcol = a.x + n * a.x_sN + s * a.x_sS;
  const scalar_t* gcol = a.g + n * a.g_sN + s * a.g_sS;
  scalar_t* out = a.out + n * a.o_sN + s * a.o_sS;
  const int64_t C = a.C;
  auto load_x = [&](int64_t c) { return (c >= 0 && c < C) ? static_cast<acc_t>(xcol[c * a.x_sC]) : acc_t(0); };
  auto load_g = [&](int64_t c) { return (c >= 0 && c < C) ? static_cast<acc_t>(gcol[c * a.g_sC]) : acc_t(0); };
  acc_t xs[SPAN], gs[SIZE], ts[SIZE], dp[SIZE];
  // t and d^-beta of output q, from xs holding x[q - PRE ..] at xs[o0 ..]; 0 outside [0, C).
  auto t_of = [&](int64_t q, int o0, acc_t gq, acc_t& dpow) -> acc_t {
    dpow = 0;
    if (q < 0 || q >= C) return acc_t(0);
    acc_t sum = 0;
AK_UNROLL
    for (int w = 0; w < SIZE; ++w) sum += xs[o0 + w] * xs[o0 + w];
    const acc_t d = lrn_denominator(sum, k);
    dpow = ak_pow(d, -k.beta);
    return gq * xs[o0 + PRE] * (dpow / d);
  };
AK_UNROLL
  for (int o = 0; o < SPAN; ++o) xs[o] = load_x(o - (SIZE - 1));
  // For j = 0: q = r - POST has its window at xs[r ..].
AK_UNROLL
  for (int r = 0; r < SIZE; ++r) {
    gs[r] = load_g(r - POST);
    ts[r] = t_of(r - POST, r, gs[r], dp[r]);
  }
  for (int64_t j0 = 0; j0 < C; j0 += kLrnPrefetch) {
    // The x and g that steps j0 .. j0 + kLrnPrefetch - 1 shift in, loaded together.
    acc_t next_x[kLrnPrefetch], next_g[kLrnPrefetch];
AK_UNROLL
    for (int u = 0; u < kLrnPrefetch; ++u) {
      next_x[u] = load_x(j0 + u + SIZE);
      next_g[u] = load_g(j0 + u + 1 + PRE);
    }
AK_UNROLL
    for (int u = 0; u < kLrnPrefetch; ++u) {
      const int64_t j = j0 + u;
      if (j >= C) break;
      acc_t acc = 0;
AK_UNROLL
      for (int r = 0; r < SIZE; ++r) acc += ts[r];
      out[j * a.o_sC] = static_cast<scalar_t>(gs[POST] * dp[POST] - k.inv_size_scale * xs[SIZE - 1] * acc);
      // Step to j + 1: shift in x[j + SIZE] and output q = j + 1 + PRE (its window: xs[SIZE - 1 ..]).
AK_UNROLL
      for (int o = 0; o + 1 < SPAN; ++o) xs[o] = xs[o + 1];
      xs[SPAN - 1] = next_x[u];
AK_UNROLL
      for (int r = 0; r + 1 < SIZE; ++r) {
        gs[r] = gs[r + 1];
        ts[r] = ts[r + 1];
        dp[r] = dp[r + 1];
      }
      const int64_t q = j + 1 + PRE;
      gs[SIZE - 1] = next_g[u];
      ts[SIZE - 1] = t_of(q, SIZE - 1, gs[SIZE - 1], dp[SIZE - 1]);
    }
  }
}

}  // namespace alexnet_kernels

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

namespace alexnet_kernels {

// Host side, shared by the CPU and CUDA entry points: argument checks, the output's layout (the
// Python fake mirrors this rule: alexnet_kernels/_layout.py), and the kernel arguments.

inline at::MemoryFormat lrn_out_format(const at::Tensor& x) {
  if (x.is_contiguous()) return at::MemoryFormat::Contiguous;
  if (x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast)) return at::MemoryFormat::ChannelsLast;
  if (x.dim() == 5 && x.is_contiguous(at::MemoryFormat::ChannelsLast3d)) return at::MemoryFormat::ChannelsLast3d;
  return at::MemoryFormat::Contiguous;
}

inline void lrn_check(const at::Tensor& x, int64_t size, const char* name = "x") {
  TORCH_CHECK_VALUE(x.dim() >= 3, "lrn: ", name, " must have 3 or more dims (N, C, ...), got shape ", x.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()), "lrn: ", name,
                   " must be a floating-point tensor, got ", x.scalar_type());
  TORCH_CHECK_VALUE(size > 0, "lrn: size must be positive, got ", size);
}

inline void lrn_backward_check(const at::Tensor& grad, const at::Tensor& x, int64_t size) {
  lrn_check(x, size);
  TORCH_CHECK(grad.device() == x.device(), "lrn_backward: grad is on ", grad.device(), " but x is on ", x.device());
  TORCH_CHECK_VALUE(grad.sizes() == x.sizes(), "lrn_backward: grad shape ", grad.sizes(),
                    " does not match x shape ", x.sizes());
  TORCH_CHECK_TYPE(grad.scalar_type() == x.scalar_type(), "lrn_backward: grad dtype ", grad.scalar_type(),
                   " does not match x dtype ", x.scalar_type());
}

// [N, C, S] view of a 3+-dim tensor (a copy only where the spatial dims cannot be merged).
inline at::Tensor lrn_as_3d(const at::Tensor& t) {
  const int64_t N = t.size(0), C = t.size(1);
  return t.reshape({N, C, N * C == 0 ? 0 : t.numel() / (N * C)});
}

template <typename scalar_t>
inline LrnArgs<scalar_t> lrn_args(const at::Tensor& x3, const at::Tensor* g3, at::Tensor& out3,
                                  at::MemoryFormat fmt, int64_t size) {
  LrnArgs<scalar_t> a;
  a.x = x3.const_data_ptr<scalar_t>();
  a.g = g3 ? g3->const_data_ptr<scalar_t>() : nullptr;
  a.out = out3.mutable_data_ptr<scalar_t>();
  a.N = x3.size(0); a.C = x3.size(1); a.S = x3.size(2);
  a.x_sN = x3.stride(0); a.x_sC = x3.stride(1); a.x_sS = x3.stride(2);
  if (g3) { a.g_sN = g3->stride(0); a.g_sC = g3->stride(1); a.g_sS = g3->stride(2); }
  else { a.g_sN = a.g_sC = a.g_sS = 0; }
  a.o_sN = out3.stride(0); a.o_sC = out3.stride(1); a.o_sS = out3.stride(2);
  a.channels_last = fmt != at::MemoryFormat::Contiguous;
  a.size = size; a.pre = size / 2; a.post = (size - 1) / 2;
  return a;
}

template <typename acc_t>
inline LrnCoef<acc_t> lrn_coef(int64_t size, double alpha, double beta, double k) {
  LrnCoef<acc_t> c;
  c.alpha = static_cast<acc_t>(alpha);
  c.beta = static_cast<acc_t>(beta);
  c.k = static_cast<acc_t>(k);
  c.inv_size_scale = static_cast<acc_t>(2.0 * alpha * beta / static_cast<double>(size));
  c.size = size;
  return c;
}

// kPass: kLrnForward, or backward with the window size known at compile time (0: any size).
constexpr int kLrnForward = -1;

template <typename scalar_t, typename acc_t, typename Div, int kPass>
struct LrnOp {
  static constexpr int64_t kCpuGrain = 4096;  // elements per CPU task: a few dozen flops each
  LrnArgs<scalar_t> a;
  LrnCoef<acc_t> coef;
  Div inner, mid;
  template <typename index_t>
  AK_HD void operator()(index_t i) const {
    if constexpr (kPass == kLrnForward) {
      lrn_forward_element<scalar_t, acc_t>(a, coef, inner, mid, i);
    } else {
      lrn_backward_element<scalar_t, acc_t, kPass>(a, coef, inner, mid, i);
    }
  }
};

// One (n, s) column per index: the size-5 NCHW path (kPass as in LrnOp).
template <typename scalar_t, typename acc_t, typename Div, int kPass>
struct LrnColumnOp {
  static constexpr int64_t kCpuGrain = 64;  // columns per CPU task: each walks all C channels
  LrnArgs<scalar_t> a;
  LrnCoef<acc_t> coef;
  Div cols;  // divides a column index by S
  template <typename index_t>
  AK_HD void operator()(index_t i) const {
    index_t n, s;
    cols.divmod(i, n, s);
    if constexpr (kPass == kLrnForward) {
      lrn_forward_column<scalar_t, acc_t, 5>(a, coef, n, s);
    } else {
      lrn_backward_column<scalar_t, acc_t, kPass>(a, coef, n, s);
    }
  }
};

// Whether a pass takes the column path: AlexNet's size 5 on an output whose spatial index is
// fastest (NCHW), where neighbouring columns are neighbours in memory.
template <typename scalar_t>
inline bool lrn_by_column(const LrnArgs<scalar_t>& a) { return a.size == 5 && !a.channels_last; }

template <typename Runner, int kPass, typename scalar_t, typename acc_t>
inline void lrn_run_columns(const LrnArgs<scalar_t>& a, const LrnCoef<acc_t>& coef) {
  const int64_t columns = a.N * a.S;
  if (columns < kInt32Limit) {
    Runner::template run<int32_t>(columns, LrnColumnOp<scalar_t, acc_t, FastDivmod32, kPass>{a, coef, FastDivmod32(a.S)});
  } else {
    Runner::template run<int64_t>(columns, LrnColumnOp<scalar_t, acc_t, Divmod64, kPass>{a, coef, Divmod64(a.S)});
  }
}

// One pass over the output's flat index (inner = its fastest-varying dim), with 32-bit fast
// dividers where the index fits. Runner::run<index_t>(numel, op) is an at::parallel_for on the
// CPU (csrc/cpu/runner.h) and a grid-stride kernel on the GPU (csrc/cuda/launch.cuh).
template <typename Runner, int kPass, typename scalar_t, typename acc_t>
inline void lrn_run(const LrnArgs<scalar_t>& a, const LrnCoef<acc_t>& coef, int64_t numel) {
  const int64_t inner = a.channels_last ? a.C : a.S, mid = a.channels_last ? a.S : a.C;
  if (numel < kInt32Limit) {
    Runner::template run<int32_t>(numel, LrnOp<scalar_t, acc_t, FastDivmod32, kPass>{
                                             a, coef, FastDivmod32(inner), FastDivmod32(mid)});
  } else {
    Runner::template run<int64_t>(numel, LrnOp<scalar_t, acc_t, Divmod64, kPass>{a, coef, Divmod64(inner), Divmod64(mid)});
  }
}

template <typename Runner>
at::Tensor lrn_forward(const at::Tensor& x, int64_t size, double alpha, double beta, double k) {
  lrn_check(x, size);
  const auto fmt = lrn_out_format(x);
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(fmt));
  if (x.numel() == 0) return y;
  at::Tensor x3 = lrn_as_3d(x), y3 = lrn_as_3d(y);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lrn", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto a = lrn_args<scalar_t>(x3, nullptr, y3, fmt, size);
    const auto coef = lrn_coef<acc_t>(size, alpha, beta, k);
    if (lrn_by_column(a)) {
      lrn_run_columns<Runner, kLrnForward>(a, coef);
    } else {
      lrn_run<Runner, kLrnForward>(a, coef, x.numel());
    }
  });
  return y;
}

template <typename Runner>
at::Tensor lrn_backward(const at::Tensor& grad, const at::Tensor& x, int64_t size, double alpha, double beta,
                        double k) {
  lrn_backward_check(grad, x, size);
  const auto fmt = lrn_out_format(x);
  at::Tensor dx = at::empty(x.sizes(), x.options().memory_format(fmt));
  if (x.numel() == 0) return dx;
  at::Tensor x3 = lrn_as_3d(x), g3 = lrn_as_3d(grad), dx3 = lrn_as_3d(dx);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lrn_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto a = lrn_args<scalar_t>(x3, &g3, dx3, fmt, size);
    const auto coef = lrn_coef<acc_t>(size, alpha, beta, k);
    if (lrn_by_column(a)) {
      lrn_run_columns<Runner, 5>(a, coef);
    } else if (size == 5) {
      lrn_run<Runner, 5>(a, coef, x.numel());
    } else {
      lrn_run<Runner, 0>(a, coef, x.numel());
    }
  });
  return dx;
}

}  // namespace alexnet_kernels
