// The CUDA kernels of alexnet_kernels::lrn_max_pool2d and lrn_max_pool2d_backward and their launch
// planning, a template on the Launcher: lrn_max_pool_cuda.cu launches them on the current CUDA
// stream (CudaLauncher), tests/cuda_emu/lrn_max_pool_emu.cpp runs the very same kernels and
// planning on the CPU (emu::Launcher). The LRN math is csrc/lrn.h's, the window rule
// csrc/max_pool.h's (csrc/lrn_max_pool.h joins them); docs/lrn_max_pool.md has the counts.
//
// Forward, NCHW output (x NCHW or strided; size 5, 3x3/2): LRN is along the channels and the pool
// across the plane, so a thread walks the channels with LRN's window in registers (lrn.h's column
// path: every x element loaded once per walk) for a 5 x 2 patch of input positions at once: input
// rows 2 oh0 .. 2 oh0 + 4 (kFwdRows = 2 output rows, sharing the middle row) and columns 2 j,
// 2 j + 1. The third column of output j's windows is the next lane's first, one shuffle per row.
// A warp is cut into chunks of Q + 1 lanes (Q = min(OW, 31) outputs and a helper lane that only
// computes column 2 OW of the row for its left neighbour), as many chunks as fit, so no shuffle
// crosses a warp; lanes without an output compute on clamped positions and store nothing, so that
// every lane of a warp takes every shuffle. Each LRN value is computed once per walk but for the
// band's shared edge row and the helper column: at [128, 96, 55, 55], 56 x 5 values per 2 x 27
// outputs (5.2 per output, against 4.15 inputs per output). Channel segments (with 4 re-read halo
// channels each) give the device about two waves of threads; the segment is the fastest index of
// blockIdx.x, so the halos are read while their neighbours' are still in L2.
//   Floor: read x, write y and the index once: at [128, 96, 55, 55] fp32 148.7 + 35.8 + 9.0 MB
//   = 193.5 MB (184.5 MiB), 45.0 us at 4.3 TB/s, against 481.9 MB for LRN then pool.
//
// Forward, channels_last (x dense in it): one thread per (n, ow, c), c fastest, walking a segment
// of output rows as max_pool's 3x3/2 kernel does (the window's bottom row reductions carried to
// the next output), each tap's LRN value lrn.h's element function (lrn's channels_last path),
// its five loads neighbours of the adjacent lanes' in L1: six LRN values per output.
//
// Backward, NCHW dx: one thread per input column (n, h, w) and channel segment, w fastest, walking
// the channels through lrn.h's backward column function, whose gradient column is the pooled
// gradient gathered from the winners' bytes of the (at most 2 x 2) outputs covering (h, w)
// (PooledGradColumn): x, the gradient and the bytes read once from DRAM, dx written once.
//   Floor: at [128, 96, 55, 55] fp32 148.7 (x) + 35.8 (grad) + 9.0 (index) + 148.7 (dx) = 342.2 MB,
//   79.6 us, against 639.8 MB for the two backward ops.
//
// Backward, channels_last: lanes are channels (24 per warp, with 4 halo lanes on each side):
// each lane gathers its channel's pooled gradient, computes its own denominator and the terms
// g x d^(-beta-1), and takes its neighbours' x and terms by shuffles: lrn.h's element backward
// (lrn_backward_at, lrn's channels_last path) in the same expressions and order, spread over the
// lanes, one power per element instead of five.
//
// Offsets inside an image are index_t, 32-bit where they and the thread count fit; the image's
// base is 64-bit, computed once per thread.
#pragma once

#include <algorithm>

#include "../lrn_max_pool_host.h"
#include "grid.cuh"

