// Warp-level tensor-core and shared-memory instructions as plain functions: mma.sync m16n8k16,
// ldmatrix and cp.async. Each has an AK_EMULATE_CUDA branch, so that the CUDA emulator
// (tests/cuda_emu/cuda_emu.h) runs the kernels that use them on the CPU.
//
// Fragment layouts (PTX ISA, m16n8k16 with 16-bit A/B and fp32 C/D; g = lane / 4, t = lane % 4):
//   A (16x16, row-major): a[0] = (g, 2t..2t+1)  a[1] = (g+8, 2t..)  a[2] = (g, 2t+8..)  a[3] = (g+8, 2t+8..)
//   B (16x8, "col": k contiguous per column n): b[0] = (k 2t..2t+1, n g)  b[1] = (k 2t+8..2t+9, n g)
//   C/D: c[0..1] = (g, 2t..2t+1), c[2..3] = (g+8, 2t..2t+1)
// each 32-bit register holding two 16-bit values, the lower index in the lower half.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <type_traits>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "../common.h"

namespace alexnet_kernels {

// c += a * b on the tensor cores, T = at::BFloat16 or at::Half (raw bits in a and b).
template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float* c, const uint32_t* a, const uint32_t* b) {
  static_assert(std::is_same_v<T, at::BFloat16> || std::is_same_v<T, at::Half>, "mma_m16n8k16: bf16 or fp16");
#ifdef AK_EMULATE_CUDA
  emu::mma_m16n8k16<T>(c, a, b);
#else
  if constexpr (std::is_same_v<T, at::BFloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#endif
}

// ldmatrix.sync.aligned.m8n8.xN(.trans).shared.b16: N (1, 2 or 4) 8x8 matrices of 16-bit values,
// matrix i's eight rows at the addresses of lanes 8i..8i+7 (16 bytes each, 16-byte aligned).
// Every lane passes a row address (lanes past 8N pass any valid one). Lane l receives, from
// matrix i, row l / 4 elements 2(l % 4) and 2(l % 4) + 1 in regs[i] (transposed: column l / 4,
// rows 2(l % 4) and 2(l % 4) + 1) -- for a [n][k] tile, exactly the B fragment above.
template <int N, bool Trans>
__device__ __forceinline__ void ldmatrix(uint32_t* regs, sptr<const uint16_t> row) {
  static_assert(N == 1 || N == 2 || N == 4, "ldmatrix: 1, 2 or 4 matrices");
#ifdef AK_EMULATE_CUDA
  emu::ldmatrix<N, Trans>(regs, row);
#else
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(row));
  if constexpr (N == 4 && !Trans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(regs[0]), "=r"(regs[1]), "=r"(regs[2]), "=r"(regs[3]) : "r"(a));
  } else if constexpr (N == 4) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(regs[0]), "=r"(regs[1]), "=r"(regs[2]), "=r"(regs[3]) : "r"(a));
  } else if constexpr (N == 2 && !Trans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(regs[0]), "=r"(regs[1]) : "r"(a));
  } else if constexpr (N == 2) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(regs[0]), "=r"(regs[1]) : "r"(a));
  } else if constexpr (!Trans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(regs[0]) : "r"(a));
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(regs[0]) : "r"(a));
  }
#endif
}

// The 16-byte vector type of an element type (the unit of cp.async and of staged rows).
template <typename E>
struct Vec16;
template <>
struct Vec16<float> {
  using type = float4;
  static __device__ __forceinline__ float4 zero() { return make_float4(0.f, 0.f, 0.f, 0.f); }
  static __device__ __forceinline__ float4 pack(const float* v) { return make_float4(v[0], v[1], v[2], v[3]); }
};
template <>
struct Vec16<uint16_t> {
  using type = uint4;
  static __device__ __forceinline__ uint4 zero() { return make_uint4(0u, 0u, 0u, 0u); }
  static __device__ __forceinline__ uint4 pack(const uint16_t* v) {
    auto w = [&](int i) { return static_cast<uint32_t>(v[2 * i]) | (static_cast<uint32_t>(v[2 * i + 1]) << 16); };
    return make_uint4(w(0), w(1), w(2), w(3));
  }
};

// cp.async.cg (L2 only: the staged data is used once per block from shared memory) of 16 bytes,
// both addresses 16-byte aligned: the first n of the V = 16 / sizeof(E) elements from src, zeros
// after them (the source bytes past them are not read). The copy lands in shared memory after
// cp_async_wait_all(); under the emulator it is done at once.
template <typename E>
__device__ __forceinline__ void cp_async16(sptr<E> dst, gptr<const E> src, int n = 16 / sizeof(E)) {
#ifdef AK_EMULATE_CUDA
  constexpr int V = 16 / sizeof(E);
#ifndef AK_EMU_CHECKED_MEMORY
  // The GPU faults on a misaligned cp.async; the CPU would not notice.
  if (reinterpret_cast<uintptr_t>(&dst[0]) % 16 != 0 || reinterpret_cast<uintptr_t>(&src[0]) % 16 != 0) {
    std::fprintf(stderr, "cp_async16: misaligned address (shared %p, global %p)\n", static_cast<const void*>(&dst[0]),
                 static_cast<const void*>(&src[0]));
    std::abort();
  }
#endif
  if (n == V) {
    ak_store<typename Vec16<E>::type>(dst, ak_load<typename Vec16<E>::type>(src));
  } else {
    for (int e = 0; e < V; ++e) dst[e] = e < n ? src[e] : E(0);
  }
#else
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(n * static_cast<int>(sizeof(E))));
#endif
}

// Closes the group of this thread's cp.async issued so far.
__device__ __forceinline__ void cp_async_commit() {
#ifndef AK_EMULATE_CUDA
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Waits for all of this thread's cp.async groups; a __syncthreads() after it makes every
// thread's copies visible to the block.
__device__ __forceinline__ void cp_async_wait_all() {
#ifndef AK_EMULATE_CUDA
  asm volatile("cp.async.wait_all;\n" ::);
#endif
}

}  // namespace alexnet_kernels
