// The CUDA kernels of alexnet_kernels::max_pool2d and max_pool2d_backward and their launch
// planning, a template on the Launcher: max_pool_cuda.cu launches them on the current CUDA
// stream (CudaLauncher), tests/cuda_emu/max_pool_emu.cpp runs the very same kernels and planning
// on the CPU (emu::Launcher). The window math and tie rules are csrc/max_pool.h's; the tiling,
// floor and instruction counts are in docs/max_pool.md.
//
// AlexNet's 3x3/2 has unrolled kernels, the layout (NCHW or channels_last, x dense in it) a
// template parameter so that the unit stride is known at compile time:
//   forward: a thread walks one output column down a segment of rows, carrying the last
//     window row's reduction to the next output, with the taps of kPoolRows outputs loaded
//     before the first compare; neighbouring threads take neighbouring columns (NCHW) or
//     neighbouring channels (channels_last), so loads and stores are coalesced.
//   backward (from the index): a thread computes kPoolRun consecutive inputs of a row from the
//     index bytes and gradients of the <= 2 x (kPoolRun/2 + 1) outputs covering them, found
//     with shifts; NCHW: the warp stores its 32 runs, one stretch of dx, through shared memory.
// Everything else (other windows, padding in forward, strided tensors, the recomputing
// backward, a gradient or index not dense in dx's layout) takes the general kernels: one thread per output (forward) or input (backward)
// element in the tensor's memory order.
//
// Offsets inside a plane (NCHW) or an image (channels_last) are index_t, 32-bit where they and
// the thread count fit; the plane's base is 64-bit, computed once per thread.
#pragma once

#include <algorithm>

#include "../max_pool_host.h"
#include "grid.cuh"