namespace alexnet_kernels {

constexpr int kLrnPoolThreads = 256;
constexpr int kFwdRows = 2;         // NCHW forward: output rows per thread
constexpr int kFwdUnroll = 4;       // NCHW forward: channels whose loads are issued together
constexpr int kFwdMinSegment = 16;  // NCHW forward: channels per segment, at least
constexpr int kFwdResident = 512;   // NCHW forward: threads per SM (__launch_bounds__: <= 128 registers)
constexpr int kBwdResident = 512;   // NCHW backward: threads per SM (<= 128 registers)
constexpr int kClLanes = 28;        // channels_last forward: output channels per warp
constexpr int kClHalo = 2;          //   and the lanes of neighbour channels on either side
constexpr int kClBwdLanes = 24;     // channels_last backward: output channels per warp (halo 4)
constexpr int kClResident = 1536;   // channels_last: threads per SM planned for
constexpr unsigned kFullWarp = 0xffffffffu;

// ---------------------------------------------------------------------------------------------
// Forward, NCHW output.
// ---------------------------------------------------------------------------------------------

// How the NCHW forward cuts the work: chunks of Q + 1 lanes along an output row band, packed into
// warps, and channel segments.
template <typename index_t>
struct LrnPoolFwdPlan {
  int Q;                  // outputs per chunk (the chunk's lane Q is the helper)
  int chunks_per_warp;    // 32 / (Q + 1)
  index_t chunks;         // N * bands * chunks_per_row
  index_t segment;        // channels per segment
  FastDivmod32 by_lanes;  // lane -> (chunk in warp, lane in chunk)
  FastDivmod32 by_segments;  // blockIdx.x -> (block of the segment, segment)
  DivmodFor<index_t> by_row_chunks, by_bands;  // chunk -> (n, band, chunk in row)
};

template <bool kFast, bool kIndex, typename T, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kLrnPoolThreads, sizeof(acc_t) == 8 ? 1 : kFwdResident / kLrnPoolThreads)
    lrn_max_pool_forward_nchw(LrnPoolFwdArgs<T> a, LrnCoef<acc_t> k, LrnPoolFwdPlan<index_t> plan) {
  constexpr int R = kFwdRows, ROWS = 2 * R + 1, P = 2 * ROWS, U = kFwdUnroll;
  const LrnPoolGeom& g = a.g;
  int block, seg, chunk, lane_in;
  plan.by_segments.divmod(static_cast<int>(blockIdx.x), block, seg);
  plan.by_lanes.divmod(static_cast<int>(threadIdx.x % 32), chunk, lane_in);
  const index_t warp = static_cast<index_t>(block) * (kLrnPoolThreads / 32) + static_cast<index_t>(threadIdx.x / 32);
  index_t ci = warp * plan.chunks_per_warp + chunk;
  const bool real = chunk < plan.chunks_per_warp && ci < plan.chunks;
  if (!real) ci = plan.chunks - 1;  // computes like its neighbours, stores nothing
  index_t rest, in_row, n, band;
  plan.by_row_chunks.divmod(ci, rest, in_row);
  plan.by_bands.divmod(rest, n, band);
  const index_t j = in_row * plan.Q + lane_in;  // this lane's output column
  const bool stores = real && lane_in < plan.Q && j < g.OW;
  const index_t oh0 = band * R;

  // The patch: input rows 2 oh0 + r, columns 2 j + e, clamped inside the image (clamped lanes'
  // values are never stored, and a helper's second column is not used).
  const index_t xsc = static_cast<index_t>(a.xs.c);
  index_t off[P];
AK_UNROLL
  for (int r = 0; r < ROWS; ++r) {
AK_UNROLL
    for (int e = 0; e < 2; ++e) {
      const index_t h = ak_min<index_t>(2 * oh0 + r, g.H - 1), w = ak_min<index_t>(2 * j + e, g.W - 1);
      off[2 * r + e] = h * static_cast<index_t>(a.xs.h) + w * static_cast<index_t>(a.xs.w);
    }
  }
  const int64_t n64 = n;
  const gptr<const T> x = ak_pin(a.x + n64 * a.xs.n);
  const gptr<T> y = ak_pin(a.y + n64 * a.ys.n);
  const gptr<uint8_t> index = kIndex ? ak_pin(a.index + n64 * a.ys.n) : a.index;
  const index_t ysc = static_cast<index_t>(a.ys.c), ysh = static_cast<index_t>(a.ys.h);

  const index_t C = static_cast<index_t>(a.C);
  const index_t c0 = static_cast<index_t>(seg) * plan.segment, c1 = ak_min<index_t>(c0 + plan.segment, C);
  // LRN's window of each position: win[p][i] = x[c - 2 + i] at the step for channel c.
  acc_t win[P][5];
AK_UNROLL
  for (int i = 0; i < 4; ++i) {
    const index_t q = c0 - 2 + i;
AK_UNROLL
    for (int p = 0; p < P; ++p) win[p][i] = (q >= 0 && q < C) ? static_cast<acc_t>(x[q * xsc + off[p]]) : acc_t(0);
  }
  index_t xo = (c0 + 2) * xsc;  // the next channel to load
  index_t yo = c0 * ysc + oh0 * ysh + j;
  auto step = [&](const acc_t (&xn)[P]) {
    acc_t v[P];
AK_UNROLL
    for (int p = 0; p < P; ++p) {
      win[p][4] = xn[p];
      v[p] = lrn_pool_round<T>(lrn_window_value<5, kFast>(win[p], k));
AK_UNROLL
      for (int i = 0; i < 4; ++i) win[p][i] = win[p][i + 1];
    }
    acc_t third[ROWS], best[ROWS];
    int kw[ROWS];
AK_UNROLL
    for (int r = 0; r < ROWS; ++r) third[r] = __shfl_down_sync(kFullWarp, v[2 * r], 1);  // column 2 j + 2
AK_UNROLL
    for (int r = 0; r < ROWS; ++r) pool3_row(v[2 * r], v[2 * r + 1], third[r], best[r], kw[r]);
AK_UNROLL
    for (int o = 0; o < R; ++o) {
      acc_t b;
      int pos;
      pool3_rows(best[2 * o], kw[2 * o], best[2 * o + 1], kw[2 * o + 1], best[2 * o + 2], kw[2 * o + 2], b, pos);
      if (stores && oh0 + o < g.OH) {
        y[yo + o * ysh] = static_cast<T>(b);
        if constexpr (kIndex) index[yo + o * ysh] = static_cast<uint8_t>(pos);
      }
    }
    yo += ysc;
  };
  index_t c = c0;
  // Whole groups of U channels whose loads all lie inside [0, C): unchecked. Only the last
  // segment's last few channels take the checked single steps after them.
  for (; c + U <= c1 && c + U + 2 <= C; c += U) {
    acc_t xn[U][P];
AK_UNROLL
    for (int u = 0; u < U; ++u) {
      const gptr<const T> xc = ak_pin(x + xo);  // (one address per channel, one IMAD.WIDE per load)
AK_UNROLL
      for (int p = 0; p < P; ++p) xn[u][p] = static_cast<acc_t>(xc[off[p]]);
      xo += xsc;
    }
AK_UNROLL
    for (int u = 0; u < U; ++u) step(xn[u]);
  }
  for (; c < c1; ++c) {  // channels past the last are 0
    acc_t xn[P];
    const gptr<const T> xc = ak_pin(x + xo);
AK_UNROLL
    for (int p = 0; p < P; ++p) xn[p] = c + 2 < C ? static_cast<acc_t>(xc[off[p]]) : acc_t(0);
    xo += xsc;
    step(xn);
  }
}

