// The CUDA kernels of alexnet_kernels::lrn and lrn_backward and their launch planning, a
// template on the Launcher: lrn_cuda.cu launches them on the current CUDA stream
// (CudaLauncher), tests/cuda_emu/lrn_emu.cpp runs the very same kernels and planning on the CPU
// (emu::Launcher). The math is csrc/lrn.h's; the tiling, floor and instruction counts are in
// docs/lrn.md.
//
// Column path (size 5, NCHW order): one thread per (column, channel segment); lrn_*_column walk
// the segment. Neighbouring threads take neighbouring columns, so each load and store of a warp
// is 32 consecutive elements. A column is split into segments where the columns alone would
// not fill the device several times over (conv2's LRN at [128, 256, 27, 27] has 93,312 columns,
// 0.35 of the threads an H200 holds), at the cost of re-reading SIZE - 1 channels of x (and in
// backward of g, and SIZE - 1 denominators) at each segment's start.
//
// Element path (other sizes, channels_last, 32-bit or 64-bit flat index): one thread per
// output element in the output's memory order, its window re-read from L1/L2.
#pragma once

#include <algorithm>

#include "../lrn_host.h"
#include "grid.cuh"

namespace alexnet_kernels {

constexpr int kLrnThreads = 256;
// Resident threads per SM, which the kernels' register limits (__launch_bounds__) guarantee and
// the planning counts on: 1536 (at most 40 registers) forward, 1024 (64) backward. Eight loads
// in flight per thread (sixteen in backward) keep 48 KB in flight per SM, more than an H200's
// bandwidth x latency per SM (about 20 KB); see docs/lrn.md.
constexpr int kLrnResidentForward = 1536, kLrnResidentBackward = 1024;
constexpr int kLrnMinSegment = 32;  // channels: shorter segments re-read more than they gain

constexpr int kLrnForward = -1;  // PASS of the element kernel: forward, else backward's SIZE (0: any)

// (fp64 keeps twice the registers per value, and 64-bit offsets more: those variants, off the
// AlexNet path, get fewer blocks rather than spill.)
template <int SIZE, bool kFast, typename T, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kLrnThreads, sizeof(acc_t) == 8 ? 2 : kLrnResidentForward / kLrnThreads)
    lrn_forward_columns(LrnArgs<T> a, LrnCoef<acc_t> k,
                                                                   DivmodFor<index_t> by_s, index_t segment) {
  index_t i;
  if (!grid_thread(a.N * a.S, i)) return;
  index_t n, s;
  by_s.divmod(i, n, s);
  const index_t C = static_cast<index_t>(a.C);
  const index_t c0 = static_cast<index_t>(blockIdx.y) * segment, c1 = ak_min<index_t>(c0 + segment, C);
  const int64_t n64 = n, s64 = s;
  lrn_forward_column<SIZE, kFast, acc_t>(a.x + (n64 * a.xs.n + s64 * a.xs.w), static_cast<index_t>(a.xs.c),
                                  a.out + (n64 * a.os.n + s64 * a.os.w), static_cast<index_t>(a.os.c), C, c0, c1,
                                  k);
}

template <int SIZE, bool kFast, typename T, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kLrnThreads, sizeof(acc_t) == 8 ? 2
                                                : sizeof(index_t) == 8 ? 3
                                                                       : kLrnResidentBackward / kLrnThreads)
    lrn_backward_columns(LrnArgs<T> a, LrnCoef<acc_t> k, DivmodFor<index_t> by_s, index_t segment) {
  index_t i;
  if (!grid_thread(a.N * a.S, i)) return;
  index_t n, s;
  by_s.divmod(i, n, s);
  const index_t C = static_cast<index_t>(a.C);
  const index_t c0 = static_cast<index_t>(blockIdx.y) * segment, c1 = ak_min<index_t>(c0 + segment, C);
  const int64_t n64 = n, s64 = s;
  lrn_backward_column<SIZE, kFast, acc_t>(a.x + (n64 * a.xs.n + s64 * a.xs.w), static_cast<index_t>(a.xs.c),
                                   a.g + (n64 * a.gs.n + s64 * a.gs.w), static_cast<index_t>(a.gs.c),
                                   a.out + (n64 * a.os.n + s64 * a.os.w), static_cast<index_t>(a.os.c), C, c0, c1,
                                   k);
}

// PASS: kLrnForward, or backward with SIZE = PASS (0: the size at run time).
template <int PASS, typename T, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kLrnThreads) lrn_elements(LrnArgs<T> a, LrnCoef<acc_t> k, DivmodFor<index_t> inner,
                                                            DivmodFor<index_t> mid) {
  index_t i;
  if (!grid_thread(a.N * a.C * a.S, i)) return;
  index_t rest, r0, n, r1;
  inner.divmod(i, rest, r0);
  mid.divmod(rest, n, r1);
  const index_t c = a.channels_last ? r0 : r1, s = a.channels_last ? r1 : r0;
  const index_t C = static_cast<index_t>(a.C), size = static_cast<index_t>(a.size);
  const gptr<const T> xcol = a.x + (n * static_cast<index_t>(a.xs.n) + s * static_cast<index_t>(a.xs.w));
  const index_t o = n * static_cast<index_t>(a.os.n) + c * static_cast<index_t>(a.os.c) + s * static_cast<index_t>(a.os.w);
  if constexpr (PASS == kLrnForward) {
    a.out[o] = static_cast<T>(lrn_forward_at<acc_t>(xcol, static_cast<index_t>(a.xs.c), C, c, size, k));
  } else {
    const gptr<const T> gcol = a.g + (n * static_cast<index_t>(a.gs.n) + s * static_cast<index_t>(a.gs.w));
    a.out[o] = static_cast<T>(lrn_backward_at<PASS, acc_t>(xcol, static_cast<index_t>(a.xs.c), gcol,
                                                           static_cast<index_t>(a.gs.c), C, c, size, k));
  }
}

