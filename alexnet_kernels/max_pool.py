"""2-D max pooling (AlexNet's overlapping 3x3/2 pool among others) as the custom op
alexnet_kernels::max_pool2d.

Kernels: csrc/cpu/max_pool_cpu.cpp and csrc/cuda/max_pool_kernels.cuh, both on the window
functions and tie rules of csrc/max_pool.h, behind the checks and shape rules of
csrc/max_pool_host.h; their tiling, floor and costs are in docs/max_pool.md. This file holds
the Python entry point, the fake (meta) kernels for torch.compile, and autograd.

Backward needs no int64 index tensor (torch's costs 8 bytes per output): when x requires grad,
forward also writes one uint8 per output, the winner's position inside its window, and that is
all autograd saves. Windows of more than 256 taps do not fit a byte; then x is saved and backward
recomputes the winners.
"""
from typing import Optional, Sequence, Tuple, Union

import torch

__all__ = ["max_pool2d"]

IntOrPair = Union[int, Sequence[int]]


def _pair(value: IntOrPair, name: str, op: str = "max_pool2d") -> Tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (tuple, list, torch.Size)) and len(value) in (1, 2) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return (value[0], value[-1])
    raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")


def max_pool2d(
    x: torch.Tensor,
    kernel_size: IntOrPair = 3,
    stride: Optional[IntOrPair] = 2,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    ceil_mode: bool = False,
) -> torch.Tensor:
    """Max pooling over (H, W) with the results of ``torch.nn.functional.max_pool2d``, bit for
    bit: same output size rule, the first maximum wins a tie (so the gradient goes where torch
    sends it), NaN propagates. The arguments are torch's, in torch's order; the defaults are
    AlexNet's overlapping pool (3x3, stride 2), and ``stride=None`` means ``kernel_size`` as in
    torch. x is (N, C, H, W) or (C, H, W), floating point, any strides; a channels_last input
    gives a channels_last output, any other a contiguous one.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"max_pool2d: x must be a torch.Tensor, got {type(x).__name__}")
    k = _pair(kernel_size, "kernel_size")
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else _pair(stride, "stride")
    p = _pair(padding, "padding")
    d = _pair(dilation, "dilation")
    unbatched = x.dim() == 3
    if unbatched:
        x = x.unsqueeze(0)
    with_index = torch.is_grad_enabled() and x.requires_grad and k[0] * k[1] <= 256
    y, _ = torch.ops.alexnet_kernels.max_pool2d(x, k, s, p, d, bool(ceil_mode), with_index)
    return y.squeeze(0) if unbatched else y


def _out_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    # torch's pooling_output_shape; mirrors pool_out_size in csrc/max_pool_host.h.
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _check(x, kernel_size, stride, padding, dilation, ceil_mode):
    """Output (OH, OW); raises what the C++ kernels raise (pool_geom in csrc/max_pool_host.h)."""
    if x.dim() != 4:
        raise ValueError(f"max_pool2d: x must be 4-D (N, C, H, W), got shape {list(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"max_pool2d: x must be a floating-point tensor, got {x.dtype}")
    for i in range(2):
        if kernel_size[i] <= 0:
            raise ValueError(f"max_pool2d: kernel_size must be positive, got {list(kernel_size)}")
        if stride[i] <= 0:
            raise ValueError(f"max_pool2d: stride must be positive, got {list(stride)}")
        if dilation[i] <= 0:
            raise ValueError(f"max_pool2d: dilation must be positive, got {list(dilation)}")
        if not 0 <= padding[i] <= kernel_size[i] // 2:
            raise ValueError(
                f"max_pool2d: padding must be non-negative and at most half of kernel_size, got padding "
                f"{list(padding)} for kernel_size {list(kernel_size)}"
            )
    _, C, H, W = x.shape
    if C == 0 or H == 0 or W == 0:
        raise ValueError(
            f"max_pool2d: x must have non-zero C, H and W (only the batch may be empty), got {list(x.shape)}")
    oh = _out_size(H, kernel_size[0], stride[0], padding[0], dilation[0], ceil_mode)
    ow = _out_size(W, kernel_size[1], stride[1], padding[1], dilation[1], ceil_mode)
    if oh <= 0 or ow <= 0:
        raise ValueError(
            f"max_pool2d: output size would be {oh}x{ow} for input {H}x{W}: the kernel_size (with dilation) "
            "is larger than the padded input"
        )
    return oh, ow


def _channels_last(x: torch.Tensor) -> bool:
    # Mirrors pool_channels_last in csrc/max_pool_host.h.
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


@torch.library.register_fake("alexnet_kernels::max_pool2d")
def _max_pool2d_fake(x, kernel_size, stride, padding, dilation, ceil_mode, with_index):
    oh, ow = _check(x, kernel_size, stride, padding, dilation, ceil_mode)
    fmt = torch.channels_last if _channels_last(x) else torch.contiguous_format
    shape = (x.shape[0], x.shape[1], oh, ow)
    y = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)
    index = (
        torch.empty(shape, dtype=torch.uint8, device=x.device, memory_format=fmt)
        if with_index
        else torch.empty((0,), dtype=torch.uint8, device=x.device)
    )
    return y, index


@torch.library.register_fake("alexnet_kernels::max_pool2d_backward")
def _max_pool2d_backward_fake(grad, index, x, input_size, kernel_size, stride, padding, dilation, ceil_mode,
                              channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(tuple(input_size), dtype=grad.dtype, device=grad.device, memory_format=fmt)


def _setup_context(ctx, inputs, output):
    x, kernel_size, stride, padding, dilation, ceil_mode, with_index = inputs
    _, index = output
    if with_index:
        ctx.save_for_backward(index, None)
    else:  # window too large for a byte: keep x and recompute the winners
        ctx.save_for_backward(None, x)
    ctx.input_size = tuple(x.shape)
    ctx.channels_last = _channels_last(x)
    ctx.params = (kernel_size, stride, padding, dilation, ceil_mode)


def _backward(ctx, grad, _grad_index):
    index, x = ctx.saved_tensors
    dx = torch.ops.alexnet_kernels.max_pool2d_backward(
        grad, index, x, ctx.input_size, *ctx.params, ctx.channels_last
    )
    return dx, None, None, None, None, None, None


torch.library.register_autograd("alexnet_kernels::max_pool2d", _backward, setup_context=_setup_context)
