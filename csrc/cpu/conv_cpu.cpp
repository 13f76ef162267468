// CPU kernels of alexnet_kernels::conv2d and conv2d_backward: im2col packing into GEMMs (fp32
// through oneDNN's inner product or MKL's sgemm, see gemm_nt and gemm_nn; other dtypes at::mm).
//
//   forward:        y[P, K]  = cols[P, Q] . W[K, Q]^T + bias   (ReLU as the block is written to y)
//   weight grad:    dW[K, Q] += G[K, P] . cols[P, Q]    (each GEMM in T, their sum in fp64)
//   input grad:     dcols[P, Q] = G[K, P]^T . W[K, Q], then col2im adds it into dx
// P = the columns of one GEMM: a slice of one image's output pixels, or several whole small
// images (so that cols stays within a few MB and the GEMMs are not too small to run at speed),
// Q = C * R * S taps in (c, r, s) order, G = grad masked by y > 0 with relu. cols is packed
// pixel-major: for each pixel and (c, r), the S taps are one contiguous run of an input row
// (a copy, no gather), and the GEMM reads it transposed. Work items (an image, or a group of
// images) are spread over threads, each running single-threaded GEMMs (neither oneDNN nor MKL
// nests inside an OpenMP parallel region); with fewer items than threads, one at a time with the
// GEMM's own threads.
//
// fp16 / bf16 compute in fp32 (as the reference: fp32 accumulation, one rounding at the end).
// The direct kernels of conv.h are not used here; they stay the CUDA fallback and the oracle.
#include <torch/library.h>

#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "../conv_host.h"

