// The forward kernels of the implicit-GEMM convolution (conv_igemm_common.cuh has the GEMM's
// definition): fp32 on the FP32 pipes (IEEE fp32, never TF32), bf16 / fp16 on the tensor cores
// (mma.sync m16n8k16, fp32 accumulation); bias and ReLU fused into the epilogue, NCHW or
// channels_last out. Block = 128 output pixels (consecutive m, across rows and images) x BN
// output channels (BN = 32 * J: 64 or 96), 256 threads.
//
// Two ways to fill the A tile:
//  - row-staged (conv1 and its kin: at most 16 taps per (c, r) row, 128 pixels touching at most
//    kRsRowsMax output rows): each (c, r) "tap row" of the GEMM's K dimension reads, for every
//    output row the tile touches, one contiguous run of an input row. Those runs are staged into
//    shared memory by 16-byte cp.async (bounds resolved once per 16-byte chunk: zeros for
//    padding rows, zero-fill and zeroing at the image's edges), and the GEMM reads its operands
//    from there with no per-tap bounds test: padded and unpadded convolutions alike.
//  - gather (any C*R*S <= kIgMaxQ): each thread gathers its pixel's taps from global memory with
//    a per-tap bounds test, into an im2col tile in shared memory.
// docs/conv.md has the derivation of the tilings, the instruction counts and the floors.
#pragma once

#include <type_traits>

#include "conv_igemm_common.cuh"
#include "mma.cuh"

