// The emulator's own test kernels (tests/test_cuda_emu.py): for each sanitizer a kernel with a
// planted bug that it must catch and a correct one that it must pass; kernels with known counts
// (coalescing, bank conflicts, mma); the warp built-ins against their definitions. Written with
// csrc/mem.h's names, as the project's kernels are, except where a raw form is the point.
#include "cuda_emu.h"  // first

#include <torch/extension.h>

#include "mem.h"

using alexnet_kernels::ak_load;
using alexnet_kernels::ak_store;
using alexnet_kernels::gptr;
using alexnet_kernels::sptr;

namespace {

constexpr int kThreads = 256;

// ---- memcheck -------------------------------------------------------------------------------------

// y[i] = x[i + shift] for i < n, or for every thread of the grid when `guard` is false.
__global__ void copy_shifted(gptr<const float> x, gptr<float> y, int64_t n, int64_t shift, bool guard) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (guard && i >= n) return;
  y[i] = x[i + shift];
}

// A 128-bit load at an element offset that is not a multiple of 4.
__global__ void load_vec(gptr<const float> x, gptr<float> y, int64_t offset) {
  const float4 v = ak_load<float4>(x + offset + 4 * threadIdx.x);
  y[threadIdx.x] = v.x + v.y + v.z + v.w;
}

// Reads through a pointer to memory no tensor owns.
__global__ void read_untracked(gptr<const float> x, gptr<float> y) { y[threadIdx.x] = x[threadIdx.x]; }

// ---- initcheck ------------------------------------------------------------------------------------

// s[t] = x[t] for t < written, then y[t] = s[(t + 1) % blockDim]: the last thread reads an element
// nobody wrote when written < blockDim.
__global__ void init_partial(gptr<const float> x, gptr<float> y, int written) {
  AK_SHARED(float, s, [kThreads]);
  const int t = threadIdx.x;
  if (t < written) s[t] = x[blockIdx.x * blockDim.x + t];
  __syncthreads();
  y[blockIdx.x * blockDim.x + t] = s[(t + 1) % blockDim.x];
}

// Block 0 fills the tile; every block reads it. Correct only if shared memory persisted between
// blocks, which it does not on the GPU (and here it is poisoned).
__global__ void init_stale(gptr<const float> x, gptr<float> y) {
  AK_SHARED(float, s, [kThreads]);
  const int t = threadIdx.x;
  if (blockIdx.x == 0) s[t] = x[t];
  __syncthreads();
  y[blockIdx.x * blockDim.x + t] = s[t];
}

// ---- racecheck ------------------------------------------------------------------------------------

enum RaceMode {
  kSynced,         // write, __syncthreads, read a neighbour's: correct
  kNoBarrier,      // write, read a neighbour's: read-after-write hazard
  kWarOverwrite,   // read a neighbour's, then overwrite own without a barrier: write-after-read
  kSameWord,       // two threads write one word: write-after-write
  kWarpSynced,     // neighbour within the warp, after __syncwarp: correct
  kWarpAcross,     // neighbour in the next warp, after only __syncwarp: hazard
  kShuffleOrders,  // neighbour within the warp, after a shuffle: correct (a warp exchange orders its lanes)
};

__global__ void race(gptr<const float> x, gptr<float> y, int mode) {
  AK_SHARED(float, s, [kThreads]);
  const int t = threadIdx.x;
  const int lane = t % 32;
  // Every word written once before the mode's accesses, so that initcheck has nothing to say.
  // (The threads run one after another: thread t runs up to the next barrier before t + 1 starts.)
  s[t] = -1.f;
  __syncthreads();
  float v = x[t];
  switch (mode) {
    case kSynced:
      s[t] = v;
      __syncthreads();
      v = s[(t + 1) % kThreads];
      break;
    case kNoBarrier:  // thread t reads what t - 1 has just written
      s[t] = v;
      v = s[(t + kThreads - 1) % kThreads];
      break;
    case kWarOverwrite:  // thread t overwrites what t - 1 has just read
      s[t] = v;
      __syncthreads();
      v = s[(t + 1) % kThreads];
      s[t] = 2 * v;
      break;
    case kSameWord:
      s[t / 2] = v;
      __syncthreads();
      v = s[t / 2];
      break;
    case kWarpSynced:
      s[t] = v;
      __syncwarp();
      v = s[t - lane + (lane + 1) % 32];
      break;
    case kWarpAcross:
      s[t] = v;
      __syncwarp();
      v = s[(t + 32) % kThreads];
      break;
    case kShuffleOrders:
      s[t] = v;
      v += __shfl_xor_sync(0xffffffffu, v, 1);
      v += s[t - lane + (lane + 1) % 32];
      break;
  }
  y[t] = v;
}

