// Host-side planning of the implicit-GEMM convolution kernels (conv_igemm_fwd.cuh,
// conv_igemm_wgrad.cuh): which kernel takes a convolution, the packed weights, the launch
// geometry. Templates on a Launcher (cuda/launch.cuh's CudaLauncher, or the CUDA emulator's), so
// that tests run this very planning on the CPU.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../conv_host.h"
#include "conv_igemm_fwd.cuh"
#include "conv_igemm_wgrad.cuh"

namespace alexnet_kernels {

// Whether the implicit GEMM takes this forward: fp32/bf16/fp16 and a tap table that fits, and
// per-image offsets and window coordinates (oh * sH - pH + r) in 32 bits; the batch offset and
// the pixel index are 64-bit.
inline bool igemm_eligible(const at::Tensor& x, const ConvGeom& g) {
  const auto dt = x.scalar_type();
  if (dt != at::kFloat && dt != at::kBFloat16 && dt != at::kHalf) return false;
  if (g.C * g.R * g.S > kIgMaxQ) return false;
  const int64_t image_extent = (g.C - 1) * x.stride(1) + (g.H - 1) * x.stride(2) + (g.W - 1) * x.stride(3);
  return x.stride(1) >= 0 && x.stride(2) >= 0 && x.stride(3) >= 0 && image_extent < (int64_t(1) << 31) &&
         g.OH * g.OW < (int64_t(1) << 31) && g.H + 2 * g.pH < (int64_t(1) << 31) &&
         g.W + 2 * g.pW < (int64_t(1) << 31);
}

// The geometry and x's side of the kernels' parameters.
inline IgParams ig_params(const at::Tensor& x, const ConvGeom& g, int64_t Qpad) {
  IgParams p{};
  p.x = x.const_data_ptr();
  p.xsn = x.stride(0);
  p.xsc = static_cast<int32_t>(x.stride(1));
  p.xsh = static_cast<int32_t>(x.stride(2));
  p.xsw = static_cast<int32_t>(x.stride(3));
  p.M = g.N * g.OH * g.OW;
  p.OH = static_cast<int32_t>(g.OH); p.OW = static_cast<int32_t>(g.OW);
  p.H = static_cast<int32_t>(g.H); p.W = static_cast<int32_t>(g.W);
  // Below 2^31 by igemm_eligible wherever they matter; clamped so that no cast wraps.
  p.sH = static_cast<int32_t>(std::min<int64_t>(g.sH, 1 << 30));
  p.sW = static_cast<int32_t>(std::min<int64_t>(g.sW, 1 << 30));
  p.pH = static_cast<int32_t>(std::min<int64_t>(g.pH, 1 << 30));
  p.pW = static_cast<int32_t>(std::min<int64_t>(g.pW, 1 << 30));
  p.R = static_cast<int32_t>(g.R); p.S = static_cast<int32_t>(g.S);
  p.K = static_cast<int32_t>(g.K);
  p.Q = static_cast<int32_t>(g.C * g.R * g.S);
  p.Qpad = static_cast<int32_t>(Qpad);
  return p;
}

// Channel tiles: 96 wide where K is a multiple of 96 (the paper's conv1), else 64.
inline int igemm_tile_j(const ConvGeom& g) { return g.K % 96 == 0 ? 3 : 2; }

// The row-staged kernels' plan: taken where a (c, r) row's taps fit one step (bf16 / fp16: one
// k16 mma step, 8 to 16 taps, an even column stride so that tap pairs are aligned words; fp32:
// up to 12 taps, two rows per step), and a 128-pixel tile touches at most kRsRowsMax output rows
// whose staged runs fit the staging buffer. Fills `span` and the chunks of a full output row.
struct RsPlan {
  bool ok = false;
  int32_t span = 0, cnt_mid = 0;
};

inline RsPlan rows_plan(const ConvGeom& g, bool half) {
  RsPlan pl;
  const int64_t V = half ? 8 : 4, cap = half ? kRsStage16 : kRsStage32;
  if (half ? (g.S < 8 || g.S > 16 || g.sW % 2 != 0) : g.S > kRsMaxS32) return pl;
  if ((g.OW - 1) * g.sW + 64 >= (int64_t(1) << 30)) return pl;  // column offsets in 32 bits, with room
  const int64_t span = V - 1 + (half ? 16 : g.S) - 1;
  auto cb = [&](int64_t ow) { return ow * g.sW / V; };
  auto ce = [&](int64_t ow) { return (ow * g.sW + span) / V + 1; };
  // The most output rows and staged chunks over every position of a full tile in its row (as
  // RsTile counts them); from OW >= 128 on a tile spans at most two rows and the bound is closed.
  int64_t rows = 0, chunks = 0;
  if (g.OW < kIgBM) {
    for (int64_t first = 0; first < g.OW; ++first) {
      const int64_t last = first + kIgBM - 1, nr = last / g.OW + 1, ow_last = last - (nr - 1) * g.OW;
      const int64_t items = nr == 1 ? ce(ow_last) - cb(first) : ce(g.OW - 1) - cb(first) + (nr - 2) * ce(g.OW - 1) + ce(ow_last);
      rows = std::max(rows, nr);
      chunks = std::max(chunks, items);
    }
  } else {
    rows = 2;
    chunks = (kIgBM * g.sW + 2 * span) / V + 4;
  }
  if (rows > kRsRowsMax || chunks * V > cap) return pl;
  pl.ok = true;
  pl.span = static_cast<int32_t>(span);
  pl.cnt_mid = static_cast<int32_t>(ce(g.OW - 1));
  return pl;
}

// The forward through the row-staged kernels (plan.ok).
template <typename Launcher>
void conv2d_forward_rows(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                         const ConvGeom& g, bool relu, const RsPlan& plan, at::Tensor& y) {
  const bool half = x.scalar_type() != at::kFloat;
  const int J = igemm_tile_j(g);
  const int64_t BN = 32 * J, Kpad = (g.K + BN - 1) / BN * BN;
  const int64_t CR = g.C * g.R, CRpad = (CR + kRsTapRows - 1) / kRsTapRows * kRsTapRows, Q = CR * g.S;
  const int64_t es = x.element_size(), V = 16 / es;
  at::Tensor wk;
  int64_t wpitch;
  if (half) {
    // [Kpad, CRpad * 16]: each (c, r) row's taps padded to one k16 step, zeros past S and K.
    wk = at::zeros({Kpad, CRpad, 16}, w.options().memory_format(at::MemoryFormat::Contiguous));
    wk.narrow(0, 0, g.K).narrow(1, 0, CR).narrow(2, 0, g.S).copy_(w.reshape({g.K, CR, g.S}));
    wpitch = CRpad * 16;
  } else {
    // [taps + pad, Kpad], channel fastest: a step's B tile is contiguous rows (the zero rows past
    // the last tap cover the odd step's pad tap).
    wk = at::zeros({CRpad * g.S + 2, Kpad}, w.options().memory_format(at::MemoryFormat::Contiguous));
    wk.narrow(0, 0, Q).narrow(1, 0, g.K).copy_(w.reshape({g.K, Q}).t());
    wpitch = Kpad;
  }
  RsParams rp{};
  rp.f = ig_params(x, g, 0);
  rp.f.w = wk.const_data_ptr();
  rp.f.b = b.has_value() ? b->const_data_ptr() : nullptr;
  rp.f.has_bias = b.has_value();
  rp.f.y = y.mutable_data_ptr();
  rp.f.ysn = y.stride(0); rp.f.ysc = y.stride(1); rp.f.ysh = y.stride(2); rp.f.ysw = y.stride(3);
  rp.f.relu = relu;
  rp.xmis = static_cast<int32_t>(reinterpret_cast<uintptr_t>(x.const_data_ptr()) % 16 / es);
  rp.xend = 1 + (g.N - 1) * x.stride(0) + (g.C - 1) * x.stride(1) + (g.H - 1) * x.stride(2) + (g.W - 1) * x.stride(3);
  rp.CR = static_cast<int32_t>(CR);
  rp.span = plan.span;
  rp.wpitch = static_cast<int32_t>(wpitch);
  rp.cnt_mid = FastDivmod32(plan.cnt_mid);
  rp.y_cl = conv_channels_last(y);
  const bool y_aligned = reinterpret_cast<uintptr_t>(y.const_data_ptr()) % 16 == 0;
  rp.y_vec = y_aligned && (!rp.y_cl || g.K % V == 0);

  const dim3 grid(static_cast<unsigned>((rp.f.M + kIgBM - 1) / kIgBM), static_cast<unsigned>(Kpad / BN));
  switch (x.scalar_type()) {
    case at::kFloat:
      if (J == 3) Launcher::launch(conv_fwd_rows_f32<3>, grid, kIgThreads, rp);
      else Launcher::launch(conv_fwd_rows_f32<2>, grid, kIgThreads, rp);
      break;
    case at::kBFloat16:
      if (J == 3) Launcher::launch(conv_fwd_rows_mma<at::BFloat16, 3>, grid, kIgThreads, rp);
      else Launcher::launch(conv_fwd_rows_mma<at::BFloat16, 2>, grid, kIgThreads, rp);
      break;
    default:
      if (J == 3) Launcher::launch(conv_fwd_rows_mma<at::Half, 3>, grid, kIgThreads, rp);
      else Launcher::launch(conv_fwd_rows_mma<at::Half, 2>, grid, kIgThreads, rp);
  }
}

// The forward through the gather kernels.
template <typename Launcher>
void conv2d_forward_gather(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                           const ConvGeom& g, bool relu, at::Tensor& y) {
  const bool half = x.scalar_type() != at::kFloat;
  const int64_t Q = g.C * g.R * g.S;
  const int64_t bk = half ? kIgBK16 : kIgBK32;
  const int64_t Qpad = (Q + bk - 1) / bk * bk;
  const int J = igemm_tile_j(g);
  const int64_t BN = 32 * J;
  const int64_t Kpad = (g.K + BN - 1) / BN * BN;
  // The weight as the GEMM's B, [Kpad, Qpad] with taps in (c, r, s) order, zero-padded so the
  // kernel reads whole vectors with no bounds tests (and 0 * 0 where A is padded too).
  at::Tensor wp = at::constant_pad_nd(w.reshape({g.K, Q}), {0, Qpad - Q, 0, Kpad - g.K}, 0).contiguous();
  // With nothing to pad this may be a view of w, whose storage offset can break the 16-byte
  // alignment of the tensor-core kernel's vector loads.
  if (reinterpret_cast<uintptr_t>(wp.const_data_ptr()) % 16 != 0) wp = wp.clone();

  IgParams p = ig_params(x, g, Qpad);
  p.w = wp.const_data_ptr();
  p.b = b.has_value() ? b->const_data_ptr() : nullptr;
  p.has_bias = b.has_value();
  p.y = y.mutable_data_ptr();
  p.ysn = y.stride(0); p.ysc = y.stride(1); p.ysh = y.stride(2); p.ysw = y.stride(3);
  p.relu = relu;

  const dim3 grid(static_cast<unsigned>((p.M + kIgBM - 1) / kIgBM), static_cast<unsigned>(Kpad / BN));
  switch (x.scalar_type()) {
    case at::kFloat:
      if (J == 3) Launcher::launch(conv_fwd_igemm_f32<3>, grid, kIgThreads, p);
      else Launcher::launch(conv_fwd_igemm_f32<2>, grid, kIgThreads, p);
      break;
    case at::kBFloat16:
      if (J == 3) Launcher::launch(conv_fwd_igemm_mma<at::BFloat16, 3>, grid, kIgThreads, p);
      else Launcher::launch(conv_fwd_igemm_mma<at::BFloat16, 2>, grid, kIgThreads, p);
      break;
    default:
      if (J == 3) Launcher::launch(conv_fwd_igemm_mma<at::Half, 3>, grid, kIgThreads, p);
      else Launcher::launch(conv_fwd_igemm_mma<at::Half, 2>, grid, kIgThreads, p);
  }
}

// Which forward kernel family takes a convolution the implicit GEMM is eligible for.
enum class IgForward { kRows, kGather };

inline IgForward igemm_forward_kind(const at::Tensor& x, const ConvGeom& g) {
  return rows_plan(g, x.scalar_type() != at::kFloat).ok ? IgForward::kRows : IgForward::kGather;
}

// The forward (igemm_eligible), through the row-staged kernels where they apply, else the gather
// kernels; `force` picks one (tests: the gather kernels on shapes the row-staged ones take).
template <typename Launcher>
at::Tensor conv2d_forward_igemm(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                                const ConvGeom& g, bool relu, c10::optional<IgForward> force = c10::nullopt) {
  at::Tensor y = at::empty({g.N, g.K, g.OH, g.OW}, x.options().memory_format(conv_format(x)));
  if (y.numel() == 0) return y;
  const int64_t grid_x = (g.N * g.OH * g.OW + kIgBM - 1) / kIgBM;
  TORCH_CHECK((g.K + 63) / 64 <= 65535 && grid_x < (int64_t(1) << 31),
              "conv2d: too many output channels or pixels for the implicit-GEMM grid: ", g.K, ", ", g.N * g.OH * g.OW);
  const RsPlan plan = rows_plan(g, x.scalar_type() != at::kFloat);
  const IgForward kind = force.value_or(plan.ok ? IgForward::kRows : IgForward::kGather);
  TORCH_CHECK(kind == IgForward::kGather || plan.ok, "conv2d: the row-staged kernels do not take this convolution");
  if (kind == IgForward::kRows) conv2d_forward_rows<Launcher>(x, w, b, g, relu, plan, y);
  else conv2d_forward_gather<Launcher>(x, w, b, g, relu, y);
  return y;
}

// The weight gradient's chunking: how many pixels each block reduces. The grid (chunks x tiles
// blocks, two resident per SM) is sized to whole waves of the GPU: a last, part-filled wave
// leaves SMs idle for a whole block's time (at conv1, batch 128, on 132 SMs: 570 blocks were
// 2.16 waves, a quarter of the third wasted). At most kWgMaxChunk pixels per chunk (each
// thread sums its chunk serially in fp32, whose rounding grows like sqrt(chunk), ~2e-6 relative
// at 2048; the chunks are then summed in fp64), unless the partials would pass 256 MiB
// (batches far beyond conv1's 128): then fewer, longer chunks.
struct WgPlan {
  int64_t chunk, chunks;
};

inline WgPlan wgrad_plan(int64_t M, int64_t tiles, int64_t Kpad, int64_t Qpad, int sms) {
  const int64_t slots = std::max<int64_t>(1, 2 * static_cast<int64_t>(sms));  // resident blocks
  const int64_t max_chunks = std::max<int64_t>(1, (int64_t(256) << 20) / (Kpad * Qpad * 4));
  const int64_t min_chunks = std::min<int64_t>((M + kWgMaxChunk - 1) / kWgMaxChunk, max_chunks);
  // The fewest whole waves that give each chunk at most kWgMaxChunk pixels; then as many chunks
  // as fill them.
  const int64_t waves = std::max<int64_t>(1, (min_chunks * tiles + slots - 1) / slots);
  int64_t chunks = std::min<int64_t>(std::max<int64_t>(1, waves * slots / tiles), max_chunks);
  chunks = std::max<int64_t>(chunks, min_chunks);
  const int64_t chunk = std::max<int64_t>(1, (M + chunks - 1) / chunks);
  return {chunk, std::max<int64_t>(1, (M + chunk - 1) / chunk)};
}

// dW and, when asked, db into the given tensors (dw in w's layout, both in w's dtype).
template <typename Launcher>
void conv2d_wgrad_igemm(const at::Tensor& grad, const at::Tensor& x, const c10::optional<at::Tensor>& y,
                        const ConvGeom& g, bool relu, at::Tensor& dw, at::Tensor* db) {
  const int64_t Q = g.C * g.R * g.S;
  const int64_t Qpad = (Q + kWgBQ - 1) / kWgBQ * kWgBQ;
  const int J = igemm_tile_j(g);
  const int64_t BN = 32 * J, Kpad = (g.K + BN - 1) / BN * BN;
  const int64_t M = g.N * g.OH * g.OW;
  const int64_t tiles = (Qpad / kWgBQ) * (Kpad / BN);
  const WgPlan plan = wgrad_plan(M, tiles, Kpad, Qpad, Launcher::multiprocessors());
  auto f32 = x.options().dtype(at::kFloat).memory_format(at::MemoryFormat::Contiguous);
  at::Tensor part = at::empty({plan.chunks, Kpad, Qpad}, f32);
  at::Tensor dbpart = at::empty({db != nullptr ? plan.chunks : 0, Kpad}, f32);

  WgParams wp{};
  wp.f = ig_params(x, g, Qpad);
  wp.f.relu = relu;
  wp.g = grad.const_data_ptr();
  wp.gsn = grad.stride(0); wp.gsc = grad.stride(1); wp.gsh = grad.stride(2); wp.gsw = grad.stride(3);
  wp.yv = relu ? y->const_data_ptr() : nullptr;
  if (relu) {
    wp.vsn = y->stride(0); wp.vsc = y->stride(1); wp.vsh = y->stride(2); wp.vsw = y->stride(3);
  }
  wp.part = part.mutable_data_ptr<float>();
  wp.dbpart = dbpart.mutable_data_ptr<float>();
  wp.chunk = plan.chunk;
  wp.Kpad = static_cast<int32_t>(Kpad);
  wp.want_db = db != nullptr;

  const dim3 grid(static_cast<unsigned>(plan.chunks), static_cast<unsigned>(Qpad / kWgBQ), static_cast<unsigned>(Kpad / BN));
  TORCH_CHECK(grid.z <= 65535, "conv2d_backward: too many output channels for the implicit-GEMM grid: ", g.K);
  const int64_t outs = g.K * Q + (db != nullptr ? g.K : 0);
  const unsigned rblocks = static_cast<unsigned>((outs + 255) / 256);
  auto launch = [&](auto tag) {
    using scalar_t = decltype(tag);
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (J == 3) Launcher::launch(conv_wgrad_igemm<3>, grid, kIgThreads, wp);
      else Launcher::launch(conv_wgrad_igemm<2>, grid, kIgThreads, wp);
    } else {
      if (J == 3) Launcher::launch(conv_wgrad_igemm_mma<scalar_t, 3>, grid, kIgThreads, wp);
      else Launcher::launch(conv_wgrad_igemm_mma<scalar_t, 2>, grid, kIgThreads, wp);
    }
    gptr<scalar_t> dbp = db != nullptr ? db->mutable_data_ptr<scalar_t>() : nullptr;
    Launcher::launch(conv_wgrad_reduce<scalar_t>, dim3(rblocks), 256, gptr<const float>(wp.part),
                     gptr<const float>(wp.dbpart), static_cast<int>(plan.chunks), static_cast<int>(g.K),
                     static_cast<int>(Kpad), static_cast<int>(Q), static_cast<int>(Qpad), static_cast<int>(g.R),
                     static_cast<int>(g.S), strides4(dw), gptr<scalar_t>(dw.mutable_data_ptr<scalar_t>()), dbp,
                     db != nullptr);
  };
  switch (x.scalar_type()) {
    case at::kFloat: launch(float{}); break;
    case at::kBFloat16: launch(at::BFloat16{}); break;
    default: launch(at::Half{});
  }
}

}  // namespace alexnet_kernels