// ---------------------------------------------------------------------------------------------
// channels_last: a warp per (n, band or row, segment of columns, group of channels); lane l holds
// channel group * kClLanes - kClHalo + l, so that a channel's LRN window is in its neighbour lanes
// (shuffles), and walks the columns of its segment.
// ---------------------------------------------------------------------------------------------

// A channels_last launch: warps = N * rows * segments * groups, decoded group fastest (a warp's
// neighbours take the next channels of the same pixels).
template <typename index_t>
struct LrnPoolClPlan {
  int64_t warps;
  index_t seg;  // columns (output columns forward, input columns backward) per segment
  DivmodFor<index_t> by_groups, by_segments, by_rows;
};

template <typename index_t>
__device__ __forceinline__ bool cl_warp(const LrnPoolClPlan<index_t>& plan, index_t& group, index_t& seg,
                                        index_t& row, index_t& n) {
  const int64_t warp64 = static_cast<int64_t>(blockIdx.x) * (kLrnPoolThreads / 32) + threadIdx.x / 32;
  if (warp64 >= plan.warps) return false;  // (whole warps: every lane of a live warp takes every shuffle)
  index_t rest, rest2;
  plan.by_groups.divmod(static_cast<index_t>(warp64), rest, group);
  plan.by_segments.divmod(rest, rest2, seg);
  plan.by_rows.divmod(rest2, n, row);
  return true;
}