// ---- synccheck ------------------------------------------------------------------------------------

enum SyncMode {
  kUniform,        // every thread at every barrier: correct
  kHalfBarrier,    // only threads < 128 reach the barrier
  kEarlyExit,      // threads >= 128 return before the barrier
  kTwoBarriers,    // the two halves wait at different barriers
  kShuffleExited,  // a shuffle whose mask names a lane that has exited
  kMixedOps,       // lanes of a warp meet in a shuffle and a __syncwarp
};

__global__ void barrier_modes(gptr<float> y, int mode) {
  AK_SHARED(float, s, [kThreads]);
  const int t = threadIdx.x;
  s[t] = static_cast<float>(t);
  switch (mode) {
    case kUniform:
      __syncthreads();
      break;
    case kHalfBarrier:
      if (t < 128) __syncthreads();
      break;
    case kEarlyExit:
      if (t >= 128) return;
      __syncthreads();
      break;
    case kTwoBarriers:
      if (t < 128) {
        __syncthreads();
      } else {
        __syncthreads();
      }
      break;
    case kShuffleExited:
      if (t % 32 == 31) return;
      y[t] = __shfl_xor_sync(0xffffffffu, static_cast<float>(t), 1);
      return;
    case kMixedOps:
      if (t % 2) {
        y[t] = __shfl_xor_sync(0xffffffffu, static_cast<float>(t), 1);
      } else {
        __syncwarp();
      }
      return;
  }
  y[t] = s[t];
}

// ---- counting -------------------------------------------------------------------------------------

// y[i] = x[i * stride] for i < n, with W-byte accesses (W / 4 floats per thread).
template <int W>
__global__ void gather(gptr<const float> x, gptr<float> y, int64_t n, int64_t stride) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  if constexpr (W == 4) {
    y[i] = x[i * stride];
  } else if constexpr (W == 8) {
    ak_store<float2>(y + 2 * i, ak_load<float2>(x + 2 * i * stride));
  } else {
    ak_store<float4>(y + 4 * i, ak_load<float4>(x + 4 * i * stride));
  }
}

// Shared stores then loads of one word-sized or vector element per thread at a pattern (mode):
// 0 s[t] (conflict-free), 1 s[32 t] (32-way), 2 s[2 t] (2-way), 3 s[0] loads (broadcast),
// 4 float2 at 2t, 5 float4 at 4t (conflict-free in their phases), 6 float4 at 8t (2-way).
__global__ void banks(gptr<float> y, int mode) {
  AK_SHARED(float, s, [32 * 32 * 4]);
  const int t = threadIdx.x;
  float v = 0;
  switch (mode) {
    case 0: s[t] = 1.f; __syncthreads(); v = s[t]; break;
    case 1: s[32 * t] = 1.f; __syncthreads(); v = s[32 * t]; break;
    case 2: s[2 * t] = 1.f; __syncthreads(); v = s[2 * t]; break;
    case 3: if (t == 0) s[0] = 1.f; __syncthreads(); v = s[0]; break;
    case 4: {
      ak_store<float2>(&s[2 * t], make_float2(1.f, 2.f));
      __syncthreads();
      const float2 a = ak_load<float2>(&s[2 * t]);
      v = a.x + a.y;
      break;
    }
    case 5:
    case 6: {
      const int at = (mode == 5 ? 4 : 8) * t;
      ak_store<float4>(&s[at], make_float4(1.f, 2.f, 3.f, 4.f));
      __syncthreads();
      const float4 a = ak_load<float4>(&s[at]);
      v = a.x + a.y + a.z + a.w;
      break;
    }
  }
  y[t] = v;
}

// Lane l loads l + 1 values between synchronisations: no grouping into requests holds.
__global__ void divergent(gptr<const float> x, gptr<float> y) {
  const int t = threadIdx.x;
  float v = 0;
  for (int k = 0; k <= t % 32; ++k) v += x[t];
  y[t] = v;
}

// ---- warp built-ins ---------------------------------------------------------------------------------

// Per lane: xor 1, xor 16, down 3 (width 8), up 2 (width 16), sync from lane 5 (width 32), ballot
// of odd lanes, any(lane == 7), all(lane < 32).
__global__ void shuffles(gptr<const float> x, gptr<float> y) {
  const int t = threadIdx.x;
  const float v = x[t];
  y[8 * t + 0] = __shfl_xor_sync(0xffffffffu, v, 1);
  y[8 * t + 1] = __shfl_xor_sync(0xffffffffu, v, 16);
  y[8 * t + 2] = __shfl_down_sync(0xffffffffu, v, 3, 8);
  y[8 * t + 3] = __shfl_up_sync(0xffffffffu, v, 2, 16);
  y[8 * t + 4] = __shfl_sync(0xffffffffu, v, 5);
  y[8 * t + 5] = static_cast<float>(__ballot_sync(0xffffffffu, t % 2) == 0xaaaaaaaau);
  y[8 * t + 6] = static_cast<float>(__any_sync(0xffffffffu, t % 32 == 7));
  y[8 * t + 7] = static_cast<float>(__all_sync(0xffffffffu, t % 32 < 32));
}

