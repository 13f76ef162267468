// How kernels touch memory. On the GPU and in the CPU build these are plain pointers, arrays and
// reinterpret casts, at no cost. Under the CUDA emulator (tests/cuda_emu/cuda_emu.h, which defines
// AK_EMULATE_CUDA before any kernel header is read) the same names are checked types that bounds-
// check, count and race-check every access, so the kernels' own source runs there unchanged.
//
// The rules a kernel follows so that the emulator sees all of its memory traffic:
//   - a pointer into a tensor (global memory on the GPU) is a gptr<T>, in kernel argument structs
//     and locals alike; gptr_cast<T>(p) converts a type-erased gptr<void> / gptr<const void>;
//   - shared memory is declared with AK_SHARED(type, name, dims), e.g. AK_SHARED(float, As, [16][128]),
//     and a pointer into it is an sptr<T>;
//   - an access wider than the element (64- or 128-bit, to either space) is ak_load<V>(p) or
//     ak_store<V>(p, v), never a reinterpret_cast of the address: that is one instruction of
//     sizeof(V) bytes on the GPU, and one counted access of that width under the emulator;
//   - a gptr is made from the tensor's data pointer, and moved by arithmetic on the gptr (it
//     carries the tensor's bounds from there); p + i rather than &p[i]; a struct element's member
//     through a copy (T v = p[i]; v.x) when p points to non-const T or into shared memory.
// Raw pointers, __shared__ arrays and reinterpret_cast still compile under the emulator, unchecked.
// docs/emulator.md has the whole contract.
#pragma once

// The emulator's checked types replace these where it defines AK_EMU_CHECKED_MEMORY; without it
// (and everywhere else) they are the plain forms.
#if !defined(AK_EMULATE_CUDA) || !defined(AK_EMU_CHECKED_MEMORY)

namespace alexnet_kernels {

template <typename T>
using gptr = T*;
template <typename T>
using sptr = T*;

template <typename T, typename U>
inline constexpr
#ifdef __CUDACC__
    __host__ __device__
#endif
    T* gptr_cast(U* p) {
  return static_cast<T*>(p);
}

// sizeof(V) bytes at p, which is aligned to sizeof(V).
template <typename V, typename T>
inline
#ifdef __CUDACC__
    __host__ __device__
#endif
    V ak_load(const T* p) {
  return *reinterpret_cast<const V*>(p);
}

template <typename V, typename T>
inline
#ifdef __CUDACC__
    __host__ __device__
#endif
    void ak_store(T* p, const V& v) {
  *reinterpret_cast<V*>(p) = v;
}

}  // namespace alexnet_kernels

#if defined(__CUDACC__)
#define AK_SHARED(type, name, dims) __shared__ __align__(16) type name dims
#elif defined(AK_EMULATE_CUDA)
#define AK_SHARED(type, name, dims) static __attribute__((aligned(16))) type name dims
#endif

#endif