namespace alexnet_kernels {
namespace {

// dst[s] = src[s] for s < S: with kS > 0 (S == kS) a fixed-length memcpy, which the compiler
// turns into a few vector moves (an element loop stays scalar: dst and src might alias).
template <int kS, typename T>
inline void copy_taps(T* __restrict__ dst, const T* __restrict__ src, int64_t S) {
  if constexpr (kS > 0) {
    std::memcpy(dst, src, kS * sizeof(T));
  } else {
    for (int64_t s = 0; s < S; ++s) dst[s] = src[s];
  }
}

// cols[i, (c, r, s)] = x[n, c, oh*sH - pH + r, ow*sW - pW + s] for the P pixels from p0 of image n
// (0 outside the image). kS: S when it is 11 (conv1), else 0.
template <int kS, typename T>
void im2col_s(const T* x, const Strides4& xs, const ConvGeom& g, int64_t n, int64_t p0, int64_t P, T* cols) {
  const int64_t Q = g.C * g.R * g.S;
  int64_t oh = p0 / g.OW, ow = p0 % g.OW;
  const T* xn = x + n * xs.n;
  for (int64_t i = 0; i < P; ++i) {
    T* dst = cols + i * Q;
    const int64_t h0 = oh * g.sH - g.pH, w0 = ow * g.sW - g.pW;
    const bool run = xs.w == 1 && w0 >= 0 && w0 + g.S <= g.W;  // the row's S taps are contiguous
    // Otherwise taps [lo, hi) are inside the image, the rest padding.
    const int64_t lo = std::min(g.S, std::max<int64_t>(0, -w0)), hi = std::max(lo, std::min(g.S, g.W - w0));
    for (int64_t c = 0; c < g.C; ++c) {
      for (int64_t r = 0; r < g.R; ++r, dst += g.S) {
        const int64_t h = h0 + r;
        if (h < 0 || h >= g.H) {
          std::fill(dst, dst + g.S, T(0));
          continue;
        }
        const T* src = xn + c * xs.c + h * xs.h;
        if (run) {
          copy_taps<kS>(dst, src + w0, g.S);
        } else {
          std::fill(dst, dst + lo, T(0));
          for (int64_t s = lo; s < hi; ++s) dst[s] = src[(w0 + s) * xs.w];
          std::fill(dst + hi, dst + g.S, T(0));
        }
      }
    }
    if (++ow == g.OW) {
      ow = 0;
      ++oh;
    }
  }
}

template <typename T>
void im2col(const T* x, const Strides4& xs, const ConvGeom& g, int64_t n, int64_t p0, int64_t P, T* cols) {
  if (g.S == 11) im2col_s<11>(x, xs, g, n, p0, P, cols);
  else im2col_s<0>(x, xs, g, n, p0, P, cols);
}

// dx[n, c, oh*sH - pH + r, ow*sW - pW + s] += dcols[i, (c, r, s)] over the P pixels from p0 (the
// inverse of im2col; in-bounds taps only).
template <typename T>
void col2im_add(const T* dcols, const ConvGeom& g, int64_t n, int64_t p0, int64_t P, T* dx, const Strides4& ds) {
  const int64_t Q = g.C * g.R * g.S;
  int64_t oh = p0 / g.OW, ow = p0 % g.OW;
  T* dn = dx + n * ds.n;
  for (int64_t i = 0; i < P; ++i) {
    const T* src = dcols + i * Q;
    const int64_t h0 = oh * g.sH - g.pH, w0 = ow * g.sW - g.pW;
    const bool run = ds.w == 1 && w0 >= 0 && w0 + g.S <= g.W;
    for (int64_t c = 0; c < g.C; ++c) {
      for (int64_t r = 0; r < g.R; ++r, src += g.S) {
        const int64_t h = h0 + r;
        if (h < 0 || h >= g.H) continue;
        T* dst = dn + c * ds.c + h * ds.h;
        if (run) {
          T* d0 = dst + w0;
          for (int64_t s = 0; s < g.S; ++s) d0[s] += src[s];
        } else {
          for (int64_t s = 0; s < g.S; ++s) {
            const int64_t w = w0 + s;
            if (w >= 0 && w < g.W) dst[w * ds.w] += src[s];
          }
        }
      }
    }
    if (++ow == g.OW) {
      ow = 0;
      ++oh;
    }
  }
}

// Pixels per GEMM: at most 2^19 elements of cols (2 MB in fp32: conv1's 363 taps x 1444
// pixels), so that the packed columns are still in cache when the GEMM reads them. (Measured on
// the 2-core development machine: 2^18 and 2^19 alike, 2^21 -- a whole conv1 image -- up to 1.4x
// slower.) A large image is cut into slices of that many pixels; images smaller than that go
// several to a GEMM (the default CPU run's 64x64 images have 225 output pixels each; on one core
// of the development machine a GEMM of 64 x 363 x 225 runs at about two thirds of the speed of
// one of 64 x 363 x 1350).
struct Work {
  int64_t P;       // pixels per slice of one image
  int64_t images;  // whole images per GEMM, at most (1: one image, in slices of P)
  int64_t items;   // work items: one image, or (images > 1) images [item * N / items, (item + 1) * N / items)
};

Work plan_work(const ConvGeom& g) {
  const int64_t Q = g.C * g.R * g.S, pix = g.OH * g.OW;
  const int64_t cap = std::max<int64_t>(1, (int64_t(1) << 19) / Q);  // columns per GEMM, at most
  const int64_t P = std::min(pix, cap);
  if (2 * pix > cap || g.N < 2) return {P, 1, g.N};
  // As few groups as fit, rounded up to a multiple of the threads (at::parallel_for gives each
  // thread the same number of items) and spread evenly: 32 images of 64x64 on 2 threads make 6
  // groups of 5 or 6, 16 images per thread.
  const int64_t threads = at::get_num_threads();
  int64_t items = (g.N + cap / pix - 1) / (cap / pix);
  items = std::min(g.N, (items + threads - 1) / threads * threads);
  return {P, (g.N + items - 1) / items, items};
}

// One GEMM's columns: pixels [p0, p0 + pc) of image n, for each segment, concatenated.
struct Segment {
  int64_t n, p0, pc;
};

// The GEMMs of work item `item`, each as its segments: one GEMM over the item's whole images, or
// one per slice of its single image.
std::vector<std::vector<Segment>> item_gemms(const Work& wk, const ConvGeom& g, int64_t item) {
  const int64_t pix = g.OH * g.OW;
  std::vector<std::vector<Segment>> gemms;
  if (wk.images > 1) {
    std::vector<Segment> segs;
    for (int64_t n = item * g.N / wk.items; n < (item + 1) * g.N / wk.items; ++n) segs.push_back({n, 0, pix});
    gemms.push_back(std::move(segs));
  } else {
    for (int64_t p0 = 0; p0 < pix; p0 += wk.P) gemms.push_back({{item, p0, std::min(wk.P, pix - p0)}});
  }
  return gemms;
}

int64_t columns(const std::vector<Segment>& segs) {
  int64_t m = 0;
  for (const Segment& s : segs) m += s.pc;
  return m;
}

// Runs body(item) for every work item: spread over threads when there are at least as many items
// as threads (single-threaded GEMMs), else one at a time.
template <typename Body>
void for_each_item(int64_t items, const Body& body) {
  if (items >= at::get_num_threads() && items > 1) {
    at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) body(i);
    });
  } else {
    for (int64_t i = 0; i < items; ++i) body(i);
  }
}

