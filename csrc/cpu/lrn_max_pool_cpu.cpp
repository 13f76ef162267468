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
// reductions are branch-free selects the compiler vectorizes. Backward: each
// input column walks its channels through lrn.h's backward, with the pooled gradient gathered on
// the fly from the winners' bytes of the (at most four) outputs covering it (PooledGradColumn).
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
    const int64_t C = a.C;
    at::parallel_for(0, a.N * g.H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t n = r / g.H;
        const int h = static_cast<int>(r % g.H);
        for (int w = 0; w < g.W; ++w) {
          const auto gcol = pooled_grad_column<T, acc_t>(a.grad + n * a.gs.n, a.index + n * a.gs.n,
                                                         pool_cover_3x3s2<int64_t>(h, w, g.OH, g.OW, a.gs.h, a.gs.w));
          const gptr<const T> xcol = a.x + (n * a.xs.n + h * a.xs.h + w * a.xs.w);
          const gptr<T> dxcol = a.dx + (n * a.ds.n + h * a.ds.h + w * a.ds.w);
          if (a.channels_last) {  // lrn's element path
            for (int64_t c = 0; c < C; ++c) {
              dxcol[c * a.ds.c] =
                  static_cast<T>(lrn_backward_at<5, acc_t>(xcol, a.xs.c, gcol, a.gs.c, C, c, int64_t(5), k));
            }
          } else {  // lrn's column path
            lrn_backward_column<5, false, acc_t>(xcol, a.xs.c, gcol, a.gs.c, dxcol, a.ds.c, C, int64_t(0), C, k);
          }
        }
      }
    });
  }

 private:
  static constexpr int kBandRows = 8;  // output rows per task: 17 input rows computed for 16 new

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
      const acc_t* __restrict__ b0 = b[0] + l * len;
      const acc_t* __restrict__ b1 = b[1] + l * len;
      const acc_t* __restrict__ b2 = b[2] + l * len;
      const int32_t* __restrict__ k0 = kw[0] + l * len;
      const int32_t* __restrict__ k1 = kw[1] + l * len;
      const int32_t* __restrict__ k2 = kw[2] + l * len;
      T* __restrict__ y = a.y + n * a.ys.n + oh * a.ys.h + l * step;
      uint8_t* __restrict__ index = a.index ? a.index + n * a.ys.n + oh * a.ys.h + l * step : nullptr;
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
