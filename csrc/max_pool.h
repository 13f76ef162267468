// 2-D max pooling with torch.nn.functional.max_pool2d's semantics, AlexNet's overlapping 3x3/2
// among them, as host+device functions shared by the CPU kernels (csrc/cpu/max_pool_cpu.cpp) and
// the CUDA kernels (csrc/cuda/max_pool_kernels.cuh): the same output size rule, the same scan
// order over the window (rows, then columns) and the same update rule `v > best || isnan(v)`, so
// the first maximum wins a tie and the last NaN wins over everything; the gradient goes where
// torch's goes.
//
// Backward needs no int64 index: forward stores the winner's position inside its window as one
// byte (kh * kW + kw < 256), and each input's gradient is the sum, in increasing output order,
// of the gradients of the outputs it won (torch's order of accumulation). Windows of more than
// 256 taps store nothing and backward recomputes the winner from x. The tiling of each kernel
// and the floor are in docs/max_pool.md.
#pragma once

#include "common.h"

namespace alexnet_kernels {

struct PoolGeom {
  int H, W, OH, OW;
  int kH, kW, sH, sW, pH, pW, dH, dW;
  FastDivmod32 div_sH, div_sW;  // the general backward divides by the stride
};

// torch's update rule for the next tap of a scan: take v if it is larger or NaN.
template <typename acc_t>
AK_HD void pool_take(acc_t v, int k, acc_t& best, int& pos) {
  const bool take = v > best || ak_isnan(v);
  best = take ? v : best;
  pos = take ? k : pos;
}

// Position of the window's winner (kh * kW + kw) and its value, scanning like torch: any
// window, padding and dilation. plane: the (n, c) plane; sh, sw: its row and column strides.
template <typename acc_t, typename T, typename index_t>
AK_HD int pool_argmax(gptr<const T> plane, index_t sh, index_t sw, const PoolGeom& g, int oh, int ow, acc_t& best) {
  const int h0 = oh * g.sH - g.pH, w0 = ow * g.sW - g.pW;
  const int hend = ak_min(h0 + (g.kH - 1) * g.dH + 1, g.H);
  const int wend = ak_min(w0 + (g.kW - 1) * g.dW + 1, g.W);
  // The first tap inside the image (padding is never a candidate) is the start position.
  const int kh0 = h0 < 0 ? (-h0 + g.dH - 1) / g.dH : 0;
  const int kw0 = w0 < 0 ? (-w0 + g.dW - 1) / g.dW : 0;
  best = -std::numeric_limits<acc_t>::infinity();
  int pos = kh0 * g.kW + kw0;
  for (int kh = kh0, h = h0 + kh0 * g.dH; h < hend; ++kh, h += g.dH) {
    const gptr<const T> row = plane + static_cast<index_t>(h) * sh;
    for (int kw = kw0, w = w0 + kw0 * g.dW; w < wend; ++kw, w += g.dW) {
      pool_take(static_cast<acc_t>(row[static_cast<index_t>(w) * sw]), kh * g.kW + kw, best, pos);
    }
  }
  return pos;
}

// ---------------------------------------------------------------------------------------------
// AlexNet's 3x3 window without padding, reduced in two levels: each row of the window first
// (over kw), then the three row results (over kh), with pool_take at both levels. That is the
// scan's result: if no tap is NaN, the first row holding the maximum and its first maximum (the
// first maximum in row-major order); else the last row holding a NaN and its last NaN (the last
// NaN). At stride 2 the row results of an input row serve two vertically adjacent outputs.
// ---------------------------------------------------------------------------------------------

// A window row's taps: their best and the winner's kw.
template <typename acc_t>
AK_HD void pool3_row(acc_t v0, acc_t v1, acc_t v2, acc_t& best, int& kw) {
  best = v0;
  kw = 0;
  pool_take(v1, 1, best, kw);
  pool_take(v2, 2, best, kw);
}

// The window from its three row results, top to bottom: the best and kh * 3 + kw.
template <typename acc_t>
AK_HD void pool3_rows(acc_t b0, int kw0, acc_t b1, int kw1, acc_t b2, int kw2, acc_t& best, int& pos) {
  best = b0;
  pos = kw0;
  pool_take(b1, 3 + kw1, best, pos);
  pool_take(b2, 6 + kw2, best, pos);
}

// A line of outputs from their windows' three row results (b0/k0 the top rows' bests and kw's,
// b1/k1, b2/k2 the next): y[i] and, with an index, index[i]. Host code, for the CPU kernels'
// two-level 3x3/2 forward (max pool, and LRN + max pool); two loops, so that the one without an
// index stays free of byte stores.
template <typename T, typename acc_t>
inline void pool3_line(const acc_t* __restrict__ b0, const int32_t* __restrict__ k0, const acc_t* __restrict__ b1,
                       const int32_t* __restrict__ k1, const acc_t* __restrict__ b2, const int32_t* __restrict__ k2,
                       int64_t len, T* __restrict__ y, uint8_t* __restrict__ index) {
  if (index) {
    for (int64_t i = 0; i < len; ++i) {
      acc_t best;
      int pos;
      pool3_rows(b0[i], k0[i], b1[i], k1[i], b2[i], k2[i], best, pos);
      y[i] = static_cast<T>(best);
      index[i] = static_cast<uint8_t>(pos);
    }
  } else {
    for (int64_t i = 0; i < len; ++i) {
      acc_t best;
      int pos;
      pool3_rows(b0[i], k0[i], b1[i], k1[i], b2[i], k2[i], best, pos);
      y[i] = static_cast<T>(best);
    }
  }
}

// Backward of 3x3 at stride 2, from the index: RW (even) consecutive inputs of one row whose
// padded column tw = w + pW starts even, tw = 2m + e for e < RW. An input is covered by at most
// two output rows (slots; slot 0 the upper) and, along the row, by outputs ow = m - 1 + u,
// u <= RW / 2: an even e by u = e/2 (its kw = 2) and u = e/2 + 1 (kw = 0), an odd e by
// u = (e+1)/2 (kw = 1). rel[s][u] is the stored index minus 3 * kh of slot s (so it matches
// when it equals kw), or -1 where the output does not exist; sums in increasing output order.
template <int RW, typename acc_t>
AK_HD void pool3x3s2_backward_run(const int (&rel)[2][RW / 2 + 1], const acc_t (&gv)[2][RW / 2 + 1],
                                  acc_t (&out)[RW]) {
  static_assert(RW % 2 == 0, "runs start at an even column");
AK_UNROLL
  for (int e = 0; e < RW; ++e) {
    acc_t acc = 0;
AK_UNROLL
    for (int s = 0; s < 2; ++s) {
      if (e % 2 == 0) {
        if (rel[s][e / 2] == 2) acc += gv[s][e / 2];
        if (rel[s][e / 2 + 1] == 0) acc += gv[s][e / 2 + 1];
      } else {
        if (rel[s][(e + 1) / 2] == 1) acc += gv[s][(e + 1) / 2];
      }
    }
    out[e] = acc;
  }
}

// The output rows covering padded input row th = h + pH at 3x3/2 (shifts, no division):
// slot 0 is oh0 = (th - 1) >> 1 with kh = th - 2 * oh0 (2 if th is even, else 1), slot 1 is
// oh1 = th >> 1 with kh 0, only for an even th. Absent slots (outside [0, OH)) are -1.
AK_HD void pool3x3s2_rows(int th, int OH, int (&oh)[2], int (&kh)[2]) {
  oh[0] = (th - 1) >> 1;
  kh[0] = th - 2 * oh[0];
  if (oh[0] < 0 || oh[0] >= OH) oh[0] = -1;
  oh[1] = (th & 1) == 0 && (th >> 1) < OH ? th >> 1 : -1;
  kh[1] = 0;
}

// Outputs whose window covers input coordinate h along one axis (general window): [lo, hi].
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

}  // namespace alexnet_kernels