namespace alexnet_kernels {

constexpr int kPoolThreads = 256;
constexpr int kPoolRows = 4;        // forward 3x3/2: outputs whose taps a thread loads at once
constexpr int kPoolMinSegment = 4;  // forward 3x3/2: output rows a thread walks, at least
constexpr int kPoolRun = 8;         // backward 3x3/2: inputs per thread along a row

enum class PoolLayout { kNchw, kNhwc };

// Where element (h, w) of a plane (NCHW) or of an image's channel c (NHWC, base at channel c)
// lies, for a tensor of width W and C channels.
template <PoolLayout L, typename index_t>
__device__ __forceinline__ index_t pool_offset(index_t h, index_t w, index_t W, index_t C) {
  if constexpr (L == PoolLayout::kNchw) {
    return h * W + w;
  } else {
    return (h * W + w) * C;
  }
}

// The thread's (n or plane, column, channel) from its flat index: NCHW i = p * cols + col with
// p = n * C + c the plane; NHWC i = (n * cols + col) * C + c.
template <PoolLayout L, typename index_t>
struct PoolDecode {
  DivmodFor<index_t> d0, d1;
  __device__ __forceinline__ void operator()(index_t i, index_t& outer, index_t& col, index_t& c) const {
    if constexpr (L == PoolLayout::kNchw) {
      d0.divmod(i, outer, col);
      c = 0;
    } else {
      index_t r;
      d0.divmod(i, r, c);
      d1.divmod(r, outer, col);
    }
  }
};

template <PoolLayout L, typename index_t>
PoolDecode<L, index_t> pool_decode(int64_t C, int64_t cols) {
  if constexpr (L == PoolLayout::kNchw) {
    return {DivmodFor<index_t>(cols), DivmodFor<index_t>(1)};
  } else {
    return {DivmodFor<index_t>(C), DivmodFor<index_t>(cols)};
  }
}

// ---------------------------------------------------------------------------------------------
// 3x3/2 forward, every window inside the image, x dense in y's layout. A thread walks output
// column ow down rows [oh0, oh1) (the segment blockIdx.y), with the last window row's results
// carried to the next output: each output loads two new input rows (6 taps) and takes six
// compares. kPoolRows outputs' taps are loaded together before the first compare.
// ---------------------------------------------------------------------------------------------
template <PoolLayout L, bool kIndex, typename T, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kPoolThreads)
    max_pool3x3s2_forward(PoolFwdArgs<T> a, PoolDecode<L, index_t> decode, int64_t threads, index_t seg_rows) {
  constexpr int U = kPoolRows;
  index_t i;
  if (!grid_thread(threads, i)) return;
  index_t outer, ow, c;
  decode(i, outer, ow, c);
  const PoolGeom& g = a.g;
  const index_t OH = g.OH, C = static_cast<index_t>(a.C);
  // Steps between rows and columns of x and of y.
  const index_t xr = L == PoolLayout::kNchw ? index_t(g.W) : index_t(g.W) * C, xc = L == PoolLayout::kNchw ? 1 : C;
  const index_t yr = L == PoolLayout::kNchw ? index_t(g.OW) : index_t(g.OW) * C, yc = xc;
  // The plane (NCHW: outer = n * C + c) or the image at channel c (NHWC: outer = n).
  const int64_t o64 = outer;
  const int64_t xbase = L == PoolLayout::kNchw ? o64 * (int64_t(g.H) * g.W) : o64 * a.xs.n + c;
  const int64_t ybase = L == PoolLayout::kNchw ? o64 * (int64_t(g.OH) * g.OW) : o64 * a.ys.n + c;
  const index_t oh0 = static_cast<index_t>(blockIdx.y) * seg_rows, oh1 = ak_min<index_t>(oh0 + seg_rows, OH);
  // x at (2 * oh0, 2 * ow): the first window's top row.
  gptr<const T> xp = ak_pin(a.x + xbase) + (2 * oh0 * xr + 2 * ow * xc);
  const gptr<T> y = ak_pin(a.y + ybase);
  const gptr<uint8_t> index = kIndex ? ak_pin(a.index + ybase) : a.index;
  index_t yo = oh0 * yr + ow * yc;
  acc_t top;
  int top_kw;
  pool3_row(static_cast<acc_t>(xp[0]), static_cast<acc_t>(xp[xc]), static_cast<acc_t>(xp[2 * xc]), top, top_kw);
  // One output from its window's middle and bottom rows (m, b); the bottom row's results become
  // the next window's top.
  auto step = [&](const acc_t (&m)[3], const acc_t (&b)[3]) {
    acc_t mb, bb, best;
    int mk, bk, pos;
    pool3_row(m[0], m[1], m[2], mb, mk);
    pool3_row(b[0], b[1], b[2], bb, bk);
    pool3_rows(top, top_kw, mb, mk, bb, bk, best, pos);
    y[yo] = static_cast<T>(best);
    if constexpr (kIndex) index[yo] = static_cast<uint8_t>(pos);
    yo += yr;
    top = bb;
    top_kw = bk;
  };
  index_t oh = oh0;
  for (; oh + U <= oh1; oh += U) {
    acc_t v[2 * U][3];
AK_UNROLL
    for (int r = 0; r < 2 * U; ++r) {
      xp += xr;
AK_UNROLL
      for (int k = 0; k < 3; ++k) v[r][k] = static_cast<acc_t>(xp[k * xc]);
    }
AK_UNROLL
    for (int u = 0; u < U; ++u) step(v[2 * u], v[2 * u + 1]);
  }
  for (; oh < oh1; ++oh) {
    acc_t v[2][3];
AK_UNROLL
    for (int r = 0; r < 2; ++r) {
      xp += xr;
AK_UNROLL
      for (int k = 0; k < 3; ++k) v[r][k] = static_cast<acc_t>(xp[k * xc]);
    }
    step(v[0], v[1]);
  }
}