// Thread `slot`'s scratch buffer as a dense tensor of `sizes`, kept between calls and grown as
// needed: a fresh multi-MB buffer per call costs a page fault per 4 KiB page on first touch (in a
// profile of the 64x64 forward at batch 32, a fifth of the samples were in the kernel, faulting
// pages in and unmapping them; 2% with the kept buffers).
// The view lives only until the next call of this thread with the same slot.
at::Tensor scratch(int slot, at::IntArrayRef sizes, const at::TensorOptions& opts) {
  thread_local std::array<at::Tensor, 4> bufs;
  const int64_t bytes = c10::multiply_integers(sizes) * static_cast<int64_t>(opts.dtype().itemsize());
  at::Tensor& buf = bufs.at(slot);
  if (!buf.defined() || buf.numel() < bytes) buf = at::empty({bytes}, opts.dtype(at::kByte));
  return at::from_blob(buf.data_ptr(), sizes, opts.memory_format(c10::nullopt));
}

// One image's planes from n pixel-major rows of K outputs: dst[k * pix + i] = relu(o[i * K + k])
// (NaN passes, as torch.relu), in tiles of 16 pixels so that the K plane runs being written stay
// in L1.
template <typename T>
void store_planes(T* __restrict__ dst, int64_t pix, const T* __restrict__ o, int64_t K, int64_t n, bool relu) {
  for (int64_t i0 = 0; i0 < n; i0 += 16) {
    const int64_t ni = std::min<int64_t>(16, n - i0);
    for (int64_t k = 0; k < K; ++k) {
      T* d = dst + k * pix + i0;
      const T* src = o + i0 * K + k;
      for (int64_t i = 0; i < ni; ++i) {
        const T v = src[i * K];
        d[i] = relu && v < T(0) ? T(0) : v;
      }
    }
  }
}

// oneDNN's inner product, the op mkldnn::_linear_pointwise that PyTorch's CPU build registers for
// its own fused linear layers, if this build has it: a . b^T (+ bias), fp32.
const c10::optional<c10::OperatorHandle>& onednn_linear() {
  static const c10::optional<c10::OperatorHandle> op = [] {
    auto h = c10::Dispatcher::singleton().findOp({"mkldnn::_linear_pointwise", ""});
    return h.has_value() && h->hasKernelForDispatchKey(c10::DispatchKey::CPU) ? h : c10::nullopt;
  }();
  return op;
}

at::Tensor call_onednn_linear(const at::Tensor& a, const at::Tensor& b, const c10::optional<at::Tensor>& bias) {
  torch::jit::Stack stack;
  stack.reserve(6);
  stack.emplace_back(a);
  stack.emplace_back(b);
  stack.emplace_back(bias.has_value() ? c10::IValue(*bias) : c10::IValue());
  stack.emplace_back(std::string("none"));
  stack.emplace_back(c10::List<c10::optional<at::Scalar>>());
  stack.emplace_back(std::string(""));
  onednn_linear()->callBoxed(&stack);
  return stack.back().toTensor();
}

