// Fused ReLU + dropout: the random stream and the element rules, shared by the C++ kernels
// (csrc/cpu/relu_dropout_cpu.cpp). The GPU runs the Triton kernel of
// alexnet_kernels/_relu_dropout_triton.py, which computes the same function bit for bit, so a
// CPU run and a GPU run with the same seed drop the same units:
//
//   element e of the row-major input takes output e % 4 of Philox-4x32-10(key, counter + e / 4),
//   Triton's tl.randint4x(key, counter + e / 4): key split into (lo, hi) 32-bit words, the 64-bit
//   counter into the state's first two words (lo, hi), the other two zero;
//   kept iff that 32-bit output r >= threshold = min(round(p * 2^32), 2^32 - 1) and x >= 0 (or NaN);
//   kept value: fp32(x) * fp32(1 / (1 - p)), rounded once (to nearest even) into x's dtype.
//
// Backward (ReLU's too, with scale 1): dx = g * scale where not (y <= 0), else 0, the same
// rounding. y > 0 exactly where the element was kept and x > 0, so y is all autograd saves.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common.h"

namespace alexnet_kernels {
namespace relu_dropout {

constexpr uint32_t kPhiloxKeyA = 0x9E3779B9u;  // Weyl increments of the key, per round
constexpr uint32_t kPhiloxKeyB = 0xBB67AE85u;
constexpr uint32_t kPhiloxMulA = 0xD2511F53u;  // round multipliers
constexpr uint32_t kPhiloxMulB = 0xCD9E8D57u;
constexpr int kPhiloxRounds = 10;

// The four 32-bit outputs of Philox-4x32-10 for one counter, in Triton's order (r[j] decides
// element 4 * group + j). Written as plain 32x32->64-bit products, so that a loop over counters
// vectorizes (one SIMD lane per counter).
AK_HD void philox4x32_10(uint64_t key, uint64_t counter, uint32_t r[4]) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  AK_UNROLL
  for (int round = 0; round < kPhiloxRounds; ++round) {
    const uint64_t pa = static_cast<uint64_t>(kPhiloxMulA) * c0;
    const uint64_t pb = static_cast<uint64_t>(kPhiloxMulB) * c2;
    const uint32_t n0 = static_cast<uint32_t>(pb >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(pa >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(pb);
    c3 = static_cast<uint32_t>(pa);
    c0 = n0;
    c2 = n2;
    k0 += kPhiloxKeyA;
    k1 += kPhiloxKeyB;
  }
  r[0] = c0;
  r[1] = c1;
  r[2] = c2;
  r[3] = c3;
}

// Drop iff r < threshold: P(keep) = 1 - threshold / 2^32, p to within 2^-33. Host side; p in [0, 1).
inline uint32_t drop_threshold(double p) {
  const double t = std::nearbyint(p * 4294967296.0);  // round half to even, as Python's round()
  return t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(t);
}

// The fp32 factor kept elements are multiplied by (the GPU kernel gets the same fp32 argument).
inline float keep_scale(double p) {
  return static_cast<float>(1.0 / (1.0 - p));
}

// v where keep, else +0, selected with a bit mask rather than a branch: a multiply under a branch
// is not hoisted out of it (it might raise an FP exception the scalar code would not), and then
// the loop does not vectorize without masked instructions.
template <typename T>
AK_HD T zero_unless(bool keep, T v) {
  using U = std::conditional_t<sizeof(T) == 8, uint64_t, uint32_t>;
  U bits;
  std::memcpy(&bits, &v, sizeof(T));
  bits &= U(0) - static_cast<U>(keep);
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

// Forward of one element in fp32. `x < 0` is false for NaN: a kept NaN stays NaN, a dropped one is 0.
AK_HD float forward_value(float x, uint32_t r, uint32_t threshold, float scale) {
  return zero_unless(!((r < threshold) | (x < 0.f)), x * scale);
}

// Backward of one element (torch's threshold_backward(g, y, 0), times scale).
template <typename acc_t>
AK_HD acc_t backward_value(acc_t g, acc_t y, acc_t scale) {
  return zero_unless(!(y <= acc_t(0)), g * scale);
}

}  // namespace relu_dropout
}  // namespace alexnet_kernels
