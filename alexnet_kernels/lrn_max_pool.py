"""AlexNet's LRN followed by its overlapping max pool, fused: the custom op
alexnet_kernels::lrn_max_pool2d.

Kernels: csrc/cpu/lrn_max_pool_cpu.cpp and csrc/cuda/lrn_max_pool_kernels.cuh, on the LRN math of
csrc/lrn.h and the window rule of csrc/max_pool.h, behind the checks and layout rule of
csrc/lrn_max_pool_host.h; their tiling, floor and costs are in docs/lrn_max_pool.md. This file
holds the Python entry point, the fake (meta) kernels for torch.compile, and autograd.

The fused op reads x once and writes the pooled output (and, when x requires grad, one byte per
output: the winner's position in its window); backward reads x, those bytes and the pooled
gradient, and writes dx, in one pass. Autograd saves x (which the ReLU before it keeps anyway) and
the bytes, nothing of the LRN output's size. The fused kernels take AlexNet's pair, size 5 with a
3x3 window at stride 2; any other size or window runs alexnet_kernels.lrn then
alexnet_kernels.max_pool2d, with the same results.
"""
from typing import Optional

import torch

from .lrn import lrn
from .max_pool import IntOrPair, _pair, max_pool2d

__all__ = ["lrn_max_pool2d", "fused"]


def fused(size: int, kernel_size, stride) -> bool:
    """Whether lrn_max_pool2d runs the fused kernels for these parameters (size 5, 3x3 window at
    stride 2), rather than composing lrn and max_pool2d."""
    return size == 5 and tuple(kernel_size) == (3, 3) and tuple(stride) == (2, 2)


def lrn_max_pool2d(
    x: torch.Tensor,
    size: int = 5,
    alpha: float = 1e-4,
    beta: float = 0.75,
    k: float = 1.0,
    kernel_size: IntOrPair = 3,
    stride: Optional[IntOrPair] = 2,
) -> torch.Tensor:
    """``max_pool2d(lrn(x, size, alpha, beta, k), kernel_size, stride)`` in one pass, with the
    results of that composition (and so of ``F.max_pool2d(F.local_response_norm(x, ...), ...)``):
    the LRN values pooled are ``alexnet_kernels.lrn``'s bit for bit, the pool selects the same
    winners (first maximum on a tie, NaN propagates), and the gradients are the composition's.

    x is (N, C, H, W), float64, float32, float16 or bfloat16, any strides; a channels_last input
    gives a channels_last output, any other a contiguous one (max_pool2d's rule). Padding 0,
    dilation 1, floor mode; ``stride=None`` means ``kernel_size``. The defaults are the paper's
    window and LRN size (the paper's k is 2).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"lrn_max_pool2d: x must be a torch.Tensor, got {type(x).__name__}")
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"lrn_max_pool2d: size must be an int, got {size!r}")
    ks = _pair(kernel_size, "kernel_size", "lrn_max_pool2d")
    st = ks if stride is None else _pair(stride, "stride", "lrn_max_pool2d")
    if x.dim() != 4:
        raise ValueError(f"lrn_max_pool2d: x must be 4-D (N, C, H, W), got shape {list(x.shape)}")
    if size <= 0:
        raise ValueError(f"lrn_max_pool2d: size must be positive, got {size}")
    if not fused(size, ks, st):
        return max_pool2d(lrn(x, size, alpha, beta, k), ks, st)
    with_index = torch.is_grad_enabled() and x.requires_grad
    y, _ = torch.ops.alexnet_kernels.lrn_max_pool2d(x, size, float(alpha), float(beta), float(k), ks, st, with_index)
    return y


def _check(x, size, kernel_size, stride):
    """Output (OH, OW); raises what the C++ kernels raise (lrn_pool_check in csrc/lrn_max_pool_host.h)."""
    if x.dim() != 4:
        raise ValueError(f"lrn_max_pool2d: x must be 4-D (N, C, H, W), got shape {list(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"lrn_max_pool2d: x must be a floating-point tensor, got {x.dtype}")
    if size != 5:
        raise ValueError(f"lrn_max_pool2d: the fused kernels take size 5 (AlexNet's), got {size}")
    if list(kernel_size) != [3, 3] or list(stride) != [2, 2]:
        raise ValueError(
            f"lrn_max_pool2d: the fused kernels take kernel_size 3 and stride 2 (AlexNet's), got kernel_size "
            f"{list(kernel_size)} and stride {list(stride)}"
        )
    _, C, H, W = x.shape
    if C == 0 or H == 0 or W == 0:
        raise ValueError(
            f"lrn_max_pool2d: x must have non-zero C, H and W (only the batch may be empty), got shape {list(x.shape)}"
        )
    oh, ow = (H - 3) // 2 + 1 if H >= 3 else 0, (W - 3) // 2 + 1 if W >= 3 else 0
    if oh <= 0 or ow <= 0:
        raise ValueError(
            f"lrn_max_pool2d: output size would be {oh}x{ow} for input {H}x{W}: the kernel_size (with dilation) "
            "is larger than the padded input"
        )
    return oh, ow


def _format(x: torch.Tensor) -> torch.memory_format:
    # Mirrors lrn_pool_format in csrc/lrn_max_pool_host.h (max_pool2d's rule).
    cl = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if cl else torch.contiguous_format


@torch.library.register_fake("alexnet_kernels::lrn_max_pool2d")
def _lrn_max_pool2d_fake(x, size, alpha, beta, k, kernel_size, stride, with_index):
    oh, ow = _check(x, size, kernel_size, stride)
    fmt = _format(x)
    shape = (x.shape[0], x.shape[1], oh, ow)
    y = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)
    index = (
        torch.empty(shape, dtype=torch.uint8, device=x.device, memory_format=fmt)
        if with_index
        else torch.empty((0,), dtype=torch.uint8, device=x.device)
    )
    return y, index


@torch.library.register_fake("alexnet_kernels::lrn_max_pool2d_backward")
def _lrn_max_pool2d_backward_fake(grad, index, x, size, alpha, beta, k, kernel_size, stride):
    oh, ow = _check(x, size, kernel_size, stride)
    expected = [x.shape[0], x.shape[1], oh, ow]
    torch._check(
        list(grad.shape) == expected,
        lambda: f"lrn_max_pool2d_backward: grad has shape {list(grad.shape)}, expected {expected}",
    )
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_format(x))


def _setup_context(ctx, inputs, output):
    x, size, alpha, beta, k, kernel_size, stride, with_index = inputs
    _, index = output
    ctx.save_for_backward(index, x)
    ctx.params = (size, alpha, beta, k, kernel_size, stride)
    ctx.with_index = with_index


def _backward(ctx, grad, _grad_index):
    index, x = ctx.saved_tensors
    if not ctx.with_index:  # called without the index (lrn_max_pool2d asks for it): find the winners again
        _, index = torch.ops.alexnet_kernels.lrn_max_pool2d(x, *ctx.params, True)
    dx = torch.ops.alexnet_kernels.lrn_max_pool2d_backward(grad, index, x, *ctx.params)
    return dx, None, None, None, None, None, None, None


torch.library.register_autograd("alexnet_kernels::lrn_max_pool2d", _backward, setup_context=_setup_context)