// a . b^T (+ bias along the columns), as a new dense [a rows, b rows] tensor: the forward's GEMM.
// fp32 goes through oneDNN: per core it ran these GEMMs at 92-106 GFLOP/s against MKL's sgemm
// (at::mm) 72-90 on one AVX-512 machine, 150-180 against 69-77 on another (Zen 5's flags); on an
// AVX2 machine the two were within 5% of each other at the 1350-1444 columns of a GEMM here.
// Other dtypes, and builds without oneDNN, take at::mm. Inside at::parallel_for either runs
// single-threaded. (The ReLU stays outside: oneDNN's fused ReLU maps NaN to 0, torch.relu keeps it.)
at::Tensor gemm_nt(const at::Tensor& a, const at::Tensor& b, const c10::optional<at::Tensor>& bias) {
  if (onednn_linear().has_value() && a.scalar_type() == at::kFloat) return call_onednn_linear(a, b, bias);
  return bias.has_value() ? at::addmm(*bias, a, b.t()) : at::mm(a, b.t());
}

// a . b ([a rows, b columns], dense): the weight gradient's GEMM, G . cols, with cols read
// transposed; into `out` (at::mm), or a new tensor (oneDNN). Where PyTorch's kernels run AVX-512
// (at::get_cpu_capability(), which ATEN_CPU_CAPABILITY overrides) fp32 goes through oneDNN: 169
// GFLOP/s on one core of the machine with Zen 5's flags against MKL's 76 (MKL ran AVX2 code
// there). On an AVX2 machine MKL ran it 8-13% faster than oneDNN (64x64 and 224x224 conv1), so
// elsewhere at::mm.
at::Tensor gemm_nn(const at::Tensor& a, const at::Tensor& b, at::Tensor out) {
  static const bool avx512 = at::get_cpu_capability() == "AVX512";
  if (avx512 && onednn_linear().has_value() && a.scalar_type() == at::kFloat) {
    return call_onednn_linear(a, b.t(), c10::nullopt);
  }
  return at::mm_out(out, a, b);
}

template <typename T>
void forward_impl(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b, const ConvGeom& g,
                  bool relu, at::Tensor& y) {
  const int64_t Q = g.C * g.R * g.S, pix = g.OH * g.OW;
  const Work wk = plan_work(g);
  const at::Tensor w2 = w.contiguous().view({g.K, Q});
  const at::Tensor bias = b.has_value() ? b->contiguous() : at::Tensor();
  const T* xp = x.const_data_ptr<T>();
  const Strides4 xs = strides4(x);
  const bool cl = conv_channels_last(y);
  // y is dense: [N, pix, K] (channels_last) or [N, K, pix] (NCHW).
  T* const y0 = y.mutable_data_ptr<T>();
  for_each_item(wk.items, [&](int64_t item) {
    const at::Tensor cols = scratch(0, {wk.images * wk.P, Q}, x.options());
    for (const std::vector<Segment>& segs : item_gemms(wk, g, item)) {
      const int64_t m = columns(segs);
      T* cp = cols.mutable_data_ptr<T>();
      for (const Segment& s : segs) {
        im2col(xp, xs, g, s.n, s.p0, s.pc, cp);
        cp += s.pc * Q;
      }
      const at::Tensor cv = cols.narrow(0, 0, m);
      // [m, K], the bias added in the GEMM: oneDNN repacks its second operand, here the small
      // weight (one core of the machine with Zen 5's flags: 180 GFLOP/s this way, 152 as [K, m]).
      // The ReLU is ours, as the block is copied: oneDNN's turns NaN into 0.
      const at::Tensor out = gemm_nt(cv, w2, b.has_value() ? c10::optional<at::Tensor>(bias) : c10::nullopt);
      const T* o = out.const_data_ptr<T>();
      if (cl) {
        // The segments are consecutive pixels of y: one dense [m, K] block.
        const Segment& s0 = segs.front();
        T* dst = y0 + (s0.n * pix + s0.p0) * g.K;
        if (relu) {
          for (int64_t i = 0; i < m * g.K; ++i) dst[i] = o[i] < T(0) ? T(0) : o[i];  // NaN passes, as torch.relu
        } else {
          std::memcpy(dst, o, m * g.K * sizeof(T));
        }
      } else {
        // Each segment's pixels are one run of each of its image's planes.
        for (const Segment& s : segs) {
          store_planes(y0 + s.n * g.K * pix + s.p0, pix, o, g.K, s.pc, relu);
          o += s.pc * g.K;
        }
      }
    }
  });
}