namespace alexnet_kernels {

// =============================================================================================
// Gather kernels
// =============================================================================================

// Fills the tap table, every thread of the block taking part; the caller syncs before use.
__device__ __forceinline__ void ig_fill_taps(sptr<IgTap> taps, const IgParams& p) {
  for (int q = threadIdx.x; q < p.Q; q += blockDim.x) taps[q] = ig_tap(p, q);
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
__device__ __forceinline__ int64_t ig_offset(const IgParams& p, const IgPixel& px, sptr<const IgTap> taps, int q) {
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
  if (p.has_bias) acc += static_cast<float>(gptr_cast<const T>(p.b)[k]);
  if (p.relu && acc < 0.f) acc = 0.f;
  gptr_cast<T>(p.y)[base + k * p.ysc] = static_cast<T>(acc);
}

// ---------------------------------------------------------------------------------------------
// fp32 gather kernel. K-steps of 16 taps (q in (c, r, s) order, weights packed [Kpad, Qpad]).
// 256 threads = 16 (tx, pixels) x 16 (ty, channels); each holds an 8 x 2J register tile: pixels
// tx*4 + {0..3} and 64 + tx*4 + {0..3} (two float4 shared loads, conflict-free), channels
// 32j + ty*2 + {0, 1} (float2 loads, broadcast within the warp). The next step's gather goes to
// registers while this step computes: 16 * 8 * 2J FMAs per thread per 8 + 2J shared loads.
// ---------------------------------------------------------------------------------------------
constexpr int kIgBK32 = 16;

template <int J>
__global__ void __launch_bounds__(kIgThreads, 2) conv_fwd_igemm_f32(IgParams p) {
  constexpr int BN = 32 * J, BK = kIgBK32;
  constexpr int kALoads = BK * kIgBM / kIgThreads;  // 8
  constexpr int kBLoads = BK * BN / kIgThreads;     // 2J
  AK_SHARED(float, As, [BK][kIgBM]);
  // Rows padded by 2: the stash (16 taps x 2 channels per warp) hits 32 distinct banks, and the
  // float2 reads stay 8-byte aligned.
  AK_SHARED(float, Bs, [BK][BN + 2]);
  AK_SHARED(IgTap, taps, [kIgMaxQ]);

  const gptr<const float> x = gptr_cast<const float>(p.x);
  const gptr<const float> wp = gptr_cast<const float>(p.w);
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
      const float4 a_lo = ak_load<float4>(&As[kq][tx * 4]);
      const float4 a_hi = ak_load<float4>(&As[kq][64 + tx * 4]);
      const float a[8] = {a_lo.x, a_lo.y, a_lo.z, a_lo.w, a_hi.x, a_hi.y, a_hi.z, a_hi.w};
      float b[2 * J];
      AK_UNROLL for (int j = 0; j < J; ++j) {
        const float2 bb = ak_load<float2>(&Bs[kq][32 * j + ty * 2]);
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
// bf16 / fp16 gather kernel on the tensor cores. K-steps of 32 taps. 8 warps = 4 (pixels: 32
// each, two m16 tiles) x 2 (channels: BN/2 each, NT = BN/16 n8 tiles). Shared tiles are
// K-contiguous (A: [pixel][tap], B: [channel][tap]) with rows padded to 40 halves (80 bytes),
// which puts the 8 rows x 4 words of a fragment load in 32 distinct banks.
// ---------------------------------------------------------------------------------------------
constexpr int kIgBK16 = 32;
constexpr int kIgRow16 = kIgBK16 + 8;  // padded row, in halves

template <typename T, int J>
__global__ void __launch_bounds__(kIgThreads, 2) conv_fwd_igemm_mma(IgParams p) {
  using D = uint16_t;  // raw bf16 / fp16 bits: shared memory holds no conversions
  constexpr int BN = 32 * J, BK = kIgBK16, NT = BN / 16;
  constexpr int kAHalf = BK / 2;  // each thread gathers 16 consecutive taps of one pixel
  AK_SHARED(D, As, [kIgBM][kIgRow16]);
  AK_SHARED(D, Bs, [BN][kIgRow16]);
  AK_SHARED(IgTap, taps, [kIgMaxQ]);

  const gptr<const D> x = gptr_cast<const D>(p.x);
  const gptr<const D> wp = gptr_cast<const D>(p.w);
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
  constexpr int kBPer = (kBVec + kIgThreads - 1) / kIgThreads;
  uint32_t a_reg[kAHalf / 2];
  uint4 b_reg[kBPer];
  auto gather = [&](int q0) {
    AK_UNROLL for (int i = 0; i < kAHalf / 2; ++i) {
      // Raw 16-bit patterns (0 is +0.0 in both formats), the lower tap in the lower half as
      // the fragment layout wants.
      const int64_t lo = ig_offset(p, px, taps, q0 + a_q + 2 * i);
      const int64_t hi = ig_offset(p, px, taps, q0 + a_q + 2 * i + 1);
      a_reg[i] = static_cast<uint32_t>(lo < 0 ? D(0) : x[lo]) | (static_cast<uint32_t>(hi < 0 ? D(0) : x[hi]) << 16);
    }
    AK_UNROLL for (int i = 0; i < kBPer; ++i) {
      const int e = tid + i * kIgThreads;
      if (e < kBVec) {
        const int row = e / (BK / 8), col = (e % (BK / 8)) * 8;
        b_reg[i] = ak_load<uint4>(wp + (static_cast<int64_t>(k0 + row) * p.Qpad + q0 + col));
      }
    }
  };
  auto stash = [&]() {
    ak_store<uint4>(&As[tid % kIgBM][a_q], make_uint4(a_reg[0], a_reg[1], a_reg[2], a_reg[3]));
    ak_store<uint4>(&As[tid % kIgBM][a_q + 8], make_uint4(a_reg[4], a_reg[5], a_reg[6], a_reg[7]));
    AK_UNROLL for (int i = 0; i < kBPer; ++i) {
      const int e = tid + i * kIgThreads;
      if (e < kBVec) ak_store<uint4>(&Bs[e / (BK / 8)][(e % (BK / 8)) * 8], b_reg[i]);
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
        a[i][0] = ak_load<uint32_t>(&As[row][kq + 2 * t]);
        a[i][1] = ak_load<uint32_t>(&As[row + 8][kq + 2 * t]);
        a[i][2] = ak_load<uint32_t>(&As[row][kq + 2 * t + 8]);
        a[i][3] = ak_load<uint32_t>(&As[row + 8][kq + 2 * t + 8]);
      }
      AK_UNROLL for (int j = 0; j < NT; ++j) {
        const int col = wn * (BN / 2) + j * 8 + g;
        b[j][0] = ak_load<uint32_t>(&Bs[col][kq + 2 * t]);
        b[j][1] = ak_load<uint32_t>(&Bs[col][kq + 2 * t + 8]);
      }
      AK_UNROLL for (int i = 0; i < 2; ++i) AK_UNROLL for (int j = 0; j < NT; ++j) mma_m16n8k16<T>(acc[i][j], a[i], b[j]);
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

// =============================================================================================
// Row-staged kernels
// =============================================================================================
//
// The tile's 128 pixels (m0 .. m0 + 127) lie on NR <= kRsRowsMax output rows j (row ro0 + j of
// the N * OH output rows; j = 0 and j = NR - 1 may be partial). For tap row (c, r), pixel
// (j, ow) reads taps s = 0 .. SP-1 from input row ih = oh_j * sH - pH + r of channel c, columns
// ow * sW - pW + s: one run per output row. Each run is staged as whole 16-byte chunks (V
// elements): row j's chunks [cb_j, ce_j) of its "v" axis, where v = iw + pW + d and d in [0, V)
// is the row's alignment phase, (x's address of x[n, c, ih, -pW] mod 16) / element size, so
// that chunks are 16-byte aligned in global and shared memory alike (bf16 / fp16 take d even,
// so that a pair of taps is one aligned 32-bit word; rows whose phase is odd are staged at d - 1,
// shifted by one element in registers: RsStager). A pixel's tap s is then element ow * sW + s + d of its row's run, read
// with no bounds test: padding was staged as zeros. Chunks are numbered in row order, so
// "item" i of the staging is also its place in shared memory.

constexpr int kRsRowsMax = 8;       // output rows a 128-pixel tile may touch
constexpr int kRsTapRows = 2;       // (c, r) tap rows per pipeline step
constexpr int kRsStage16 = 1024;    // staged elements per tap row, bf16 / fp16 (2 KiB)
constexpr int kRsStage32 = 640;     // staged elements per tap row, fp32 (2.5 KiB)
constexpr int kRsMaxS32 = 12;       // fp32: taps per (c, r) row, two rows per step
constexpr int kRsSlots32 = kRsTapRows * kRsMaxS32;
constexpr int kRsBRow16 = kRsTapRows * 16 + 8;  // bf16 weight tile row: 40 halves (80 bytes)

struct RsParams {
  IgParams f;            // geometry, x, y, bias; f.w the packed weights (layout per kernel)
  int32_t xmis;          // x's data pointer past 16-byte alignment, in elements
  int64_t xend;          // one past the last element of x, from its data pointer
  int32_t CR;            // tap rows, C * R
  int32_t span;          // how far past ow * sW a pixel's staged run reaches: V - 1 + taps read - 1
  int32_t wpitch;        // packed weight row pitch, in elements
  FastDivmod32 cnt_mid;  // chunks staged for a full output row
  bool y_cl;             // y dense channels_last (else dense NCHW)
  bool y_vec;            // y takes 16-byte stores (aligned; channels_last: K % V == 0)
};

// The block's tile: its output rows and the staging layout (the same for every tap row).
template <int V>
struct RsTile {
  int64_t m0, ro0;
  int32_t np;  // valid pixels, <= 128
  int32_t NR, ow_first, ow_last;
  int32_t cnt_first, cnt_mid, items;
  int32_t OW, sW, span;

  __device__ __forceinline__ explicit RsTile(const RsParams& rp) {
    const IgParams& p = rp.f;
    OW = p.OW;
    sW = p.sW;
    span = rp.span;
    m0 = static_cast<int64_t>(blockIdx.x) * kIgBM;
    np = static_cast<int32_t>(p.M - m0 < kIgBM ? p.M - m0 : kIgBM);
    ro0 = m0 / OW;
    ow_first = static_cast<int32_t>(m0 - ro0 * OW);
    const int32_t last = ow_first + np - 1;  // from the start of row ro0
    NR = last / OW + 1;
    ow_last = last - (NR - 1) * OW;
    cnt_mid = ce(OW - 1);
    cnt_first = ce(NR == 1 ? ow_last : OW - 1) - cb(ow_first);
    items = NR == 1 ? cnt_first : cnt_first + (NR - 2) * cnt_mid + ce(ow_last);
  }
  // First and one-past-last chunk of the v axis that a pixel at column ow reads.
  __device__ __forceinline__ int32_t cb(int32_t ow) const { return ow * sW / V; }
  __device__ __forceinline__ int32_t ce(int32_t ow) const { return (ow * sW + span) / V + 1; }
  // Row j's first item, and the chunk it holds.
  __device__ __forceinline__ int32_t pre(int32_t j) const { return j == 0 ? 0 : cnt_first + (j - 1) * cnt_mid; }
  __device__ __forceinline__ int32_t first_chunk(int32_t j) const { return j == 0 ? cb(ow_first) : 0; }
  // Item i of the staging: row j, chunk ch.
  __device__ __forceinline__ void item(const RsParams& rp, int32_t i, int32_t& j, int32_t& ch) const {
    if (i < cnt_first) {
      j = 0;
      ch = cb(ow_first) + i;
    } else {
      int32_t q, r;
      rp.cnt_mid.divmod(i - cnt_first, q, r);
      j = q + 1;
      ch = r;
    }
  }
  // Tile pixel p (p >= np stands in for pixel 0): its row j and where its run starts in a staged
  // tap row, before the row's phase d is added.
  __device__ __forceinline__ int32_t pixel_base(int32_t p, int32_t& j) const {
    const int32_t at = ow_first + (p < np ? p : 0);
    j = at / OW;
    const int32_t ow = at - j * OW;
    return (pre(j) - first_chunk(j)) * V + ow * sW;
  }
};

// Row j of the tile (tid j < NR): x's offset of x[n, 0, ih0, 0] and ih0 = oh * sH - pH.
__device__ __forceinline__ void rs_fill_rows(const IgParams& p, int64_t ro0, int32_t NR, sptr<int64_t> row_x,
                                             sptr<int32_t> row_ih) {
  const int j = threadIdx.x;
  if (j < NR) {
    const int64_t ro = ro0 + j, n = ro / p.OH;
    const int32_t ih0 = static_cast<int32_t>(ro - n * p.OH) * p.sH - p.pH;
    row_x[j] = n * p.xsn + static_cast<int64_t>(ih0) * p.xsh;
    row_ih[j] = ih0;
  }
}

// A tap row (c, r) of the K loop, advanced in (c, r) order: r and the offset c * xsc + r * xsh.
struct RsTapRow {
  int32_t r = 0, off = 0;
  __device__ __forceinline__ void next(const IgParams& p) {
    if (++r == p.R) {
      r = 0;
      off += p.xsc - (p.R - 1) * p.xsh;
    } else {
      off += p.xsh;
    }
  }
};

// The alignment phase of a staged row, from the low bits of x's element offset of x[n, c, ih, -pW]
// (low: the rest wraps harmlessly); bf16 / fp16 round it down to even.
template <typename E, int V>
__device__ __forceinline__ int32_t rs_phase(int32_t low) {
  return sizeof(E) == 2 ? (low & (V - 2)) : (low & (V - 1));
}

// A thread's part of the staging: at most one chunk per tap row (a tap row has at most
// kRsStage / V <= 256 chunks), the same chunk of every tap row, so its row and place are decoded
// once per block; a tap row then costs its phase, a few bounds tests and the copy.
//
// stage() issues the copy of a tap row's chunk; finish() completes it once the step's copies have
// landed (after cp_async_wait_all, before the barrier that publishes them), so that nothing waits
// on a global load in between:
//   - inside the row, or at its right edge: cp.async of the 16 bytes (at the edge, of the
//     elements before W, the rest zero-filled);
//   - at the row's left edge (padding, or a row that does not start 16-byte aligned): the same,
//     from the 16-byte boundary before the row, and finish() zeroes the elements before iw = 0;
//   - bf16 / fp16 rows at an odd phase (staged at d - 1, so that tap pairs stay aligned words):
//     a 16-byte load from one element before the chunk and a 2-byte load after it, held in
//     registers; finish() shifts them by one element into place (and zeroes what lies outside
//     the row);
//   - padding rows: zeros;
//   - strided rows (channels_last, a column stride): element by element.
template <typename E, int V>
struct RsStager {
  static_assert(kRsStage16 / 8 <= kIgThreads && kRsStage32 / 4 <= kIgThreads, "one chunk per thread");
  using Vec = typename Vec16<E>::type;
  bool has, inner;              // a chunk; inside the row at every phase (and x's rows dense)
  int32_t ih0, low0, iwv, dst;  // row's ih0; phase bits of x[n, 0, ih0, -pW]; ch * V - pW; place
  int64_t xrow;                 // x[n, 0, ih0, 0]

  // What finish() does with a staged chunk.
  struct Held {
    Vec v;
    uint32_t hi;
    int8_t shift;  // 1: a realigned chunk (v, hi) to store
    int8_t lead;   // elements before iw = 0 to zero
    int8_t tail;   // realigned: elements at iw >= W to zero
  };

  __device__ __forceinline__ RsStager(const RsParams& rp, const RsTile<V>& tl, sptr<const int64_t> row_x,
                                      sptr<const int32_t> row_ih) {
    const int32_t i = threadIdx.x;
    has = i < tl.items;
    int32_t j = 0, ch = 0;
    if (has) tl.item(rp, i, j, ch);
    ih0 = row_ih[j];
    xrow = row_x[j];
    low0 = rp.xmis + static_cast<int32_t>(xrow) - rp.f.pW;
    iwv = ch * V - rp.f.pW;
    dst = i * V;
    inner = rp.f.xsw == 1 && iwv - (V - 1) >= 0 && iwv + V <= rp.f.W;
  }

  // Starts staging this thread's chunk of tap row `tap` into xs.
  __device__ __forceinline__ Held stage(const RsParams& rp, sptr<E> xs, RsTapRow tap) const {
    Held h{Vec16<E>::zero(), 0u, 0, 0, 0};
    if (!has) return h;
    const IgParams& p = rp.f;
    const int32_t low = low0 + tap.off, d = rs_phase<E, V>(low), iw0 = iwv - d;
    const int64_t at = xrow + tap.off;  // x[n, c, ih, 0]
    const sptr<E> out = xs + dst;
    const gptr<const E> x = gptr_cast<const E>(p.x);
    const bool row_in = static_cast<unsigned>(ih0 + tap.r) < static_cast<unsigned>(p.H);
    if (inner && row_in && d == (low & (V - 1))) {  // the common case: a whole aligned chunk
      cp_async16<E>(out, x + (at + iw0));
      return h;
    }
    if (!row_in || iw0 >= p.W || iw0 + V <= 0) {
      ak_store<Vec>(out, Vec16<E>::zero());  // padding
    } else if (p.xsw == 1 && d == (low & (V - 1))) {
      if (iw0 < 0 && at + iw0 < 0) {  // the tensor's very first chunk: nothing before it to read
        stage_elements(p, out, x, at, iw0);
      } else {
        cp_async16<E>(out, x + (at + iw0), ak_min<int32_t>(V, p.W - iw0));
        h.lead = static_cast<int8_t>(iw0 < 0 ? -iw0 : 0);
      }
    } else if (sizeof(E) == 2 && p.xsw == 1 && at + iw0 - 1 >= 0 && at + iw0 + V - 1 < rp.xend) {
      // Odd phase: x[at + iw0 - 1] is 16-byte aligned.
      h.v = ak_load<Vec>(x + (at + iw0 - 1));
      h.hi = static_cast<uint32_t>(x[at + iw0 + V - 1]);
      h.shift = 1;
      h.lead = static_cast<int8_t>(iw0 < 0 ? -iw0 : 0);
      h.tail = static_cast<int8_t>(iw0 + V > p.W ? iw0 + V - p.W : 0);
    } else {
      stage_elements(p, out, x, at, iw0);
    }
    return h;
  }

  // Completes a chunk stage() started, once this thread's copies have landed.
  __device__ __forceinline__ void finish(sptr<E> xs, const Held& h) const {
    if (!has || (h.shift == 0 && h.lead == 0)) return;
    const sptr<E> out = xs + dst;
    if constexpr (sizeof(E) == 2) {
      if (h.shift) {  // element e of the chunk is element e + 1 of (v, hi)
        const uint32_t w[5] = {h.v.x, h.v.y, h.v.z, h.v.w, h.hi};
        uint32_t o[4];
        AK_UNROLL for (int k = 0; k < 4; ++k) o[k] = (w[k] >> 16) | (w[k + 1] << 16);
        ak_store<Vec>(out, make_uint4(o[0], o[1], o[2], o[3]));
        for (int e = V - h.tail; e < V; ++e) out[e] = E(0);
      }
    }
    for (int e = 0; e < h.lead; ++e) out[e] = E(0);
  }

 private:
  __device__ __forceinline__ static void stage_elements(const IgParams& p, sptr<E> out, gptr<const E> x, int64_t at,
                                                        int32_t iw0) {
    E v[V];
    AK_UNROLL for (int e = 0; e < V; ++e) {
      const int32_t iw = iw0 + e;
      v[e] = static_cast<unsigned>(iw) < static_cast<unsigned>(p.W) ? x[at + static_cast<int64_t>(iw) * p.xsw] : E(0);
    }
    ak_store<Vec>(out, Vec16<E>::pack(v));
  }
};

// Stores output channels [kbase, kbase + CH) of the tile, held in shared memory (cs, NCHW:
// [channel][pixel], channels_last: [pixel][channel], rows of `pitch` elements), to y: 16-byte
// stores where y's layout and alignment allow, the ragged ends element by element.
template <typename E, int V, int CH>
__device__ __forceinline__ void rs_store(const RsParams& rp, const RsTile<V>& tl, sptr<const E> cs, int pitch,
                                         int kbase) {
  using Vec = Vec16<E>;
  const IgParams& p = rp.f;
  const gptr<E> y = gptr_cast<E>(p.y);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  if (rp.y_cl) {
    // y[m, k] at m * K + k: each pixel's channels are one run.
    constexpr int kPer = CH / V;
    for (int i = tid; i < tl.np * kPer; i += kIgThreads) {
      const int px = i / kPer, kc = (i % kPer) * V, k = kbase + kc;
      const int64_t e = (tl.m0 + px) * p.ysw + k;
      if (rp.y_vec && k + V <= p.K) {
        ak_store<typename Vec::type>(y + e, ak_load<typename Vec::type>(cs + (px * pitch + kc)));
      } else {
        AK_UNROLL for (int q = 0; q < V; ++q) if (k + q < p.K) y[e + q] = cs[px * pitch + kc + q];
      }
    }
    return;
  }
  // NCHW: y[n, k, plane offset]; the tile's pixels of one image are one run per channel.
  const int64_t plane = static_cast<int64_t>(p.OH) * p.OW;
  int64_t n = tl.m0 / plane;
  for (int pa = 0; pa < tl.np; ++n) {
    const int64_t in_img = tl.m0 + pa - n * plane;
    const int pb = plane - in_img < tl.np - pa ? pa + static_cast<int>(plane - in_img) : tl.np;
    const int L = pb - pa;
    for (int kk = warp; kk < CH; kk += kIgThreads / 32) {
      if (kbase + kk >= p.K) break;
      const int64_t e0 = n * p.ysn + (kbase + kk) * p.ysc + in_img;
      const sptr<const E> src = cs + (kk * pitch + pa);
      // Head up to 16-byte alignment, aligned body, tail.
      const int head = rp.y_vec ? ak_min<int>(L, static_cast<int>((V - (e0 & (V - 1))) & (V - 1))) : L;
      const int body = rp.y_vec ? (L - head) / V : 0;
      for (int e = lane; e < head; e += 32) y[e0 + e] = src[e];
      for (int c = lane; c < body; c += 32) {
        E v[V];
        AK_UNROLL for (int q = 0; q < V; ++q) v[q] = src[head + c * V + q];
        ak_store<typename Vec::type>(y + (e0 + head + c * V), Vec::pack(v));
      }
      for (int e = head + body * V + lane; e < L; e += 32) y[e0 + e] = src[e];
    }
    pa = pb;
  }
}

// ---------------------------------------------------------------------------------------------
// bf16 / fp16 row-staged kernel. Pipeline step = two tap rows, each one k16 step of mma.sync.
// Each step, every thread copies one (pixel, tap row) of the staged rows -- its 16 taps, eight
// aligned words, those past S zeroed (the B rows there are zero, but a neighbour's tap may hold
// an inf) -- into an im2col tile ([tap row][pixel][16 taps], rows of 48 bytes), from which the
// A fragments are one ldmatrix.x4 per m16 tile; the B fragments are ldmatrix.x4 from the weight
// tile ([channel][tap], rows of 80 bytes). Both row pitches put ldmatrix's eight rows in distinct
// banks. 8 warps = 4 (pixels: 32 each, two m16 tiles) x 2 (channels: BN/2 each, NT = BN/16 n8
// tiles). Staging of step st + 1 (cp.async, double buffered) overlaps step st; two barriers per
// step (staged -> im2col tile -> mma).
// Per warp and tap row: 2 + NT/2 LDSM.x4 and 2 * NT HMMA, plus per thread one tile row (8 LDS.32,
// 4 masks, 2 STS.128) and about a third of a staged chunk. Epilogue: bias loaded once per
// channel, the tile transposed through shared memory into 16-byte stores.
// ---------------------------------------------------------------------------------------------
template <typename T, int J>
__global__ void __launch_bounds__(kIgThreads, 2) conv_fwd_rows_mma(RsParams rp) {
  using D = uint16_t;
  constexpr int BN = 32 * J, NT = BN / 16, V = 8, TR = kRsTapRows, kBRow = kRsBRow16;
  constexpr int kARow = 16 + 8;  // im2col tile row, halves (48 bytes)
  constexpr int kXsBuf = TR * kRsStage16, kBsBuf = BN * kBRow, kAs = TR * kIgBM * kARow;
  constexpr int kCsN = kIgBM + 8, kCsC = BN + 8;  // epilogue rows: NCHW [channel][pixel], CL [pixel][channel]
  constexpr int kMain = 2 * (kXsBuf + kBsBuf) + kAs;
  constexpr int kPool = ig_cmax(kMain, ig_cmax(BN * kCsN, kIgBM * kCsC));
  static_assert(TR * kIgBM == kIgThreads, "one im2col tile row per thread and step");
  AK_SHARED(D, pool, [kPool]);
  AK_SHARED(int64_t, row_x, [kRsRowsMax]);
  AK_SHARED(int32_t, row_ih, [kRsRowsMax]);

  const IgParams& p = rp.f;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int t = lane % 4;
  const int wm = warp % 4, wn = warp / 4;
  const int k0 = blockIdx.y * BN;
  const RsTile<V> tl(rp);
  rs_fill_rows(p, tl.ro0, tl.NR, row_x, row_ih);
  __syncthreads();

  // im2col role: pixel tid % 128 of tap row tid / 128 of each step.
  const int bp = tid % kIgBM, bh = tid / kIgBM;
  int32_t bj;
  const int32_t bbase = tl.pixel_base(bp, bj);
  const int32_t blow = rp.xmis + static_cast<int32_t>(row_x[bj]) - p.pW;
  // Words 4-7 of the row (taps 8-15) past the row's S taps (S >= 8: the first eight always exist).
  uint32_t bmask[4];
  AK_UNROLL for (int k = 0; k < 4; ++k)
    bmask[k] = (8 + 2 * k < p.S ? 0x0000ffffu : 0u) | (9 + 2 * k < p.S ? 0xffff0000u : 0u);
  // ldmatrix.x4 rows of this lane. A: pixels 0-7 / 8-15 of the m16 tile x taps 0-7 / 8-15 (a[0],
  // a[1], a[2], a[3]); B: channels 0-7 / 8-15 of n8 tiles 2jj, 2jj + 1 x taps 0-7 / 8-15.
  const int a_row = (wm * 32 + ((lane / 8) % 2) * 8 + lane % 8) * kARow + (lane / 16) * 8;
  const int b_row = (wn * (BN / 2) + (lane / 16) * 8 + lane % 8) * kBRow + ((lane / 8) % 2) * 8;

  const sptr<D> xs0 = pool, bs0 = pool + 2 * kXsBuf, as = pool + 2 * (kXsBuf + kBsBuf);
  const RsStager<D, V> stager(rp, tl, row_x, row_ih);
  // The weight tile: BN rows of TR * 16 taps, 16-byte chunks; chunk tid (and tid + 256 for the
  // 96-wide tile's last 128).
  constexpr int kBChunks = BN * TR * 16 / 8, kBPer = (kBChunks + kIgThreads - 1) / kIgThreads;
  gptr<const D> b_src[kBPer];
  int32_t b_dst[kBPer];
  AK_UNROLL for (int u = 0; u < kBPer; ++u) {
    // (Chunks past the tile's, never copied, point at its last: every pointer stays in the tensor.)
    const int i = ak_min(tid + u * kIgThreads, kBChunks - 1), row = i / (TR * 2), c8 = (i % (TR * 2)) * 8;
    b_src[u] = gptr_cast<const D>(p.w) + (static_cast<int64_t>(k0 + row) * rp.wpitch + c8);
    b_dst[u] = row * kBRow + c8;
  }
  RsTapRow stage_tap, build_tap;
  typename RsStager<D, V>::Held held[TR];
  auto stage = [&](int st) {
    const int buf = st & 1;
    AK_UNROLL for (int tr = 0; tr < TR; ++tr) {
      if (st * TR + tr < rp.CR) held[tr] = stager.stage(rp, xs0 + (buf * kXsBuf + tr * kRsStage16), stage_tap);
      stage_tap.next(p);
    }
    AK_UNROLL for (int u = 0; u < kBPer; ++u) {
      if (tid + u * kIgThreads < kBChunks) cp_async16<D>(bs0 + (buf * kBsBuf + b_dst[u]), b_src[u]);
      b_src[u] += TR * 16;
    }
    cp_async_commit();
  };

  float acc[2][NT][4];
  AK_UNROLL for (int i = 0; i < 2; ++i) AK_UNROLL for (int j = 0; j < NT; ++j) AK_UNROLL for (int r = 0; r < 4; ++r)
      acc[i][j][r] = 0.f;

  const int steps = (rp.CR + TR - 1) / TR;
  stage(0);
  for (int st = 0; st < steps; ++st) {
    const int rows = rp.CR - st * TR < TR ? rp.CR - st * TR : TR;
    cp_async_wait_all();
    AK_UNROLL for (int tr = 0; tr < TR; ++tr)
      if (tr < rows) stager.finish(xs0 + ((st & 1) * kXsBuf + tr * kRsStage16), held[tr]);
    __syncthreads();  // step st staged by all; step st - 1's buffers and im2col tile no longer read
    if (st + 1 < steps) stage(st + 1);
    {
      RsTapRow tap = build_tap;
      if (bh == 1) tap.next(p);
      if (bh < rows) {
        const sptr<const D> src =
            xs0 + ((st & 1) * kXsBuf + bh * kRsStage16 + bbase + rs_phase<D, V>(blow + tap.off));
        uint32_t w[8];
        AK_UNROLL for (int k = 0; k < 8; ++k) w[k] = ak_load<uint32_t>(src + 2 * k);
        AK_UNROLL for (int k = 0; k < 4; ++k) w[4 + k] &= bmask[k];
        const sptr<D> dst = as + (bh * kIgBM + bp) * kARow;
        ak_store<uint4>(dst, make_uint4(w[0], w[1], w[2], w[3]));
        ak_store<uint4>(dst + 8, make_uint4(w[4], w[5], w[6], w[7]));
      }
      build_tap.next(p);
      build_tap.next(p);
    }
    __syncthreads();  // im2col tile built
    const sptr<const D> bs = bs0 + (st & 1) * kBsBuf;
    AK_UNROLL for (int tr = 0; tr < TR; ++tr) {
      if (tr < rows) {
        uint32_t a[2][4], b[NT][2];
        AK_UNROLL for (int i = 0; i < 2; ++i) ldmatrix<4, false>(a[i], as + (tr * kIgBM * kARow + i * 16 * kARow + a_row));
        AK_UNROLL for (int jj = 0; jj < NT / 2; ++jj) {
          uint32_t r4[4];
          ldmatrix<4, false>(r4, bs + (b_row + jj * 16 * kBRow + tr * 16));
          b[2 * jj][0] = r4[0];
          b[2 * jj][1] = r4[1];
          b[2 * jj + 1][0] = r4[2];
          b[2 * jj + 1][1] = r4[3];
        }
        AK_UNROLL for (int i = 0; i < 2; ++i) AK_UNROLL for (int j = 0; j < NT; ++j) mma_m16n8k16<T>(acc[i][j], a[i], b[j]);
      }
    }
  }

  // Epilogue: bias (once per channel), ReLU, the tile through shared memory, 16-byte stores.
  __syncthreads();  // the pool is the output tile now
  const int g = lane / 4;
  float bias[NT][2];
  AK_UNROLL for (int j = 0; j < NT; ++j) AK_UNROLL for (int e = 0; e < 2; ++e) {
    const int k = k0 + wn * (BN / 2) + j * 8 + 2 * t + e;
    bias[j][e] = p.has_bias && k < p.K ? static_cast<float>(gptr_cast<const T>(p.b)[k]) : 0.f;
  }
  const sptr<D> cs = pool;
  AK_UNROLL for (int i = 0; i < 2; ++i) AK_UNROLL for (int j = 0; j < NT; ++j) AK_UNROLL for (int h = 0; h < 2; ++h) {
    const int px = wm * 32 + i * 16 + g + 8 * h, kk = wn * (BN / 2) + j * 8 + 2 * t;
    float v0 = acc[i][j][2 * h] + bias[j][0], v1 = acc[i][j][2 * h + 1] + bias[j][1];
    if (p.relu) {  // NaN passes, as torch.relu
      v0 = v0 < 0.f ? 0.f : v0;
      v1 = v1 < 0.f ? 0.f : v1;
    }
    const D b0 = T(v0).x, b1 = T(v1).x;
    if (rp.y_cl) {
      ak_store<uint32_t>(cs + (px * kCsC + kk), static_cast<uint32_t>(b0) | (static_cast<uint32_t>(b1) << 16));
    } else {
      cs[kk * kCsN + px] = b0;
      cs[(kk + 1) * kCsN + px] = b1;
    }
  }
  __syncthreads();
  rs_store<D, V, BN>(rp, tl, cs, rp.y_cl ? kCsC : kCsN, k0);
}

// ---------------------------------------------------------------------------------------------
// fp32 row-staged kernel. Pipeline step = two tap rows (S <= 12 taps each, exactly: no padded
// FMAs). The staged rows are copied shared-to-shared into the gather kernel's im2col tile
// (As[tap][pixel]: one pixel and one tap row per thread, S loads and stores), and the FMAs run
// as there: 256 threads = 16 (tx, pixels) x 16 (ty, channels), each an 8 x 2J register tile,
// two float4 A loads and J float2 B loads per tap. Weights are packed [tap][Kpad] (channel
// fastest), so the B tile is 16-byte cp.async rows. Staging (rows and weights) of step st + 1
// overlaps step st; two barriers per step (staged -> im2col tile -> FMAs).
// ---------------------------------------------------------------------------------------------
template <int J>
__global__ void __launch_bounds__(kIgThreads, 2) conv_fwd_rows_f32(RsParams rp) {
  constexpr int BN = 32 * J, V = 4, TR = kRsTapRows, KS = kRsSlots32;
  constexpr int kXsBuf = TR * kRsStage32, kBsBuf = KS * BN, kAs = KS * kIgBM;
  constexpr int kCsN = kIgBM + 4, kCsC = 32 + 4;  // epilogue, 32 channels at a time
  constexpr int kMain = 2 * kXsBuf + 2 * kBsBuf + kAs;
  constexpr int kPool = ig_cmax(kMain, ig_cmax(32 * kCsN, kIgBM * kCsC));
  AK_SHARED(float, pool, [kPool]);
  AK_SHARED(int64_t, row_x, [kRsRowsMax]);
  AK_SHARED(int32_t, row_ih, [kRsRowsMax]);

  const IgParams& p = rp.f;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int k0 = blockIdx.y * BN;
  const RsTile<V> tl(rp);
  rs_fill_rows(p, tl.ro0, tl.NR, row_x, row_ih);
  __syncthreads();

  // im2col role: pixel tid % 128 of tap row tid / 128 of each step.
  const int bp = tid % kIgBM, bh = tid / kIgBM;
  int32_t bj;
  const int32_t bbase = tl.pixel_base(bp, bj);
  const int32_t blow = rp.xmis + static_cast<int32_t>(row_x[bj]) - p.pW;

  const sptr<float> xs0 = pool, bs0 = pool + 2 * kXsBuf, as = pool + 2 * kXsBuf + 2 * kBsBuf;
  const RsStager<float, V> stager(rp, tl, row_x, row_ih);
  auto step_taps = [&](int st) {  // taps of step st (rounded up to even in the tiles: a zero pad tap)
    const int rows = rp.CR - st * TR < TR ? rp.CR - st * TR : TR;
    return rows * p.S;
  };
  // The weight tile: up to KS taps of BN channels, 16-byte chunks tid + 256u of the step's.
  constexpr int kBRowChunks = BN / 4, kBPer = (KS * kBRowChunks + kIgThreads - 1) / kIgThreads;
  gptr<const float> b_src[kBPer];
  int32_t b_dst[kBPer], b_tap[kBPer];
  AK_UNROLL for (int u = 0; u < kBPer; ++u) {
    const int i = tid + u * kIgThreads, kq = i / kBRowChunks, c4 = (i % kBRowChunks) * 4;
    b_tap[u] = kq;
    // (Taps past a step's 2S, never copied, point at its last: every pointer stays in the tensor.)
    b_src[u] = gptr_cast<const float>(p.w) + (static_cast<int64_t>(ak_min(kq, 2 * p.S - 1)) * rp.wpitch + k0 + c4);
    b_dst[u] = kq * BN + c4;
  }
  const int64_t b_step = static_cast<int64_t>(TR) * p.S * rp.wpitch;  // a step's taps
  RsTapRow stage_tap, build_tap;
  typename RsStager<float, V>::Held held[TR];
  auto stage = [&](int st) {
    const int buf = st & 1;
    AK_UNROLL for (int tr = 0; tr < TR; ++tr) {
      if (st * TR + tr < rp.CR) held[tr] = stager.stage(rp, xs0 + (buf * kXsBuf + tr * kRsStage32), stage_tap);
      stage_tap.next(p);
    }
    const int rows = (step_taps(st) + 1) & ~1;
    AK_UNROLL for (int u = 0; u < kBPer; ++u) {
      if (b_tap[u] < rows) cp_async16<float>(bs0 + (buf * kBsBuf + b_dst[u]), b_src[u]);
      b_src[u] += b_step;
    }
    cp_async_commit();
  };

  float acc[8][2 * J];
  AK_UNROLL for (int i = 0; i < 8; ++i) AK_UNROLL for (int j = 0; j < 2 * J; ++j) acc[i][j] = 0.f;

  const int steps = (rp.CR + TR - 1) / TR;
  stage(0);
  for (int st = 0; st < steps; ++st) {
    const int nt = step_taps(st), ntp = (nt + 1) & ~1;
    cp_async_wait_all();
    AK_UNROLL for (int tr = 0; tr < TR; ++tr)
      if (st * TR + tr < rp.CR) stager.finish(xs0 + ((st & 1) * kXsBuf + tr * kRsStage32), held[tr]);
    __syncthreads();  // step st staged; step st - 1's im2col tile and buffers no longer read
    if (st + 1 < steps) stage(st + 1);
    {
      RsTapRow tap = build_tap;
      if (bh == 1) tap.next(p);
      if (bh * p.S < nt) {
        const sptr<const float> src = xs0 + ((st & 1) * kXsBuf + bh * kRsStage32 + bbase + rs_phase<float, V>(blow + tap.off));
        const sptr<float> dst = as + (bh * p.S * kIgBM + bp);
        AK_UNROLL for (int s = 0; s < kRsMaxS32; ++s) if (s < p.S) dst[s * kIgBM] = src[s];
      }
      if (bh == 0 && nt < ntp) as[nt * kIgBM + bp] = 0.f;
      build_tap.next(p);
      build_tap.next(p);
    }
    __syncthreads();  // im2col tile built
    // Two taps per iteration, through running pointers (constant offsets within).
    sptr<const float> ap = as + tx * 4, bp = bs0 + ((st & 1) * kBsBuf + ty * 2);
    auto tap_fma = [&](int kq) {
      const float4 a_lo = ak_load<float4>(ap + kq * kIgBM);
      const float4 a_hi = ak_load<float4>(ap + (kq * kIgBM + 64));
      const float a[8] = {a_lo.x, a_lo.y, a_lo.z, a_lo.w, a_hi.x, a_hi.y, a_hi.z, a_hi.w};
      float b[2 * J];
      AK_UNROLL for (int j = 0; j < J; ++j) {
        const float2 bb = ak_load<float2>(bp + (kq * BN + 32 * j));
        b[2 * j] = bb.x;
        b[2 * j + 1] = bb.y;
      }
      AK_UNROLL for (int i = 0; i < 8; ++i) AK_UNROLL for (int j = 0; j < 2 * J; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    };
    for (int kq = 0; kq < ntp; kq += 2, ap += 2 * kIgBM, bp += 2 * BN) {
      tap_fma(0);
      tap_fma(1);
    }
  }

  // Epilogue: bias (once per channel), ReLU, 32 channels at a time through shared memory.
  float bias[2 * J];
  AK_UNROLL for (int j = 0; j < 2 * J; ++j) {
    const int k = k0 + 32 * (j / 2) + ty * 2 + (j % 2);
    bias[j] = p.has_bias && k < p.K ? gptr_cast<const float>(p.b)[k] : 0.f;
  }
  AK_UNROLL for (int i = 0; i < 8; ++i) AK_UNROLL for (int j = 0; j < 2 * J; ++j) {
    const float v = acc[i][j] + bias[j];
    acc[i][j] = p.relu && v < 0.f ? 0.f : v;  // NaN passes, as torch.relu
  }
  const sptr<float> cs = pool;
  AK_UNROLL for (int jg = 0; jg < J; ++jg) {
    __syncthreads();  // the pool (or the previous group) is no longer read
    if (rp.y_cl) {
      AK_UNROLL for (int i = 0; i < 8; ++i) {
        const int px = i < 4 ? tx * 4 + i : 64 + tx * 4 + i - 4;
        ak_store<float2>(cs + (px * kCsC + ty * 2), make_float2(acc[i][2 * jg], acc[i][2 * jg + 1]));
      }
    } else {
      AK_UNROLL for (int e = 0; e < 2; ++e) {
        const sptr<float> row = cs + (ty * 2 + e) * kCsN;
        ak_store<float4>(row + tx * 4, make_float4(acc[0][2 * jg + e], acc[1][2 * jg + e], acc[2][2 * jg + e], acc[3][2 * jg + e]));
        ak_store<float4>(row + (64 + tx * 4),
                         make_float4(acc[4][2 * jg + e], acc[5][2 * jg + e], acc[6][2 * jg + e], acc[7][2 * jg + e]));
      }
    }
    __syncthreads();
    rs_store<float, V, 32>(rp, tl, cs, rp.y_cl ? kCsC : kCsN, k0 + 32 * jg);
  }
}

}  // namespace alexnet_kernels
