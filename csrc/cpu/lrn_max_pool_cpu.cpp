// CPU kernels of alexnet_kernels::lrn_max_pool2d and lrn_max_pool2d_backward: at::parallel_for
// over (image, band of rows), on lrn.h's column and element functions and max_pool.h's window
// functions, in the same paths as the separate ops (the column path where the LRN op takes it,
// NCHW or strided; the element path for channels_last), so that the results are theirs, bit for
// bit.
//
// Forward: a band of output rows computes the LRN of each input row once (for every channel and
// column, into a row of T: the band's first row is the one recomputed, by the band above too),
// reduces each window row over kw along it, and each output row from three such reductions, the
// bottom one carried to the next output row (max_pool's CPU forward, on LRN values); the
// reductions are branch-free selects the compiler vectorizes. Backward: a task is (image, band of
// input rows); it first gathers the band's pooled gradient for every channel and column from the
// winners' bytes of the (at most four) outputs covering each input (max_pool's CPU gather,
// vectorized, each output row copied once per channel; rounded to T as max_pool2d's backward
// output is), then each input column walks its channels through lrn.h's backward on it.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../lrn_max_pool_host.h"

namespace alexnet_kernels {

struct LrnPoolCpu {
  template <typename T, typename acc_t>
  static void forward(const LrnPoolFwdArgs<T>& a, const LrnCoef<acc_t>& k, const PlanOptions&) {
    const LrnPoolGeom& g = a.g;
    const int64_t C = a.C, W = g.W, OW = g.OW;
    const int64_t bands = (g.OH + kBandRows - 1) / kBandRows;
    at::parallel_for(0, a.N * bands, 1, [&](int64_t begin, int64_t end) {
      // One input row of LRN values ([C][W] on the column path, [W][C] on the element path), and
      // the window-row reductions (best, kw) of three input rows, [C][OW] or [OW][C].
      std::vector<T> lrn(C * W);
      std::vector<acc_t> rb(3 * C * OW);
      std::vector<int32_t> rk(3 * C * OW);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t n = task / bands;
        const int oh0 = static_cast<int>(task % bands) * kBandRows;
        const int oh1 = std::min<int>(oh0 + kBandRows, g.OH);
        const gptr<const T> xn = a.x + n * a.xs.n;
        acc_t* b[3] = {rb.data(), rb.data() + C * OW, rb.data() + 2 * C * OW};
        int32_t* kw[3] = {rk.data(), rk.data() + C * OW, rk.data() + 2 * C * OW};
        auto row = [&](int h, int slot) {
          lrn_row<T, acc_t>(a, xn, h, lrn.data(), k);
          reduce_row<T, acc_t>(a, lrn.data(), b[slot], kw[slot]);
        };
        row(2 * oh0, 0);
        for (int oh = oh0; oh < oh1; ++oh) {
          row(2 * oh + 1, 1);
          row(2 * oh + 2, 2);
          pool_row<T, acc_t>(a, n, oh, b, kw);
          std::swap(b[0], b[2]);  // this window's bottom row is the next one's top
          std::swap(kw[0], kw[2]);
        }
      }
    });
  }