// Channel segments per column: enough (column, segment) threads for about two waves of
// `resident` threads per SM (a partial last wave then idles a smaller share of the device),
// each segment a whole number of kLrnUnroll groups and at least kLrnMinSegment channels, as a
// segment's start re-reads SIZE - 1 channels. Returns the segment length.
inline int64_t lrn_segment_length(int64_t columns, int64_t C, int sms, int resident, int forced_segments) {
  int64_t segments = forced_segments;
  if (segments <= 0) {
    const int64_t want = 2 * static_cast<int64_t>(sms) * resident;
    segments = std::min<int64_t>((want + columns - 1) / columns, std::max<int64_t>(C / kLrnMinSegment, 1));
  }
  segments = std::max<int64_t>(std::min<int64_t>(segments, 65535), 1);
  const int64_t len = (C + segments - 1) / segments;
  return forced_segments > 0 ? len : (len + kLrnUnroll - 1) / kLrnUnroll * kLrnUnroll;
}

template <typename Launcher>
struct LrnCuda {
  template <typename T, typename acc_t>
  static void forward(const LrnArgs<T>& a, const LrnCoef<acc_t>& k, const PlanOptions& opt) {
    if (lrn_by_column(a)) {
      columns<true>(a, k, opt);
    } else {
      elements<kLrnForward>(a, k, opt);
    }
  }

  template <typename T, typename acc_t>
  static void backward(const LrnArgs<T>& a, const LrnCoef<acc_t>& k, const PlanOptions& opt) {
    if (lrn_by_column(a)) {
      columns<false>(a, k, opt);
    } else if (a.size == 5) {
      elements<5>(a, k, opt);
    } else {
      elements<0>(a, k, opt);
    }
  }

 private:
  template <bool kForward, typename T, typename acc_t>
  static void columns(const LrnArgs<T>& a, const LrnCoef<acc_t>& k, const PlanOptions& opt) {
    const int64_t cols = a.N * a.S;
    const int64_t seg = lrn_segment_length(cols, a.C, Launcher::multiprocessors(),
                                           kForward ? kLrnResidentForward : kLrnResidentBackward, opt.segments);
    const dim3 grid(grid_blocks(cols, kLrnThreads), static_cast<unsigned>((a.C + seg - 1) / seg));
    // 32-bit: column indices, and channel offsets up to a few steps past the last channel.
    const int64_t stride = std::max({a.xs.c, a.gs.c, a.os.c});
    const int64_t extent = std::max(cols, (a.C + 2 * kLrnUnroll) * stride);
    dispatch_index(extent, opt.force_64bit, [&](auto index) {
      using index_t = decltype(index);
      const DivmodFor<index_t> by_s(a.S);
      auto launch = [&](auto fast) {
        constexpr bool kFast = decltype(fast)::value;
        if constexpr (kForward) {
          Launcher::launch(lrn_forward_columns<5, kFast, T, acc_t, index_t>, grid, kLrnThreads, a, k, by_s,
                           static_cast<index_t>(seg));
        } else {
          Launcher::launch(lrn_backward_columns<5, kFast, T, acc_t, index_t>, grid, kLrnThreads, a, k, by_s,
                           static_cast<index_t>(seg));
        }
      };
      // The .ftz variant only where it is exact (lrn_fast_powers) and the arithmetic is fp32.
      if (std::is_same_v<acc_t, float> && k.fast_powers) {
        launch(std::integral_constant<bool, std::is_same_v<acc_t, float>>{});
      } else {
        launch(std::false_type{});
      }
    });
  }

  template <int PASS, typename T, typename acc_t>
  static void elements(const LrnArgs<T>& a, const LrnCoef<acc_t>& k, const PlanOptions& opt) {
    const int64_t numel = a.N * a.C * a.S;
    // 32-bit: the flat index and every offset into x, g and the output.
    auto last = [](const Strides4& s, int64_t N, int64_t C, int64_t S) {
      return (N - 1) * s.n + (C - 1) * s.c + (S - 1) * s.w + 1;
    };
    const int64_t extent =
        std::max({numel, last(a.xs, a.N, a.C, a.S), last(a.gs, a.N, a.C, a.S), last(a.os, a.N, a.C, a.S)});
    dispatch_index(extent, opt.force_64bit, [&](auto index) {
      using index_t = decltype(index);
      const DivmodFor<index_t> inner(a.channels_last ? a.C : a.S), mid(a.channels_last ? a.S : a.C);
      Launcher::launch(lrn_elements<PASS, T, acc_t, index_t>, dim3(grid_blocks(numel, kLrnThreads)), kLrnThreads, a,
                       k, inner, mid);
    });
  }
};

}  // namespace alexnet_kernels
