// Weight and bias gradient of the implicit-GEMM convolution: the forward's GEMM (see
// conv_igemm_common.cuh), reduced over pixels instead of taps.
//   dW[k, q] = sum_m G[m, k] * A[m, q],  db[k] = sum_m G[m, k],  G = grad masked by y > 0 (relu)
// The reduction over N * OH * OW pixels (387,200 for conv1 at batch 128) is split into chunks,
// one per block (x), each over a 128-tap tile (y) and a BN-channel tile (z); a block writes its
// fp32 partial tile and a second kernel sums the chunks in fp64 into the weight's layout and
// dtype (deterministic: no atomics). The chunk count is planned so that the grid is whole waves
// of the GPU (conv_igemm_plan.cuh). Pixel coordinates are decoded once per 256 pixels into a
// shared table, so the gather does no division.
// Floor: as the forward (same FLOPs); the partials add 2 * chunks * Kpad * Qpad * 4 bytes.
#pragma once

#include "conv_igemm_common.cuh"
#include "mma.cuh"

namespace alexnet_kernels {

constexpr int kWgBQ = 128;     // taps per block
constexpr int kWgBM = 16;      // pixels per step (fp32)
constexpr int kWgBM16 = 32;    // pixels per step (bf16 / fp16)
constexpr int kWgTable = 256;  // pixels decoded per table fill
constexpr int kWgMaxChunk = 2048;  // pixels per chunk, at most: each thread's serial fp32 sum

struct WgParams {
  IgParams f;                   // geometry, x and its strides (f.y, f.w, f.b unused)
  gptr<const void> g;           // grad of y
  gptr<const void> yv;          // y, read with relu (f.relu)
  int64_t gsn, gsc, gsh, gsw;   // g's strides
  int64_t vsn, vsc, vsh, vsw;   // y's strides
  gptr<float> part;             // [chunks, Kpad, Qpad] partial dW
  gptr<float> dbpart;           // [chunks, Kpad] partial db, written when want_db
  int64_t chunk;                // pixels per chunk
  int32_t Kpad;
  bool want_db;
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

// ---------------------------------------------------------------------------------------------
// fp32. 16 pixels per step; 256 threads = 16 (tx, taps) x 16 (ty, channels), each an 8 x 2J
// register tile (taps tx*4 + {0..3} and 64 + tx*4 + {0..3}; channels 32j + ty*2 + {0, 1}): the
// forward's layout with pixels and taps exchanged.
// ---------------------------------------------------------------------------------------------
template <int J>
__global__ void __launch_bounds__(kIgThreads, 2) conv_wgrad_igemm(WgParams w) {
  constexpr int BN = 32 * J;
  const IgParams& p = w.f;
  AK_SHARED(float, As, [kWgBM][kWgBQ]);
  AK_SHARED(float, Gs, [kWgBM][BN + 2]);  // +2: conflict-free stash, aligned float2 reads
  AK_SHARED(WgPixel, table, [kWgTable]);

  const gptr<const float> x = gptr_cast<const float>(p.x);
  const gptr<const float> g = gptr_cast<const float>(w.g);
  const gptr<const float> yv = gptr_cast<const float>(w.yv);
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int q0 = blockIdx.y * kWgBQ, k0 = blockIdx.z * BN;
  const bool bias_block = w.want_db && blockIdx.y == 0;

  // This thread's gather tap (fixed for the block): q0 + tid % 128.
  const int my_q = q0 + tid % kWgBQ;
  const bool t_valid = my_q < p.Q;
  const IgTap tap = t_valid ? ig_tap(p, my_q) : IgTap{0, 0, 0};
  const int32_t t_off = tap.off, t_r = tap.r, t_s = tap.s;

  float acc[8][2 * J];
  AK_UNROLL for (int i = 0; i < 8; ++i) AK_UNROLL for (int j = 0; j < 2 * J; ++j) acc[i][j] = 0.f;
  // The bias gradient: thread tid < BN sums channel k0 + tid of each step's G tile (one sum per
  // channel, not one per thread sharing it: the registers go to the FMA tile).
  float dbacc = 0.f;

  float a_reg[8], g_reg[2 * J];
  auto gather = [&](int step) {
    AK_UNROLL for (int i = 0; i < 8; ++i) {
      const WgPixel& px = table[step * kWgBM + tid / kWgBQ + 2 * i];
      float v = 0.f;
      const int ih = px.ih0 + t_r, iw = px.iw0 + t_s;
      if (px.valid && t_valid && static_cast<unsigned>(ih) < static_cast<unsigned>(p.H) &&
          static_cast<unsigned>(iw) < static_cast<unsigned>(p.W))
        v = x[px.xbase + t_off];
      a_reg[i] = v;
    }
    AK_UNROLL for (int i = 0; i < 2 * J; ++i) {
      const int e = tid + i * kIgThreads, pix = e % kWgBM, kk = e / kWgBM, k = k0 + kk;
      const WgPixel& px = table[step * kWgBM + pix];
      float v = 0.f;
      if (px.valid && k < p.K) {
        v = g[px.goff + k * w.gsc];
        // torch.relu's backward: zero where y <= 0 (NaN passes)
        if (p.relu && yv[px.yoff + k * w.vsc] <= 0.f) v = 0.f;
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
        const float4 a_lo = ak_load<float4>(&As[pm][tx * 4]);
        const float4 a_hi = ak_load<float4>(&As[pm][64 + tx * 4]);
        const float a[8] = {a_lo.x, a_lo.y, a_lo.z, a_lo.w, a_hi.x, a_hi.y, a_hi.z, a_hi.w};
        float gv[2 * J];
        AK_UNROLL for (int j = 0; j < J; ++j) {
          const float2 gg = ak_load<float2>(&Gs[pm][32 * j + ty * 2]);
          gv[2 * j] = gg.x;
          gv[2 * j + 1] = gg.y;
        }
        AK_UNROLL for (int i = 0; i < 8; ++i) AK_UNROLL for (int j = 0; j < 2 * J; ++j) acc[i][j] = fmaf(a[i], gv[j], acc[i][j]);
      }
      if (bias_block && tid < BN) AK_UNROLL for (int pm = 0; pm < kWgBM; ++pm) dbacc += Gs[pm][tid];
      __syncthreads();
      if (more) {
        stash();
        __syncthreads();
      }
    }
  }

  const gptr<float> part = w.part + static_cast<int64_t>(blockIdx.x) * w.Kpad * p.Qpad;
  AK_UNROLL for (int j = 0; j < 2 * J; ++j) {
    const int k = k0 + 32 * (j / 2) + ty * 2 + (j % 2);  // < Kpad always
    const gptr<float> row = part + (static_cast<int64_t>(k) * p.Qpad + q0);
    // Qpad is a multiple of kWgBQ here: every tile column exists (taps >= Q hold zeros).
    ak_store<float4>(row + tx * 4, make_float4(acc[0][j], acc[1][j], acc[2][j], acc[3][j]));
    ak_store<float4>(row + (64 + tx * 4), make_float4(acc[4][j], acc[5][j], acc[6][j], acc[7][j]));
  }
  if (bias_block && tid < BN) w.dbpart[static_cast<int64_t>(blockIdx.x) * w.Kpad + k0 + tid] = dbacc;
}

// ---------------------------------------------------------------------------------------------
// bf16 / fp16 on the tensor cores: the same chunks, tiles and partials, with mma.sync.m16n8k16
// (fp32 accumulate) in place of the FMAs.
//   D[k, q] += G^T[k, pixels] * A[pixels, q]:  MMA rows = channels, columns = taps, K = pixels.
// Tiling: 32 pixels per step; 8 warps = 2 (channels: BN/2 each, MT = BN/32 m16 tiles) x 4 (taps:
// 32 each, four n8 tiles). Shared tiles are pixel-contiguous (G: [channel][pixel], A: [tap][pixel])
// with rows padded to 40 halves (80 bytes: ldmatrix's eight rows hit distinct banks); every
// fragment is one ldmatrix.x4 (MT for A, two for B per 16 pixels). Each thread gathers one tap
// for 16 pixels (two 16-byte stores) and 2J channel x pixel-pair words of G; the bias gradient
// is summed from the gathered G in fp32 and reduced across the 16 lanes that share a channel.
// ---------------------------------------------------------------------------------------------
template <typename T, int J>
__global__ void __launch_bounds__(kIgThreads, 2) conv_wgrad_igemm_mma(WgParams w) {
  using D = uint16_t;
  constexpr int BN = 32 * J, MT = BN / 32;
  constexpr int kRow = kWgBM16 + 8;
  constexpr int kGWords = BN * kWgBM16 / 2 / kIgThreads;  // 2J (channel, pixel pair) words per thread
  const IgParams& p = w.f;
  AK_SHARED(D, As, [kWgBQ][kRow]);
  AK_SHARED(D, Gs, [BN][kRow]);
  AK_SHARED(WgPixel, table, [kWgTable]);

  const gptr<const D> x = gptr_cast<const D>(p.x);
  const gptr<const T> g = gptr_cast<const T>(w.g);
  const gptr<const T> yv = gptr_cast<const T>(w.yv);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wk = warp % 2, wq = warp / 2;
  const int q0 = blockIdx.y * kWgBQ, k0 = blockIdx.z * BN;
  const bool bias_block = w.want_db && blockIdx.y == 0;

  // This thread's gather tap (fixed for the block) and pixel half of each step.
  const int my_q = q0 + tid % kWgBQ, a_p = (tid / kWgBQ) * 16;
  const bool t_valid = my_q < p.Q;
  const IgTap tap = t_valid ? ig_tap(p, my_q) : IgTap{0, 0, 0};
  const int32_t t_off = tap.off, t_r = tap.r, t_s = tap.s;
  // ldmatrix.x4 rows of this lane. A (G): rows 0-7 / 8-15 of the m16 tile x pixels 0-7 / 8-15
  // (a[0], a[1], a[2], a[3]); B (A^T): taps 0-7 / 8-15 of two n8 tiles x pixels 0-7 / 8-15.
  const int a_row = wk * (BN / 2) + ((lane / 8) % 2) * 8 + lane % 8, a_col = (lane / 16) * 8;
  const int b_row = wq * 32 + (lane / 16) * 8 + lane % 8, b_col = ((lane / 8) % 2) * 8;

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
      return x[px.xbase + t_off];
    return 0;
  };
  auto g_bits = [&](int pix, int k, float& sum) -> uint32_t {
    const WgPixel& px = table[pix];
    if (!px.valid || k >= p.K) return 0;
    const T v = g[px.goff + k * w.gsc];
    // torch.relu's backward: zero where y <= 0 (NaN passes)
    if (p.relu && static_cast<float>(yv[px.yoff + k * w.vsc]) <= 0.f) return 0;
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
    ak_store<uint4>(&As[tid % kWgBQ][a_p], make_uint4(a_reg[0], a_reg[1], a_reg[2], a_reg[3]));
    ak_store<uint4>(&As[tid % kWgBQ][a_p + 8], make_uint4(a_reg[4], a_reg[5], a_reg[6], a_reg[7]));
    AK_UNROLL for (int i = 0; i < kGWords; ++i) {
      const int e = tid + i * kIgThreads;
      ak_store<uint32_t>(&Gs[e / 16][2 * (e % 16)], g_reg[i]);
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
        AK_UNROLL for (int i = 0; i < MT; ++i) ldmatrix<4, false>(a[i], &Gs[a_row + i * 16][kp + a_col]);
        AK_UNROLL for (int j = 0; j < 4; j += 2) {
          uint32_t r4[4];
          ldmatrix<4, false>(r4, &As[b_row + j * 8][kp + b_col]);
          b[j][0] = r4[0];
          b[j][1] = r4[1];
          b[j + 1][0] = r4[2];
          b[j + 1][1] = r4[3];
        }
        AK_UNROLL for (int i = 0; i < MT; ++i) AK_UNROLL for (int j = 0; j < 4; ++j) mma_m16n8k16<T>(acc[i][j], a[i], b[j]);
      }
      __syncthreads();
      if (more) {
        stash();
        __syncthreads();
      }
    }
  }

