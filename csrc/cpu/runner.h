// How conv's reference CPU kernels run their element functor (the Runner of csrc/conv.h): an
// at::parallel_for over the flat index, in chunks of Op::kCpuGrain elements.
#pragma once

#include <ATen/Parallel.h>

namespace alexnet_kernels {

struct CpuRunner {
  template <typename index_t, typename Op>
  static void run(int64_t numel, const Op& op) {
    at::parallel_for(0, numel, Op::kCpuGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) op(static_cast<index_t>(i));
    });
  }
};

}  // namespace alexnet_kernels
