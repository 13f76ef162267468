// conv_igemm.cuh's kernels and host planning, run on the CPU by cuda_emu.h: tests/test_conv_emulated.py
// builds this as a small torch extension and compares its results with F.conv2d, so the CUDA
// fast path's indexing is checked on a machine without a GPU. Tensors are CPU tensors.
#include "cuda_emu.h"  // first: it defines the CUDA keywords the kernels use

#include <torch/extension.h>

#include "../../csrc/cuda/conv_igemm.cuh"

namespace ak = alexnet_kernels;

namespace {

ak::ConvGeom checked_geom(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                          const std::vector<int64_t>& stride, const std::vector<int64_t>& padding) {
  const ak::ConvGeom g = ak::conv_geom(x, w, b, stride, padding);
  TORCH_CHECK(ak::igemm_eligible(x, g), "conv_emu: the implicit GEMM does not take this convolution");
  return g;
}

}  // namespace

// kind: "auto" (the planning's choice), "rows" or "gather" (that kernel family, or an error).
at::Tensor forward(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                   std::vector<int64_t> stride, std::vector<int64_t> padding, bool relu, const std::string& kind) {
  const ak::ConvGeom g = checked_geom(x, w, b, stride, padding);
  c10::optional<ak::IgForward> force;
  if (kind == "rows") force = ak::IgForward::kRows;
  else if (kind == "gather") force = ak::IgForward::kGather;
  else TORCH_CHECK(kind == "auto", "conv_emu: kind is auto, rows or gather, got ", kind);
  return ak::conv2d_forward_igemm<emu::Launcher>(x, w, b, g, relu, force);
}

// Which kernel family the planning picks for this forward: "rows", "gather", or "none" (the
// reference kernels).
std::string forward_kind(const at::Tensor& x, const at::Tensor& w, std::vector<int64_t> stride,
                         std::vector<int64_t> padding) {
  const ak::ConvGeom g = ak::conv_geom(x, w, c10::nullopt, stride, padding);
  if (!ak::igemm_eligible(x, g)) return "none";
  return ak::igemm_forward_kind(x, g) == ak::IgForward::kRows ? "rows" : "gather";
}

std::vector<at::Tensor> weight_grad(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w,
                                    const c10::optional<at::Tensor>& y, std::vector<int64_t> stride,
                                    std::vector<int64_t> padding, bool relu) {
  const ak::ConvGeom g = checked_geom(x, w, c10::nullopt, stride, padding);
  at::Tensor dw = at::empty(w.sizes(), w.options().memory_format(ak::conv_format(w)));
  at::Tensor db = at::empty({g.K}, w.options());
  ak::conv2d_wgrad_igemm<emu::Launcher>(grad, x, y, g, relu, dw, &db);
  return {dw, db};
}

// The weight gradient's chunking for M pixels over `tiles` (tap x channel) tiles on `sms` SMs:
// (pixels per chunk, chunks).
std::pair<int64_t, int64_t> wgrad_plan(int64_t M, int64_t tiles, int64_t Kpad, int64_t Qpad, int sms) {
  const ak::WgPlan p = ak::wgrad_plan(M, tiles, Kpad, Qpad, sms);
  return {p.chunk, p.chunks};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "conv2d forward through the implicit-GEMM kernels, emulated on the CPU");
  m.def("forward_kind", &forward_kind, "which implicit-GEMM forward kernels the planning picks");
  m.def("weight_grad", &weight_grad, "conv2d weight and bias gradients through the implicit-GEMM kernels, emulated");
  m.def("wgrad_plan", &wgrad_plan, "the weight gradient's chunking (pixels per chunk, chunks)");
}
