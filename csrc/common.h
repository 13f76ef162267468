// Pieces shared by the CPU and CUDA kernels (host and device code, no ATen): index arithmetic,
// the strided-tensor type, the 32/64-bit index choice, and math helpers whose GPU form differs.
//
// Each op keeps its element math in a header of its own (lrn.h, max_pool.h) as host+device
// functions: the CPU kernels and the CUDA kernels (csrc/cuda/*.cuh) call the same functions, so
// the CPU tests, which run everywhere, exercise the arithmetic and tie rules the GPU runs.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include <c10/util/Exception.h>

#include "mem.h"

#ifdef __CUDACC__
#define AK_HD __host__ __device__ __forceinline__
#define AK_UNROLL _Pragma("unroll")
#else
#define AK_HD inline
#define AK_UNROLL _Pragma("GCC unroll 16")
#endif

namespace alexnet_kernels {

// Division of a flat index by a runtime-constant divisor as a multiply-high, an add and a shift
// (Granlund & Montgomery). Hardware integer division costs about 20 instructions in 32 bits and
// about 70 in 64 bits on the GPU, more than a memory-bound kernel's whole per-element budget.
// Valid for dividends and divisors in [0, 2^31) and [1, 2^31): the launcher picks it only when
// every flat index is below 2^31, else Divmod64.
struct FastDivmod32 {
  uint32_t d = 1, m = 1, s = 0;
  FastDivmod32() = default;
  explicit FastDivmod32(int64_t divisor) {
    TORCH_CHECK(divisor >= 1 && divisor < (int64_t(1) << 31), "FastDivmod32: bad divisor ", divisor);
    d = static_cast<uint32_t>(divisor);
    s = 0;
    while (s < 32 && (uint64_t(1) << s) < d) ++s;
    const uint64_t magic = ((uint64_t(1) << 32) * ((uint64_t(1) << s) - d)) / d + 1;
    TORCH_CHECK(magic <= 0xffffffffull, "FastDivmod32: magic overflow for ", divisor);
    m = static_cast<uint32_t>(magic);
  }
  template <typename I>
  AK_HD void divmod(I n, I& q, I& r) const {
    const uint32_t un = static_cast<uint32_t>(n);
#ifdef __CUDA_ARCH__
    const uint32_t t = __umulhi(un, m);
#else
    const uint32_t t = static_cast<uint32_t>((static_cast<uint64_t>(un) * m) >> 32);
#endif
    const uint32_t uq = (t + un) >> s;
    q = static_cast<I>(uq);
    r = static_cast<I>(un - uq * d);
  }
};

struct Divmod64 {
  int64_t d = 1;
  Divmod64() = default;
  explicit Divmod64(int64_t divisor) : d(divisor) {}
  template <typename I>
  AK_HD void divmod(I n, I& q, I& r) const {
    q = n / static_cast<I>(d);
    r = n - q * static_cast<I>(d);
  }
};

// Strides of a 4-D tensor, in elements; at() is the offset of element (a, b, c, d). 3-D views
// ([N, C, S]) leave h at 0 and put the merged spatial stride in w.
struct Strides4 {
  int64_t n, c, h, w;
  AK_HD int64_t at(int64_t a, int64_t b, int64_t c_, int64_t d) const { return a * n + b * c + c_ * h + d * w; }
};

// Flat indices and offsets below this use 32-bit arithmetic; the kernels are templated on both.
constexpr int64_t kInt32Limit = int64_t(1) << 31;

// The one place that turns "do all indices of this launch fit 32 bits?" into a type: calls
// f(int32_t{}) when every index the launch computes is below 2^31 (extent: the largest of them,
// plus one) and force64 is off, else f(int64_t{}). force64 lets the tests run the 64-bit
// variants at small sizes.
template <typename F>
inline void dispatch_index(int64_t extent, bool force64, F&& f) {
  if (!force64 && extent <= kInt32Limit) {
    f(int32_t{});
  } else {
    f(int64_t{});
  }
}

// Test hooks of the host planning (the defaults are what the ops use): the 64-bit index
// variants at any size, and a fixed number of segments for the kernels that walk a line of
// elements (LRN's channel columns, the 3x3/2 pool's output columns; 0: planned from the
// device's size).
struct PlanOptions {
  bool force_64bit = false;
  int segments = 0;
};

// The divider matching an index type: FastDivmod32 for 32-bit indices, Divmod64 otherwise.
template <typename index_t>
using DivmodFor = std::conditional_t<sizeof(index_t) == 4, FastDivmod32, Divmod64>;

// log2, exp2 and 1/a for the GPU's fp32 path, one MUFU operation each (lg2.approx, ex2.approx,
// rcp.approx: relative error about 2^-22), so that powers cost no pow and no division. kFast
// takes the .ftz forms, which flush subnormal inputs and results to zero: the caller proves
// they cannot occur; the others add about three instructions each to handle them. The host
// forms are the accurate libm ones.
template <bool kFast = false>
AK_HD float ak_log2(float a) {
#ifdef __CUDA_ARCH__
  float r;
  if constexpr (kFast) {
    asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(a));
  } else {
    asm("lg2.approx.f32 %0, %1;" : "=f"(r) : "f"(a));
  }
  return r;
#else
  return log2f(a);
#endif
}
template <bool kFast = false>
AK_HD float ak_exp2(float a) {
#ifdef __CUDA_ARCH__
  float r;
  if constexpr (kFast) {
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(a));
  } else {
    asm("ex2.approx.f32 %0, %1;" : "=f"(r) : "f"(a));
  }
  return r;
#else
  return exp2f(a);
#endif
}
// 1/a, flushing a subnormal result to zero on the GPU.
AK_HD float ak_rcp_ftz(float a) {
#ifdef __CUDA_ARCH__
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(a));
  return r;
#else
  return 1.0f / a;
#endif
}

// A pointer computed once (a plane's base: a 64-bit multiply-add) and then offset many times:
// on the GPU the empty asm keeps it in a register, so that each access is one IMAD.WIDE from
// it, where the compiler would otherwise fold base + (64-bit offset + 32-bit offset) anew at
// every access (about six instructions each). Elsewhere it is the identity.
template <typename P>
AK_HD P ak_pin(P p) {
#ifdef __CUDA_ARCH__
  asm("" : "+l"(p));
  __builtin_assume(__isGlobal(p));  // (still global memory: LDG/STG, not generic accesses)
#endif
  return p;
}

// x != x is NaN, independent of fast-math flags on isnan.
template <typename T>
AK_HD bool ak_isnan(T v) { return v != v; }
template <typename T>
AK_HD T ak_min(T a, T b) { return a < b ? a : b; }
template <typename T>
AK_HD T ak_max(T a, T b) { return a > b ? a : b; }

}  // namespace alexnet_kernels
