// Warp-level built-ins: __syncwarp, the shuffles, votes, mma.sync m16n8k16 (bf16 / f16, fp32
// accumulate) and ldmatrix. Each is a warp collective: every lane of the mask must reach it (else
// synccheck fails), and it orders the shared-memory accesses of those lanes (racecheck). Part of
// cuda_emu.h.
//
// The fragment layouts are this file's reading of the PTX ISA; a kernel that shares a misreading
// with it would pass here and fail on the GPU, which is why the GPU tests still run the kernels.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "emu_core.h"
#include "emu_memory.h"

#pragma GCC visibility push(hidden)

namespace emu {
namespace detail {

struct ShflIn {
  uint64_t bits;
  int src;  // the lane this lane reads, or -1: its own value
};

inline void shfl_combine(const unsigned char* ins, unsigned char* outs, unsigned mask, const void*) {
  const auto* in = reinterpret_cast<const ShflIn*>(ins);
  auto* out = reinterpret_cast<uint64_t*>(outs);
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1)) continue;
    const int s = in[l].src < 0 ? l : in[l].src;
    if (!(mask >> s & 1)) fail_lane("synccheck", l, "a shuffle reads a lane outside its mask", s);
    out[l] = in[s].bits;
  }
}

template <typename T>
T shfl(unsigned mask, T v, int src, const std::source_location& at) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffles move at most 64 bits");
  ShflIn in{0, src};
  std::memcpy(&in.bits, &v, sizeof(T));
  uint64_t out;
  warp_collective(kShuffle, mask, &in, sizeof(in), &out, sizeof(out), shfl_combine, nullptr, at.file_name(),
                  at.line());
  T r;
  std::memcpy(&r, &out, sizeof(T));
  return r;
}

// The first lane of the `width`-lane segment holding `lane` (shuffles with width < 32 stay inside
// their segment; where the source falls outside it, the caller's own value comes back).
inline int seg_base(int lane, int width) { return lane & ~(width - 1); }

}  // namespace detail
}  // namespace emu

inline void __syncwarp(unsigned mask = 0xffffffffu, std::source_location at = std::source_location::current()) {
  emu::detail::warp_collective(emu::detail::kSyncwarp, mask, nullptr, 0, nullptr, 0, nullptr, nullptr,
                               at.file_name(), at.line());
}

template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32,
              std::source_location at = std::source_location::current()) {
  const int lane = emu::detail::lane_id();
  return emu::detail::shfl(mask, v, emu::detail::seg_base(lane, width) + (src_lane & (width - 1)), at);
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32,
                  std::source_location at = std::source_location::current()) {
  const int lane = emu::detail::lane_id(), src = lane ^ lane_mask;
  // Lanes may read earlier segments, not later ones (their own value comes back).
  return emu::detail::shfl(mask, v, src >= emu::detail::seg_base(lane, width) + width ? -1 : src, at);
}

template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32,
                   std::source_location at = std::source_location::current()) {
  const int lane = emu::detail::lane_id(), src = lane + static_cast<int>(delta);
  return emu::detail::shfl(mask, v, src >= emu::detail::seg_base(lane, width) + width ? -1 : src, at);
}

template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32,
                 std::source_location at = std::source_location::current()) {
  const int lane = emu::detail::lane_id(), src = lane - static_cast<int>(delta);
  return emu::detail::shfl(mask, v, src < emu::detail::seg_base(lane, width) ? -1 : src, at);
}

namespace emu {
namespace detail {
enum VoteOp { kBallot, kAny, kAll };
inline void vote_combine(const unsigned char* ins, unsigned char* outs, unsigned mask, const void* arg) {
  const int op = *static_cast<const int*>(arg);
  unsigned ballot = 0;
  for (int l = 0; l < 32; ++l)
    if ((mask >> l & 1) && ins[l * 4] != 0) ballot |= 1u << l;
  const unsigned r = op == kBallot ? ballot : op == kAny ? unsigned(ballot != 0) : unsigned(ballot == mask);
  for (int l = 0; l < 32; ++l) std::memcpy(outs + 4 * l, &r, 4);
}
inline unsigned vote(int op, unsigned mask, int pred, const std::source_location& at) {
  static const int ops[3] = {kBallot, kAny, kAll};
  const uint32_t in = pred != 0;
  unsigned out;
  warp_collective(kVote, mask, &in, 4, &out, 4, vote_combine, &ops[op], at.file_name(), at.line());
  return out;
}
}  // namespace detail
}  // namespace emu

inline unsigned __ballot_sync(unsigned mask, int pred, std::source_location at = std::source_location::current()) {
  return emu::detail::vote(emu::detail::kBallot, mask, pred, at);
}
inline int __any_sync(unsigned mask, int pred, std::source_location at = std::source_location::current()) {
  return static_cast<int>(emu::detail::vote(emu::detail::kAny, mask, pred, at));
}
inline int __all_sync(unsigned mask, int pred, std::source_location at = std::source_location::current()) {
  return static_cast<int>(emu::detail::vote(emu::detail::kAll, mask, pred, at));
}

inline unsigned __umulhi(unsigned a, unsigned b) { return static_cast<unsigned>((uint64_t(a) * b) >> 32); }
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __clz(int v) { return v == 0 ? 32 : __builtin_clz(static_cast<unsigned>(v)); }
inline int __ffs(int v) { return __builtin_ffs(v); }
template <typename T>
T __ldg(const T* p) {
  return *p;
}

