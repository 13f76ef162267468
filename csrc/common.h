// Pieces shared by the CPU and CUDA kernels.
//
// The per-element kernel bodies of each op live in a header of their own (lrn.h, max_pool.h) as
// host+device functions: the CPU kernel runs them in a parallel loop, the CUDA kernel in a
// grid-stride loop. So the CPU tests, which run everywhere, exercise the same arithmetic, index
// decomposition and tie rules the GPU runs.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

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

// Strides of a 4-D tensor, in elements; at() is the offset of element (a, b, c, d).
struct Strides4 {
  int64_t n, c, h, w;
  AK_HD int64_t at(int64_t a, int64_t b, int64_t c_, int64_t d) const { return a * n + b * c + c_ * h + d * w; }
};

// Flat indices below this use 32-bit index math; the kernels are templated on both.
constexpr int64_t kInt32Limit = int64_t(1) << 31;

// On the GPU, fp32 pow as exp2(b * log2(a)) on the special-function unit: the accurate powf is
// ~40 instructions, a cost LRN backward pays `size` times per element. a > 0 here (k + a sum of
// squares), where __powf's error is a few ulp.
AK_HD float ak_pow(float a, float b) {
#ifdef __CUDA_ARCH__
  return __powf(a, b);
#else
  return powf(a, b);
#endif
}
AK_HD double ak_pow(double a, double b) { return pow(a, b); }
// x != x is NaN, independent of fast-math flags on isnan.
template <typename T>
AK_HD bool ak_isnan(T v) { return v != v; }
template <typename T>
AK_HD T ak_min(T a, T b) { return a < b ? a : b; }
template <typename T>
AK_HD T ak_max(T a, T b) { return a > b ? a : b; }

}  // namespace alexnet_kernels
