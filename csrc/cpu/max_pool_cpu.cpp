// CPU kernels of alexnet_kernels::max_pool2d and max_pool2d_backward, parallel over planes
// (NCHW) or images (channels_last) with at::parallel_for, on max_pool.h's window functions.
//
// Forward, NCHW: AlexNet's 3x3/2 reduces each input row's windows once (over kw, vectorized
// along the row), then each output row from three row results (over kh), the second level
// reusing the bottom row of the window above; other windows scan each window (pool_argmax).
// Channels_last: every tap of a window updates a row of C running maxima (vectorized over c).
// Backward: 3x3/2 with the index gathers, each input from the outputs covering it (vectorized
// along the row, or over c); other windows zero each plane (or image) of dx and add each
// output's gradient at its winner. Either way every input's terms are added in increasing
// output order, torch's order of accumulation, so the sums are torch's, bit for bit. Half and
// bfloat16 accumulate in fp32 and round once, like the CUDA kernels.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>
#include <type_traits>
#include <vector>

#include "../max_pool_host.h"

namespace alexnet_kernels {

// v where c holds, else +0, by masking v's bits: the form of `c ? v : 0` that GCC vectorizes
// inside a sum (as a select it keeps a branch, not knowing that the add cannot trap).
template <typename T>
inline T masked(bool c, T v) {
  using U = std::conditional_t<sizeof(T) == 8, uint64_t, uint32_t>;
  static_assert(sizeof(T) == sizeof(U), "fp32 or fp64");
  U bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits &= U(0) - U(c);
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

struct MaxPoolCpu {
  template <typename T, typename acc_t>
  static void forward(const PoolFwdArgs<T>& a, const PlanOptions&) {
    if (a.channels_last) {
      forward_nhwc<T, acc_t>(a);
    } else if (small_3x3s2(a.g) && a.xs.w == 1) {
      forward_small_planes<T, acc_t>(a);
    } else {
      forward_planes<T, acc_t>(a);
    }
  }

  template <typename T, typename acc_t>
  static void backward(const PoolBwdArgs<T>& a, const PlanOptions&) {
    // Small NCHW planes scatter: the gather's rows are too short to vectorize, and it visits
    // every input where the scatter visits every output (a quarter as many at stride 2).
    const bool gather = a.index && pool_3x3s2(a.g) && a.dense && (a.channels_last || !small_3x3s2(a.g));
    if (a.channels_last) {
      gather ? gather_nhwc_3x3s2<T, acc_t>(a) : backward_nhwc<T, acc_t>(a);
    } else {
      gather ? gather_planes_3x3s2<T, acc_t>(a) : backward_planes<T, acc_t>(a);
    }
  }

 private:
  // Planes per task: about 16K outputs.
  static int64_t grain(int64_t per_plane) { return std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(per_plane, 1)); }

  // Planes whose output rows are shorter than a vector (torchvision's net at 64x64 pools 15x15,
  // 7x7 and 3x3 planes: rows of 7, 3 and 1): along the row the forward would run scalar, with a
  // branch on every tap.
  static constexpr int kSmallOW = 8;
  static bool small_3x3s2(const PoolGeom& g) { return pool_3x3s2_inside(g) && g.OW < kSmallOW; }

  // ---- forward, NCHW, small planes ----
  // kLanes planes at a time, transposed into an [H * W][kLanes] tile (14 KB at 15x15 in fp32:
  // L1), so that each of a window's 9 taps, scanned in torch's order, updates kLanes running
  // maxima at once: the channels_last forward's loop, over planes. x is read once and y and
  // the index written once; the tile stays in L1.
  static constexpr int kLanes = 16;

  // max_pool.h's pool_take on kLanes lanes. The simd pragma keeps it one vector loop: left to
  // itself GCC unrolls the 16 fixed trips first, into scalar compares and branches.
  template <typename acc_t>
  static void take_lanes(const acc_t* __restrict__ v, int tap, acc_t* __restrict__ best, int32_t* __restrict__ pos) {
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) {
      int p = pos[l];
      pool_take(v[l], tap, best[l], p);
      pos[l] = p;
    }
  }