// Forward: output rows 2 band, 2 band + 1 (input rows 2 oh0 .. 2 oh0 + 4), walking output
// columns: each step computes input columns 2 ow + 1 and 2 ow + 2 of the five rows and carries
// column 2 ow + 2 to the next output as its first. Each LRN value is lrn_element_value, the element
// path's (lrn_forward_at's) arithmetic, on the window its lane gathers by shuffles.
template <bool kIndex, typename T, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kLrnPoolThreads)
    lrn_max_pool_forward_nhwc(LrnPoolFwdArgs<T> a, LrnCoef<acc_t> k, LrnPoolClPlan<index_t> plan) {
  constexpr int R = kFwdRows, ROWS = 2 * R + 1;
  index_t group, seg, band, n;
  if (!cl_warp(plan, group, seg, band, n)) return;
  const LrnPoolGeom& g = a.g;
  const int lane = static_cast<int>(threadIdx.x % 32);
  const index_t C = static_cast<index_t>(a.C);
  const index_t c = group * kClLanes - kClHalo + lane;
  const bool inside = c >= 0 && c < C;
  const bool stores = inside && lane >= kClHalo && lane < kClHalo + kClLanes;
  const int64_t n64 = n;
  const gptr<const T> x = ak_pin(a.x + n64 * a.xs.n);
  const gptr<T> y = ak_pin(a.y + n64 * a.ys.n);
  const gptr<uint8_t> index = kIndex ? ak_pin(a.index + n64 * a.ys.n) : a.index;
  const index_t xsh = static_cast<index_t>(a.xs.h), xsw = static_cast<index_t>(a.xs.w);
  const index_t oh0 = band * R, ow0 = seg * plan.seg, ow1 = ak_min<index_t>(ow0 + plan.seg, g.OW);
  index_t roff[ROWS];  // this lane's channel in each input row of the band (clamped inside the image)
AK_UNROLL
  for (int r = 0; r < ROWS; ++r) {
    roff[r] = ak_min<index_t>(2 * oh0 + r, g.H - 1) * xsh + (inside ? c : index_t(0)) * static_cast<index_t>(a.xs.c);
  }
  // The LRN values of column w of the band's rows, from this lane's inputs there.
  auto column = [&](index_t w, acc_t (&v)[ROWS]) {
    acc_t xc[ROWS];
AK_UNROLL
    for (int r = 0; r < ROWS; ++r) xc[r] = inside ? static_cast<acc_t>(x[roff[r] + w * xsw]) : acc_t(0);
AK_UNROLL
    for (int r = 0; r < ROWS; ++r) {
      const acc_t win[5] = {__shfl_up_sync(kFullWarp, xc[r], 2), __shfl_up_sync(kFullWarp, xc[r], 1), xc[r],
                            __shfl_down_sync(kFullWarp, xc[r], 1), __shfl_down_sync(kFullWarp, xc[r], 2)};
      v[r] = lrn_pool_round<T>(lrn_element_value<5>(win, k));
    }
  };
  const index_t ysh = static_cast<index_t>(a.ys.h), ysw = static_cast<index_t>(a.ys.w);
  index_t yo = oh0 * ysh + ow0 * ysw + (stores ? c : index_t(0)) * static_cast<index_t>(a.ys.c);
  acc_t v0[ROWS];
  column(2 * ow0, v0);
  for (index_t ow = ow0; ow < ow1; ++ow) {
    acc_t v1[ROWS], v2[ROWS];
    column(2 * ow + 1, v1);
    column(2 * ow + 2, v2);
    acc_t best[ROWS];
    int kw[ROWS];
AK_UNROLL
    for (int r = 0; r < ROWS; ++r) pool3_row(v0[r], v1[r], v2[r], best[r], kw[r]);
AK_UNROLL
    for (int o = 0; o < R; ++o) {
      acc_t b;
      int pos;
      pool3_rows(best[2 * o], kw[2 * o], best[2 * o + 1], kw[2 * o + 1], best[2 * o + 2], kw[2 * o + 2], b, pos);
      if (stores && oh0 + o < g.OH) {
        y[yo + o * ysh] = static_cast<T>(b);
        if constexpr (kIndex) index[yo + o * ysh] = static_cast<uint8_t>(pos);
      }
    }
    yo += ysw;
AK_UNROLL
    for (int r = 0; r < ROWS; ++r) v0[r] = v2[r];
  }
}

