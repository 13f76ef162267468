// CPU kernels of alexnet_kernels::lrn and lrn_backward: lrn.h's column and element functions in
// an at::parallel_for over columns (one (n, spatial) position's C channels each). The column
// path (size 5, NCHW) walks a column with the window in registers; otherwise each channel's
// window is summed anew (channels_last columns are contiguous, so that stays in L1).
#include <torch/library.h>

#include "../lrn_host.h"
#include <ATen/Parallel.h>

namespace alexnet_kernels {

struct LrnCpu {
  static constexpr int64_t kGrain = 16;  // columns per task: each is C elements of work

  template <typename T, typename acc_t>
  static void forward(const LrnArgs<T>& a, const LrnCoef<acc_t>& k, const PlanOptions&) {
    const bool by_column = lrn_by_column(a);
    for_columns(a, [&](int64_t n, int64_t s) {
      const T* x = a.x + n * a.xs.n + s * a.xs.w;
      T* y = a.out + n * a.os.n + s * a.os.w;
      if (by_column) {
        lrn_forward_column<5, false, acc_t>(x, a.xs.c, y, a.os.c, a.C, int64_t(0), a.C, k);
      } else {
        for (int64_t c = 0; c < a.C; ++c) y[c * a.os.c] = static_cast<T>(lrn_forward_at<acc_t>(x, a.xs.c, a.C, c, a.size, k));
      }
    });
  }

  template <typename T, typename acc_t>
  static void backward(const LrnArgs<T>& a, const LrnCoef<acc_t>& k, const PlanOptions&) {
    const bool by_column = lrn_by_column(a);
    for_columns(a, [&](int64_t n, int64_t s) {
      const T* x = a.x + n * a.xs.n + s * a.xs.w;
      const T* g = a.g + n * a.gs.n + s * a.gs.w;
      T* dx = a.out + n * a.os.n + s * a.os.w;
      if (by_column) {
        lrn_backward_column<5, false, acc_t>(x, a.xs.c, g, a.gs.c, dx, a.os.c, a.C, int64_t(0), a.C, k);
      } else if (a.size == 5) {
        for (int64_t c = 0; c < a.C; ++c)
          dx[c * a.os.c] = static_cast<T>(lrn_backward_at<5, acc_t>(x, a.xs.c, g, a.gs.c, a.C, c, a.size, k));
      } else {
        for (int64_t c = 0; c < a.C; ++c)
          dx[c * a.os.c] = static_cast<T>(lrn_backward_at<0, acc_t>(x, a.xs.c, g, a.gs.c, a.C, c, a.size, k));
      }
    });
  }

 private:
  // f(n, s) for every column, in parallel; the column index is split once per column.
  template <typename T, typename F>
  static void for_columns(const LrnArgs<T>& a, const F& f) {
    at::parallel_for(0, a.N * a.S, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) f(i / a.S, i % a.S);
    });
  }
};

namespace {

at::Tensor lrn_cpu(const at::Tensor& x, int64_t size, double alpha, double beta, double k) {
  return lrn_forward<LrnCpu>(x, size, alpha, beta, k);
}

at::Tensor lrn_backward_cpu(const at::Tensor& grad, const at::Tensor& x, int64_t size, double alpha, double beta,
                            double k) {
  return lrn_backward<LrnCpu>(grad, x, size, alpha, beta, k);
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_kernels, CPU, m) {
  m.impl("lrn", &lrn_cpu);
  m.impl("lrn_backward", &lrn_backward_cpu);
}

}  // namespace alexnet_kernels