  template <typename T, typename acc_t>
  static void forward_small_planes(const PoolFwdArgs<T>& a) {
    const PoolGeom& g = a.g;
    const int64_t planes = a.N * a.C, blocks = (planes + kLanes - 1) / kLanes;
    const int HW = g.H * g.W;
    at::parallel_for(0, blocks, grain(int64_t(g.OH) * g.OW * kLanes), [&](int64_t begin, int64_t end) {
      // In a last block of fewer planes the lanes past them hold earlier values: pooled, not stored.
      std::vector<acc_t> tile(int64_t(HW) * kLanes, acc_t(0));
      int64_t xo[kLanes], yo[kLanes];
      for (int64_t blk = begin; blk < end; ++blk) {
        const int64_t p0 = blk * kLanes;
        const int lanes = static_cast<int>(std::min<int64_t>(kLanes, planes - p0));
        for (int l = 0; l < lanes; ++l) {
          const int64_t n = (p0 + l) / a.C, c = (p0 + l) % a.C;
          xo[l] = n * a.xs.n + c * a.xs.c;
          yo[l] = n * a.ys.n + c * a.ys.c;
          const T* x = a.x + xo[l];
          for (int h = 0; h < g.H; ++h) {
            for (int w = 0; w < g.W; ++w) tile[(h * g.W + w) * kLanes + l] = static_cast<acc_t>(x[h * a.xs.h + w]);
          }
        }
        for (int oh = 0; oh < g.OH; ++oh) {
          for (int ow = 0; ow < g.OW; ++ow) {
            acc_t best[kLanes];
            int32_t pos[kLanes];
            const acc_t* t0 = tile.data() + (2 * oh * g.W + 2 * ow) * kLanes;
            // The scan from -inf takes the first tap whatever it is (-inf, NaN or any other).
            for (int l = 0; l < kLanes; ++l) {
              best[l] = t0[l];
              pos[l] = 0;
            }
            for (int tap = 1; tap < 9; ++tap) take_lanes(t0 + ((tap / 3) * g.W + tap % 3) * kLanes, tap, best, pos);
            const int64_t o = oh * a.ys.h + ow * a.ys.w;
            for (int l = 0; l < lanes; ++l) a.y[yo[l] + o] = static_cast<T>(best[l]);
            if (a.index) {
              for (int l = 0; l < lanes; ++l) a.index[yo[l] + o] = static_cast<uint8_t>(pos[l]);
            }
          }
        }
      }
    });
  }

  // ---- forward, NCHW ----
  template <typename T, typename acc_t>
  static void forward_planes(const PoolFwdArgs<T>& a) {
    const PoolGeom& g = a.g;
    const bool fast = pool_3x3s2_inside(g) && a.xs.w == 1;
    at::parallel_for(0, a.N * a.C, grain(int64_t(g.OH) * g.OW), [&](int64_t begin, int64_t end) {
      std::vector<acc_t> rb(fast ? 3 * g.OW : 0);
      std::vector<int32_t> rk(fast ? 3 * g.OW : 0);
      for (int64_t p = begin; p < end; ++p) {
        const int64_t n = p / a.C, c = p % a.C;
        const T* x = a.x + n * a.xs.n + c * a.xs.c;
        T* y = a.y + n * a.ys.n + c * a.ys.c;
        uint8_t* index = a.index ? a.index + n * a.ys.n + c * a.ys.c : nullptr;
        if (fast) {
          plane_3x3s2<T, acc_t>(x, a.xs.h, y, index, a.ys.h, g.OH, g.OW, rb.data(), rk.data());
          continue;
        }
        for (int oh = 0; oh < g.OH; ++oh) {
          for (int ow = 0; ow < g.OW; ++ow) {
            acc_t best;
            const int pos = pool_argmax<acc_t>(x, a.xs.h, a.xs.w, g, oh, ow, best);
            y[oh * a.ys.h + ow * a.ys.w] = static_cast<T>(best);
            if (index) index[oh * a.ys.h + ow * a.ys.w] = static_cast<uint8_t>(pos);
          }
        }
      }
    });
  }