// ---------------------------------------------------------------------------------------------
// Backward, NCHW dx: thread (n, h, w), w fastest, and a channel segment (blockIdx.y).
// ---------------------------------------------------------------------------------------------
template <bool kFast, typename T, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kLrnPoolThreads, sizeof(acc_t) == 8 ? 1 : kBwdResident / kLrnPoolThreads)
    lrn_max_pool_backward_nchw(LrnPoolBwdArgs<T> a, LrnCoef<acc_t> k, DivmodFor<index_t> by_w,
                               DivmodFor<index_t> by_h, index_t segment) {
  index_t i;
  if (!grid_thread(a.N * a.g.H * a.g.W, i)) return;
  index_t rest, w, n, h;
  by_w.divmod(i, rest, w);
  by_h.divmod(rest, n, h);
  const LrnPoolGeom& g = a.g;
  const index_t C = static_cast<index_t>(a.C);
  const index_t c0 = static_cast<index_t>(blockIdx.y) * segment, c1 = ak_min<index_t>(c0 + segment, C);
  const int64_t n64 = n;
  // (The gradient and index are dense NCHW: a unit column stride, so each candidate row's two
  // reads are one address and an immediate offset.)
  const auto gcol = pooled_grad_column<T, acc_t>(
      a.grad + n64 * a.gs.n, a.index + n64 * a.gs.n,
      pool_cover_3x3s2<index_t>(static_cast<int>(h), static_cast<int>(w), g.OH, g.OW, static_cast<index_t>(a.gs.h),
                                index_t(1)));
  const gptr<const T> xcol =
      ak_pin(a.x + n64 * a.xs.n) + (h * static_cast<index_t>(a.xs.h) + w * static_cast<index_t>(a.xs.w));
  const gptr<T> dxcol =
      ak_pin(a.dx + n64 * a.ds.n) + (h * static_cast<index_t>(a.ds.h) + w * static_cast<index_t>(a.ds.w));
  lrn_backward_column<5, kFast, acc_t>(xcol, static_cast<index_t>(a.xs.c), gcol, static_cast<index_t>(a.gs.c), dxcol,
                                       static_cast<index_t>(a.ds.c), C, c0, c1, k);
}

