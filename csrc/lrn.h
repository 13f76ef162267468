// Cross-channel local response normalization (AlexNet section 3.3), the semantics of
// torch.nn.functional.local_response_norm, as host+device functions shared by the CPU kernels
// (csrc/cpu/lrn_cpu.cpp) and the CUDA kernels (csrc/cuda/lrn_kernels.cuh):
//
//   d[c] = k + (alpha / size) * sum_{q = c - size/2}^{c + (size-1)/2} x[q]^2   (zero outside [0, C))
//   y[c] = x[c] * d[c]^(-beta)
//
// Backward, with W(i) the window of output i and t[i] = g[i] * x[i] * d[i]^(-beta-1):
//
//   dx[j] = g[j] * d[j]^(-beta) - (2 * alpha * beta / size) * x[j] * sum_{i : j in W(i)} t[i]
//
// Only x is saved for backward; d is recomputed from it. No division anywhere: alpha / size and
// the backward's scale are folded on the host, and the two powers of d come from one logarithm
// (lrn_powers). The data layout, the tiling and the floor are in docs/lrn.md.
//
// A column is one (n, spatial) position's C channels: a pointer to channel 0 and the channel
// stride. The column functions walk it with the window in registers; the element functions
// compute one output from its window alone.
#pragma once

#include "common.h"

