// conv_igemm.cuh's kernels and host planning, run on the CPU by cuda_emu.h: tests/test_conv_emulated.py
// builds this as a small torch extension and compares its results with F.conv2d, so the CUDA
// fast path's indexing is checked on a machine without a GPU. Tensors are CPU tensors.
#include "cuda_emu.h"  // first: it defines the CUDA keywords the kernels use

#include <torch/extension.h>

#include "../../csrc/cuda/conv_igemm.cuh"

namespace ak = alexnet_kernels;

at::Tensor forward(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                   std::vector<int64_t> stride, std::vector<int64_t> padding, bool relu) {
  const ak::ConvGeom g = ak::conv_geom(x, w, b, stride, padding);
  TORCH_CHECK(ak::igemm_eligible(x, g), "conv_emu: the implicit GEMM does not take this convolution");
  return ak::conv2d_forward_igemm<emu::Launcher>(x, w, b, g, relu);
}

std::vector<at::Tensor> weight_grad(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w,
                                    const c10::optional<at::Tensor>& y, std::vector<int64_t> stride,
                                    std::vector<int64_t> padding, bool relu) {
  const ak::ConvGeom g = ak::conv_geom(x, w, c10::nullopt, stride, padding);
  TORCH_CHECK(ak::igemm_eligible(x, g), "conv_emu: the implicit GEMM does not take this convolution");
  at::Tensor dw = at::empty(w.sizes(), w.options().memory_format(ak::conv_format(w)));
  at::Tensor db = at::empty({g.K}, w.options());
  ak::conv2d_wgrad_igemm<emu::Launcher>(grad, x, y, g, relu, dw, &db);
  return {dw, db};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "conv2d forward through the implicit-GEMM kernels, emulated on the CPU");
  m.def("weight_grad", &weight_grad, "conv2d weight and bias gradients through the implicit-GEMM kernels, emulated");
}