// ---------------------------------------------------------------------------------------------
// 3x3/2 backward from the index (any padding), grad and index dense in dx's layout (dx is the
// op's own dense allocation). A thread computes kPoolRun consecutive inputs of a row.
// channels_last: neighbouring threads take neighbouring channels, so each of the run's stores is
// coalesced as it is. NCHW: the warp's 32 runs are consecutive stretches of dx (a row's runs
// follow each other, and so do the rows and planes), so together they cover one stretch of at
// most 32 * kPoolRun elements; each lane puts its run into the warp's shared tile at its place
// in that stretch, and the warp stores the stretch 32 consecutive elements at a time (about 5
// sectors per fp32 request, where a lane's own stores, 32 bytes apart, made 31). The tile's
// stores conflict where runs lie a multiple of 32 words apart: 2 ways at W = 55, none at 27, 8
// where W is a multiple of kPoolRun.
// ---------------------------------------------------------------------------------------------
template <PoolLayout L, typename T, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kPoolThreads)
    max_pool3x3s2_backward(PoolBwdArgs<T> a, PoolDecode<L, index_t> decode, DivmodFor<index_t> rows,
                           int64_t threads) {
  constexpr int RW = kPoolRun, U = RW / 2 + 1;
  index_t i;
  // NCHW: whole warps stay for the exchange below; the lanes past the grid's end stand in for
  // its last thread (they compute its run again, and put nothing in the tile). index_t holds
  // threads itself (the planning's extent).
  if (!grid_thread(L == PoolLayout::kNchw ? (threads + 31) & ~int64_t(31) : threads, i)) return;
  const bool mine = L == PoolLayout::kNhwc || i < static_cast<index_t>(threads);
  if constexpr (L == PoolLayout::kNchw) i = ak_min(i, static_cast<index_t>(threads - 1));
  index_t outer_h, run, c, outer, h;
  decode(i, outer_h, run, c);
  rows.divmod(outer_h, outer, h);
  const PoolGeom& g = a.g;
  const index_t W = g.W, OW = g.OW, C = static_cast<index_t>(a.C);
  const int64_t o64 = outer;
  const int64_t in_base = L == PoolLayout::kNchw ? o64 * (int64_t(g.H) * g.W) : o64 * a.ds.n + c;
  const int64_t out_base = L == PoolLayout::kNchw ? o64 * (int64_t(g.OH) * g.OW) : o64 * a.gs.n + c;
  const gptr<const T> grad = ak_pin(a.grad + out_base);
  const gptr<const uint8_t> index = ak_pin(a.index + out_base);
  int oh[2], kh[2];
  pool3x3s2_rows(static_cast<int>(h) + g.pH, g.OH, oh, kh);
  // This run covers padded columns tw = RW * run + e; outputs ow = m - 1 + u cover it.
  const index_t m = run * (RW / 2);
  int rel[2][U];
  acc_t gv[2][U];
AK_UNROLL
  for (int s = 0; s < 2; ++s) {
AK_UNROLL
    for (int u = 0; u < U; ++u) {
      const index_t ow = m - 1 + u;
      const bool there = oh[s] >= 0 && ow >= 0 && ow < OW;
      const index_t o = pool_offset<L>(static_cast<index_t>(oh[s]), ow, OW, C);
      rel[s][u] = there ? static_cast<int>(index[o]) - 3 * kh[s] : -1;
      gv[s][u] = there ? static_cast<acc_t>(grad[o]) : acc_t(0);
    }
  }
  acc_t out[RW];
  pool3x3s2_backward_run<RW>(rel, gv, out);
  const index_t w0 = RW * run - g.pW;
  if constexpr (L == PoolLayout::kNhwc) {
    const gptr<T> dx = ak_pin(a.dx + in_base);
AK_UNROLL
    for (int e = 0; e < RW; ++e) {
      if (w0 + e >= 0 && w0 + e < W) dx[pool_offset<L>(h, w0 + e, W, C)] = static_cast<T>(out[e]);
    }
  } else {
    AK_SHARED(T, tile, [kPoolThreads / 32][32 * RW]);
    const sptr<T> stretch = tile[threadIdx.x / 32];
    const int lane = threadIdx.x % 32;
    // The run's columns inside the row are e in [lo, n): lo = 1 where the run starts in the left
    // padding (pW <= 1 for a 3x3 window), n < RW for the row's last run. A stand-in puts none.
    const int lo = w0 < 0 ? 1 : 0;
    const int n = static_cast<int>(ak_min<index_t>(RW, W - w0));
    const int put = mine ? n : 0;
    // Places in dx's order (plane rows one after another) in 32 bits: their differences (less
    // than 32 * RW) are exact modulo 2^32. The stretch starts at lane 0's first column inside
    // the row and ends at lane 31's last (a stand-in's: the last thread's).
    const uint32_t pos = static_cast<uint32_t>(outer_h) * static_cast<uint32_t>(W) + static_cast<uint32_t>(w0);
    const int at = static_cast<int>(pos - __shfl_sync(0xffffffffu, pos + lo, 0));
    const int last = __shfl_sync(0xffffffffu, at + n - 1, 31);
AK_UNROLL
    for (int e = 0; e < RW; ++e) {
      if (e >= lo && e < put) stretch[at + e] = static_cast<T>(out[e]);
    }
    // The tile is the warp's own and used once: a warp barrier orders it, no block barrier.
    __syncwarp();
    // Element j of the stretch lies j - at after this run's first column.
    const gptr<T> dx = ak_pin(a.dx + in_base) + (h * W + w0 - at + lane);
    const int left = last - lane;
AK_UNROLL
    for (int k = 0; k < RW; ++k) {
      if (32 * k <= left) dx[32 * k] = stretch[32 * k + lane];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// General kernels: any window, padding, dilation and strides; one thread per element of the
// output (forward) or of dx (backward), flat index in that tensor's memory order.
// ---------------------------------------------------------------------------------------------

// Flat index -> (n, c, a, b) of an [N, C, A, B] tensor in NCHW or NHWC order.
template <typename index_t>
struct PoolFlat {
  DivmodFor<index_t> d0, d1, d2;
  bool channels_last;
  __device__ __forceinline__ void operator()(index_t i, index_t& n, index_t& c, index_t& a, index_t& b) const {
    index_t q0, r0, q1, r1, r2;
    d0.divmod(i, q0, r0);
    d1.divmod(q0, q1, r1);
    d2.divmod(q1, n, r2);
    if (channels_last) {  // d0 = C, d1 = B, d2 = A
      c = r0;
      b = r1;
      a = r2;
    } else {  // d0 = B, d1 = A, d2 = C
      b = r0;
      a = r1;
      c = r2;
    }
  }
};

template <typename index_t>
PoolFlat<index_t> pool_flat(bool channels_last, int64_t C, int64_t A, int64_t B) {
  if (channels_last) return {DivmodFor<index_t>(C), DivmodFor<index_t>(B), DivmodFor<index_t>(A), true};
  return {DivmodFor<index_t>(B), DivmodFor<index_t>(A), DivmodFor<index_t>(C), false};
}

template <typename T, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kPoolThreads) max_pool_forward_general(PoolFwdArgs<T> a, PoolFlat<index_t> flat,
                                                                         int64_t numel) {
  index_t i;
  if (!grid_thread(numel, i)) return;
  index_t n, c, oh, ow;
  flat(i, n, c, oh, ow);
  const int64_t n64 = n, c64 = c;
  const gptr<const T> plane = a.x + (n64 * a.xs.n + c64 * a.xs.c);
  acc_t best;
  const int pos = pool_argmax<acc_t>(plane, static_cast<index_t>(a.xs.h), static_cast<index_t>(a.xs.w), a.g,
                                     static_cast<int>(oh), static_cast<int>(ow), best);
  const int64_t o = n64 * a.ys.n + c64 * a.ys.c + static_cast<int64_t>(oh * static_cast<index_t>(a.ys.h) +
                                                                       ow * static_cast<index_t>(a.ys.w));
  a.y[o] = static_cast<T>(best);
  if (a.index) a.index[o] = static_cast<uint8_t>(pos);
}

template <typename T, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kPoolThreads) max_pool_backward_general(PoolBwdArgs<T> a, PoolFlat<index_t> flat,
                                                                          int64_t numel) {
  index_t i;
  if (!grid_thread(numel, i)) return;
  index_t n, c, h, w;
  flat(i, n, c, h, w);
  const PoolGeom& g = a.g;
  const int hi = static_cast<int>(h), wi = static_cast<int>(w);
  int oh_lo, oh_hi, ow_lo, ow_hi;
  pool_covering(hi, g.pH, g.kH, g.div_sH, g.dH, g.OH, oh_lo, oh_hi);
  pool_covering(wi, g.pW, g.kW, g.div_sW, g.dW, g.OW, ow_lo, ow_hi);
  const int64_t n64 = n, c64 = c;
  const gptr<const T> grad = a.grad + (n64 * a.gs.n + c64 * a.gs.c);
  const index_t gsh = static_cast<index_t>(a.gs.h), gsw = static_cast<index_t>(a.gs.w);
  acc_t acc = 0;
  for (int oh = oh_lo; oh <= oh_hi; ++oh) {
    const int dh = hi + g.pH - oh * g.sH;  // = kh * dH
    if (g.dH != 1 && dh % g.dH != 0) continue;
    const int kh = g.dH == 1 ? dh : dh / g.dH;
    for (int ow = ow_lo; ow <= ow_hi; ++ow) {
      const int dw = wi + g.pW - ow * g.sW;
      if (g.dW != 1 && dw % g.dW != 0) continue;
      const int kw = g.dW == 1 ? dw : dw / g.dW;
      int pos;
      if (a.index) {
        pos = a.index[n64 * a.is.n + c64 * a.is.c +
                      static_cast<int64_t>(index_t(oh) * static_cast<index_t>(a.is.h) +
                                           index_t(ow) * static_cast<index_t>(a.is.w))];
      } else {
        acc_t unused;
        pos = pool_argmax<acc_t>(a.x + (n64 * a.xs.n + c64 * a.xs.c), static_cast<index_t>(a.xs.h),
                                 static_cast<index_t>(a.xs.w), g, oh, ow, unused);
      }
      if (pos == kh * g.kW + kw) acc += static_cast<acc_t>(grad[index_t(oh) * gsh + index_t(ow) * gsw]);
    }
  }
  a.dx[n64 * a.ds.n + c64 * a.ds.c +
       static_cast<int64_t>(h * static_cast<index_t>(a.ds.h) + w * static_cast<index_t>(a.ds.w))] =
      static_cast<T>(acc);
}

// ---------------------------------------------------------------------------------------------
// Planning.
// ---------------------------------------------------------------------------------------------

// Output rows per thread in the 3x3/2 forward: enough (column, segment) threads for about two
// waves of fully resident threads, each segment at least kPoolMinSegment rows (a segment's first
// window row costs about as much as two outputs).
inline int64_t pool_segment_rows(int64_t threads, int64_t OH, int sms, int forced_segments) {
  int64_t segments = forced_segments;
  if (segments <= 0) {
    const int64_t want = 2 * static_cast<int64_t>(sms) * 2048;
    segments = std::min<int64_t>((want + threads - 1) / threads, std::max<int64_t>(OH / kPoolMinSegment, 1));
  }
  segments = std::max<int64_t>(std::min<int64_t>(segments, std::min<int64_t>(OH, 65535)), 1);
  return (OH + segments - 1) / segments;
}

// One past the largest offset inside one (n, c) plane of a tensor with these strides.
inline int64_t pool_plane_extent(const Strides4& s, int64_t A, int64_t B) { return (A - 1) * s.h + (B - 1) * s.w + 1; }

template <typename Launcher>
struct MaxPoolCuda {
  template <typename T, typename acc_t>
  static void forward(const PoolFwdArgs<T>& a, const PlanOptions& opt) {
    const PoolGeom& g = a.g;
    if (pool_3x3s2_inside(g) && a.x_dense) {
      const int64_t threads = a.N * a.C * g.OW;
      const int64_t seg = pool_segment_rows(threads, g.OH, Launcher::multiprocessors(), opt.segments);
      // 32-bit: the thread index, and offsets within an image of x (NHWC) or a plane (NCHW).
      const int64_t per = a.channels_last ? a.C : 1;
      const int64_t extent = std::max(threads, (int64_t(g.H) + 4) * (g.W + 4) * per);
      const dim3 grid(grid_blocks(threads, kPoolThreads), static_cast<unsigned>((g.OH + seg - 1) / seg));
      dispatch_index(extent, opt.force_64bit, [&](auto index) {
        using index_t = decltype(index);
        auto launch = [&](auto layout, auto with_index) {
          constexpr PoolLayout L = decltype(layout)::value;
          Launcher::launch(max_pool3x3s2_forward<L, decltype(with_index)::value, T, acc_t, index_t>, grid,
                           kPoolThreads, a, pool_decode<L, index_t>(a.C, g.OW), threads, static_cast<index_t>(seg));
        };
        using Nchw = std::integral_constant<PoolLayout, PoolLayout::kNchw>;
        using Nhwc = std::integral_constant<PoolLayout, PoolLayout::kNhwc>;
        if (a.channels_last) {
          a.index ? launch(Nhwc{}, std::true_type{}) : launch(Nhwc{}, std::false_type{});
        } else {
          a.index ? launch(Nchw{}, std::true_type{}) : launch(Nchw{}, std::false_type{});
        }
      });
      return;
    }
    const int64_t numel = a.N * a.C * g.OH * g.OW;
    const int64_t extent = std::max({numel, pool_plane_extent(a.xs, g.H, g.W), pool_plane_extent(a.ys, g.OH, g.OW)});
    dispatch_index(extent, opt.force_64bit, [&](auto index) {
      using index_t = decltype(index);
      Launcher::launch(max_pool_forward_general<T, acc_t, index_t>, dim3(grid_blocks(numel, kPoolThreads)),
                       kPoolThreads, a, pool_flat<index_t>(a.channels_last, a.C, g.OH, g.OW), numel);
    });
  }

  template <typename T, typename acc_t>
  static void backward(const PoolBwdArgs<T>& a, const PlanOptions& opt) {
    const PoolGeom& g = a.g;
    if (a.index && pool_3x3s2(g) && a.dense) {
      const int64_t runs = (g.W + g.pW + kPoolRun - 1) / kPoolRun;
      const int64_t threads = a.N * a.C * g.H * runs;
      const int64_t per = a.channels_last ? a.C : 1;
      // (threads + 1: the NCHW kernel holds the thread count itself in index_t.)
      const int64_t extent = std::max(threads + 1, (int64_t(g.H) + 4) * (g.W + 4 + kPoolRun) * per);
      dispatch_index(extent, opt.force_64bit, [&](auto index) {
        using index_t = decltype(index);
        if (a.channels_last) {
          Launcher::launch(max_pool3x3s2_backward<PoolLayout::kNhwc, T, acc_t, index_t>,
                           dim3(grid_blocks(threads, kPoolThreads)), kPoolThreads, a,
                           pool_decode<PoolLayout::kNhwc, index_t>(a.C, runs), DivmodFor<index_t>(g.H), threads);
        } else {
          Launcher::launch(max_pool3x3s2_backward<PoolLayout::kNchw, T, acc_t, index_t>,
                           dim3(grid_blocks(threads, kPoolThreads)), kPoolThreads, a,
                           pool_decode<PoolLayout::kNchw, index_t>(a.C, runs), DivmodFor<index_t>(g.H), threads);
        }
      });
      return;
    }
    const int64_t numel = a.N * a.C * g.H * g.W;
    const int64_t extent = std::max({numel, pool_plane_extent(a.ds, g.H, g.W), pool_plane_extent(a.gs, g.OH, g.OW),
                                     pool_plane_extent(a.is, g.OH, g.OW), pool_plane_extent(a.xs, g.H, g.W)});
    dispatch_index(extent, opt.force_64bit, [&](auto index) {
      using index_t = decltype(index);
      Launcher::launch(max_pool_backward_general<T, acc_t, index_t>, dim3(grid_blocks(numel, kPoolThreads)),
                       kPoolThreads, a, pool_flat<index_t>(a.channels_last, a.C, g.H, g.W), numel);
    });
  }

};

}  // namespace alexnet_kernels