// Backward: input row h, walking the column pairs (2 m, 2 m + 1) of its segment; lane l holds
// channel group * kClBwdLanes - 4 + l. A pair's pooled gradients come from output columns m - 1
// and m of the (at most two) output rows covering h, max_pool.h's pool3x3s2_backward_run, and
// column m's bytes and gradients are carried to the next pair as its m - 1. Then lrn_backward_at's
// expressions for each of the two inputs, each lane computing the terms of its own channel (its
// denominator's powers, its term) and reading its neighbours'.
template <typename T, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kLrnPoolThreads)
    lrn_max_pool_backward_nhwc(LrnPoolBwdArgs<T> a, LrnCoef<acc_t> k, LrnPoolClPlan<index_t> plan) {
  index_t group, seg, h, n;
  if (!cl_warp(plan, group, seg, h, n)) return;
  const LrnPoolGeom& g = a.g;
  const int lane = static_cast<int>(threadIdx.x % 32);
  const index_t C = static_cast<index_t>(a.C);
  const index_t c = group * kClBwdLanes - 4 + lane;
  const bool inside = c >= 0 && c < C;
  const bool stores = inside && lane >= 4 && lane < 4 + kClBwdLanes;
  const index_t cc = inside ? c : index_t(0);
  const int64_t n64 = n;
  const index_t xsw = static_cast<index_t>(a.xs.w), dsw = static_cast<index_t>(a.ds.w);
  const index_t gsw = static_cast<index_t>(a.gs.w);
  const gptr<const T> x = ak_pin(a.x + n64 * a.xs.n) + (h * static_cast<index_t>(a.xs.h) + cc * static_cast<index_t>(a.xs.c));
  const gptr<T> dx = ak_pin(a.dx + n64 * a.ds.n) + (h * static_cast<index_t>(a.ds.h) + cc * static_cast<index_t>(a.ds.c));
  // The output rows covering h (slot 0 above), and this lane's channel in them.
  int oh[2], kh[2];
  pool3x3s2_rows(static_cast<int>(h), g.OH, oh, kh);
  const gptr<const T> grad = ak_pin(a.grad + n64 * a.gs.n);
  const gptr<const uint8_t> index = ak_pin(a.index + n64 * a.gs.n);
  index_t row[2];
AK_UNROLL
  for (int s = 0; s < 2; ++s) row[s] = (oh[s] >= 0 ? oh[s] : 0) * static_cast<index_t>(a.gs.h) + cc * static_cast<index_t>(a.gs.c);
  // Output column m of both slots: the stored position minus 3 kh (it matches where it equals the
  // input's kw), or -1 where there is no such output; and its gradient.
  auto column = [&](index_t m, int (&rel)[2], acc_t (&gv)[2]) {
AK_UNROLL
    for (int s = 0; s < 2; ++s) {
      const bool there = inside && oh[s] >= 0 && m >= 0 && m < g.OW;
      rel[s] = there ? static_cast<int>(index[row[s] + m * gsw]) - 3 * kh[s] : -1;
      gv[s] = there ? static_cast<acc_t>(grad[row[s] + m * gsw]) : acc_t(0);
    }
  };
  // dx at input column w from its pooled gradient gc.
  auto input = [&](index_t w, acc_t gc) {
    const acc_t xc = inside ? static_cast<acc_t>(x[w * xsw]) : acc_t(0);
    // This channel's denominator from x[c - 2 .. c + 2] (0 outside [0, C)), summed as
    // lrn_backward_at sums (lrn_element_value's sum).
    const acc_t xs[5] = {__shfl_up_sync(kFullWarp, xc, 2), __shfl_up_sync(kFullWarp, xc, 1), xc,
                         __shfl_down_sync(kFullWarp, xc, 1), __shfl_down_sync(kFullWarp, xc, 2)};
    acc_t sum = 0;
AK_UNROLL
    for (int i = 0; i < 5; ++i) sum = lrn_fma(xs[i], xs[i], sum);
    acc_t dp, dp1;
    lrn_powers(lrn_denominator(sum, k), k, dp, dp1);
    // Its term t = (g x) d^(-beta-1), as lrn_backward_at forms it, and the sum of the terms of
    // the channels c - 2 .. c + 2 whose windows hold c, in that order; a channel outside [0, C)
    // has none. (lrn_backward_at fuses each term's last multiply into the sum; here the term is
    // rounded first, so that one shuffle carries it: the gradient may differ in the last bit.)
    const acc_t t = inside ? gc * xc * dp1 : acc_t(0);
    const acc_t acc = (((__shfl_up_sync(kFullWarp, t, 2) + __shfl_up_sync(kFullWarp, t, 1)) + t) +
                       __shfl_down_sync(kFullWarp, t, 1)) +
                      __shfl_down_sync(kFullWarp, t, 2);
    if (stores) dx[w * dsw] = static_cast<T>(gc * dp - k.scale * xc * acc);
  };
  const index_t m0 = seg * plan.seg, m1 = ak_min<index_t>(m0 + plan.seg, (g.W + 1) / 2);
  int rel[2][2];
  acc_t gv[2][2];
  {
    int r0[2];
    acc_t g0[2];
    column(m0 - 1, r0, g0);
    rel[0][1] = r0[0], rel[1][1] = r0[1], gv[0][1] = g0[0], gv[1][1] = g0[1];
  }
  for (index_t m = m0; m < m1; ++m) {
    int rm[2];
    acc_t gm[2];
    column(m, rm, gm);
AK_UNROLL
    for (int s = 0; s < 2; ++s) {  // column m - 1 (carried) and m
      rel[s][0] = rel[s][1], gv[s][0] = gv[s][1];
      rel[s][1] = rm[s], gv[s][1] = gm[s];
    }
    acc_t pooled[2];
    pool3x3s2_backward_run<2>(rel, gv, pooled);
    input(2 * m, lrn_pool_round<T>(pooled[0]));
    if (2 * m + 1 < g.W) input(2 * m + 1, lrn_pool_round<T>(pooled[1]));
  }
}

// ---------------------------------------------------------------------------------------------
// Planning.
// ---------------------------------------------------------------------------------------------

// Channel segments for a launch of `threads` threads per segment: about two waves of `resident`
// threads per SM, each segment at least `min_segment` channels and a multiple of `multiple`.
inline int64_t lrn_pool_segment(int64_t threads, int64_t C, int sms, int resident, int min_segment, int multiple,
                                int forced_segments) {
  int64_t segments = forced_segments;
  if (segments <= 0) {
    const int64_t want = 2 * static_cast<int64_t>(sms) * resident;
    segments = std::min<int64_t>((want + threads - 1) / threads, std::max<int64_t>(C / min_segment, 1));
  }
  segments = std::max<int64_t>(std::min<int64_t>(segments, std::min<int64_t>(C, 65535)), 1);
  const int64_t len = (C + segments - 1) / segments;
  return forced_segments > 0 ? len : (len + multiple - 1) / multiple * multiple;
}