  template <typename T, typename acc_t>
  static void backward(const LrnPoolBwdArgs<T>& a, const LrnCoef<acc_t>& k, const PlanOptions&) {
    const LrnPoolGeom& g = a.g;
    const int64_t C = a.C, W = g.W;
    // (The host makes the gradient and the index dense in the output's layout: unit strides
    // along ow for NCHW, along c for channels_last.)
    TORCH_INTERNAL_ASSERT(a.channels_last ? a.gs.c == 1 : a.gs.w == 1);
    const int64_t bands = (g.H + kBwdRows - 1) / kBwdRows;
    at::parallel_for(0, a.N * bands, 1, [&](int64_t begin, int64_t end) {
      // The pooled gradient of a band of input rows, [row][C][W] (NCHW) or [row][W][C]
      // (channels_last), rounded to T as max_pool2d's backward writes it, and the gather's
      // scratch rows.
      std::vector<T> pg(kBwdRows * C * W);
      GatherRows<acc_t> rows(g, C, a.channels_last);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t n = task / bands;
        const int h0 = static_cast<int>(task % bands) * kBwdRows;
        const int h1 = std::min<int>(h0 + kBwdRows, g.H);
        if (a.channels_last) {
          for (int h = h0; h < h1; ++h) pooled_row_nhwc<T, acc_t>(a, n, h, pg.data() + (h - h0) * C * W, rows);
        } else {
          pooled_rows_nchw<T, acc_t>(a, n, h0, h1, pg.data(), rows);
        }
        for (int h = h0; h < h1; ++h) {
          const T* prow = pg.data() + (h - h0) * C * W;
          for (int64_t w = 0; w < W; ++w) {
            const gptr<const T> xcol = a.x + (n * a.xs.n + h * a.xs.h + w * a.xs.w);
            const gptr<T> dxcol = a.dx + (n * a.ds.n + h * a.ds.h + w * a.ds.w);
            if (a.channels_last) {  // lrn's element path
              const T* gcol = prow + w * C;
              for (int64_t c = 0; c < C; ++c) {
                dxcol[c * a.ds.c] =
                    static_cast<T>(lrn_backward_at<5, acc_t>(xcol, a.xs.c, gcol, int64_t(1), C, c, int64_t(5), k));
              }
            } else {  // lrn's column path
              const T* gcol = prow + w;
              lrn_backward_column<5, false, acc_t>(xcol, a.xs.c, gcol, W, dxcol, a.ds.c, C, int64_t(0), C, k);
            }
          }
        }
      }
    });
  }

 private:
  // Scratch of the pooled-gradient gather: NCHW, one channel's two covering output rows of index
  // and gradient, padded with "no output" (-1, 0) on both sides (entry j + 1 is ow = j) and a
  // third row of nothing for an absent one, and the sums of the even and odd input columns;
  // channels_last, the sums over the channels of one input.
  template <typename acc_t>
  struct GatherRows {
    int P, J;
    std::vector<int32_t> idx;
    std::vector<acc_t> grad, even, odd, acc;
    GatherRows(const LrnPoolGeom& g, int64_t C, bool channels_last)
        : P(g.OW + 2), J((g.W + 1) / 2), idx(channels_last ? 0 : 3 * P, -1), grad(channels_last ? 0 : 3 * P, acc_t(0)),
          even(channels_last ? 0 : J), odd(channels_last ? 0 : J), acc(channels_last ? C : 0) {}
  };

  template <typename acc_t>
  static acc_t masked(bool c, acc_t v) {
    return c ? v : acc_t(0);
  }

  // The pooled gradient of input rows [h0, h1) (NCHW), channel by channel: max_pool's CPU gather
  // (input column 2 j is covered by outputs j - 1, kw 2, and j, kw 0; column 2 j + 1 by j, kw 1),
  // each output row copied once into the slot of its parity, the sums from 0 in increasing output
  // order (max_pool2d's backward and PooledGradColumn's order; an absent term adds +0, which
  // changes no such sum), vectorized along j.
  template <typename T, typename acc_t>
  static void pooled_rows_nchw(const LrnPoolBwdArgs<T>& a, int64_t n, int h0, int h1, T* pg, GatherRows<acc_t>& s) {
    const LrnPoolGeom& g = a.g;
    const int64_t C = a.C, W = g.W;
    const int OW = g.OW, P = s.P, J = s.J;
    for (int64_t c = 0; c < C; ++c) {
      const int64_t plane = n * a.gs.n + c * a.gs.c;
      int tag[2] = {-1, -1};  // the output row in each slot
      auto slot = [&](int oh) -> int64_t {
        if (oh < 0) return 2 * int64_t(P);
        const int t = oh & 1;
        if (tag[t] != oh) {
          int32_t* __restrict__ ir = s.idx.data() + t * int64_t(P) + 1;
          acc_t* __restrict__ gr = s.grad.data() + t * int64_t(P) + 1;
          const uint8_t* __restrict__ is = a.index + plane + oh * a.gs.h;
          const T* __restrict__ gs = a.grad + plane + oh * a.gs.h;
          for (int ow = 0; ow < OW; ++ow) {
            ir[ow] = is[ow];
            gr[ow] = static_cast<acc_t>(gs[ow]);
          }
          tag[t] = oh;
        }
        return t * int64_t(P);
      };
      for (int h = h0; h < h1; ++h) {
        int oh[2], kh[2];
        pool3x3s2_rows(h, g.OH, oh, kh);
        const int64_t r0 = slot(oh[0]), r1 = slot(oh[1]);
        const int32_t* __restrict__ i0 = s.idx.data() + r0;
        const int32_t* __restrict__ i1 = s.idx.data() + r1;
        const acc_t* __restrict__ g0 = s.grad.data() + r0;
        const acc_t* __restrict__ g1 = s.grad.data() + r1;
        const int c0 = 3 * kh[0], c1 = 3 * kh[1];
        acc_t* __restrict__ ev = s.even.data();
        acc_t* __restrict__ od = s.odd.data();
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
        T* __restrict__ row = pg + ((h - h0) * C + c) * W;
        const int64_t half = W / 2;
        for (int64_t j = 0; j < half; ++j) {
          row[2 * j] = static_cast<T>(ev[j]);
          row[2 * j + 1] = static_cast<T>(od[j]);
        }
        if (W % 2) row[W - 1] = static_cast<T>(ev[half]);
      }
    }
  }

  // channels_last: each input (h, w) from the (at most 2 x 2) outputs covering it, in increasing
  // output order, vectorized over c.
  template <typename T, typename acc_t>
  static void pooled_row_nhwc(const LrnPoolBwdArgs<T>& a, int64_t n, int h, T* pg, GatherRows<acc_t>& s) {
    const LrnPoolGeom& g = a.g;
    const int64_t C = a.C;
    int oh[2], kh[2];
    pool3x3s2_rows(h, g.OH, oh, kh);
    for (int w = 0; w < g.W; ++w) {
      const int j = w >> 1;
      acc_t* __restrict__ acc = s.acc.data();
      for (int64_t c = 0; c < C; ++c) acc[c] = 0;
      for (int t = 0; t < 2; ++t) {
        if (oh[t] < 0) continue;
        // The outputs along the row covering w, in increasing ow, and w's kw in each.
        int ow[2], kw[2], m = 0;
        if (w & 1) {
          if (j < g.OW) ow[m] = j, kw[m++] = 1;
        } else {
          if (j >= 1 && j - 1 < g.OW) ow[m] = j - 1, kw[m++] = 2;
          if (j < g.OW) ow[m] = j, kw[m++] = 0;
        }
        for (int u = 0; u < m; ++u) {
          const int64_t o = n * a.gs.n + oh[t] * a.gs.h + ow[u] * a.gs.w;
          const uint8_t* __restrict__ is = a.index + o;
          const T* __restrict__ gs = a.grad + o;
          const int32_t code = 3 * kh[t] + kw[u];
          for (int64_t c = 0; c < C; ++c) acc[c] += masked(int32_t(is[c]) == code, static_cast<acc_t>(gs[c]));
        }
      }
      T* __restrict__ out = pg + w * C;
      for (int64_t c = 0; c < C; ++c) out[c] = static_cast<T>(acc[c]);
    }
  }

  static constexpr int kBandRows = 8;  // output rows per task: 17 input rows computed for 16 new
  static constexpr int kBwdRows = 8;   // input rows per backward task

  // LRN of input row h of image xn, for every channel and column, into buf.
  template <typename T, typename acc_t>
  static void lrn_row(const LrnPoolFwdArgs<T>& a, gptr<const T> xn, int h, T* buf, const LrnCoef<acc_t>& k) {
    const int64_t C = a.C, W = a.g.W;
    for (int64_t w = 0; w < W; ++w) {
      const gptr<const T> xcol = xn + (h * a.xs.h + w * a.xs.w);
      if (a.channels_last) {  // lrn's element path, into [W][C]
        T* out = buf + w * C;
        for (int64_t c = 0; c < C; ++c) out[c] = static_cast<T>(lrn_forward_at<acc_t>(xcol, a.xs.c, C, c, int64_t(5), k));
      } else {  // lrn's column path, into [C][W]
        lrn_forward_column<5, false, acc_t>(xcol, a.xs.c, gptr<T>(buf + w), W, C, int64_t(0), C, k);
      }
    }
  }

  // Each window row's reduction over kw (max_pool.h's pool3_row) along an input row of LRN values,
  // vectorized along the row (NCHW: the stride-2 loads deinterleave) or over c (channels_last).
  template <typename T, typename acc_t>
  static void reduce_row(const LrnPoolFwdArgs<T>& a, const T* __restrict__ r, acc_t* __restrict__ b,
                         int32_t* __restrict__ kw) {
    const int64_t C = a.C, W = a.g.W, OW = a.g.OW;
    if (a.channels_last) {
      for (int64_t ow = 0; ow < OW; ++ow) {
        const T* p = r + 2 * ow * C;
        for (int64_t c = 0; c < C; ++c) {
          acc_t best;
          int k;
          pool3_row(static_cast<acc_t>(p[c]), static_cast<acc_t>(p[C + c]), static_cast<acc_t>(p[2 * C + c]), best, k);
          b[ow * C + c] = best;
          kw[ow * C + c] = k;
        }
      }
    } else {
      for (int64_t c = 0; c < C; ++c) {
        const T* p = r + c * W;
        for (int64_t ow = 0; ow < OW; ++ow) {
          acc_t best;
          int k;
          pool3_row(static_cast<acc_t>(p[2 * ow]), static_cast<acc_t>(p[2 * ow + 1]), static_cast<acc_t>(p[2 * ow + 2]),
                    best, k);
          b[c * OW + ow] = best;
          kw[c * OW + ow] = k;
        }
      }
    }
  }

  // Output row oh of every channel from its three window rows' reductions (pool3_rows), written
  // in the output's memory order (y is dense: unit stride along ow, or along c).
  template <typename T, typename acc_t>
  static void pool_row(const LrnPoolFwdArgs<T>& a, int64_t n, int oh, acc_t* const (&b)[3], int32_t* const (&kw)[3]) {
    const int64_t C = a.C, OW = a.g.OW;
    const int64_t lines = a.channels_last ? OW : C, len = a.channels_last ? C : OW;
    const int64_t step = a.channels_last ? a.ys.w : a.ys.c;
    for (int64_t l = 0; l < lines; ++l) {
      const int64_t at = n * a.ys.n + oh * a.ys.h + l * step;
      pool3_line(b[0] + l * len, kw[0] + l * len, b[1] + l * len, kw[1] + l * len, b[2] + l * len, kw[2] + l * len,
                 len, a.y + at, a.index ? a.index + at : nullptr);
    }
  }
};

namespace {

std::tuple<at::Tensor, at::Tensor> lrn_max_pool2d_cpu(const at::Tensor& x, int64_t size, double alpha, double beta,
                                                      double k, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                                      bool with_index) {
  return lrn_max_pool2d_forward<LrnPoolCpu>(x, size, alpha, beta, k, kernel_size, stride, with_index);
}

at::Tensor lrn_max_pool2d_backward_cpu(const at::Tensor& grad, const at::Tensor& index, const at::Tensor& x,
                                       int64_t size, double alpha, double beta, double k,
                                       at::IntArrayRef kernel_size, at::IntArrayRef stride) {
  return lrn_max_pool2d_backward<LrnPoolCpu>(grad, index, x, size, alpha, beta, k, kernel_size, stride);
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_kernels, CPU, m) {
  m.impl("lrn_max_pool2d", &lrn_max_pool2d_cpu);
  m.impl("lrn_max_pool2d_backward", &lrn_max_pool2d_backward_cpu);
}

}  // namespace alexnet_kernels