at::Tensor conv2d_forward_cpu(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                              at::IntArrayRef stride, at::IntArrayRef padding, bool relu) {
  // The ATen calls below (GEMMs, copies) are this op's internals: no autograd on them.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const ConvGeom g = conv_geom(x, w, b, stride, padding);
  at::Tensor y = at::empty({g.N, g.K, g.OH, g.OW}, x.options().memory_format(conv_format(x)));
  if (y.numel() == 0) return y;
  if (x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16) {
    const c10::optional<at::Tensor> bf = b.has_value() ? c10::optional<at::Tensor>(b->to(at::kFloat)) : c10::nullopt;
    at::Tensor yf = at::empty(y.sizes(), y.options().dtype(at::kFloat).memory_format(conv_format(x)));
    forward_impl<float>(x.to(at::kFloat), w.to(at::kFloat), bf, g, relu, yf);
    y.copy_(yf);
    return y;
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv2d", [&] { forward_impl<scalar_t>(x, w, b, g, relu, y); });
  return y;
}

// dst[i] = y[i] <= 0 ? 0 : g[i] (torch.relu's backward: NaN passes; y null: no ReLU) for i < n,
// and the sum of dst in eight interleaved partial sums, returned in fp64. Both loads and a select,
// no branch, so GCC vectorizes it: as a branch on the sign of a random y it was mispredicted half
// the time (a tenth of the 64x64 weight gradient's profile). noinline: inlined into its caller,
// the loop lost the restrict qualifiers and stayed scalar.
template <typename T>
__attribute__((noinline)) double masked_copy_sum(T* __restrict__ dst, const T* __restrict__ g,
                                                 const T* __restrict__ y, int64_t n) {
  T part[8] = {};
  int64_t i = 0;
  if (y != nullptr) {
    for (; i + 8 <= n; i += 8) {
      for (int l = 0; l < 8; ++l) {
        const T gv = g[i + l], yv = y[i + l];  // both loaded: no load under the condition
        const T v = yv <= T(0) ? T(0) : gv;
        dst[i + l] = v;
        part[l] += v;
      }
    }
  } else {
    for (; i + 8 <= n; i += 8) {
      for (int l = 0; l < 8; ++l) {
        dst[i + l] = g[i + l];
        part[l] += g[i + l];
      }
    }
  }
  double sum = 0;
  for (; i < n; ++i) {
    const T v = y != nullptr && y[i] <= T(0) ? T(0) : g[i];
    dst[i] = v;
    sum += static_cast<double>(v);
  }
  for (int l = 0; l < 8; ++l) sum += static_cast<double>(part[l]);
  return sum;
}

template <typename T>
void backward_impl(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w, const at::Tensor& y,
                   const ConvGeom& g, bool relu, std::array<bool, 3> mask, at::Tensor& dx, at::Tensor& dw,
                   at::Tensor& db) {
  const int64_t Q = g.C * g.R * g.S, pix = g.OH * g.OW;
  const Work wk = plan_work(g);
  const int64_t M = wk.images * wk.P;  // columns of the largest GEMM
  const at::Tensor w2 = w.contiguous().view({g.K, Q});
  const T* xp = x.const_data_ptr<T>();
  const T* gp = grad.const_data_ptr<T>();
  const T* yp = relu ? y.const_data_ptr<T>() : nullptr;
  const Strides4 xs = strides4(x), gs = strides4(grad), ys = relu ? strides4(y) : Strides4{0, 0, 0, 0};
  // A dense plane (NCHW) makes each channel's pixels one run of g (and y).
  const bool g_run = gs.w == 1 && gs.h == g.OW && (!relu || (ys.w == 1 && ys.h == g.OW));
  if (mask[0]) dx.zero_();
  // fp64 accumulators of dW and db, one per thread: each GEMM sums its P pixels (a slice of an
  // image, or several small images) in T, the GEMMs are summed here in fp64 (the long reduction
  // of conv1's weight gradient).
  const int threads = at::get_num_threads();
  std::vector<std::vector<double>> acc_w(mask[1] ? threads : 0), acc_b(mask[2] ? threads : 0);
  auto opts = x.options().memory_format(at::MemoryFormat::Contiguous);
  for_each_item(wk.items, [&](int64_t item) {
    const int t = at::get_thread_num();
    at::Tensor gm = scratch(0, {g.K, M}, opts), cols, dcols;
    if (mask[1]) {
      cols = scratch(1, {M, Q}, opts);
      if (acc_w[t].empty()) acc_w[t].assign(g.K * Q, 0.0);
    }
    if (mask[2] && acc_b[t].empty()) acc_b[t].assign(g.K, 0.0);
    if (mask[0]) dcols = scratch(2, {M, Q}, opts);
    for (const std::vector<Segment>& segs : item_gemms(wk, g, item)) {
      const int64_t m = columns(segs);
      const Segment& s0 = segs.front();
      // G[k, i]: the gradient reaching the pre-activation, and its row sums (db).
      T* gmp = gm.mutable_data_ptr<T>();
      at::Tensor gv;
      if (segs.size() == 1 && g_run && !relu && !mask[2]) {
        gv = grad.select(0, s0.n).view({g.K, pix}).narrow(1, s0.p0, s0.pc);  // g itself, rows pix apart
      } else {
        int64_t c0 = 0;
        for (const Segment& s : segs) {
          for (int64_t k = 0; k < g.K; ++k) {
            T* row = gmp + k * m + c0;
            double sum;
            if (g_run) {
              sum = masked_copy_sum(row, gp + s.n * gs.n + k * gs.c + s.p0,
                                    relu ? yp + s.n * ys.n + k * ys.c + s.p0 : nullptr, s.pc);
            } else {
              sum = 0;
              int64_t oh = s.p0 / g.OW, ow = s.p0 % g.OW;
              for (int64_t i = 0; i < s.pc; ++i) {
                const T v = gp[gs.at(s.n, k, oh, ow)];
                row[i] = relu && yp[ys.at(s.n, k, oh, ow)] <= T(0) ? T(0) : v;
                sum += static_cast<double>(row[i]);
                if (++ow == g.OW) {
                  ow = 0;
                  ++oh;
                }
              }
            }
            if (mask[2]) acc_b[t][k] += sum;
          }
          c0 += s.pc;
        }
        gv = gm.view({-1}).narrow(0, 0, g.K * m).view({g.K, m});
      }
      if (mask[1]) {
        T* cp = cols.mutable_data_ptr<T>();
        for (const Segment& s : segs) {
          im2col(xp, xs, g, s.n, s.p0, s.pc, cp);
          cp += s.pc * Q;
        }
        // G . cols, added to the thread's fp64 sum.
        const at::Tensor part = gemm_nn(gv, cols.narrow(0, 0, m), scratch(3, {g.K, Q}, opts));
        const T* pp = part.const_data_ptr<T>();
        double* aw = acc_w[t].data();
        for (int64_t e = 0; e < g.K * Q; ++e) aw[e] += static_cast<double>(pp[e]);
      }
      if (mask[0]) {
        at::Tensor dv = dcols.narrow(0, 0, m);
        at::mm_out(dv, gv.t(), w2);
        const T* dp = dv.const_data_ptr<T>();
        for (const Segment& s : segs) {
          col2im_add(dp, g, s.n, s.p0, s.pc, dx.mutable_data_ptr<T>(), strides4(dx));
          dp += s.pc * Q;
        }
      }
    }
  });
  if (mask[1]) {
    std::vector<double> sum(g.K * Q, 0.0);
    for (const auto& a : acc_w)
      if (!a.empty())
        for (int64_t e = 0; e < g.K * Q; ++e) sum[e] += a[e];
    at::Tensor d2 = at::empty({g.K, Q}, opts);
    T* dp = d2.mutable_data_ptr<T>();
    for (int64_t e = 0; e < g.K * Q; ++e) dp[e] = static_cast<T>(sum[e]);
    dw.copy_(d2.view(w.sizes()));
  }
  if (mask[2]) {
    T* bp = db.mutable_data_ptr<T>();
    for (int64_t k = 0; k < g.K; ++k) {
      double s = 0;
      for (const auto& a : acc_b)
        if (!a.empty()) s += a[k];
      bp[k] = static_cast<T>(s);
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& y,
    at::IntArrayRef stride, at::IntArrayRef padding, bool relu, std::array<bool, 3> output_mask) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const ConvGeom g = conv_backward_geom(grad, x, w, y, stride, padding, relu);
  at::Tensor dx = at::empty(output_mask[0] ? x.sizes() : at::IntArrayRef{0},
                            x.options().memory_format(output_mask[0] ? conv_format(x) : at::MemoryFormat::Contiguous));
  at::Tensor dw = at::empty(output_mask[1] ? w.sizes() : at::IntArrayRef{0},
                            w.options().memory_format(output_mask[1] ? conv_format(w) : at::MemoryFormat::Contiguous));
  at::Tensor db = at::empty({output_mask[2] ? g.K : 0}, w.options());
  if (!(output_mask[0] || output_mask[1] || output_mask[2])) return {dx, dw, db};
  if (g.N * g.OH * g.OW == 0) {  // nothing reduced: zero gradients
    dx.zero_();
    dw.zero_();
    db.zero_();
    return {dx, dw, db};
  }
  const at::Tensor ym = relu ? *y : at::Tensor();
  if (x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16) {
    const auto f = at::kFloat;
    at::Tensor dxf = output_mask[0] ? at::empty(dx.sizes(), dx.options().dtype(f).memory_format(conv_format(dx))) : dx;
    at::Tensor dwf = output_mask[1] ? at::empty(dw.sizes(), dw.options().dtype(f).memory_format(conv_format(dw))) : dw;
    at::Tensor dbf = output_mask[2] ? at::empty(db.sizes(), db.options().dtype(f)) : db;
    backward_impl<float>(grad.to(f), x.to(f), w.to(f), relu ? ym.to(f) : ym, g, relu, output_mask, dxf, dwf, dbf);
    if (output_mask[0]) dx.copy_(dxf);
    if (output_mask[1]) dw.copy_(dwf);
    if (output_mask[2]) db.copy_(dbf);
    return {dx, dw, db};
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv2d_backward", [&] {
    backward_impl<scalar_t>(grad, x, w, ym, g, relu, output_mask, dx, dw, db);
  });
  return {dx, dw, db};
}

std::vector<int64_t> conv2d_cpu_plan(const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride,
                                     at::IntArrayRef padding) {
  const Work wk = plan_work(conv_geom(x, w, c10::nullopt, stride, padding));
  return {wk.P, wk.images, wk.items};
}

}  // namespace

TORCH_LIBRARY_IMPL(alexnet_kernels, CPU, m) {
  m.impl("conv2d_cpu_plan", &conv2d_cpu_plan);
  m.impl("conv2d", &conv2d_forward_cpu);
  m.impl("conv2d_backward", &conv2d_backward_cpu);
}

}  // namespace alexnet_kernels