// C[16x8] (fp32, row-major) = A[16x16] (row-major) * B[16x8] (row-major), one warp, with the
// fragments loaded from global memory by their PTX layout (ldm = 0) or from shared memory by
// ldmatrix (ldm = 1: x4 for A, x2 .trans for B). `reps` mma instructions, each adding A * B.
template <typename T>
__global__ void mma_tile(gptr<const uint16_t> a, gptr<const uint16_t> b, gptr<float> c, int ldm, int reps) {
  AK_SHARED(uint16_t, As, [16][16]);
  AK_SHARED(uint16_t, Bs, [16][8]);
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  uint32_t af[4], bf[2];
  auto pair = [](uint16_t lo, uint16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); };
  if (ldm == 0) {
    af[0] = pair(a[g * 16 + 2 * t], a[g * 16 + 2 * t + 1]);
    af[1] = pair(a[(g + 8) * 16 + 2 * t], a[(g + 8) * 16 + 2 * t + 1]);
    af[2] = pair(a[g * 16 + 2 * t + 8], a[g * 16 + 2 * t + 9]);
    af[3] = pair(a[(g + 8) * 16 + 2 * t + 8], a[(g + 8) * 16 + 2 * t + 9]);
    bf[0] = pair(b[(2 * t) * 8 + g], b[(2 * t + 1) * 8 + g]);
    bf[1] = pair(b[(2 * t + 8) * 8 + g], b[(2 * t + 9) * 8 + g]);
  } else {
    // Rows of 16 bytes, 128-bit accesses: As row r = lane / 2, half lane % 2; Bs row = lane / 2.
    ak_store<uint4>(&As[lane / 2][8 * (lane % 2)], ak_load<uint4>(a + 8 * lane));
    if (lane < 16) ak_store<uint4>(&Bs[lane][0], ak_load<uint4>(b + 8 * lane));
    __syncwarp();
    const int i = lane / 8, r = lane % 8;  // matrix i: rows 8 (i % 2) .., columns 8 (i / 2) ..
    emu::ldmatrix<4, false>(af, &As[8 * (i % 2) + r][8 * (i / 2)]);
    emu::ldmatrix<2, true>(bf, &Bs[lane % 16][0]);
  }
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int k = 0; k < reps; ++k) emu::mma_m16n8k16<T>(acc, af, bf);
  c[g * 8 + 2 * t] = acc[0];
  c[g * 8 + 2 * t + 1] = acc[1];
  c[(g + 8) * 8 + 2 * t] = acc[2];
  c[(g + 8) * 8 + 2 * t + 1] = acc[3];
}

// Raw forms (T*, __shared__, reinterpret_cast): run, unchecked and uncounted. y = x + 1 by way of
// a shared tile, with a 128-bit access.
__global__ void raw_forms(const float* x, float* y) {
  __shared__ __align__(16) float s[kThreads];
  const int t = threadIdx.x;
  s[t] = x[t] + 1.f;
  __syncthreads();
  if (t < kThreads / 4) reinterpret_cast<float4*>(y)[t] = reinterpret_cast<const float4*>(s)[t];
}

// A kernel that throws (as a TORCH_CHECK in device code would).
__global__ void throws(gptr<float> y) {
  y[threadIdx.x] = 0.f;
  TORCH_CHECK(threadIdx.x != 3, "thread 3 refuses");
}

// Which thread ran in which order: the schedule is deterministic.
__global__ void order(gptr<int32_t> y, gptr<int32_t> counter) {
  const int t = threadIdx.x;
  int32_t c = counter[0];
  counter[0] = c + 1;
  y[t] = c;
  __syncthreads();
  c = counter[0];
  counter[0] = c + 1;
  y[kThreads + t] = c;
}

unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using T = at::Tensor;
  m.def("copy_shifted", [](const T& x, T& y, int64_t n, int64_t shift, bool guard, int64_t blocks) {
    emu::Launcher::launch(copy_shifted, dim3(static_cast<unsigned>(blocks)), kThreads, x.const_data_ptr<float>(),
                          y.mutable_data_ptr<float>(), n, shift, guard);
  });
  m.def("load_vec", [](const T& x, T& y, int64_t offset) {
    emu::Launcher::launch(load_vec, dim3(1), 32, x.const_data_ptr<float>(), y.mutable_data_ptr<float>(), offset);
  });
  m.def("read_untracked", [](T& y) {
    std::vector<float> mine(64, 1.f);  // the harness's own memory, never registered
    emu::Launcher::launch(read_untracked, dim3(1), 32, static_cast<const float*>(mine.data()),
                          y.mutable_data_ptr<float>());
  });
  m.def("read_tracked", [](T& y) {
    std::vector<float> mine(64, 1.f);
    emu::track(mine.data(), mine.size() * sizeof(float));
    emu::Launcher::launch(read_untracked, dim3(1), 32, static_cast<const float*>(mine.data()),
                          y.mutable_data_ptr<float>());
    emu::untrack(mine.data());
  });
  m.def("null_read", [](T& y) {
    emu::Launcher::launch(read_untracked, dim3(1), 32, static_cast<const float*>(nullptr), y.mutable_data_ptr<float>());
  });
  m.def("init_partial", [](const T& x, T& y, int64_t written) {
    emu::Launcher::launch(init_partial, dim3(blocks_for(x.numel())), kThreads, x.const_data_ptr<float>(),
                          y.mutable_data_ptr<float>(), static_cast<int>(written));
  });
  m.def("init_stale", [](const T& x, T& y) {
    emu::Launcher::launch(init_stale, dim3(blocks_for(y.numel())), kThreads, x.const_data_ptr<float>(),
                          y.mutable_data_ptr<float>());
  });
  m.def("race", [](const T& x, T& y, int64_t mode) {
    emu::Launcher::launch(race, dim3(1), kThreads, x.const_data_ptr<float>(), y.mutable_data_ptr<float>(),
                          static_cast<int>(mode));
  });
  m.def("barrier_modes", [](T& y, int64_t mode) {
    emu::Launcher::launch(barrier_modes, dim3(1), kThreads, y.mutable_data_ptr<float>(), static_cast<int>(mode));
  });
  m.def("gather", [](const T& x, T& y, int64_t n, int64_t stride, int64_t width) {
    const dim3 grid(blocks_for(n));
    if (width == 4) emu::Launcher::launch(gather<4>, grid, kThreads, x.const_data_ptr<float>(), y.mutable_data_ptr<float>(), n, stride);
    else if (width == 8) emu::Launcher::launch(gather<8>, grid, kThreads, x.const_data_ptr<float>(), y.mutable_data_ptr<float>(), n, stride);
    else emu::Launcher::launch(gather<16>, grid, kThreads, x.const_data_ptr<float>(), y.mutable_data_ptr<float>(), n, stride);
  });
  m.def("banks", [](T& y, int64_t mode) {
    emu::Launcher::launch(banks, dim3(1), 32, y.mutable_data_ptr<float>(), static_cast<int>(mode));
  });
  m.def("divergent", [](const T& x, T& y) {
    emu::Launcher::launch(divergent, dim3(1), 64, x.const_data_ptr<float>(), y.mutable_data_ptr<float>());
  });
  m.def("shuffles", [](const T& x, T& y) {
    emu::Launcher::launch(shuffles, dim3(1), 64, x.const_data_ptr<float>(), y.mutable_data_ptr<float>());
  });
  m.def("mma", [](const T& a, const T& b, T& c, bool bf16, int64_t ldm, int64_t reps) {
    auto* pa = static_cast<const uint16_t*>(a.const_data_ptr());
    auto* pb = static_cast<const uint16_t*>(b.const_data_ptr());
    if (bf16) emu::Launcher::launch(mma_tile<c10::BFloat16>, dim3(1), 32, pa, pb, c.mutable_data_ptr<float>(), static_cast<int>(ldm), static_cast<int>(reps));
    else emu::Launcher::launch(mma_tile<c10::Half>, dim3(1), 32, pa, pb, c.mutable_data_ptr<float>(), static_cast<int>(ldm), static_cast<int>(reps));
  });
  m.def("raw_forms", [](const T& x, T& y) {
    emu::Launcher::launch(raw_forms, dim3(1), kThreads, x.const_data_ptr<float>(), y.mutable_data_ptr<float>());
  });
  m.def("throws", [](T& y) { emu::Launcher::launch(throws, dim3(1), 32, y.mutable_data_ptr<float>()); });
  m.def("order", [](T& y, T& counter) {
    emu::Launcher::launch(order, dim3(1), kThreads, y.mutable_data_ptr<int32_t>(), counter.mutable_data_ptr<int32_t>());
  });
  m.def("launch_config", [](int64_t gx, int64_t threads) {
    emu::Launcher::launch(throws, dim3(static_cast<unsigned>(gx)), static_cast<int>(threads), static_cast<float*>(nullptr));
  });
  m.def("multiprocessors", [] { return emu::Launcher::multiprocessors(); });
}