// One past the largest offset of a tensor's image with these strides and sizes (C, A, B), plus
// `extra` channel steps (a walk's offsets run a few channels past the last).
inline int64_t lrn_pool_image_extent(const Strides4& s, int64_t C, int64_t A, int64_t B, int64_t extra = 0) {
  return (C - 1 + extra) * s.c + (A - 1) * s.h + (B - 1) * s.w + 1;
}

// channels_last: the columns each warp walks, so that rows x segments x groups warps make about
// two waves of kClResident threads per SM (a segment's walk starts with one column more).
template <typename Launcher>
int64_t cl_segment_for(int64_t warps_per_segment, int64_t cols, int forced_segments) {
  int64_t segments = forced_segments;
  if (segments <= 0) {
    const int64_t want = 2 * static_cast<int64_t>(Launcher::multiprocessors()) * kClResident / 32;
    segments = std::min<int64_t>((want + warps_per_segment - 1) / warps_per_segment, std::max<int64_t>(cols / 4, 1));
  }
  segments = std::max<int64_t>(std::min<int64_t>(segments, cols), 1);
  return (cols + segments - 1) / segments;
}

template <typename index_t>
LrnPoolClPlan<index_t> cl_plan(int64_t N, int64_t rows, int64_t cols, int64_t seg, int64_t groups) {
  const int64_t segments = (cols + seg - 1) / seg;
  return {N * rows * segments * groups, static_cast<index_t>(seg), DivmodFor<index_t>(groups),
          DivmodFor<index_t>(segments), DivmodFor<index_t>(rows)};
}

template <typename Launcher>
struct LrnPoolCuda {
  template <typename T, typename acc_t>
  static void forward(const LrnPoolFwdArgs<T>& a, const LrnCoef<acc_t>& k, const PlanOptions& opt) {
    const LrnPoolGeom& g = a.g;
    if (a.channels_last) {
      const int64_t groups = (a.C + kClLanes - 1) / kClLanes, bands = (g.OH + kFwdRows - 1) / kFwdRows;
      const int64_t seg = cl_segment_for<Launcher>(a.N * bands * groups, g.OW, opt.segments);
      const int64_t extent = std::max({a.N * bands * groups * ((g.OW + seg - 1) / seg) + 1,
                                       lrn_pool_image_extent(a.xs, a.C, g.H, g.W, 1),
                                       lrn_pool_image_extent(a.ys, a.C, g.OH, g.OW, 1)});
      dispatch_index(extent, opt.force_64bit, [&](auto index) {
        using index_t = decltype(index);
        const auto plan = cl_plan<index_t>(a.N, bands, g.OW, seg, groups);
        auto launch = [&](auto with_index) {
          Launcher::launch(lrn_max_pool_forward_nhwc<decltype(with_index)::value, T, acc_t, index_t>,
                           dim3(grid_blocks(plan.warps * 32, kLrnPoolThreads)), kLrnPoolThreads, a, k, plan);
        };
        a.index ? launch(std::true_type{}) : launch(std::false_type{});
      });
      return;
    }
    const int Q = std::min(g.OW, 31);
    const int cpw = 32 / (Q + 1);
    const int64_t bands = (g.OH + kFwdRows - 1) / kFwdRows;
    const int64_t row_chunks = (g.OW + Q - 1) / Q;
    const int64_t chunks = a.N * bands * row_chunks;
    const int64_t warps = (chunks + cpw - 1) / cpw;
    const int64_t blocks = (warps + kLrnPoolThreads / 32 - 1) / (kLrnPoolThreads / 32);
    const int64_t seg = lrn_pool_segment(blocks * kLrnPoolThreads, a.C, Launcher::multiprocessors(), kFwdResident,
                                         kFwdMinSegment, kFwdUnroll, opt.segments);
    const int64_t segments = (a.C + seg - 1) / seg;
    TORCH_CHECK(blocks * segments < (int64_t(1) << 31), "lrn_max_pool2d: ", blocks * segments,
                " blocks do not fit a 1-D grid");
    // 32-bit: chunk indices, and offsets in an image of x (up to a few channels past the last) and y.
    const int64_t extent = std::max({chunks + cpw, lrn_pool_image_extent(a.xs, a.C, g.H, g.W, kFwdUnroll + 3),
                                     lrn_pool_image_extent(a.ys, a.C, g.OH, g.OW, 1)});
    dispatch_index(extent, opt.force_64bit, [&](auto index) {
      using index_t = decltype(index);
      LrnPoolFwdPlan<index_t> plan;
      plan.Q = Q;
      plan.chunks_per_warp = cpw;
      plan.chunks = static_cast<index_t>(chunks);
      plan.segment = static_cast<index_t>(seg);
      plan.by_lanes = FastDivmod32(Q + 1);
      plan.by_segments = FastDivmod32(segments);
      plan.by_row_chunks = DivmodFor<index_t>(row_chunks);
      plan.by_bands = DivmodFor<index_t>(bands);
      auto launch = [&](auto fast, auto with_index) {
        Launcher::launch(
            lrn_max_pool_forward_nchw<decltype(fast)::value, decltype(with_index)::value, T, acc_t, index_t>,
            dim3(static_cast<unsigned>(blocks * segments)), kLrnPoolThreads, a, k, plan);
      };
      // The .ftz powers only where they are exact (lrn_fast_powers) and the arithmetic is fp32,
      // as lrn's column kernels choose (the values must be theirs).
      auto with_fast = [&](auto fast) {
        a.index ? launch(fast, std::true_type{}) : launch(fast, std::false_type{});
      };
      if (std::is_same_v<acc_t, float> && k.fast_powers) {
        with_fast(std::integral_constant<bool, std::is_same_v<acc_t, float>>{});
      } else {
        with_fast(std::false_type{});
      }
    });
  }

