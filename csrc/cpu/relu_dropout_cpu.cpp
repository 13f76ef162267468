// CPU kernels of alexnet_kernels::relu_dropout_fwd, relu_dropout_bwd, relu_fwd and relu_bwd.
//
// Tiling: at::parallel_for over 4-element groups (one Philox counter each), so that a thread's
// span starts on a group and draws exactly the counters the GPU kernel draws for those elements.
// A thread works through its span in blocks of kBlock elements: the block's kBlock / 4 Philox
// calls into a stack buffer (one SIMD lane per counter: the rounds are 32x32->64-bit multiplies
// and xors), then one pass over x that keeps, scales and stores.
//
// Vectorization: plain loops the compiler vectorizes (checked with -fopt-info-vec and in the
// object's vpmuludq / zmm instructions), built three times by target_clones (AVX-512, AVX2, the
// baseline) and chosen at load time from the CPU: the extension is compiled for the baseline ISA.
//
// Floor: forward reads x and writes y, 2 N * itemsize bytes; backward reads g and y and writes
// dx, 3 N * itemsize. Philox-4x32-10 adds 10 rounds of two 32x32->64-bit multiplies and four xors
// per 4 elements: on a core of a current x86 CPU that is more time than the stream itself for
// tensors in cache (the fc layers' [128, 4096]), so the forward is compute-bound there and
// gains from every core; the backward is a pure stream. fp32 and bf16 vectorize throughout;
// fp16's conversions (c10::Half) stay scalar in the apply pass.
#include <algorithm>
#include <cstring>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include "../relu_dropout.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define AK_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define AK_CPU_CLONES
#endif

