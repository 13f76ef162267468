// The implicit-GEMM convolution kernels of alexnet_kernels::conv2d on CUDA, and the host code
// that plans and launches them through a Launcher (conv_cuda.cu's launches on the current CUDA
// stream; tests/cuda_emu/conv_emu.cpp runs the same kernels on the CPU, one std::thread per
// CUDA thread, so that tests can check their indexing without a GPU).
//
// Forward has a fast path for AlexNet's conv1 and its kin (few input channels, large kernel and
// stride, so C*R*S <= kIgMaxQ): an implicit GEMM that gathers the im2col matrix tile by tile into
// shared memory, never into global memory.
//
//   y[m, k] = sum_q A[m, q] * B[q, k]   m = (n, oh, ow) an output pixel, q = (c, r, s) a tap,
//   A[m, q] = x[n, c, oh*sH - pH + r, ow*sW - pW + s] (0 outside the image), B[q, k] = w[k, c, r, s]
//
// fp32 runs on the FP32 pipes (IEEE fp32: no TF32), bf16 / fp16 on the tensor cores (mma.sync
// m16n8k16, fp32 accumulation). Both fuse bias and ReLU into the epilogue and write NCHW or
// channels_last through the output's strides. Their floors at batch 128 (H100, 51 TFLOP/s fp32
// measured by ../shared/BASELINES.md): 27.0 GFLOP paper conv1 -> 0.53 ms; 18.0 GFLOP torchvision
// conv1 -> 0.35 ms; bf16 is bound by bytes (x read once, y written once: ~88 MB, ~0.03 ms).
//
// The weight and bias gradients take the same implicit GEMM reduced over pixels (fp32 on the
// FP32 pipes, bf16 / fp16 on the tensor cores). Everything else --
// fp64, C*R*S > kIgMaxQ, inputs whose single image passes 2^31 elements, and the input gradient
// (conv1's input never needs one) -- runs the direct reference kernels of conv.h, one thread per
// element: correct for every shape, far from cuDNN's speed.
#pragma once

#include <algorithm>
#include <type_traits>

#include "../conv.h"

