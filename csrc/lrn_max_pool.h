// AlexNet's LRN followed by its overlapping 3x3/2 max pool, as one op: the values pooled are
// csrc/lrn.h's (lrn_window_value on the column path, lrn_forward_at on the element path, the very
// functions alexnet_kernels::lrn runs, so they are its outputs bit for bit, rounded to the tensor's
// dtype as its output is), and the window rule is csrc/max_pool.h's (pool3_row / pool3_rows:
// the first maximum wins a tie, the last NaN wins over everything). Forward writes the pooled
// output and the winner's position in its window (one byte per output); backward gathers each
// input's pooled gradient from those bytes (max_pool.h's covering outputs and its order of
// summation) and feeds it to lrn.h's backward, all in one pass. The host side is
// csrc/lrn_max_pool_host.h; the kernels, their tiling and floor: csrc/cpu/lrn_max_pool_cpu.cpp,
// csrc/cuda/lrn_max_pool_kernels.cuh and docs/lrn_max_pool.md.
#pragma once

#include "lrn.h"
#include "max_pool.h"

namespace alexnet_kernels {

// The pooled geometry: 3x3 windows at stride 2, no padding, floor mode, so every window lies
// inside the image (OH = (H - 3) / 2 + 1, and 2 * OH < H).
struct LrnPoolGeom {
  int H, W, OH, OW;
};

// Whether a value rounds through T on its way to the pool (the LRN op writes T; fp32 and fp64
// pool the value as computed).
template <typename T, typename acc_t>
AK_HD acc_t lrn_pool_round(acc_t v) {
  if constexpr (std::is_same_v<T, acc_t>) {
    return v;
  } else {
    return static_cast<acc_t>(static_cast<T>(v));
  }
}

// The outputs covering input (h, w) of a 3x3/2 pool without padding: at most two rows, oh0 =
// (h - 1) >> 1 and oh0 + 1, and two columns, ow0 = (w - 1) >> 1 and ow0 + 1 (max_pool.h's
// pool3x3s2_rows, along each axis), so four candidates in increasing output order (row-major),
// candidate i at offset base + (i >> 1) * sh + (i & 1) * sw of the pooled tensor's image, with
// code[i] the window position (kh * 3 + kw) the input has in that output's window, or -1 where
// there is no such output (its offset is then outside the image and never read).
template <typename index_t>
struct PoolCover {
  index_t base, sh, sw;
  int code[4];
};

template <typename index_t>
AK_HD PoolCover<index_t> pool_cover_3x3s2(int h, int w, int OH, int OW, index_t sh, index_t sw) {
  int oh[2], kh[2], ow[2], kw[2];
  pool3x3s2_rows(h, OH, oh, kh);
  pool3x3s2_rows(w, OW, ow, kw);
  PoolCover<index_t> c;
  c.base = static_cast<index_t>((h - 1) >> 1) * sh + static_cast<index_t>((w - 1) >> 1) * sw;
  c.sh = sh;
  c.sw = sw;
AK_UNROLL
  for (int r = 0; r < 2; ++r) {
AK_UNROLL
    for (int s = 0; s < 2; ++s) c.code[2 * r + s] = oh[r] >= 0 && ow[s] >= 0 ? kh[r] * 3 + kw[s] : -1;
  }
  return c;
}

// The pooled gradient of one input (n, h, w) as a column over the channels, for lrn.h's backward
// (its GCol): g[o] is the input's gradient at channel offset o (c times the channel stride of the
// pooled gradient and the index, which share one layout): the sum of the gradients of the
// covering outputs whose stored winner is this input, in increasing output order starting from
// 0 (max-pool backward's sum), rounded to T as the max-pool backward's output is. A covering
// output that did not pick this input adds +0, which changes no such sum (it is never -0), so
// each candidate's gradient is loaded with its byte rather than after it: one round trip.
template <typename T, typename acc_t, typename index_t>
struct PooledGradColumn {
  gptr<const T> g0, g1;          // the candidate rows of the image's pooled gradient at channel 0
  gptr<const uint8_t> i0, i1;    // and of its winners (they may point outside: read only where code >= 0)
  index_t sw;
  int code[4];

  AK_HD acc_t operator[](index_t o) const {
    // One address per row and channel; the second column is at +sw (an immediate where sw is a
    // constant).
    const gptr<const T> gr[2] = {g0 + o, g1 + o};
    const gptr<const uint8_t> ir[2] = {i0 + o, i1 + o};
    acc_t acc = 0;
AK_UNROLL
    for (int i = 0; i < 4; ++i) {
      if (code[i] >= 0) {
        const index_t at = (i & 1) ? sw : index_t(0);
        const int won = ir[i >> 1][at];
        const acc_t gv = static_cast<acc_t>(gr[i >> 1][at]);
        if (won == code[i]) acc += gv;
      }
    }
    return lrn_pool_round<T>(acc);
  }
};

// The column of input (h, w) of an image whose pooled gradient and winners start at grad, index.
template <typename T, typename acc_t, typename index_t>
AK_HD PooledGradColumn<T, acc_t, index_t> pooled_grad_column(gptr<const T> grad, gptr<const uint8_t> index,
                                                             const PoolCover<index_t>& c) {
  // (ak_pin: four pointers kept in registers, each read one address computation away.)
  PooledGradColumn<T, acc_t, index_t> col{ak_pin(grad + c.base), ak_pin(grad + (c.base + c.sh)),
                                          ak_pin(index + c.base), ak_pin(index + (c.base + c.sh)), c.sw, {}};
AK_UNROLL
  for (int i = 0; i < 4; ++i) col.code[i] = c.code[i];
  return col;
}

}  // namespace alexnet_kernels