namespace emu {
namespace detail {

template <typename T>
float half_bits_to_float(uint16_t bits) {
  T v;
  v.x = bits;
  return static_cast<float>(v);
}

struct MmaIn {
  uint32_t a[4], b[2];
  float c[4];
};

// D = A (16x16) * B (16x8) + C for the warp, each lane holding its fragments as the PTX ISA lays
// them out for m16n8k16 with 16-bit A/B and fp32 C/D (g = lane / 4, t = lane % 4):
//   A: a[0] = (g, 2t..2t+1), a[1] = (g+8, 2t..), a[2] = (g, 2t+8..), a[3] = (g+8, 2t+8..), low half first
//   B: b[0] = (k 2t..2t+1, n g), b[1] = (k 2t+8..2t+9, n g)
//   C/D: c[0..1] = (g, 2t..2t+1), c[2..3] = (g+8, 2t..2t+1)
// Products and sums in fp32 in k order (the tensor core's own order and rounding are unspecified).
template <typename T>
void mma_combine(const unsigned char* ins, unsigned char* outs, unsigned, const void*) {
  const auto* in = reinterpret_cast<const MmaIn*>(ins);
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
    for (int i = 0; i < 4; ++i) {
      A[rows[i]][cols[i]] = half_bits_to_float<T>(in[l].a[i] & 0xffff);
      A[rows[i]][cols[i] + 1] = half_bits_to_float<T>(in[l].a[i] >> 16);
    }
    for (int i = 0; i < 2; ++i) {
      B[2 * t + 8 * i][g] = half_bits_to_float<T>(in[l].b[i] & 0xffff);
      B[2 * t + 8 * i + 1][g] = half_bits_to_float<T>(in[l].b[i] >> 16);
    }
  }
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    const int out_rows[4] = {g, g, g + 8, g + 8}, out_cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
    float d[4];
    for (int i = 0; i < 4; ++i) {
      float acc = in[l].c[i];
      for (int k = 0; k < 16; ++k) acc += A[out_rows[i]][k] * B[k][out_cols[i]];
      d[i] = acc;
    }
    std::memcpy(outs + l * sizeof(d), d, sizeof(d));
  }
}

// ldmatrix .m8n8 .b16: matrix i's 8 rows of 16 bytes come from the addresses of lanes 8i..8i+7;
// lane l receives, of each matrix, row l / 4, columns 2 (l % 4) and 2 (l % 4) + 1 (with .trans:
// rows 2 (l % 4) and 2 (l % 4) + 1 of column l / 4), low half first.
template <int N, bool Trans>
void ldmatrix_combine(const unsigned char* ins, unsigned char* outs, unsigned, const void* checked) {
  const auto* rows = reinterpret_cast<const void* const*>(ins);
  uint16_t m[N][8][8];
  for (int i = 0; i < N; ++i)
    for (int r = 0; r < 8; ++r) {
      const int lane = 8 * i + r;
      if (*static_cast<const bool*>(checked)) shared_read_as(lane, rows[lane], 16);
      std::memcpy(m[i][r], rows[lane], 16);
    }
  if (*static_cast<const bool*>(checked)) count_ldmatrix(rows, N == 4 ? 0xffffffffu : (1u << (8 * N)) - 1);
  for (int l = 0; l < 32; ++l) {
    uint32_t regs[N];
    const int a = l / 4, b = 2 * (l % 4);
    for (int i = 0; i < N; ++i) {
      const uint16_t lo = Trans ? m[i][b][a] : m[i][a][b];
      const uint16_t hi = Trans ? m[i][b + 1][a] : m[i][a][b + 1];
      regs[i] = uint32_t(lo) | (uint32_t(hi) << 16);
    }
    std::memcpy(outs + l * 16, regs, sizeof(regs));
  }
}

template <typename P>
struct IsShared : std::false_type {};
template <typename T>
struct IsShared<Shared<T>*> : std::true_type {};
template <typename T>
struct IsShared<const Shared<T>*> : std::true_type {};

}  // namespace detail

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32 d, a, b, c with d = c: the warp's
// product, one instruction per call.
template <typename T>
void mma_m16n8k16(float* c, const uint32_t* a, const uint32_t* b,
                  std::source_location at = std::source_location::current()) {
  static_assert(std::is_same_v<T, c10::BFloat16> || std::is_same_v<T, c10::Half>, "mma_m16n8k16: bf16 or f16");
  detail::MmaIn in;
  std::memcpy(in.a, a, sizeof(in.a));
  std::memcpy(in.b, b, sizeof(in.b));
  std::memcpy(in.c, c, sizeof(in.c));
  detail::warp_collective(detail::kMma, 0xffffffffu, &in, sizeof(in), c, 4 * sizeof(float), detail::mma_combine<T>,
                          nullptr, at.file_name(), at.line());
}

// ldmatrix.sync.aligned.m8n8.x{N}[.trans].shared.b16 regs, [row_address]: each lane passes its row
// address (an sptr into an AK_SHARED array: checked and counted; a raw pointer: read unchecked);
// lanes beyond 8N pass addresses that are ignored.
template <int N, bool Trans, typename P>
void ldmatrix(uint32_t* regs, P row_address, std::source_location at = std::source_location::current()) {
  static_assert(N == 1 || N == 2 || N == 4, "ldmatrix: x1, x2 or x4");
  static_assert(std::is_pointer_v<P>, "ldmatrix reads shared memory: pass an sptr (or a raw shared pointer)");
  static constexpr bool checked = detail::IsShared<P>::value;
  const void* addr = static_cast<const void*>(row_address);
  uint32_t out[4];
  detail::warp_collective(detail::kLdmatrix, 0xffffffffu, &addr, sizeof(addr), out, sizeof(out),
                          detail::ldmatrix_combine<N, Trans>, &checked, at.file_name(), at.line());
  std::memcpy(regs, out, N * sizeof(uint32_t));
}

}  // namespace emu

#pragma GCC visibility pop
