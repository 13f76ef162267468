// The CUDA emulator's core: CUDA's keywords, vector types and built-in variables, the launcher and
// __syncthreads, and the runtime entry points the other headers call (defined in emu_runtime.cpp).
// Part of cuda_emu.h; include that.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Raw __shared__ arrays are function statics: one block runs at a time, so every thread of the
// block sees the same array. They are neither poisoned nor checked (AK_SHARED's are).
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

#pragma GCC visibility push(hidden)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(16) double2 { double x, y; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline double2 make_double2(double x, double y) { return {x, y}; }

// The built-in variables. The scheduler sets threadIdx each time it resumes a thread; a thread
// only leaves the CPU inside a call into the runtime (barriers, warp collectives), which the
// compiler cannot see through, so a value read before such a call is never stale.
inline dim3 threadIdx, blockIdx, blockDim, gridDim;
constexpr int warpSize = 32;

namespace emu {
namespace detail {

enum : unsigned { kLoad = 0, kStore = 1 };

// A checked access of `size` bytes at `addr` (the caller's return address names the access
// site, so these must not be inlined). lo/hi: the bounds the pointer carries (both null: unknown,
// then any tracked allocation holding the bytes will do).
__attribute__((noinline)) void global_access(const void* addr, unsigned size, unsigned kind, const void* lo,
                                             const void* hi);
__attribute__((noinline)) void shared_access(const void* addr, unsigned size, unsigned kind);

// Bounds of the tracked allocation holding p: [*lo, *hi), or both null when none does.
void resolve(const void* p, const char** lo, const char** hi);

// AK_SHARED's storage: one slot per declaration, re-placed in the arena for every block.
struct SharedSlot {
  uint64_t block = 0;
  void* ptr = nullptr;
  const char* name;
};
void* shared_slot(SharedSlot* slot, size_t bytes, size_t align);

void barrier(const char* file, unsigned line);

// A warp-wide operation: each lane of `mask` deposits in_bytes, and once all of them have arrived
// combine(ins, outs, arrived_mask, arg) fills out_bytes per lane (lane l's at l * stride). kind
// names the operation in messages; lanes that meet in different kinds fail synccheck.
enum CollectiveKind : int { kSyncwarp, kShuffle, kVote, kMma, kLdmatrix };
using Combine = void (*)(const unsigned char* ins, unsigned char* outs, unsigned mask, const void* arg);
void warp_collective(CollectiveKind kind, unsigned mask, const void* in, unsigned in_bytes, void* out,
                     unsigned out_bytes, Combine combine, const void* arg, const char* file, unsigned line);
// Inside a combine: a checked shared read done on behalf of `lane` of the calling warp (ldmatrix).
void shared_read_as(unsigned lane, const void* addr, unsigned size);
// Inside ldmatrix's combine: counts one shared request of 16-byte rows from the lanes in mask.
void count_ldmatrix(const void* const* rows, unsigned mask);

// Fails the launch with `check` (memcheck, synccheck, ...) for `lane` of the calling warp;
// `other` (a lane, or -1) is named in the message.
[[noreturn]] void fail_lane(const char* check, int lane, const char* what, int other);

int lane_id();
bool in_kernel();
int multiprocessors();

using Body = void (*)(void*);
void run_launch(const void* kernel, Body body, void* ctx, dim3 grid, int threads);

}  // namespace detail

// Registers [p, p + bytes) as device memory a launch may touch (memory that the tracking CPU
// allocator did not hand out: a harness's own buffers, tensors made before the emulator loaded).
void track(const void* p, size_t bytes);
void untrack(const void* p);
template <typename Tensor>
void track_tensor(const Tensor& t) {
  track(t.storage().data(), t.storage().nbytes());
}

// Runs kernel(args...) over the grid, blocks one after another, `threads` threads each, with
// CudaLauncher's interface (csrc/cuda/launch.cuh).
struct Launcher {
  template <typename... P, typename... A>
  static void launch(void (*kernel)(P...), dim3 grid, int threads, A&&... args) {
    static_assert(sizeof...(P) == sizeof...(A), "emu::Launcher::launch: wrong number of kernel arguments");
    struct Ctx {
      void (*kernel)(P...);
      std::tuple<std::decay_t<P>...> params;
    };
    // Converted to the kernel's parameter types once, as the CUDA runtime copies them; each thread
    // then gets its own copy, as each GPU thread reads its own.
    Ctx ctx{kernel, std::tuple<std::decay_t<P>...>(std::forward<A>(args)...)};
    detail::run_launch(reinterpret_cast<const void*>(kernel),
                       [](void* c) {
                         auto* x = static_cast<Ctx*>(c);
                         std::apply(x->kernel, x->params);
                       },
                       &ctx, grid, threads);
  }
  // The planning's SM count (set from Python: cuda_emu.runtime(m).configure(multiprocessors=132)).
  static int multiprocessors() { return detail::multiprocessors(); }
};

}  // namespace emu

inline void __syncthreads(std::source_location at = std::source_location::current()) {
  emu::detail::barrier(at.file_name(), at.line());
}

#pragma GCC visibility pop