  const gptr<float> part = w.part + static_cast<int64_t>(blockIdx.x) * w.Kpad * p.Qpad;
  const int gq = lane / 4, tq = lane % 4;
  AK_UNROLL for (int i = 0; i < MT; ++i) AK_UNROLL for (int j = 0; j < 4; ++j) {
    const int k = k0 + wk * (BN / 2) + i * 16 + gq;  // rows k and k + 8, < Kpad always
    const int q = q0 + wq * 32 + j * 8 + 2 * tq;     // columns q and q + 1, < Qpad always
    ak_store<float2>(part + (static_cast<int64_t>(k) * p.Qpad + q), make_float2(acc[i][j][0], acc[i][j][1]));
    ak_store<float2>(part + (static_cast<int64_t>(k + 8) * p.Qpad + q), make_float2(acc[i][j][2], acc[i][j][3]));
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
__global__ void conv_wgrad_reduce(gptr<const float> part, gptr<const float> dbpart, int chunks, int K, int Kpad, int Q,
                                  int Qpad, int R, int S, Strides4 ws, gptr<T> dw, gptr<T> db, bool want_db) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t total = static_cast<int64_t>(K) * Q;
  if (i < total) {
    const int k = static_cast<int>(i / Q), q = static_cast<int>(i % Q);
    double acc = 0;
    for (int c = 0; c < chunks; ++c) acc += part[(static_cast<int64_t>(c) * Kpad + k) * Qpad + q];
    const int RS = R * S, ch = q / RS, r = (q - ch * RS) / S, s = q - ch * RS - r * S;
    dw[ws.at(k, ch, r, s)] = static_cast<T>(static_cast<float>(acc));
  } else if (want_db && i < total + K) {
    const int k = static_cast<int>(i - total);
    double acc = 0;
    for (int c = 0; c < chunks; ++c) acc += dbpart[static_cast<int64_t>(c) * Kpad + k];
    db[k] = static_cast<T>(static_cast<float>(acc));
  }
}

}  // namespace alexnet_kernels
