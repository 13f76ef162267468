// A thread's place in a 1-D grid, for kernels that run under CUDA and under the emulator
// (tests/cuda_emu/cuda_emu.h): no CUDA runtime headers here, only the built-in indices.
#pragma once

#include <cstdint>

#include "../common.h"

namespace alexnet_kernels {

// This thread's index along x over [0, n), as index_t; false past the end. In 32 bits the sum
// is formed unsigned, so the rounded-up grid's last threads cannot overflow it.
template <typename index_t>
__device__ __forceinline__ bool grid_thread(int64_t n, index_t& i) {
  if constexpr (sizeof(index_t) == 4) {
    const uint32_t u = blockIdx.x * blockDim.x + threadIdx.x;
    i = static_cast<index_t>(u);
    return u < static_cast<uint64_t>(n);
  } else {
    i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    return i < n;
  }
}

// Blocks of `threads` covering n (n > 0).
inline unsigned grid_blocks(int64_t n, int threads) {
  const int64_t b = (n + threads - 1) / threads;
  TORCH_CHECK(b < (int64_t(1) << 31), "alexnet_kernels: ", n, " threads do not fit a 1-D grid");
  return static_cast<unsigned>(b);
}

}  // namespace alexnet_kernels
