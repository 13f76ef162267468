// CPU kernels of alexnet_kernels::lrn_max_pool2d and lrn_max_pool2d_backward: at::parallel_for
// over (image, band of rows), on lrn.h's column and element functions and max_pool.h's window
// functions, in the same paths as the separate ops (the column path where the LRN op takes it,
// NCHW or strided; the element path for channels_last), so that the results are theirs, bit for
// bit.
//
// Forward: a band of output rows keeps the LRN of three input rows (for every channel and column)
// in a buffer of T, each row computed once (the band's first row is the one row recomputed, by
// the band above too), and pools each output's window from it, rows then columns. Backward: each
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
    const int64_t C = a.C, W = g.W;
    const int64_t bands = (g.OH + kBandRows - 1) / kBandRows;
    at::parallel_for(0, a.N * bands, 1, [&](int64_t begin, int64_t end) {
      // Three input rows of LRN values, [C][W] on the column path, [W][C] on the element path.
      std::vector<T> buf(3 * C * W);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t n = task / bands;
        const int oh0 = static_cast<int>(task % bands) * kBandRows;
        const int oh1 = std::min<int>(oh0 + kBandRows, g.OH);
        const gptr<const T> xn = a.x + n * a.xs.n;
        T* rows[3] = {buf.data(), buf.data() + C * W, buf.data() + 2 * C * W};
        lrn_row<T, acc_t>(a, xn, 2 * oh0, rows[0], k);
        for (int oh = oh0; oh < oh1; ++oh) {
          lrn_row<T, acc_t>(a, xn, 2 * oh + 1, rows[1], k);
          lrn_row<T, acc_t>(a, xn, 2 * oh + 2, rows[2], k);
          pool_row<T, acc_t>(a, n, oh, rows);
          std::swap(rows[0], rows[2]);  // this window's bottom row is the next one's top
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

  // Output row oh of every channel from the LRN of its three input rows.
  template <typename T, typename acc_t>
  static void pool_row(const LrnPoolFwdArgs<T>& a, int64_t n, int oh, T* const (&rows)[3]) {
    const int64_t C = a.C, W = a.g.W, OW = a.g.OW;
    // A row's element (c, w) in the buffer.
    const int64_t bc = a.channels_last ? 1 : W, bw = a.channels_last ? C : 1;
    const int64_t yo = n * a.ys.n + oh * a.ys.h;
    auto pool = [&](int64_t c, int64_t ow) {
      acc_t b[3], best;
      int kw[3], pos;
      for (int r = 0; r < 3; ++r) {
        const T* p = rows[r] + c * bc + 2 * ow * bw;
        pool3_row(static_cast<acc_t>(p[0]), static_cast<acc_t>(p[bw]), static_cast<acc_t>(p[2 * bw]), b[r], kw[r]);
      }
      pool3_rows(b[0], kw[0], b[1], kw[1], b[2], kw[2], best, pos);
      const int64_t o = yo + c * a.ys.c + ow * a.ys.w;
      a.y[o] = static_cast<T>(best);
      if (a.index) a.index[o] = static_cast<uint8_t>(pos);
    };
    if (a.channels_last) {  // the output's memory order
      for (int64_t ow = 0; ow < OW; ++ow)
        for (int64_t c = 0; c < C; ++c) pool(c, ow);
    } else {
      for (int64_t c = 0; c < C; ++c)
        for (int64_t ow = 0; ow < OW; ++ow) pool(c, ow);
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
