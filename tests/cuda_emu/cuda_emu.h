// Just enough of CUDA to run a kernel written for the GPU on the CPU, for tests: every CUDA
// thread of a block is a std::thread, __syncthreads is a barrier of the block, warp shuffles and
// mma.sync exchange registers through a barrier of the warp. One block runs at a time, so a
// kernel's __shared__ arrays become function statics.
//
// What this checks: a kernel's indexing, tiling, bounds, synchronisation and fragment layouts as
// this file implements them from the PTX ISA (mma.sync.m16n8k16 .bf16/.f16: the same layout the
// kernels assume, so a misreading of the ISA common to both would go unseen here; the GPU run
// checks that). What it does not: timing, memory coalescing, bank conflicts, real races (the
// threads here run truly concurrently, so a missing __syncthreads often, not always, shows).
#pragma once

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#define AK_EMULATE_CUDA 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

inline thread_local dim3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;

namespace emu {

struct Block {
  std::unique_ptr<std::barrier<>> all;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  // Per-warp exchange area: 32 lanes x (4 A + 2 B + 4 C words), or one shuffle word.
  std::vector<std::array<uint32_t, 32 * 10>> scratch;
};
inline Block* g_block = nullptr;

inline void syncwarp() { g_block->warps[threadIdx.x / 32]->arrive_and_wait(); }

}  // namespace emu

inline void __syncthreads() { emu::g_block->all->arrive_and_wait(); }

// Every lane of the warp calls it (the kernels' shuffles are warp-uniform).
inline float __shfl_xor_sync(unsigned /*mask*/, float v, int lane_mask) {
  auto& s = emu::g_block->scratch[threadIdx.x / 32];
  const int lane = threadIdx.x % 32;
  std::memcpy(&s[lane], &v, 4);
  emu::syncwarp();
  float r;
  std::memcpy(&r, &s[lane ^ lane_mask], 4);
  emu::syncwarp();
  return r;
}

namespace emu {

template <typename T>
float half_bits_to_float(uint16_t bits) {
  T v;
  v.x = bits;
  return static_cast<float>(v);
}

// D = A (16x16) * B (16x8) + C for the warp, each lane holding its fragments as the PTX ISA lays
// them out for m16n8k16 with 16-bit A/B and fp32 C/D (g = lane / 4, t = lane % 4):
//   A: a[0] = (g, 2t..2t+1), a[1] = (g+8, 2t..), a[2] = (g, 2t+8..), a[3] = (g+8, 2t+8..), low half first
//   B: b[0] = (k 2t..2t+1, n g), b[1] = (k 2t+8..2t+9, n g)
//   C/D: c[0..1] = (g, 2t..2t+1), c[2..3] = (g+8, 2t..2t+1)
template <typename T>
void mma_m16n8k16(float* c, const uint32_t* a, const uint32_t* b) {
  auto& s = g_block->scratch[threadIdx.x / 32];
  const int lane = threadIdx.x % 32;
  for (int i = 0; i < 4; ++i) s[lane * 10 + i] = a[i];
  for (int i = 0; i < 2; ++i) s[lane * 10 + 4 + i] = b[i];
  syncwarp();
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    const uint32_t* ra = &s[l * 10];
    const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
    for (int i = 0; i < 4; ++i) {
      A[rows[i]][cols[i]] = half_bits_to_float<T>(ra[i] & 0xffff);
      A[rows[i]][cols[i] + 1] = half_bits_to_float<T>(ra[i] >> 16);
    }
    const uint32_t* rb = &s[l * 10 + 4];
    for (int i = 0; i < 2; ++i) {
      B[2 * t + 8 * i][g] = half_bits_to_float<T>(rb[i] & 0xffff);
      B[2 * t + 8 * i + 1][g] = half_bits_to_float<T>(rb[i] >> 16);
    }
  }
  syncwarp();  // everyone has read the scratch before it is reused
  const int g = lane / 4, t = lane % 4;
  const int out_rows[4] = {g, g, g + 8, g + 8}, out_cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
  for (int i = 0; i < 4; ++i) {
    float acc = c[i];
    for (int k = 0; k < 16; ++k) acc += A[out_rows[i]][k] * B[k][out_cols[i]];
    c[i] = acc;
  }
}

// ldmatrix.sync.aligned.m8n8.xN(.trans).shared.b16 for the warp: matrix i's row r is at the row
// address of lane 8i + r (16 bytes); lane l receives from matrix i the elements (l / 4, 2(l % 4))
// and (l / 4, 2(l % 4) + 1), or with Trans (2(l % 4), l / 4) and (2(l % 4) + 1, l / 4), low first.
// Every lane of the warp calls it.
template <int N, bool Trans, typename P>
void ldmatrix(uint32_t* regs, P row_address) {
  auto& s = g_block->scratch[threadIdx.x / 32];
  const int lane = threadIdx.x % 32;
  const uint16_t* mine = &row_address[0];
  if (reinterpret_cast<uintptr_t>(mine) % 16 != 0) {  // the GPU faults on it
    std::fprintf(stderr, "ldmatrix: misaligned row address %p\n", static_cast<const void*>(mine));
    std::abort();
  }
  std::memcpy(&s[lane * 10], &mine, sizeof(mine));
  syncwarp();
  auto row = [&](int l) {
    const uint16_t* p;
    std::memcpy(&p, &s[l * 10], sizeof(p));
    return p;
  };
  for (int i = 0; i < N; ++i) {
    uint16_t lo, hi;
    if (Trans) {
      lo = row(8 * i + 2 * (lane % 4))[lane / 4];
      hi = row(8 * i + 2 * (lane % 4) + 1)[lane / 4];
    } else {
      lo = row(8 * i + lane / 4)[2 * (lane % 4)];
      hi = row(8 * i + lane / 4)[2 * (lane % 4) + 1];
    }
    regs[i] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
  }
  syncwarp();  // everyone has read the scratch before it is reused
}

// Runs kernel(args...) over the grid, one block at a time, blockDim.x threads each.
struct Launcher {
  template <typename... P, typename... A>
  static void launch(void (*kernel)(P...), dim3 grid, int threads, A&&... args) {
    std::function<void()> body = [&] { kernel(args...); };
    for (unsigned bz = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) run_block(dim3(bx, by, bz), grid, threads, body);
  }
  static int multiprocessors() { return 2; }  // few: small test shapes still split into chunks

 private:
  static void run_block(dim3 block, dim3 grid, int threads, const std::function<void()>& body) {
    Block b;
    b.all = std::make_unique<std::barrier<>>(threads);
    const int warps = (threads + 31) / 32;
    for (int w = 0; w < warps; ++w) b.warps.push_back(std::make_unique<std::barrier<>>(std::min(32, threads - 32 * w)));
    b.scratch.resize(warps);
    g_block = &b;
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        threadIdx = dim3(t);
        blockIdx = block;
        blockDim = dim3(threads);
        gridDim = grid;
        body();
      });
    }
    for (auto& th : pool) th.join();
    g_block = nullptr;
  }
};

}  // namespace emu
