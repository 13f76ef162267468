"""2-D convolution with an optional fused ReLU, as the custom op alexnet_kernels::conv2d: the Python
entry point, the fake kernels and autograd.

Kernels (docs/conv.md has their tilings, costs and measurements):

* CPU (csrc/cpu/conv_cpu.cpp): im2col packing into GEMMs (oneDNN's inner product for fp32,
  at::mm otherwise) for the forward, the weight and bias gradients and the input gradient,
  images spread over threads; fp16 / bf16 in fp32.
* CUDA (csrc/cuda/conv_cuda.cu), fp32 / bf16 / fp16 with C*R*S <= 1024 taps: implicit GEMMs
  (csrc/cuda/conv_igemm*.cuh), fp32 on the FP32 pipes (never TF32), bf16 / fp16 on the tensor
  cores; conv1's shapes take kernels that stage input rows in shared memory. The weight and bias
  gradients are the same GEMM reduced over pixels. Elsewhere (fp64, more taps, the input
  gradient) the direct reference kernels of csrc/conv.h. tests/test_conv_emulated.py runs the
  CUDA kernels on the CPU under an emulator.

Autograd saves the input and the weight (the weight gradient needs the input; the input
gradient, computed only when the input requires it, needs the weight) and, with relu=True, the
output for the ReLU mask.
"""
from collections.abc import Sequence

import torch

from .max_pool import _pair

__all__ = ["conv2d"]

IntOrPair = int | Sequence[int]


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    *,
    relu: bool = False,
) -> torch.Tensor:
    """``F.conv2d(input, weight, bias, stride, padding)`` (groups 1, dilation 1), followed by
    ReLU when ``relu=True`` (fused into the same kernel). float64/32/16 and bfloat16 (fp32
    accumulation; fp32 is computed in fp32, never TF32), NCHW or channels_last (kept)."""
    if not isinstance(input, torch.Tensor) or not isinstance(weight, torch.Tensor):
        raise TypeError("conv2d: input and weight must be torch.Tensors")
    s = _pair(stride, "stride", "conv2d")
    p = _pair(padding, "padding", "conv2d")
    return torch.ops.alexnet_kernels.conv2d(input, weight, bias, s, p, bool(relu))


def _out_shape(input, weight, bias, stride, padding):
    # Mirrors conv_geom in csrc/conv.h.
    if input.dim() != 4:
        raise ValueError(f"conv2d: input must be 4-D (N, C, H, W), got shape {list(input.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"conv2d: weight must be 4-D (K, C, R, S), got shape {list(weight.shape)}")
    if not input.is_floating_point():
        raise TypeError(f"conv2d: input must be floating point, got {input.dtype}")
    if weight.dtype != input.dtype:
        raise TypeError(f"conv2d: weight dtype {weight.dtype} does not match input dtype {input.dtype}")
    if weight.shape[1] != input.shape[1]:
        raise ValueError(f"conv2d: weight expects {weight.shape[1]} input channels, input has {input.shape[1]}")
    if min(stride) <= 0:
        raise ValueError(f"conv2d: stride must be positive, got {list(stride)}")
    if min(padding) < 0:
        raise ValueError(f"conv2d: padding must be non-negative, got {list(padding)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"conv2d: bias must have shape [{weight.shape[0]}], got {list(bias.shape)}")
    n, _, h, w = input.shape
    k, _, r, s = weight.shape
    if h + 2 * padding[0] < r or w + 2 * padding[1] < s:
        raise ValueError(
            f"conv2d: weight's kernel {r}x{s} is larger than the padded input "
            f"{h + 2 * padding[0]}x{w + 2 * padding[1]}"
        )
    return (n, k, (h + 2 * padding[0] - r) // stride[0] + 1, (w + 2 * padding[1] - s) // stride[1] + 1)


def _format(t: torch.Tensor) -> torch.memory_format:
    # Mirrors conv_format in csrc/conv.h.
    cl = t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if cl else torch.contiguous_format


@torch.library.register_fake("alexnet_kernels::conv2d")
def _conv2d_fake(input, weight, bias, stride, padding, relu):
    shape = _out_shape(input, weight, bias, stride, padding)
    return torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=_format(input))


@torch.library.register_fake("alexnet_kernels::conv2d_backward")
def _conv2d_backward_fake(grad, input, weight, output, stride, padding, relu, output_mask):
    def grad_like(t, wanted):
        if not wanted:
            return t.new_empty((0,))
        return torch.empty(t.shape, dtype=t.dtype, device=t.device, memory_format=_format(t))

    db = weight.new_empty((weight.shape[0] if output_mask[2] else 0,))
    return grad_like(input, output_mask[0]), grad_like(weight, output_mask[1]), db


def _setup_context(ctx, inputs, output):
    input, weight, bias, stride, padding, relu = inputs
    ctx.save_for_backward(input, weight, output if relu else None)
    ctx.params = (stride, padding, relu)
    ctx.has_bias = bias is not None


def _backward(ctx, grad) -> tuple:
    input, weight, output = ctx.saved_tensors
    mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
    stride, padding, relu = ctx.params
    dx, dw, db = torch.ops.alexnet_kernels.conv2d_backward(grad, input, weight, output, stride, padding, relu, mask)
    return (dx if mask[0] else None, dw if mask[1] else None, db if mask[2] else None, None, None, None)


torch.library.register_autograd("alexnet_kernels::conv2d", _backward, setup_context=_setup_context)