  template <typename T, typename acc_t>
  static void backward(const LrnPoolBwdArgs<T>& a, const LrnCoef<acc_t>& k, const PlanOptions& opt) {
    const LrnPoolGeom& g = a.g;
    if (a.channels_last) {
      const int64_t groups = (a.C + kClBwdLanes - 1) / kClBwdLanes;
      const int64_t pairs = (g.W + 1) / 2;  // input column pairs a warp walks
      const int64_t seg = cl_segment_for<Launcher>(a.N * g.H * groups, pairs, opt.segments);
      const int64_t extent = std::max({a.N * g.H * groups * ((pairs + seg - 1) / seg) + 1,
                                       lrn_pool_image_extent(a.xs, a.C, g.H, g.W, 1),
                                       lrn_pool_image_extent(a.gs, a.C, g.OH + 1, g.OW + 1, 1),
                                       lrn_pool_image_extent(a.ds, a.C, g.H, g.W, 1)});
      dispatch_index(extent, opt.force_64bit, [&](auto index) {
        using index_t = decltype(index);
        const auto plan = cl_plan<index_t>(a.N, g.H, pairs, seg, groups);
        Launcher::launch(lrn_max_pool_backward_nhwc<T, acc_t, index_t>,
                         dim3(grid_blocks(plan.warps * 32, kLrnPoolThreads)), kLrnPoolThreads, a, k, plan);
      });
      return;
    }
    const int64_t cols = a.N * g.H * g.W;
    const int64_t seg = lrn_pool_segment(cols, a.C, Launcher::multiprocessors(), kBwdResident, 32, kLrnUnroll,
                                         opt.segments);
    const dim3 grid(grid_blocks(cols, kLrnPoolThreads), static_cast<unsigned>((a.C + seg - 1) / seg));
    // 32-bit: column indices, and offsets in an image of x, dx, the gradient and the index (the
    // walk's offsets run up to two groups of channels past the last).
    const int64_t extent = std::max({cols, lrn_pool_image_extent(a.xs, a.C, g.H, g.W, 2 * kLrnUnroll + 1),
                                     lrn_pool_image_extent(a.ds, a.C, g.H, g.W, 2 * kLrnUnroll + 1),
                                     lrn_pool_image_extent(a.gs, a.C, g.OH, g.OW, 2 * kLrnUnroll + 1)});
    dispatch_index(extent, opt.force_64bit, [&](auto index) {
      using index_t = decltype(index);
      auto launch = [&](auto fast) {
        Launcher::launch(lrn_max_pool_backward_nchw<decltype(fast)::value, T, acc_t, index_t>, grid,
                         kLrnPoolThreads, a, k, DivmodFor<index_t>(g.W), DivmodFor<index_t>(g.H),
                         static_cast<index_t>(seg));
      };
      if (std::is_same_v<acc_t, float> && k.fast_powers) {
        launch(std::integral_constant<bool, std::is_same_v<acc_t, float>>{});
      } else {
        launch(std::false_type{});
      }
    });
  }
};

}  // namespace alexnet_kernels
