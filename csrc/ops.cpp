// The op registry: every op's schema, in one place. Kernels register themselves per device in
// csrc/cpu/*.cpp and csrc/cuda/*.cu; fake (meta) kernels and autograd are in Python, next to each
// op's wrapper (alexnet_kernels/<op>.py).
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import alexnet_kernels._C` loads this shared object, which runs the static registrations
// below. The module itself is empty: the ops are reached through torch.ops.alexnet_kernels.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(alexnet_kernels, m) {
  m.def("lrn(Tensor x, int size, float alpha, float beta, float k) -> Tensor");
  m.def("lrn_backward(Tensor grad, Tensor x, int size, float alpha, float beta, float k) -> Tensor");
  // index: one uint8 per output, the winner's position in its window (kh * kW + kw); empty
  // unless with_index. Backward reads it, or, for windows of more than 256 taps, recomputes the
  // winner from x.
  m.def(
      "max_pool2d(Tensor x, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
      "bool ceil_mode, bool with_index) -> (Tensor, Tensor)");
  m.def(
      "max_pool2d_backward(Tensor grad, Tensor? index, Tensor? x, SymInt[4] input_size, "
      "int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode, "
      "bool channels_last) -> Tensor");
  // LRN (size 5) followed by a 3x3/2 max pool in one pass; index as max_pool2d's (empty unless
  // with_index). Backward reads the pooled gradient, the index and x.
  m.def(
      "lrn_max_pool2d(Tensor x, int size, float alpha, float beta, float k, int[2] kernel_size, int[2] stride, "
      "bool with_index) -> (Tensor, Tensor)");
  m.def(
      "lrn_max_pool2d_backward(Tensor grad, Tensor index, Tensor x, int size, float alpha, float beta, float k, "
      "int[2] kernel_size, int[2] stride) -> Tensor");
  // Direct convolution, groups 1 and dilation 1, with an optional fused ReLU after the bias.
  m.def("conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, bool relu) -> Tensor");
  // Gradients of (input, weight, bias), each an empty tensor unless output_mask asks for it;
  // with relu, output is the forward's output (the ReLU mask).
  m.def(
      "conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor? output, int[2] stride, int[2] padding, "
      "bool relu, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // How the CPU kernels cut that convolution into GEMMs at the current thread count: [pixels per
  // slice of one image, images per GEMM at most, work items] (for the tests and for tuning).
  m.def("conv2d_cpu_plan(Tensor input, Tensor weight, int[2] stride, int[2] padding) -> int[]");
  // Fused ReLU + dropout, and ReLU (alexnet_kernels/relu_dropout.py). seed: a CPU int64[2], the
  // Philox [key, counter base], read on the host. Outputs are contiguous; backward reads only y.
  m.def("relu_dropout_fwd(Tensor x, Tensor seed, float p) -> Tensor");
  m.def("relu_dropout_bwd(Tensor grad, Tensor y, float p) -> Tensor");
  m.def("relu_fwd(Tensor x) -> Tensor");
  m.def("relu_bwd(Tensor grad, Tensor y) -> Tensor");
}