  // The row results of input row r for every output column: rb[ow], rk[ow] over r[2ow .. 2ow+2].
  template <typename T, typename acc_t>
  static void row_3x3s2(const T* __restrict__ r, int OW, acc_t* __restrict__ rb, int32_t* __restrict__ rk) {
    for (int ow = 0; ow < OW; ++ow) {
      acc_t b;
      int k;
      pool3_row(static_cast<acc_t>(r[2 * ow]), static_cast<acc_t>(r[2 * ow + 1]), static_cast<acc_t>(r[2 * ow + 2]), b, k);
      rb[ow] = b;
      rk[ow] = k;
    }
  }

  // One plane at 3x3/2 with every window inside; x's rows are contiguous (sh apart), y's oh apart.
  template <typename T, typename acc_t>
  static void plane_3x3s2(const T* x, int64_t sh, T* y, uint8_t* index, int64_t yh, int OH, int OW, acc_t* rb,
                          int32_t* rk) {
    acc_t* b[3] = {rb, rb + OW, rb + 2 * OW};
    int32_t* k[3] = {rk, rk + OW, rk + 2 * OW};
    row_3x3s2(x, OW, b[0], k[0]);
    for (int oh = 0; oh < OH; ++oh) {
      row_3x3s2(x + (2 * oh + 1) * sh, OW, b[1], k[1]);
      row_3x3s2(x + (2 * oh + 2) * sh, OW, b[2], k[2]);
      pool3_line(b[0], k[0], b[1], k[1], b[2], k[2], OW, y + oh * yh, index ? index + oh * yh : nullptr);
      std::swap(b[0], b[2]);  // the bottom row of this window is the top row of the next
      std::swap(k[0], k[2]);
    }
  }