namespace alexnet_kernels {

constexpr int kIgBM = 128;     // output pixels per block
constexpr int kIgThreads = 256;
constexpr int kIgMaxQ = 1024;  // taps (C*R*S) whose offset table fits shared memory

// What the gather needs per tap q = (c, r, s): the offset of x[0, c, r, s] from x[0, 0, 0, 0]
// (strides of the real layout, so NCHW and channels_last gather alike) and (r, s) for the bounds
// test. Each block builds its table: Q / 256 divisions per thread, no host-to-device copy.
struct IgTap {
  int32_t off;
  int16_t r, s;
};

struct IgParams {
  const void* x;
  const void* w;  // packed [Kpad, Qpad], q fastest, zero beyond K and Q
  const void* b;  // [K] or null
  void* y;
  int64_t xsn;                  // x's batch stride (the only one that may pass 2^31)
  int32_t xsc, xsh, xsw;        // x's channel, row and column strides
  int64_t ysn, ysc, ysh, ysw;   // y's strides
  int64_t M;                    // N * OH * OW
  int32_t OH, OW, H, W, sH, sW, pH, pW;
  int32_t R, S, K, Q, Qpad;
  bool relu;
};

// Tap q = (c, r, s) of the gather (q < Q).
__device__ __forceinline__ IgTap ig_tap(const IgParams& p, int q) {
  const int RS = p.R * p.S;
  const int c = q / RS, r = (q - c * RS) / p.S, s = q - c * RS - r * p.S;
  return IgTap{c * p.xsc + r * p.xsh + s * p.xsw, static_cast<int16_t>(r), static_cast<int16_t>(s)};
}

// Fills the tap table, every thread of the block taking part; the caller syncs before use.
__device__ __forceinline__ void ig_fill_taps(IgTap* taps, const IgParams& p) {
  for (int q = threadIdx.x; q < p.Q; q += blockDim.x) taps[q] = ig_tap(p, q);
}

// Output pixel m = (n, oh, ow) of the implicit GEMM's rows.
struct IgCoord {
  int64_t n;
  int32_t oh, ow;
};

__device__ __forceinline__ IgCoord ig_coord(const IgParams& p, int64_t m) {
  const int64_t plane = static_cast<int64_t>(p.OH) * p.OW;
  const int64_t n = m / plane;
  const int32_t rest = static_cast<int32_t>(m - n * plane);
  const int32_t oh = rest / p.OW;
  return IgCoord{n, oh, rest - oh * p.OW};
}

// The pixel a thread gathers for: where its window starts in x (possibly outside, with padding).
struct IgPixel {
  int64_t base;  // offset of x[n, 0, ih0, iw0] (ih0, iw0 may be negative: only added to in-bounds taps)
  int32_t ih0, iw0;
  bool valid;
};

__device__ __forceinline__ IgPixel ig_pixel(const IgParams& p, int64_t m) {
  IgPixel px{0, 0, 0, false};
  if (m < p.M) {
    const IgCoord o = ig_coord(p, m);
    px.ih0 = o.oh * p.sH - p.pH;
    px.iw0 = o.ow * p.sW - p.pW;
    px.base = o.n * p.xsn + static_cast<int64_t>(px.ih0) * p.xsh + static_cast<int64_t>(px.iw0) * p.xsw;
    px.valid = true;
  }
  return px;
}

// The offset in x of A[m, q] for the thread's pixel, or -1 where A is 0 (padding, q >= Q, m >= M).
__device__ __forceinline__ int64_t ig_offset(const IgParams& p, const IgPixel& px, const IgTap* taps, int q) {
  if (!px.valid || q >= p.Q) return -1;
  const IgTap t = taps[q];
  const int ih = px.ih0 + t.r, iw = px.iw0 + t.s;
  if (static_cast<unsigned>(ih) >= static_cast<unsigned>(p.H) || static_cast<unsigned>(iw) >= static_cast<unsigned>(p.W))
    return -1;
  return px.base + t.off;
}

// Where output pixel m starts in y (y[n, 0, oh, ow]), or -1 past the last pixel. Decoded once
// per pixel a thread stores, not once per element: the 64-bit division would otherwise cost as
// much as the main loop.
__device__ __forceinline__ int64_t ig_out_base(const IgParams& p, int64_t m) {
  if (m >= p.M) return -1;
  const IgCoord o = ig_coord(p, m);
  return o.n * p.ysn + o.oh * p.ysh + o.ow * p.ysw;
}

// Bias, ReLU (NaN passes, as torch.relu) and the store of output element (pixel at base, k).
template <typename T>
__device__ __forceinline__ void ig_store(const IgParams& p, int64_t base, int k, float acc) {
  if (base < 0 || k >= p.K) return;
  if (p.b) acc += static_cast<float>(static_cast<const T*>(p.b)[k]);
  if (p.relu && acc < 0.f) acc = 0.f;
  static_cast<T*>(p.y)[base + k * p.ysc] = static_cast<T>(acc);
}

// ---------------------------------------------------------------------------------------------
// fp32: SIMT implicit GEMM.
// Tiling: block = 128 pixels x BN channels (BN = 64 or 96; J = BN / 32), K-steps of 16 taps.
// 256 threads = 16 (tx, pixels) x 16 (ty, channels); each holds an 8 x 2J register tile: pixels
// tx*4 + {0..3} and 64 + tx*4 + {0..3} (two float4 shared loads, conflict-free), channels
// 32j + ty*2 + {0, 1} (float2 loads, broadcast within the warp). The next step's gather goes to
// registers while this step computes: 16 * 8 * 2J FMAs per thread per 8 + 2J shared loads.
// ---------------------------------------------------------------------------------------------
constexpr int kIgBK32 = 16;

template <int J>
__global__ void __launch_bounds__(kIgThreads, 2)
    conv_fwd_igemm_f32(IgParams p) {
  constexpr int BN = 32 * J, BK = kIgBK32;
  constexpr int kALoads = BK * kIgBM / kIgThreads;  // 8
  constexpr int kBLoads = BK * BN / kIgThreads;     // 2J
  __shared__ __align__(16) float As[BK][kIgBM];
  // Rows padded by 2: the stash (16 taps x 2 channels per warp) hits 32 distinct banks, and the
  // float2 reads stay 8-byte aligned.
  __shared__ __align__(16) float Bs[BK][BN + 2];
  __shared__ IgTap taps[kIgMaxQ];

  const float* __restrict__ x = static_cast<const float*>(p.x);
  const float* __restrict__ wp = static_cast<const float*>(p.w);
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kIgBM;
  const int k0 = blockIdx.y * BN;
  ig_fill_taps(taps, p);

  // Gather role: pixel tid % 128, taps tid / 128 + 2i of each step.
  const IgPixel px = ig_pixel(p, m0 + tid % kIgBM);
  const int a_q = tid / kIgBM;
  float a_reg[kALoads], b_reg[kBLoads];
  auto gather = [&](int q0) {
    AK_UNROLL for (int i = 0; i < kALoads; ++i) {
      const int64_t off = ig_offset(p, px, taps, q0 + a_q + 2 * i);
      a_reg[i] = off < 0 ? 0.f : x[off];
    }
    AK_UNROLL for (int i = 0; i < kBLoads; ++i) {
      const int e = tid + i * kIgThreads, kk = e / BK, qq = e % BK;  // q fastest: coalesced reads
      b_reg[i] = wp[static_cast<int64_t>(k0 + kk) * p.Qpad + q0 + qq];
    }
  };
  auto stash = [&]() {
    AK_UNROLL for (int i = 0; i < kALoads; ++i) As[a_q + 2 * i][tid % kIgBM] = a_reg[i];
    AK_UNROLL for (int i = 0; i < kBLoads; ++i) {
      const int e = tid + i * kIgThreads;
      Bs[e % BK][e / BK] = b_reg[i];
    }
  };

  float acc[8][2 * J];
  AK_UNROLL for (int i = 0; i < 8; ++i) AK_UNROLL for (int j = 0; j < 2 * J; ++j) acc[i][j] = 0.f;

  __syncthreads();  // taps
  gather(0);
  stash();
  __syncthreads();
  for (int q0 = 0; q0 < p.Qpad; q0 += BK) {
    const bool more = q0 + BK < p.Qpad;
    if (more) gather(q0 + BK);
    AK_UNROLL for (int kq = 0; kq < BK; ++kq) {
      const float4 a_lo = *reinterpret_cast<const float4*>(&As[kq][tx * 4]);
      const float4 a_hi = *reinterpret_cast<const float4*>(&As[kq][64 + tx * 4]);
      const float a[8] = {a_lo.x, a_lo.y, a_lo.z, a_lo.w, a_hi.x, a_hi.y, a_hi.z, a_hi.w};
      float b[2 * J];
      AK_UNROLL for (int j = 0; j < J; ++j) {
        const float2 bb = *reinterpret_cast<const float2*>(&Bs[kq][32 * j + ty * 2]);
        b[2 * j] = bb.x;
        b[2 * j + 1] = bb.y;
      }
      AK_UNROLL for (int i = 0; i < 8; ++i) AK_UNROLL for (int j = 0; j < 2 * J; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
    if (more) {
      stash();
      __syncthreads();
    }
  }

  AK_UNROLL for (int i = 0; i < 8; ++i) {
    const int64_t base = ig_out_base(p, m0 + (i < 4 ? tx * 4 + i : 64 + tx * 4 + i - 4));
    AK_UNROLL for (int j = 0; j < 2 * J; ++j) ig_store<float>(p, base, k0 + 32 * (j / 2) + ty * 2 + (j % 2), acc[i][j]);
  }
}

// ---------------------------------------------------------------------------------------------
// bf16 / fp16: tensor cores, mma.sync.m16n8k16 (fp32 accumulate).
// Tiling: block = 128 pixels x BN channels (BN = 64 or 96), K-steps of 32 taps. 8 warps =
// 4 (pixels: 32 each, two m16 tiles) x 2 (channels: BN/2 each, NT = BN/16 n8 tiles). Shared tiles
// are K-contiguous (A: [pixel][tap], B: [channel][tap]) with rows padded to 40 halves (80 bytes),
// which puts the 8 rows x 4 words of a fragment load in 32 distinct banks.
// Fragments (PTX ISA, m16n8k16 .bf16/.f16): g = lane / 4, t = lane % 4;
//   A regs (row, k pairs): (g, 2t) (g+8, 2t) (g, 2t+8) (g+8, 2t+8);  B regs (k pairs, col): (2t, g) (2t+8, g);
//   C: (g, 2t..2t+1) in c0 c1, (g+8, 2t..2t+1) in c2 c3.
// ---------------------------------------------------------------------------------------------
constexpr int kIgBK16 = 32;
constexpr int kIgRow16 = kIgBK16 + 8;  // padded row, in halves

template <typename T>
struct MmaType;
template <>
struct MmaType<at::BFloat16> {
  static __device__ __forceinline__ void mma(float* c, const uint32_t* a, const uint32_t* b) {
#ifdef AK_EMULATE_CUDA
    emu::mma_m16n8k16<at::BFloat16>(c, a, b);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
  }
};
template <>
struct MmaType<at::Half> {
  static __device__ __forceinline__ void mma(float* c, const uint32_t* a, const uint32_t* b) {
#ifdef AK_EMULATE_CUDA
    emu::mma_m16n8k16<at::Half>(c, a, b);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
  }
};

template <typename T, int J>
__global__ void __launch_bounds__(kIgThreads, 2)
    conv_fwd_igemm_mma(IgParams p) {
  using D = uint16_t;  // raw bf16 / fp16 bits: shared memory holds no conversions
  constexpr int BN = 32 * J, BK = kIgBK16, NT = BN / 16;
  constexpr int kAHalf = BK / 2;  // each thread gathers 16 consecutive taps of one pixel
  __shared__ __align__(16) D As[kIgBM][kIgRow16];
  __shared__ __align__(16) D Bs[BN][kIgRow16];
  __shared__ IgTap taps[kIgMaxQ];

  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ wp = static_cast<const T*>(p.w);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int g = lane / 4, t = lane % 4;
  const int wm = warp % 4, wn = warp / 4;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kIgBM;
  const int k0 = blockIdx.y * BN;
  ig_fill_taps(taps, p);

  // Gather role: pixel tid % 128, taps [16 * (tid / 128), +16) of each step.
  const IgPixel px = ig_pixel(p, m0 + tid % kIgBM);
  const int a_q = (tid / kIgBM) * kAHalf;
  // B tile: BN rows of 32 taps = BN * 4 uint4; 256 threads take one each, and the 96-row tile's
  // remaining 128 go to the first half of the block.
  constexpr int kBVec = BN * BK / 8;
  uint32_t a_reg[kAHalf / 2];
  uint4 b_reg[(kBVec + kIgThreads - 1) / kIgThreads];
  auto gather = [&](int q0) {
    AK_UNROLL for (int i = 0; i < kAHalf / 2; ++i) {
      // Raw 16-bit patterns (0 is +0.0 in both formats), the lower tap in the lower half as
      // the fragment layout wants.
      const int64_t lo = ig_offset(p, px, taps, q0 + a_q + 2 * i);
      const int64_t hi = ig_offset(p, px, taps, q0 + a_q + 2 * i + 1);
      a_reg[i] = static_cast<uint32_t>(lo < 0 ? 0 : x[lo].x) | (static_cast<uint32_t>(hi < 0 ? 0 : x[hi].x) << 16);
    }
    AK_UNROLL for (int i = 0; i < (kBVec + kIgThreads - 1) / kIgThreads; ++i) {
      const int e = tid + i * kIgThreads;
      if (e < kBVec) {
        const int row = e / (BK / 8), col = (e % (BK / 8)) * 8;
        b_reg[i] = *reinterpret_cast<const uint4*>(wp + static_cast<int64_t>(k0 + row) * p.Qpad + q0 + col);
      }
    }
  };
  auto stash = [&]() {
    uint4* dst = reinterpret_cast<uint4*>(&As[tid % kIgBM][a_q]);
    dst[0] = make_uint4(a_reg[0], a_reg[1], a_reg[2], a_reg[3]);
    dst[1] = make_uint4(a_reg[4], a_reg[5], a_reg[6], a_reg[7]);
    AK_UNROLL for (int i = 0; i < (kBVec + kIgThreads - 1) / kIgThreads; ++i) {
      const int e = tid + i * kIgThreads;
      if (e < kBVec) *reinterpret_cast<uint4*>(&Bs[e / (BK / 8)][(e % (BK / 8)) * 8]) = b_reg[i];
    }
  };

  float acc[2][NT][4];
  AK_UNROLL for (int i = 0; i < 2; ++i) AK_UNROLL for (int j = 0; j < NT; ++j) AK_UNROLL for (int r = 0; r < 4; ++r)
      acc[i][j][r] = 0.f;

  __syncthreads();  // taps
  gather(0);
  stash();
  __syncthreads();
  for (int q0 = 0; q0 < p.Qpad; q0 += BK) {
    const bool more = q0 + BK < p.Qpad;
    if (more) gather(q0 + BK);
    AK_UNROLL for (int kq = 0; kq < BK; kq += 16) {
      uint32_t a[2][4], b[NT][2];
      AK_UNROLL for (int i = 0; i < 2; ++i) {
        const int row = wm * 32 + i * 16 + g;
        a[i][0] = *reinterpret_cast<const uint32_t*>(&As[row][kq + 2 * t]);
        a[i][1] = *reinterpret_cast<const uint32_t*>(&As[row + 8][kq + 2 * t]);
        a[i][2] = *reinterpret_cast<const uint32_t*>(&As[row][kq + 2 * t + 8]);
        a[i][3] = *reinterpret_cast<const uint32_t*>(&As[row + 8][kq + 2 * t + 8]);
      }
      AK_UNROLL for (int j = 0; j < NT; ++j) {
        const int col = wn * (BN / 2) + j * 8 + g;
        b[j][0] = *reinterpret_cast<const uint32_t*>(&Bs[col][kq + 2 * t]);
        b[j][1] = *reinterpret_cast<const uint32_t*>(&Bs[col][kq + 2 * t + 8]);
      }
      AK_UNROLL for (int i = 0; i < 2; ++i) AK_UNROLL for (int j = 0; j < NT; ++j) MmaType<T>::mma(acc[i][j], a[i], b[j]);
    }
    __syncthreads();
    if (more) {
      stash();
      __syncthreads();
    }
  }

  AK_UNROLL for (int i = 0; i < 2; ++i) {
    const int64_t m = m0 + wm * 32 + i * 16 + g;
    const int64_t lo = ig_out_base(p, m), hi = ig_out_base(p, m + 8);
    AK_UNROLL for (int j = 0; j < NT; ++j) {
      const int k = k0 + wn * (BN / 2) + j * 8 + 2 * t;
      ig_store<T>(p, lo, k, acc[i][j][0]);
      ig_store<T>(p, lo, k + 1, acc[i][j][1]);
      ig_store<T>(p, hi, k, acc[i][j][2]);
      ig_store<T>(p, hi, k + 1, acc[i][j][3]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Weight and bias gradient: the same implicit GEMM, reduced over pixels instead of taps.
//   dW[k, q] = sum_m G[m, k] * A[m, q],  db[k] = sum_m G[m, k],  G = grad masked by y > 0 (relu)
// The 387,200-pixel reduction of conv1 at batch 128 is split into chunks, one per block (x), each
// over a 128-tap tile (y) and a BN-channel tile (z); a block writes its fp32 partial tile and a
// second kernel sums the chunks in fp64 into the weight's layout and dtype (deterministic: no
// atomics). Tiling: 16 pixels per step; 256 threads = 16 (tx, taps) x 16 (ty, channels), each an
// 8 x 2J register tile (taps tx*4 + {0..3} and 64 + tx*4 + {0..3}; channels 32j + ty*2 + {0, 1}):
// the forward kernel's layout with pixels and taps exchanged. Pixel coordinates are decoded once
// per 256 pixels into a shared table, so the gather does no division. This kernel serves fp32;
// bf16 / fp16 take the tensor-core one below.
// Floor: as the forward (same FLOPs); the partials add 2 * chunks * K * Qpad * 4 bytes (~50 MB).
// ---------------------------------------------------------------------------------------------
constexpr int kWgBQ = 128;   // taps per block
constexpr int kWgBM = 16;    // pixels per step
constexpr int kWgTable = 256;  // pixels decoded per table fill

struct WgParams {
  IgParams f;                   // geometry, x and its strides (f.y, f.w, f.b unused)
  const void* g;                // grad of y
  const void* yv;               // y (relu) or null
  int64_t gsn, gsc, gsh, gsw;   // g's strides
  int64_t vsn, vsc, vsh, vsw;   // y's strides
  float* part;                  // [chunks, Kpad, Qpad] partial dW
  float* dbpart;                // [chunks, Kpad] partial db, or null
  int64_t chunk;                // pixels per chunk (a multiple of kWgTable)
  int32_t Kpad;
};

struct WgPixel {
  int64_t xbase, goff, yoff;
  int32_t ih0, iw0;
  int32_t valid;
};

// Pixel m's entry of the table (valid only below m_end, the end of the block's chunk).
__device__ __forceinline__ WgPixel wg_pixel(const WgParams& w, int64_t m, int64_t m_end) {
  const IgParams& p = w.f;
  WgPixel px{0, 0, 0, 0, 0, 0};
  if (m < m_end) {
    const IgCoord o = ig_coord(p, m);
    px.ih0 = o.oh * p.sH - p.pH;
    px.iw0 = o.ow * p.sW - p.pW;
    px.xbase = o.n * p.xsn + static_cast<int64_t>(px.ih0) * p.xsh + static_cast<int64_t>(px.iw0) * p.xsw;
    px.goff = o.n * w.gsn + o.oh * w.gsh + o.ow * w.gsw;
    px.yoff = o.n * w.vsn + o.oh * w.vsh + o.ow * w.vsw;
    px.valid = 1;
  }
  return px;
}

template <typename T, int J>
__global__ void __launch_bounds__(kIgThreads, 2) conv_wgrad_igemm(WgParams w) {
  constexpr int BN = 32 * J;
  const IgParams& p = w.f;
  __shared__ __align__(16) float As[kWgBM][kWgBQ];
  __shared__ __align__(16) float Gs[kWgBM][BN + 2];  // +2: conflict-free stash, aligned float2 reads
  __shared__ WgPixel table[kWgTable];

  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ g = static_cast<const T*>(w.g);
  const T* __restrict__ yv = static_cast<const T*>(w.yv);
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int q0 = blockIdx.y * kWgBQ, k0 = blockIdx.z * BN;
  const bool bias_block = w.dbpart != nullptr && blockIdx.y == 0;

  // This thread's gather tap (fixed for the block): q0 + tid % 128.
  const int my_q = q0 + tid % kWgBQ;
  const bool t_valid = my_q < p.Q;
  const IgTap tap = t_valid ? ig_tap(p, my_q) : IgTap{0, 0, 0};
  const int32_t t_off = tap.off, t_r = tap.r, t_s = tap.s;

  float acc[8][2 * J], dbacc[2 * J];
  AK_UNROLL for (int i = 0; i < 8; ++i) AK_UNROLL for (int j = 0; j < 2 * J; ++j) acc[i][j] = 0.f;
  AK_UNROLL for (int j = 0; j < 2 * J; ++j) dbacc[j] = 0.f;

  float a_reg[8], g_reg[2 * J];
  auto gather = [&](int step) {
    AK_UNROLL for (int i = 0; i < 8; ++i) {
      const WgPixel& px = table[step * kWgBM + tid / kWgBQ + 2 * i];
      float v = 0.f;
      const int ih = px.ih0 + t_r, iw = px.iw0 + t_s;
      if (px.valid && t_valid && static_cast<unsigned>(ih) < static_cast<unsigned>(p.H) &&
          static_cast<unsigned>(iw) < static_cast<unsigned>(p.W))
        v = static_cast<float>(x[px.xbase + t_off]);
      a_reg[i] = v;
    }
    AK_UNROLL for (int i = 0; i < 2 * J; ++i) {
      const int e = tid + i * kIgThreads, pix = e % kWgBM, kk = e / kWgBM, k = k0 + kk;
      const WgPixel& px = table[step * kWgBM + pix];
      float v = 0.f;
      if (px.valid && k < p.K) {
        v = static_cast<float>(g[px.goff + k * w.gsc]);
        // torch.relu's backward: zero where y <= 0 (NaN passes)
        if (yv != nullptr && static_cast<float>(yv[px.yoff + k * w.vsc]) <= 0.f) v = 0.f;
      }
      g_reg[i] = v;
    }
  };
  auto stash = [&]() {
    AK_UNROLL for (int i = 0; i < 8; ++i) As[tid / kWgBQ + 2 * i][tid % kWgBQ] = a_reg[i];
    AK_UNROLL for (int i = 0; i < 2 * J; ++i) {
      const int e = tid + i * kIgThreads;
      Gs[e % kWgBM][e / kWgBM] = g_reg[i];
    }
  };

  const int64_t m_begin = static_cast<int64_t>(blockIdx.x) * w.chunk;
  const int64_t m_end = m_begin + w.chunk < p.M ? m_begin + w.chunk : p.M;
  for (int64_t mb = m_begin; mb < m_end; mb += kWgTable) {
    __syncthreads();  // the previous table and tiles are no longer read
    table[tid] = wg_pixel(w, mb + tid, m_end);
    __syncthreads();
    const int64_t left = m_end - mb;
    const int steps = static_cast<int>(((left < kWgTable ? left : kWgTable) + kWgBM - 1) / kWgBM);
    gather(0);
    stash();
    __syncthreads();
    for (int st = 0; st < steps; ++st) {
      const bool more = st + 1 < steps;
      if (more) gather(st + 1);
      AK_UNROLL for (int pm = 0; pm < kWgBM; ++pm) {
        const float4 a_lo = *reinterpret_cast<const float4*>(&As[pm][tx * 4]);
        const float4 a_hi = *reinterpret_cast<const float4*>(&As[pm][64 + tx * 4]);
        const float a[8] = {a_lo.x, a_lo.y, a_lo.z, a_lo.w, a_hi.x, a_hi.y, a_hi.z, a_hi.w};
        float gv[2 * J];
        AK_UNROLL for (int j = 0; j < J; ++j) {
          const float2 gg = *reinterpret_cast<const float2*>(&Gs[pm][32 * j + ty * 2]);
          gv[2 * j] = gg.x;
          gv[2 * j + 1] = gg.y;
        }
        AK_UNROLL for (int i = 0; i < 8; ++i) AK_UNROLL for (int j = 0; j < 2 * J; ++j) acc[i][j] = fmaf(a[i], gv[j], acc[i][j]);
        if (bias_block) AK_UNROLL for (int j = 0; j < 2 * J; ++j) dbacc[j] += gv[j];
      }
      __syncthreads();
      if (more) {
        stash();
        __syncthreads();
      }
    }
  }

  float* part = w.part + static_cast<int64_t>(blockIdx.x) * w.Kpad * p.Qpad;
  AK_UNROLL for (int j = 0; j < 2 * J; ++j) {
    const int k = k0 + 32 * (j / 2) + ty * 2 + (j % 2);  // < Kpad always
    float* row = part + static_cast<int64_t>(k) * p.Qpad + q0;
    // Qpad is a multiple of kWgBQ here: every tile column exists (taps >= Q hold zeros).
    *reinterpret_cast<float4*>(row + tx * 4) = make_float4(acc[0][j], acc[1][j], acc[2][j], acc[3][j]);
    *reinterpret_cast<float4*>(row + 64 + tx * 4) = make_float4(acc[4][j], acc[5][j], acc[6][j], acc[7][j]);
    if (bias_block && tx == 0) w.dbpart[static_cast<int64_t>(blockIdx.x) * w.Kpad + k] = dbacc[j];
  }
}

// bf16 / fp16 weight gradient on the tensor cores: the same chunks, tiles and partials, with
// mma.sync.m16n8k16 (fp32 accumulate) in place of the FMAs.
//   D[k, q] += G^T[k, pixels] * A[pixels, q]:  MMA rows = channels, columns = taps, K = pixels.
// Tiling: 32 pixels per step; 8 warps = 2 (channels: BN/2 each, MT = BN/32 m16 tiles) x 4 (taps:
// 32 each, four n8 tiles). Shared tiles are pixel-contiguous (G: [channel][pixel], A: [tap][pixel])
// with rows padded to 40 halves, as the forward's. Each thread gathers one tap for 16 pixels
// (two uint4 stores) and 2J channel x pixel-pair words of G; the bias gradient is summed from the
// gathered G in fp32 and reduced across the 16 lanes that share a channel.
constexpr int kWgBM16 = 32;  // pixels per step

template <typename T, int J>
__global__ void __launch_bounds__(kIgThreads, 2) conv_wgrad_igemm_mma(WgParams w) {
  using D = uint16_t;
  constexpr int BN = 32 * J, MT = BN / 32;
  constexpr int kRow = kWgBM16 + 8;
  constexpr int kGWords = BN * kWgBM16 / 2 / kIgThreads;  // 2J (channel, pixel pair) words per thread
  const IgParams& p = w.f;
  __shared__ __align__(16) D As[kWgBQ][kRow];
  __shared__ __align__(16) D Gs[BN][kRow];
  __shared__ WgPixel table[kWgTable];

  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ g = static_cast<const T*>(w.g);
  const T* __restrict__ yv = static_cast<const T*>(w.yv);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int gq = lane / 4, tq = lane % 4;
  const int wk = warp % 2, wq = warp / 2;
  const int q0 = blockIdx.y * kWgBQ, k0 = blockIdx.z * BN;
  const bool bias_block = w.dbpart != nullptr && blockIdx.y == 0;

  // This thread's gather tap (fixed for the block) and pixel half of each step.
  const int my_q = q0 + tid % kWgBQ, a_p = (tid / kWgBQ) * 16;
  const bool t_valid = my_q < p.Q;
  const IgTap tap = t_valid ? ig_tap(p, my_q) : IgTap{0, 0, 0};
  const int32_t t_off = tap.off, t_r = tap.r, t_s = tap.s;

  float acc[MT][4][4], dbacc[kGWords];
  AK_UNROLL for (int i = 0; i < MT; ++i) AK_UNROLL for (int j = 0; j < 4; ++j) AK_UNROLL for (int r = 0; r < 4; ++r)
      acc[i][j][r] = 0.f;
  AK_UNROLL for (int i = 0; i < kGWords; ++i) dbacc[i] = 0.f;

  uint32_t a_reg[8], g_reg[kGWords];
  auto a_bits = [&](int pix) -> uint32_t {
    const WgPixel& px = table[pix];
    const int ih = px.ih0 + t_r, iw = px.iw0 + t_s;
    if (px.valid && t_valid && static_cast<unsigned>(ih) < static_cast<unsigned>(p.H) &&
        static_cast<unsigned>(iw) < static_cast<unsigned>(p.W))
      return x[px.xbase + t_off].x;
    return 0;
  };
  auto g_bits = [&](int pix, int k, float& sum) -> uint32_t {
    const WgPixel& px = table[pix];
    if (!px.valid || k >= p.K) return 0;
    const T v = g[px.goff + k * w.gsc];
    // torch.relu's backward: zero where y <= 0 (NaN passes)
    if (yv != nullptr && static_cast<float>(yv[px.yoff + k * w.vsc]) <= 0.f) return 0;
    sum += static_cast<float>(v);
    return v.x;
  };
  auto gather = [&](int step) {
    const int base = step * kWgBM16;
    AK_UNROLL for (int i = 0; i < 8; ++i)
      a_reg[i] = a_bits(base + a_p + 2 * i) | (a_bits(base + a_p + 2 * i + 1) << 16);
    AK_UNROLL for (int i = 0; i < kGWords; ++i) {
      const int e = tid + i * kIgThreads, kk = e / 16, pp = e % 16;
      g_reg[i] = g_bits(base + 2 * pp, k0 + kk, dbacc[i]) | (g_bits(base + 2 * pp + 1, k0 + kk, dbacc[i]) << 16);
    }
  };
  auto stash = [&]() {
    uint4* dst = reinterpret_cast<uint4*>(&As[tid % kWgBQ][a_p]);
    dst[0] = make_uint4(a_reg[0], a_reg[1], a_reg[2], a_reg[3]);
    dst[1] = make_uint4(a_reg[4], a_reg[5], a_reg[6], a_reg[7]);
    AK_UNROLL for (int i = 0; i < kGWords; ++i) {
      const int e = tid + i * kIgThreads;
      *reinterpret_cast<uint32_t*>(&Gs[e / 16][2 * (e % 16)]) = g_reg[i];
    }
  };

  const int64_t m_begin = static_cast<int64_t>(blockIdx.x) * w.chunk;
  const int64_t m_end = m_begin + w.chunk < p.M ? m_begin + w.chunk : p.M;
  for (int64_t mb = m_begin; mb < m_end; mb += kWgTable) {
    __syncthreads();  // the previous table and tiles are no longer read
    table[tid] = wg_pixel(w, mb + tid, m_end);
    __syncthreads();
    const int64_t left = m_end - mb;
    const int steps = static_cast<int>(((left < kWgTable ? left : kWgTable) + kWgBM16 - 1) / kWgBM16);
    gather(0);
    stash();
    __syncthreads();
    for (int st = 0; st < steps; ++st) {
      const bool more = st + 1 < steps;
      if (more) gather(st + 1);
      AK_UNROLL for (int kp = 0; kp < kWgBM16; kp += 16) {
        uint32_t a[MT][4], b[4][2];
        AK_UNROLL for (int i = 0; i < MT; ++i) {
          const int row = wk * (BN / 2) + i * 16 + gq;
          a[i][0] = *reinterpret_cast<const uint32_t*>(&Gs[row][kp + 2 * tq]);
          a[i][1] = *reinterpret_cast<const uint32_t*>(&Gs[row + 8][kp + 2 * tq]);
          a[i][2] = *reinterpret_cast<const uint32_t*>(&Gs[row][kp + 2 * tq + 8]);
          a[i][3] = *reinterpret_cast<const uint32_t*>(&Gs[row + 8][kp + 2 * tq + 8]);
        }
        AK_UNROLL for (int j = 0; j < 4; ++j) {
          const int col = wq * 32 + j * 8 + gq;
          b[j][0] = *reinterpret_cast<const uint32_t*>(&As[col][kp + 2 * tq]);
          b[j][1] = *reinterpret_cast<const uint32_t*>(&As[col][kp + 2 * tq + 8]);
        }
        AK_UNROLL for (int i = 0; i < MT; ++i) AK_UNROLL for (int j = 0; j < 4; ++j) MmaType<T>::mma(acc[i][j], a[i], b[j]);
      }
      __syncthreads();
      if (more) {
        stash();
        __syncthreads();
      }
    }
  }

  float* part = w.part + static_cast<int64_t>(blockIdx.x) * w.Kpad * p.Qpad;
  AK_UNROLL for (int i = 0; i < MT; ++i) AK_UNROLL for (int j = 0; j < 4; ++j) {
    const int k = k0 + wk * (BN / 2) + i * 16 + gq;  // rows k and k + 8, < Kpad always
    const int q = q0 + wq * 32 + j * 8 + 2 * tq;     // columns q and q + 1, < Qpad always
    *reinterpret_cast<float2*>(part + static_cast<int64_t>(k) * p.Qpad + q) = make_float2(acc[i][j][0], acc[i][j][1]);
    *reinterpret_cast<float2*>(part + static_cast<int64_t>(k + 8) * p.Qpad + q) = make_float2(acc[i][j][2], acc[i][j][3]);
  }
  if (bias_block) {
    // Lanes l and l ^ 1, ^ 2, ^ 4, ^ 8 hold the same channel (e % 16 = tid % 16 picks the pixel pair).
    AK_UNROLL for (int i = 0; i < kGWords; ++i) {
      float v = dbacc[i];
      AK_UNROLL for (int o = 1; o < 16; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (tid % 16 == 0) w.dbpart[static_cast<int64_t>(blockIdx.x) * w.Kpad + k0 + (tid + i * kIgThreads) / 16] = v;
    }
  }
}

// dW (and db) from the partials: one thread per weight element, the chunks summed in fp64.
template <typename T>
__global__ void conv_wgrad_reduce(const float* __restrict__ part, const float* __restrict__ dbpart, int chunks,
                                  int K, int Kpad, int Q, int Qpad, int R, int S, Strides4 ws, T* dw, T* db) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t total = static_cast<int64_t>(K) * Q;
  if (i < total) {
    const int k = static_cast<int>(i / Q), q = static_cast<int>(i % Q);
    double acc = 0;
    for (int c = 0; c < chunks; ++c) acc += part[(static_cast<int64_t>(c) * Kpad + k) * Qpad + q];
    const int RS = R * S, ch = q / RS, r = (q - ch * RS) / S, s = q - ch * RS - r * S;
    dw[ws.at(k, ch, r, s)] = static_cast<T>(static_cast<float>(acc));
  } else if (db != nullptr && i < total + K) {
    const int k = static_cast<int>(i - total);
    double acc = 0;
    for (int c = 0; c < chunks; ++c) acc += dbpart[static_cast<int64_t>(c) * Kpad + k];
    db[k] = static_cast<T>(static_cast<float>(acc));
  }
}

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

template <typename Launcher>
at::Tensor conv2d_forward_igemm(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                                const ConvGeom& g, bool relu) {
  at::Tensor y = at::empty({g.N, g.K, g.OH, g.OW}, x.options().memory_format(conv_format(x)));
  if (y.numel() == 0) return y;
  const bool half = x.scalar_type() != at::kFloat;
  const int64_t Q = g.C * g.R * g.S;
  const int64_t bk = half ? kIgBK16 : kIgBK32;
  const int64_t Qpad = (Q + bk - 1) / bk * bk;
  const int J = g.K % 96 == 0 ? 3 : 2;
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
  p.y = y.mutable_data_ptr();
  p.ysn = y.stride(0); p.ysc = y.stride(1); p.ysh = y.stride(2); p.ysw = y.stride(3);
  p.relu = relu;

  const dim3 grid(static_cast<unsigned>((p.M + kIgBM - 1) / kIgBM), static_cast<unsigned>(Kpad / BN));
  TORCH_CHECK(grid.y <= 65535 && (p.M + kIgBM - 1) / kIgBM < (int64_t(1) << 31),
              "conv2d: too many output channels or pixels for the implicit-GEMM grid: ", g.K, ", ", p.M);
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
  return y;
}

// dW and, when asked, db into the given tensors (dw in w's layout, both in w's dtype).
template <typename Launcher>
void conv2d_wgrad_igemm(const at::Tensor& grad, const at::Tensor& x, const c10::optional<at::Tensor>& y,
                        const ConvGeom& g, bool relu, at::Tensor& dw, at::Tensor* db) {
  const int64_t Q = g.C * g.R * g.S;
  const int64_t Qpad = (Q + kWgBQ - 1) / kWgBQ * kWgBQ;
  const int J = g.K % 96 == 0 ? 3 : 2;
  const int64_t BN = 32 * J, Kpad = (g.K + BN - 1) / BN * BN;
  const int64_t M = g.N * g.OH * g.OW;
  const int64_t tiles = (Qpad / kWgBQ) * (Kpad / BN);
  // About four blocks per SM in all (two resident, so two waves), each chunk a whole number of
  // table fills; fewer chunks where the problem is small.
  const int sms = Launcher::multiprocessors();
  const int64_t want = std::max<int64_t>(1, 4 * sms / tiles);
  int64_t chunk = (M + want - 1) / want;
  // At most 2048 pixels per chunk: each thread sums its chunk serially in fp32, whose rounding
  // grows like sqrt(chunk) (~2e-6 relative at 2048); the chunks are then summed in fp64. Unless
  // the partials would pass 256 MiB (batches far beyond conv1's 128: ~28 MiB there): then fewer,
  // longer chunks.
  const int64_t max_chunks = std::max<int64_t>(want, (int64_t(256) << 20) / (Kpad * Qpad * 4));
  chunk = std::max<int64_t>(std::min<int64_t>(chunk, 2048), (M + max_chunks - 1) / max_chunks);
  chunk = std::max<int64_t>(kWgTable, (chunk + kWgTable - 1) / kWgTable * kWgTable);
  const int64_t chunks = std::max<int64_t>(1, (M + chunk - 1) / chunk);
  auto f32 = x.options().dtype(at::kFloat).memory_format(at::MemoryFormat::Contiguous);
  at::Tensor part = at::empty({chunks, Kpad, Qpad}, f32);
  at::Tensor dbpart = db != nullptr ? at::empty({chunks, Kpad}, f32) : at::Tensor();

  WgParams wp{};
  wp.f = ig_params(x, g, Qpad);
  wp.g = grad.const_data_ptr();
  wp.gsn = grad.stride(0); wp.gsc = grad.stride(1); wp.gsh = grad.stride(2); wp.gsw = grad.stride(3);
  if (relu) {
    wp.yv = y->const_data_ptr();
    wp.vsn = y->stride(0); wp.vsc = y->stride(1); wp.vsh = y->stride(2); wp.vsw = y->stride(3);
  }
  wp.part = part.mutable_data_ptr<float>();
  wp.dbpart = db != nullptr ? dbpart.mutable_data_ptr<float>() : nullptr;
  wp.chunk = chunk;
  wp.Kpad = static_cast<int32_t>(Kpad);

  const dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>(Qpad / kWgBQ), static_cast<unsigned>(Kpad / BN));
  TORCH_CHECK(grid.z <= 65535, "conv2d_backward: too many output channels for the implicit-GEMM grid: ", g.K);
  const int64_t outs = g.K * Q + (db != nullptr ? g.K : 0);
  const unsigned rblocks = static_cast<unsigned>((outs + 255) / 256);
  auto launch = [&](auto tag) {
    using scalar_t = decltype(tag);
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (J == 3) Launcher::launch(conv_wgrad_igemm<scalar_t, 3>, grid, kIgThreads, wp);
      else Launcher::launch(conv_wgrad_igemm<scalar_t, 2>, grid, kIgThreads, wp);
    } else {
      if (J == 3) Launcher::launch(conv_wgrad_igemm_mma<scalar_t, 3>, grid, kIgThreads, wp);
      else Launcher::launch(conv_wgrad_igemm_mma<scalar_t, 2>, grid, kIgThreads, wp);
    }
    Launcher::launch(conv_wgrad_reduce<scalar_t>, dim3(rblocks), 256,
        wp.part, wp.dbpart, static_cast<int>(chunks), static_cast<int>(g.K), static_cast<int>(Kpad),
        static_cast<int>(Q), static_cast<int>(Qpad), static_cast<int>(g.R), static_cast<int>(g.S), strides4(dw),
        dw.mutable_data_ptr<scalar_t>(), db != nullptr ? db->mutable_data_ptr<scalar_t>() : nullptr);
  };
  switch (x.scalar_type()) {
    case at::kFloat: launch(float{}); break;
    case at::kBFloat16: launch(at::BFloat16{}); break;
    default: launch(at::Half{});
  }
}

}  // namespace alexnet_kernels