namespace alexnet_kernels {
namespace relu_dropout {

constexpr int64_t kBlock = 256;         // elements per Philox block: 64 counters, 1 KiB of stack
constexpr int64_t kGrainGroups = 8192;  // parallel_for grain: 32K elements

// How each dtype is loaded into and stored from the fp32 (fp64) arithmetic. bf16 is handled as
// its bits and rounded to nearest even, as on the GPU; a NaN stays a quiet NaN of its sign (the
// Triton kernel's bits under the interpreter; the GPU's conversion may pick another NaN).
struct F32 {
  using storage = float;
  using acc = float;
  static float load(float v) { return v; }
  static float store(float v) { return v; }
};
struct F64 {
  using storage = double;
  using acc = double;
  static double load(double v) { return v; }
  static double store(double v) { return v; }
};
struct BF16 {
  using storage = uint16_t;
  using acc = float;
  static float load(uint16_t v) {
    const uint32_t bits = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  static uint16_t store(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    const uint32_t rounded = bits + 0x7FFFu + ((bits >> 16) & 1u);
    return static_cast<uint16_t>((f != f ? (bits | 0x400000u) : rounded) >> 16);
  }
};
struct F16 {
  using storage = c10::Half;
  using acc = float;
  static float load(c10::Half v) { return static_cast<float>(v); }
  static c10::Half store(float f) { return c10::Half(f); }
};

template <typename IO>
__attribute__((always_inline)) inline void forward_span(const typename IO::storage* __restrict x,
                                                        typename IO::storage* __restrict y, int64_t begin, int64_t end,
                                                        uint64_t key, uint64_t counter, uint32_t threshold,
                                                        float scale) {
  alignas(64) uint32_t r[kBlock];
  for (int64_t b = begin; b < end; b += kBlock) {  // begin is a multiple of 4
    const uint64_t first = counter + static_cast<uint64_t>(b / 4);
    for (int64_t i = 0; i < kBlock / 4; ++i) philox4x32_10(key, first + static_cast<uint64_t>(i), r + 4 * i);
    const int64_t len = std::min(kBlock, end - b);
    for (int64_t e = 0; e < len; ++e) y[b + e] = IO::store(forward_value(IO::load(x[b + e]), r[e], threshold, scale));
  }
}

template <typename IO>
__attribute__((always_inline)) inline void backward_span(const typename IO::storage* __restrict g,
                                                         const typename IO::storage* __restrict y,
                                                         typename IO::storage* __restrict dx, int64_t begin,
                                                         int64_t end, typename IO::acc scale) {
  for (int64_t i = begin; i < end; ++i) dx[i] = IO::store(backward_value(IO::load(g[i]), IO::load(y[i]), scale));
}

template <typename IO>
__attribute__((always_inline)) inline void relu_span(const typename IO::storage* __restrict x,
                                                     typename IO::storage* __restrict y, int64_t begin, int64_t end) {
  // torch.relu: negatives to +0; NaN and -0.0 pass through unchanged (their bits copied).
  for (int64_t i = begin; i < end; ++i) y[i] = IO::load(x[i]) < 0 ? typename IO::storage(0) : x[i];
}

// The cloned entry points: one overload per storage type, each compiled for every ISA above.
#define AK_RELU_DROPOUT_KERNELS(IO)                                                                                 \
  AK_CPU_CLONES void forward_kernel(const IO::storage* x, IO::storage* y, int64_t begin, int64_t end, uint64_t key, \
                                    uint64_t counter, uint32_t threshold, float scale) {                            \
    forward_span<IO>(x, y, begin, end, key, counter, threshold, scale);                                             \
  }
#define AK_RELU_KERNELS(IO)                                                                                      \
  AK_CPU_CLONES void backward_kernel(const IO::storage* g, const IO::storage* y, IO::storage* dx, int64_t begin, \
                                     int64_t end, IO::acc scale) {                                               \
    backward_span<IO>(g, y, dx, begin, end, scale);                                                              \
  }                                                                                                              \
  AK_CPU_CLONES void relu_kernel(const IO::storage* x, IO::storage* y, int64_t begin, int64_t end) {             \
    relu_span<IO>(x, y, begin, end);                                                                             \
  }

AK_RELU_DROPOUT_KERNELS(F32)
AK_RELU_DROPOUT_KERNELS(F16)
AK_RELU_DROPOUT_KERNELS(BF16)
AK_RELU_KERNELS(F32)
AK_RELU_KERNELS(F64)
AK_RELU_KERNELS(F16)
AK_RELU_KERNELS(BF16)

// ---- host side: checks, dispatch over dtypes, the parallel loop ---------------------------------

std::string dtype_name(at::ScalarType t) {
  return "torch." + std::string(c10::getDtypeNames(t).first);
}

// relu_dropout takes float32, float16 and bfloat16 (the GPU kernel's dtypes); relu float64 too.
void check_x(const at::Tensor& x, const char* op, bool allow_double) {
  const auto t = x.scalar_type();
  const bool ok = t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || (allow_double && t == at::kDouble);
  TORCH_CHECK_TYPE(ok, op, ": x must be a ", allow_double ? "float64, " : "",
                   "float32, float16 or bfloat16 tensor, got x.dtype=", dtype_name(t));
}

void check_grad(const at::Tensor& grad, const at::Tensor& y, const char* op) {
  TORCH_CHECK_VALUE(grad.sizes() == y.sizes() && grad.scalar_type() == y.scalar_type() && grad.device() == y.device(),
                    op, ": grad and y must have the same shape, dtype and device, got grad ", grad.sizes(), " ",
                    dtype_name(grad.scalar_type()), " on ", grad.device(), " and y ", y.sizes(), " ",
                    dtype_name(y.scalar_type()), " on ", y.device());
}

void check_p(double p, const char* op) {
  TORCH_CHECK_VALUE(p >= 0.0 && p < 1.0, op, ": p must be in [0, 1), got p=", p);
}

at::Tensor empty_contiguous(const at::Tensor& like) {
  return at::empty(like.sizes(), like.options().memory_format(at::MemoryFormat::Contiguous));
}

// Calls f(IO{}) with the IO of t's dtype (checked before).
template <typename F>
void dispatch_io(at::ScalarType t, F&& f) {
  switch (t) {
    case at::kFloat:
      return f(F32{});
    case at::kDouble:
      return f(F64{});
    case at::kHalf:
      return f(F16{});
    case at::kBFloat16:
      return f(BF16{});
    default:
      TORCH_CHECK(false, "relu_dropout: unexpected dtype ", t);
  }
}

template <typename IO>
typename IO::storage* data(const at::Tensor& t) {
  return reinterpret_cast<typename IO::storage*>(t.data_ptr());
}

at::Tensor relu_dropout_fwd_cpu(const at::Tensor& x, const at::Tensor& seed, double p) {
  check_x(x, "relu_dropout_fwd", false);
  check_p(p, "relu_dropout_fwd");
  TORCH_CHECK_VALUE(seed.scalar_type() == at::kLong && seed.numel() == 2 && seed.device().is_cpu(),
                    "relu_dropout_fwd: seed must be a CPU int64 tensor of 2 elements [key, counter base], got dtype=",
                    dtype_name(seed.scalar_type()), ", numel=", seed.numel(), ", device=", seed.device());
  const at::Tensor xc = x.contiguous();
  at::Tensor y = empty_contiguous(x);
  const int64_t n = x.numel();
  if (n == 0) return y;
  const at::Tensor s = seed.contiguous();
  const uint64_t key = static_cast<uint64_t>(s.data_ptr<int64_t>()[0]);
  const uint64_t counter = static_cast<uint64_t>(s.data_ptr<int64_t>()[1]);
  const uint32_t threshold = drop_threshold(p);
  const float scale = keep_scale(p);
  dispatch_io(x.scalar_type(), [&](auto io) {
    using IO = decltype(io);
    if constexpr (!std::is_same_v<IO, F64>) {
      const auto* xp = data<IO>(xc);
      auto* yp = data<IO>(y);
      at::parallel_for(0, (n + 3) / 4, kGrainGroups, [&](int64_t g0, int64_t g1) {
        forward_kernel(xp, yp, 4 * g0, std::min(4 * g1, n), key, counter, threshold, scale);
      });
    }
  });
  return y;
}

at::Tensor backward_cpu(const at::Tensor& grad, const at::Tensor& y, double scale) {
  const at::Tensor gc = grad.contiguous(), yc = y.contiguous();
  at::Tensor dx = empty_contiguous(grad);
  const int64_t n = grad.numel();
  dispatch_io(grad.scalar_type(), [&](auto io) {
    using IO = decltype(io);
    const auto* gp = data<IO>(gc);
    const auto* yp = data<IO>(yc);
    auto* dp = data<IO>(dx);
    const auto s = static_cast<typename IO::acc>(scale);
    at::parallel_for(0, n, 4 * kGrainGroups, [&](int64_t b, int64_t e) { backward_kernel(gp, yp, dp, b, e, s); });
  });
  return dx;
}

at::Tensor relu_dropout_bwd_cpu(const at::Tensor& grad, const at::Tensor& y, double p) {
  check_x(grad, "relu_dropout_bwd", false);
  check_grad(grad, y, "relu_dropout_bwd");
  check_p(p, "relu_dropout_bwd");
  return backward_cpu(grad, y, keep_scale(p));
}

at::Tensor relu_bwd_cpu(const at::Tensor& grad, const at::Tensor& y) {
  check_x(grad, "relu_bwd", true);
  check_grad(grad, y, "relu_bwd");
  return backward_cpu(grad, y, 1.0);
}

at::Tensor relu_fwd_cpu(const at::Tensor& x) {
  check_x(x, "relu_fwd", true);
  const at::Tensor xc = x.contiguous();
  at::Tensor y = empty_contiguous(x);
  const int64_t n = x.numel();
  dispatch_io(x.scalar_type(), [&](auto io) {
    using IO = decltype(io);
    const auto* xp = data<IO>(xc);
    auto* yp = data<IO>(y);
    at::parallel_for(0, n, 4 * kGrainGroups, [&](int64_t b, int64_t e) { relu_kernel(xp, yp, b, e); });
  });
  return y;
}

TORCH_LIBRARY_IMPL(alexnet_kernels, CPU, m) {
  m.impl("relu_dropout_fwd", &relu_dropout_fwd_cpu);
  m.impl("relu_dropout_bwd", &relu_dropout_bwd_cpu);
  m.impl("relu_fwd", &relu_fwd_cpu);
  m.impl("relu_bwd", &relu_bwd_cpu);
}

}  // namespace relu_dropout
}  // namespace alexnet_kernels