  // ---- forward, channels_last: per output pixel, a row of C running maxima ----
  template <typename T, typename acc_t>
  static void forward_nhwc(const PoolFwdArgs<T>& a) {
    const PoolGeom& g = a.g;
    const int64_t C = a.C;
    at::parallel_for(0, a.N * g.OH, grain(int64_t(g.OW) * C), [&](int64_t begin, int64_t end) {
      std::vector<acc_t> best(C);
      std::vector<int32_t> pos(C);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t n = r / g.OH;
        const int oh = static_cast<int>(r % g.OH);
        const T* x = a.x + n * a.xs.n;
        const int h0 = oh * g.sH - g.pH;
        for (int ow = 0; ow < g.OW; ++ow) {
          const int w0 = ow * g.sW - g.pW;
          const int kh0 = h0 < 0 ? (-h0 + g.dH - 1) / g.dH : 0, kw0 = w0 < 0 ? (-w0 + g.dW - 1) / g.dW : 0;
          std::fill(best.begin(), best.end(), -std::numeric_limits<acc_t>::infinity());
          std::fill(pos.begin(), pos.end(), kh0 * g.kW + kw0);
          for (int kh = kh0, h = h0 + kh0 * g.dH; kh < g.kH && h < g.H; ++kh, h += g.dH) {
            for (int kw = kw0, w = w0 + kw0 * g.dW; kw < g.kW && w < g.W; ++kw, w += g.dW) {
              const T* src = x + h * a.xs.h + w * a.xs.w;
              const int tap = kh * g.kW + kw;
              acc_t* __restrict__ bp = best.data();
              int32_t* __restrict__ pp = pos.data();
              for (int64_t c = 0; c < C; ++c) {
                int p = pp[c];
                pool_take(static_cast<acc_t>(src[c * a.xs.c]), tap, bp[c], p);
                pp[c] = p;
              }
            }
          }
          const int64_t o = n * a.ys.n + oh * a.ys.h + ow * a.ys.w;
          for (int64_t c = 0; c < C; ++c) a.y[o + c * a.ys.c] = static_cast<T>(best[c]);
          if (a.index) {
            for (int64_t c = 0; c < C; ++c) a.index[o + c * a.ys.c] = static_cast<uint8_t>(pos[c]);
          }
        }
      }
    });
  }

  // ---- backward, 3x3/2 from the index: gathers (dx written once, no zeroing) ----
  // NCHW: for each input row, the (<= 2) output rows covering it; along the row, padded column
  // tw = 2j is covered by outputs j - 1 (kw 2) and j (kw 0), tw = 2j + 1 by j (kw 1). The sums
  // start from 0 and take the terms in increasing output order, as the scatter would (absent
  // terms add +0, which changes no sum that starts from +0). Vectorized along j.
  template <typename T, typename acc_t>
  static void gather_planes_3x3s2(const PoolBwdArgs<T>& a) {
    const PoolGeom& g = a.g;
    const int J = (g.W + g.pW + 1) / 2;   // column pairs of the padded row
    const int P = std::max(J, g.OW) + 2;  // padded output row: entry j + 1 is ow = j
    at::parallel_for(0, a.N * a.C, grain(int64_t(g.H) * g.W), [&](int64_t begin, int64_t end) {
      // Two output rows of index and gradient, padded with "no output" (-1, 0) on both sides,
      // in slots by the row's parity (an input row needs at most two consecutive output rows),
      // and a third row of nothing for absent slots.
      std::vector<int32_t> idx(3 * int64_t(P), -1);
      std::vector<acc_t> gr(3 * int64_t(P), acc_t(0));
      std::vector<acc_t> even(J), odd(J);
      for (int64_t p = begin; p < end; ++p) {
        const int64_t n = p / a.C, c = p % a.C;
        const uint8_t* ip = a.index + n * a.is.n + c * a.is.c;
        const T* gp = a.grad + n * a.gs.n + c * a.gs.c;
        int tag[2] = {-1, -1};  // the output row in each slot
        auto slot = [&](int oh) -> int64_t {
          if (oh < 0) return 2 * int64_t(P);
          const int s = oh & 1;
          if (tag[s] != oh) {
            int32_t* __restrict__ ir = idx.data() + s * int64_t(P) + 1;
            acc_t* __restrict__ grr = gr.data() + s * int64_t(P) + 1;
            const uint8_t* __restrict__ is = ip + oh * a.is.h;
            const T* __restrict__ gs = gp + oh * a.gs.h;
            const int OW = g.OW;
            for (int ow = 0; ow < OW; ++ow) {  // (dense: unit strides along the row)
              ir[ow] = is[ow];
              grr[ow] = static_cast<acc_t>(gs[ow]);
            }
            tag[s] = oh;
          }
          return s * int64_t(P);
        };
        T* dx = a.dx + n * a.ds.n + c * a.ds.c;
        for (int h = 0; h < g.H; ++h) {
          int oh[2], kh[2];
          pool3x3s2_rows(h + g.pH, g.OH, oh, kh);
          const int64_t r0 = slot(oh[0]), r1 = slot(oh[1]);
          const int32_t* __restrict__ i0 = idx.data() + r0;
          const int32_t* __restrict__ i1 = idx.data() + r1;
          const acc_t* __restrict__ g0 = gr.data() + r0;
          const acc_t* __restrict__ g1 = gr.data() + r1;
          const int c0 = 3 * kh[0], c1 = 3 * kh[1];
          acc_t* __restrict__ ev = even.data();
          acc_t* __restrict__ od = odd.data();
          for (int j = 0; j < J; ++j) {
            const int32_t a0 = i0[j], a1 = i0[j + 1], b0 = i1[j], b1 = i1[j + 1];
            const acc_t ga0 = g0[j], ga1 = g0[j + 1], gb0 = g1[j], gb1 = g1[j + 1];
            acc_t e = 0, o = 0;
            e += masked(a0 == c0 + 2, ga0);
            e += masked(a1 == c0, ga1);
            o += masked(a1 == c0 + 1, ga1);
            e += masked(b0 == c1 + 2, gb0);
            e += masked(b1 == c1, gb1);
            o += masked(b1 == c1 + 1, gb1);
            ev[j] = e;
            od[j] = o;
          }
          T* row = dx + int64_t(h) * g.W;
          if (g.pW == 0) {
            const int half = g.W / 2;
            for (int j = 0; j < half; ++j) {
              row[2 * j] = static_cast<T>(ev[j]);
              row[2 * j + 1] = static_cast<T>(od[j]);
            }
            if (g.W % 2) row[g.W - 1] = static_cast<T>(ev[half]);
          } else {
            for (int w = 0; w < g.W; ++w) {
              const int tw = w + g.pW;
              row[w] = static_cast<T>((tw & 1) ? od[tw >> 1] : ev[tw >> 1]);
            }
          }
        }
      }
    });
  }

  // Channels_last: each input pixel from the <= 2 x 2 outputs covering it, vectorized over c.
  template <typename T, typename acc_t>
  static void gather_nhwc_3x3s2(const PoolBwdArgs<T>& a) {
    const PoolGeom& g = a.g;
    const int64_t C = a.C;
    at::parallel_for(0, a.N * g.H, grain(int64_t(g.W) * C), [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(C);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t n = r / g.H;
        const int h = static_cast<int>(r % g.H);
        int oh[2], kh[2];
        pool3x3s2_rows(h + g.pH, g.OH, oh, kh);
        for (int w = 0; w < g.W; ++w) {
          int ow[2], kw[2];
          pool3x3s2_rows(w + g.pW, g.OW, ow, kw);
          acc_t* __restrict__ ac = acc.data();
          std::fill(ac, ac + C, acc_t(0));
          for (int sh = 0; sh < 2; ++sh) {
            for (int sw = 0; sw < 2; ++sw) {
              if (oh[sh] < 0 || ow[sw] < 0) continue;
              const uint8_t* __restrict__ ip = a.index + n * a.is.n + oh[sh] * a.is.h + ow[sw] * a.is.w;
              const T* __restrict__ gp = a.grad + n * a.gs.n + oh[sh] * a.gs.h + ow[sw] * a.gs.w;
              const int code = kh[sh] * 3 + kw[sw];
              for (int64_t c = 0; c < C; ++c) ac[c] += masked(ip[c] == code, static_cast<acc_t>(gp[c]));
            }
          }
          T* out = a.dx + n * a.ds.n + h * a.ds.h + w * a.ds.w;
          for (int64_t c = 0; c < C; ++c) out[c] = static_cast<T>(ac[c]);
        }
      }
    });
  }

  // ---- backward, any window: scatters ----
  // The winner's offset in the input from output (oh, ow) and its position, or false if the
  // position is not a tap inside the image (an index not written by the forward).
  struct Taps {
    std::vector<int> dh, dw;  // tap position -> kh * dH, kw * dW
    explicit Taps(const PoolGeom& g) : dh(g.kH * g.kW), dw(g.kH * g.kW) {
      for (int kh = 0; kh < g.kH; ++kh)
        for (int kw = 0; kw < g.kW; ++kw) {
          dh[kh * g.kW + kw] = kh * g.dH;
          dw[kh * g.kW + kw] = kw * g.dW;
        }
    }
    bool at(const PoolGeom& g, int oh, int ow, int pos, int& h, int& w) const {
      if (pos < 0 || pos >= static_cast<int>(dh.size())) return false;
      h = oh * g.sH - g.pH + dh[pos];
      w = ow * g.sW - g.pW + dw[pos];
      return h >= 0 && h < g.H && w >= 0 && w < g.W;
    }
  };

  // Accumulation in place where T is the accumulation type, else in an fp32 buffer.
  template <typename T, typename acc_t>
  static constexpr bool kInPlace = std::is_same_v<T, acc_t>;

  template <typename T, typename acc_t>
  static int pos_of(const PoolBwdArgs<T>& a, int64_t n, int64_t c, int oh, int ow) {
    if (a.index) return a.index[n * a.is.n + c * a.is.c + oh * a.is.h + ow * a.is.w];
    acc_t unused;
    return pool_argmax<acc_t>(a.x + n * a.xs.n + c * a.xs.c, a.xs.h, a.xs.w, a.g, oh, ow, unused);
  }

  template <typename T, typename acc_t>
  static void backward_planes(const PoolBwdArgs<T>& a) {
    const PoolGeom& g = a.g;
    const Taps taps(g);
    const int64_t HW = int64_t(g.H) * g.W;
    at::parallel_for(0, a.N * a.C, grain(HW), [&](int64_t begin, int64_t end) {
      std::vector<acc_t> buf(kInPlace<T, acc_t> ? 0 : HW);
      for (int64_t p = begin; p < end; ++p) {
        const int64_t n = p / a.C, c = p % a.C;
        T* dx = a.dx + n * a.ds.n + c * a.ds.c;  // contiguous: rows of W
        acc_t* acc;
        if constexpr (kInPlace<T, acc_t>) {
          acc = dx;
        } else {
          acc = buf.data();
        }
        std::fill(acc, acc + HW, acc_t(0));
        const T* grad = a.grad + n * a.gs.n + c * a.gs.c;
        for (int oh = 0; oh < g.OH; ++oh) {
          for (int ow = 0; ow < g.OW; ++ow) {
            int h, w;
            if (taps.at(g, oh, ow, pos_of<T, acc_t>(a, n, c, oh, ow), h, w))
              acc[h * g.W + w] += static_cast<acc_t>(grad[oh * a.gs.h + ow * a.gs.w]);
          }
        }
        if constexpr (!kInPlace<T, acc_t>) {
          for (int64_t i = 0; i < HW; ++i) dx[i] = static_cast<T>(acc[i]);
        }
      }
    });
  }

  template <typename T, typename acc_t>
  static void backward_nhwc(const PoolBwdArgs<T>& a) {
    const PoolGeom& g = a.g;
    const Taps taps(g);
    const int64_t C = a.C, HWC = int64_t(g.H) * g.W * C;
    at::parallel_for(0, a.N, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> buf(kInPlace<T, acc_t> ? 0 : HWC);
      for (int64_t n = begin; n < end; ++n) {
        T* dx = a.dx + n * a.ds.n;  // channels_last: (h * W + w) * C + c
        acc_t* acc;
        if constexpr (kInPlace<T, acc_t>) {
          acc = dx;
        } else {
          acc = buf.data();
        }
        std::fill(acc, acc + HWC, acc_t(0));
        for (int oh = 0; oh < g.OH; ++oh) {
          for (int ow = 0; ow < g.OW; ++ow) {
            const T* grad = a.grad + n * a.gs.n + oh * a.gs.h + ow * a.gs.w;
            for (int64_t c = 0; c < C; ++c) {
              int h, w;
              if (taps.at(g, oh, ow, pos_of<T, acc_t>(a, n, c, oh, ow), h, w))
                acc[(int64_t(h) * g.W + w) * C + c] += static_cast<acc_t>(grad[c * a.gs.c]);
            }
          }
        }
        if constexpr (!kInPlace<T, acc_t>) {
          for (int64_t i = 0; i < HWC; ++i) dx[i] = static_cast<T>(acc[i]);
        }
      }
    });
  }
};

namespace {

std::tuple<at::Tensor, at::Tensor> max_pool2d_cpu(const at::Tensor& x, at::IntArrayRef kernel_size,
                                                  at::IntArrayRef stride, at::IntArrayRef padding,
                                                  at::IntArrayRef dilation, bool ceil_mode, bool with_index) {
  return max_pool2d_forward<MaxPoolCpu>(x, kernel_size, stride, padding, dilation, ceil_mode, with_index);
}

at::Tensor max_pool2d_backward_cpu(const at::Tensor& grad, const c10::optional<at::Tensor>& index,
                                   const c10::optional<at::Tensor>& x, at::IntArrayRef input_size,
                                   at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation, bool ceil_mode, bool channels_last) {
  return max_pool2d_backward<MaxPoolCpu>(grad, index, x, input_size, kernel_size, stride, padding, dilation,
                                         ceil_mode, channels_last);
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_kernels, CPU, m) {
  m.impl("max_pool2d", &max_pool2d_cpu);
  m.impl("max_pool2d_backward", &max_pool2d_backward_cpu);
}

}  // namespace alexnet_kernels
