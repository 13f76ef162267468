// Launching CUDA kernels. A kernel's host-side planning is a template on its Launcher:
// CudaLauncher below launches on the current CUDA stream; tests/cuda_emu/cuda_emu.h's
// emu::Launcher runs the same kernels on the CPU. Both have
//   launch(kernel, dim3 grid, int threads, args...)   and   multiprocessors().
// Also here: a grid-stride loop over a flat index that calls a functor wrapping an element
// function (CudaRunner, for conv's reference kernels: the same function its CPU kernel runs), and
// cuda_device_of, the device an entry point guards.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <ATen/core/Tensor.h>
#include <initializer_list>

#include "../common.h"

namespace alexnet_kernels {

constexpr int kThreads = 256;

// The loop counter is 64-bit even when index_t is 32-bit: i + stride may pass 2^31 on the way
// out. Only the element's own index math (the expensive part) is narrowed.
template <typename index_t, typename Op>
__global__ void __launch_bounds__(kThreads) flat_kernel(int64_t numel, Op op) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < numel; i += stride) {
    op(static_cast<index_t>(i));
  }
}

// Enough blocks to cover numel once, capped so that the grid-stride loop takes over.
template <typename index_t, typename Op>
void launch_flat(int64_t numel, const Op& op) {
  if (numel == 0) return;
  const int64_t blocks = std::min<int64_t>((numel + kThreads - 1) / kThreads, int64_t(1) << 22);
  flat_kernel<index_t><<<static_cast<unsigned>(blocks), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      numel, op);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The GPU a CUDA entry point works on: that of its first CUDA tensor (the dispatcher chose the
// CUDA kernel because one of them is). Guarding on a fixed argument instead would make a CPU
// tensor there fail in the guard with a generic message, before the op's own checks name it.
inline c10::Device cuda_device_of(std::initializer_list<const at::Tensor*> tensors) {
  const at::Tensor* first = nullptr;
  for (const at::Tensor* t : tensors) {
    if (t != nullptr && t->defined() && t->is_cuda()) {
      first = t;
      break;
    }
  }
  TORCH_CHECK(first != nullptr, "alexnet_kernels: a CUDA kernel was called without a CUDA tensor");
  return first->device();
}

struct CudaLauncher {
  template <typename... P, typename... A>
  static void launch(void (*kernel)(P...), dim3 grid, int threads, A&&... args) {
    kernel<<<grid, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(std::forward<A>(args)...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  static int multiprocessors() {
    int sms = 0;  // (ATen's device-properties header pulls in cuSPARSE, which a bare toolkit lacks)
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
    return sms;
  }
};

// How conv's reference CUDA kernels run its element functor (the Runner of csrc/conv.h).
struct CudaRunner {
  template <typename index_t, typename Op>
  static void run(int64_t numel, const Op& op) {
    launch_flat<index_t>(numel, op);
  }
};

}  // namespace alexnet_kernels
