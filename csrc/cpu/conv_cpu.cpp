// CPU kernels of alexnet_kernels::conv2d and conv2d_backward: the direct element functions of
// conv.h in an at::parallel_for. Correct and parallel, not fast.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../conv.h"

namespace alexnet_kernels {
namespace {

struct CpuRunner {
  template <typename index_t, typename Op>
  static void run(int64_t numel, const Op& op) {
    // Each element is a reduction of hundreds (forward) to hundreds of thousands (weight
    // gradient) of products: small grains keep both cores busy on small outputs.
    at::parallel_for(0, numel, 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) op(static_cast<index_t>(i));
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_kernels, CPU, m) {
  m.impl("conv2d", &conv2d_forward<CpuRunner>);
  m.impl("conv2d_backward", &conv2d_backward<CpuRunner>);
}

}  // namespace alexnet_kernels