namespace alexnet_kernels {

// The constants, in the accumulation type.
template <typename acc_t>
struct LrnCoef {
  acc_t alpha_n;    // alpha / size
  acc_t k;
  acc_t neg_beta;   // -beta
  acc_t neg_beta1;  // -beta - 1
  acc_t scale;      // 2 * alpha * beta / size
  bool fast_powers;  // lrn_fast_powers: the GPU's fp32 column kernels may use the .ftz forms
};


template <typename acc_t>
AK_HD acc_t lrn_denominator(acc_t sumsq, const LrnCoef<acc_t>& k) {
  return sumsq * k.alpha_n + k.k;
}

// d^(-beta). On the GPU in fp32: exp2(-beta * log2 d), two MUFU operations. kFast: the .ftz
// forms, valid where lrn_fast_powers holds.
template <bool kFast = false>
AK_HD float lrn_power(float d, const LrnCoef<float>& k) {
#ifdef __CUDA_ARCH__
  return ak_exp2<kFast>(k.neg_beta * ak_log2<kFast>(d));
#else
  return powf(d, k.neg_beta);
#endif
}
template <bool kFast = false>
AK_HD double lrn_power(double d, const LrnCoef<double>& k) {
  return pow(d, k.neg_beta);
}

// d^(-beta) and d^(-beta-1). On the GPU in fp32 from one log2: d^(-beta-1) is exp2 of its own
// exponent, or, with kFast, d^(-beta) * (1/d) (three MUFU operations either way). On the host the
// second is a division, which costs a CPU less than a second pow.
template <bool kFast = false>
AK_HD void lrn_powers(float d, const LrnCoef<float>& k, float& dp, float& dp1) {
#ifdef __CUDA_ARCH__
  const float l = ak_log2<kFast>(d);
  dp = ak_exp2<kFast>(k.neg_beta * l);
  dp1 = kFast ? dp * ak_rcp_ftz(d) : ak_exp2<false>(k.neg_beta1 * l);
#else
  dp = powf(d, k.neg_beta);
  dp1 = dp / d;
#endif
}
template <bool kFast = false>
AK_HD void lrn_powers(double d, const LrnCoef<double>& k, double& dp, double& dp1) {
  dp = pow(d, k.neg_beta);
  dp1 = dp / d;
}

// Whether the .ftz forms see no subnormal for any input: with k in [2^-126, 2^125] and alpha /
// size in [0, 1/4], a finite d lies in [2^-126, 2^126) (a window's sum of squares is below
// 2^128 unless it overflows, and then d is inf either way), so log2 d and 1/d are normal, and
// |beta| <= 126/128 keeps d^(-beta) normal. d^(-beta-1) = d^(-beta) * (1/d) may be subnormal:
// that product is an ordinary multiply, which keeps subnormals.
inline bool lrn_fast_powers(double alpha_n, double beta, double k) {
  return k >= static_cast<double>(std::numeric_limits<float>::min()) && k <= 0x1p125 && alpha_n >= 0 &&
         alpha_n <= 0.25 && beta >= -126.0 / 128 && beta <= 126.0 / 128;
}

template <typename acc_t>
inline LrnCoef<acc_t> lrn_coef(int64_t size, double alpha, double beta, double k) {
  const double alpha_n = alpha / static_cast<double>(size);
  return LrnCoef<acc_t>{static_cast<acc_t>(alpha_n),
                        static_cast<acc_t>(k),
                        static_cast<acc_t>(-beta),
                        static_cast<acc_t>(-beta - 1.0),
                        static_cast<acc_t>(2.0 * alpha * beta / static_cast<double>(size)),
                        lrn_fast_powers(alpha_n, beta, k)};
}

// a * b + c with one rounding on the GPU, whatever the context. Written as `c + a * b`, whether
// the GPU compiler fuses it depends on the other uses of the product: in a column walk each
// input's square lies in SIZE consecutive windows, the compiler shares it between the steps of an
// unrolled group, and then leaves some of those sums unfused (a separate FMUL and FADD), so the
// rounding of a channel's window sum would depend on its place in the group, and two kernels
// walking one column with different unrolling or segments would disagree in the last bit. The
// host (no FMA instruction in the CPU build, nor under the emulator) rounds twice, as before.
template <typename acc_t>
AK_HD acc_t lrn_fma(acc_t a, acc_t b, acc_t c) {
#ifdef __CUDA_ARCH__
  if constexpr (std::is_same_v<acc_t, float>) {
    return __fmaf_rn(a, b, c);
  } else {
    return __fma_rn(a, b, c);
  }
#else
  return c + a * b;
#endif
}

// Channel q of a column, or 0 outside [0, C). Col: a gptr, or any column whose operator[] takes
// an offset (the fused LRN + max-pool backward passes one that gathers the pooled gradient).
template <typename acc_t, typename Col, typename index_t>
AK_HD acc_t lrn_load(Col col, index_t sc, index_t C, index_t q) {
  return (q >= 0 && q < C) ? static_cast<acc_t>(col[q * sc]) : acc_t(0);
}

// Sum of squares over channels [c - pre, c + post] of a column, clipped to [0, C).
template <typename acc_t, typename T, typename index_t>
AK_HD acc_t lrn_window_sumsq(gptr<const T> col, index_t sc, index_t C, index_t c, index_t pre, index_t post) {
  const index_t lo = ak_max<index_t>(c - pre, 0), hi = ak_min<index_t>(c + post, C - 1);
  acc_t sum = 0;
  for (index_t q = lo; q <= hi; ++q) {
    const acc_t v = static_cast<acc_t>(col[q * sc]);
    sum = lrn_fma(v, v, sum);
  }
  return sum;
}

// ---------------------------------------------------------------------------------------------
// One output element from its window (any size): the element path.
// ---------------------------------------------------------------------------------------------

// lrn_forward_at's value from the window's inputs w[i] = x[c - SIZE/2 + i], 0 outside [0, C),
// for callers that hold them in registers (the fused LRN + max-pool kernels, channels_last): the
// same sum (from 0, in channel order; a 0 * 0 term adds nothing) and the same power.
template <int SIZE, typename acc_t>
AK_HD acc_t lrn_element_value(const acc_t (&w)[SIZE], const LrnCoef<acc_t>& k) {
  acc_t sum = 0;
AK_UNROLL
  for (int i = 0; i < SIZE; ++i) sum = lrn_fma(w[i], w[i], sum);
  return w[SIZE / 2] * lrn_power(lrn_denominator(sum, k), k);
}

template <typename acc_t, typename T, typename index_t>
AK_HD acc_t lrn_forward_at(gptr<const T> col, index_t sc, index_t C, index_t c, index_t size,
                           const LrnCoef<acc_t>& k) {
  const acc_t d = lrn_denominator(lrn_window_sumsq<acc_t>(col, sc, C, c, size / 2, (size - 1) / 2), k);
  return static_cast<acc_t>(col[c * sc]) * lrn_power(d, k);
}

// dx[j]. SIZE > 0: the window size known at compile time (5 in AlexNet); the 2*SIZE-1 inputs
// the element depends on are loaded once and the SIZE denominators computed from them (not
// SIZE^2 loads). SIZE == 0: any size, at run time. GCol: the gradient's column, a gptr or any
// column whose operator[] takes an offset (as lrn_load's Col).
template <int SIZE, typename acc_t, typename T, typename index_t, typename GCol = gptr<const T>>
AK_HD acc_t lrn_backward_at(gptr<const T> xcol, index_t xsc, GCol gcol, index_t gsc, index_t C, index_t j,
                            index_t size, const LrnCoef<acc_t>& k) {
  acc_t acc = 0, dp_j = 0;
  if constexpr (SIZE > 0) {
    constexpr int PRE = SIZE / 2, POST = (SIZE - 1) / 2, SPAN = 2 * SIZE - 1;
    // xv[o] = x[j - (SIZE-1) + o]; output q = j - POST + r has its window at xv[r .. r + SIZE-1].
    acc_t xv[SPAN];
AK_UNROLL
    for (int o = 0; o < SPAN; ++o) xv[o] = lrn_load<acc_t>(xcol, xsc, C, j - (SIZE - 1) + o);
AK_UNROLL
    for (int r = 0; r < SIZE; ++r) {
      const index_t q = j - POST + r;
      if (q < 0 || q >= C) continue;
      acc_t sum = 0;
AK_UNROLL
      for (int w = 0; w < SIZE; ++w) sum += xv[r + w] * xv[r + w];
      acc_t dp, dp1;
      lrn_powers(lrn_denominator(sum, k), k, dp, dp1);
      if (r == POST) dp_j = dp;
      acc += static_cast<acc_t>(gcol[q * gsc]) * xv[r + PRE] * dp1;
    }
  } else {
    const index_t pre = size / 2, post = (size - 1) / 2;
    // Outputs q whose window holds j: q - pre <= j <= q + post.
    const index_t lo = ak_max<index_t>(j - post, 0), hi = ak_min<index_t>(j + pre, C - 1);
    for (index_t q = lo; q <= hi; ++q) {
      acc_t dp, dp1;
      lrn_powers(lrn_denominator(lrn_window_sumsq<acc_t>(xcol, xsc, C, q, pre, post), k), k, dp, dp1);
      if (q == j) dp_j = dp;
      acc += static_cast<acc_t>(gcol[q * gsc]) * static_cast<acc_t>(xcol[q * xsc]) * dp1;
    }
  }
  const acc_t gj = static_cast<acc_t>(gcol[j * gsc]), xj = static_cast<acc_t>(xcol[j * xsc]);
  return gj * dp_j - k.scale * xj * acc;
}

// ---------------------------------------------------------------------------------------------
// Channels [c0, c1) of one column, window size SIZE known at compile time: the column path.
// The window lives in registers and slides one channel per step, so each input is loaded once.
// Loads go kLrnUnroll channels ahead, all at once (a memory-bound kernel needs many loads in
// flight per thread); where a whole group of loads lies inside [0, C) they are unchecked, and
// the channels within SIZE of either end (the edges) take the checked steps. Offsets are
// index_t (32-bit where the column's extent allows) and advance by the channel stride.
// ---------------------------------------------------------------------------------------------

constexpr int kLrnUnroll = 8;

// One step's output from its window w[i] = x[c - SIZE/2 + i] (0 outside [0, C)). The column
// walks below store it; the fused LRN + max-pool kernels (csrc/lrn_max_pool.h) pool it, which is
// why their LRN values are this function's, bit for bit (lrn_fma: the same roundings wherever a
// channel falls in a walk's unrolled groups).
template <int SIZE, bool kFast, typename acc_t>
AK_HD acc_t lrn_window_value(const acc_t (&w)[SIZE], const LrnCoef<acc_t>& k) {
  acc_t sum = w[0] * w[0];
AK_UNROLL
  for (int i = 1; i < SIZE; ++i) sum = lrn_fma(w[i], w[i], sum);
  return w[SIZE / 2] * lrn_power<kFast>(lrn_denominator(sum, k), k);
}

template <int SIZE, bool kFast, typename acc_t, typename T, typename index_t>
AK_HD void lrn_forward_column(gptr<const T> x, index_t xsc, gptr<T> y, index_t ysc, index_t C, index_t c0,
                              index_t c1, const LrnCoef<acc_t>& k) {
  constexpr int PRE = SIZE / 2, POST = (SIZE - 1) / 2;
  // At the step for channel c: w[i] = x[c - PRE + i]; w[SIZE-1] arrives with the step.
  acc_t w[SIZE];
AK_UNROLL
  for (int i = 0; i + 1 < SIZE; ++i) w[i] = lrn_load<acc_t>(x, xsc, C, c0 - PRE + i);
  index_t xo = (c0 + POST) * xsc, yo = c0 * ysc;  // the next load of x, the next store of y
  auto step = [&](acc_t xn) {
    w[SIZE - 1] = xn;
    y[yo] = static_cast<T>(lrn_window_value<SIZE, kFast>(w, k));
    yo += ysc;
AK_UNROLL
    for (int i = 0; i + 1 < SIZE; ++i) w[i] = w[i + 1];
  };
  index_t c = c0;
  for (; c + kLrnUnroll <= c1; c += kLrnUnroll) {
    acc_t next[kLrnUnroll];
    if (c + kLrnUnroll + POST <= C) {
AK_UNROLL
      for (int u = 0; u < kLrnUnroll; ++u) {
        next[u] = static_cast<acc_t>(x[xo]);
        xo += xsc;
      }
    } else {  // the group at the edge: loads past the last channel are 0
AK_UNROLL
      for (int u = 0; u < kLrnUnroll; ++u) {
        next[u] = c + u + POST < C ? static_cast<acc_t>(x[xo]) : acc_t(0);
        xo += xsc;
      }
    }
AK_UNROLL
    for (int u = 0; u < kLrnUnroll; ++u) step(next[u]);
  }
  for (; c < c1; ++c) {  // a segment's last channels short of a group
    const acc_t xn = c + POST < C ? static_cast<acc_t>(x[xo]) : acc_t(0);
    xo += xsc;
    step(xn);
  }
}

// Backward of channels [c0, c1) of one column, with the expressions of lrn_backward_at, in the
// same order. Step j computes output q = j + PRE's terms from its window x[j .. j + SIZE-1]
// (loading x[j + SIZE-1] and g[j + PRE]), then dx[j]. Registers at step j:
//   xr[i] = x[j + i] (i < SIZE-1), tr[i] = t[j - POST + i] (i < SIZE-1),
//   gr[i] = g[j + i], dr[i] = d[j + i]^(-beta) (i < PRE).
// GCol: g's column, a gptr or any column whose operator[] takes an offset (as lrn_load's Col).
template <int SIZE, bool kFast, typename acc_t, typename T, typename index_t, typename GCol = gptr<const T>>
AK_HD void lrn_backward_column(gptr<const T> x, index_t xsc, GCol g, index_t gsc, gptr<T> dx, index_t dsc,
                               index_t C, index_t c0, index_t c1, const LrnCoef<acc_t>& k) {
  constexpr int PRE = SIZE / 2, POST = (SIZE - 1) / 2, R = SIZE - 1;
  constexpr int PR = PRE > 0 ? PRE : 1;  // (arrays of PRE entries; unused when PRE is 0)
  acc_t xr[R > 0 ? R : 1], tr[R > 0 ? R : 1], gr[PR], dr[PR];
  // t and d^(-beta) of output q from its window win[0 .. SIZE-1] and g[q].
  auto terms = [&](const acc_t* win, acc_t gq, acc_t& dp) {
    acc_t sum = win[0] * win[0];
AK_UNROLL
    for (int i = 1; i < SIZE; ++i) sum += win[i] * win[i];
    acc_t dp1;
    lrn_powers<kFast>(lrn_denominator(sum, k), k, dp, dp1);
    return gq * win[PRE] * dp1;
  };
  {
    // Outputs c0 - POST .. c0 + PRE - 1 (zero outside [0, C)), from x[c0 - R .. c0 + R - 1].
    acc_t pw[2 * SIZE - 1];
AK_UNROLL
    for (int o = 0; o < 2 * R; ++o) pw[o] = lrn_load<acc_t>(x, xsc, C, c0 - R + o);
AK_UNROLL
    for (int i = 0; i < R; ++i) {
      const index_t q = c0 - POST + i;
      acc_t dp = 0;
      tr[i] = 0;
      if (q >= 0 && q < C) tr[i] = terms(pw + i, static_cast<acc_t>(g[q * gsc]), dp);
      if (i >= POST) {
        gr[i - POST] = lrn_load<acc_t>(g, gsc, C, q);
        dr[i - POST] = dp;
      }
      xr[i] = pw[R + i];
    }
  }
  index_t xo = (c0 + R) * xsc, go = (c0 + PRE) * gsc, oo = c0 * dsc;
  // Step j with x[j + SIZE-1] and g[j + PRE] (0 past C); `inside`: output j + PRE exists.
  auto step = [&](acc_t xn, acc_t gn, bool inside) {
    acc_t win[SIZE];
AK_UNROLL
    for (int i = 0; i < R; ++i) win[i] = xr[i];
    win[R] = xn;
    acc_t dq = 0, tq = terms(win, gn, dq);
    if (!inside) tq = dq = 0;
    acc_t acc = 0;
AK_UNROLL
    for (int i = 0; i < R; ++i) acc += tr[i];
    acc += tq;
    const acc_t gj = PRE > 0 ? gr[0] : gn, dj = PRE > 0 ? dr[0] : dq, xj = win[0];
    dx[oo] = static_cast<T>(gj * dj - k.scale * xj * acc);
    oo += dsc;
AK_UNROLL
    for (int i = 0; i + 1 < R; ++i) {
      xr[i] = xr[i + 1];
      tr[i] = tr[i + 1];
    }
    if constexpr (R > 0) {
      xr[R - 1] = xn;
      tr[R - 1] = tq;
    }
    if constexpr (PRE > 0) {
AK_UNROLL
      for (int i = 0; i + 1 < PRE; ++i) {
        gr[i] = gr[i + 1];
        dr[i] = dr[i + 1];
      }
      gr[PRE - 1] = gn;
      dr[PRE - 1] = dq;
    }
  };
  index_t j = c0;
  for (; j + kLrnUnroll <= c1; j += kLrnUnroll) {
    acc_t nx[kLrnUnroll], ng[kLrnUnroll];
    if (j + kLrnUnroll + R <= C) {
AK_UNROLL
      for (int u = 0; u < kLrnUnroll; ++u) {
        nx[u] = static_cast<acc_t>(x[xo]);
        ng[u] = static_cast<acc_t>(g[go]);
        xo += xsc;
        go += gsc;
      }
AK_UNROLL
      for (int u = 0; u < kLrnUnroll; ++u) step(nx[u], ng[u], true);
    } else {  // the group at the edge: loads past the last channel are 0, and so are the outputs' terms
AK_UNROLL
      for (int u = 0; u < kLrnUnroll; ++u) {
        nx[u] = j + u + R < C ? static_cast<acc_t>(x[xo]) : acc_t(0);
        ng[u] = j + u + PRE < C ? static_cast<acc_t>(g[go]) : acc_t(0);
        xo += xsc;
        go += gsc;
      }
AK_UNROLL
      for (int u = 0; u < kLrnUnroll; ++u) step(nx[u], ng[u], j + u + PRE < C);
    }
  }
  for (; j < c1; ++j) {  // a segment's last channels short of a group
    const acc_t xn = j + R < C ? static_cast<acc_t>(x[xo]) : acc_t(0);
    const acc_t gn = j + PRE < C ? static_cast<acc_t>(g[go]) : acc_t(0);
    xo += xsc;
    go += gsc;
    step(xn, gn, j + PRE < C);
  }
}

}  // namespace alexnet_kernels
