"""Local response normalization (AlexNet section 3.3) as the custom op alexnet_kernels::lrn.

Kernels: csrc/cpu/lrn_cpu.cpp and csrc/cuda/lrn_kernels.cuh, both on the element math of
csrc/lrn.h, behind the checks and layout rules of csrc/lrn_host.h; their tiling, floor and
costs are in docs/lrn.md. This file holds the Python entry point, the fake (meta) kernels for
torch.compile, and autograd.

Backward saves only x, the op's input: the denominator is recomputed from it rather than stored.
In AlexNet x is the preceding ReLU's output, which autograd keeps anyway, so LRN adds no saved
memory of its own (torch's composite LRN keeps about seven input-sized tensors).
"""
import torch

__all__ = ["lrn"]


def lrn(x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> torch.Tensor:
    """Local response normalization across channels, with exactly the semantics of
    ``torch.nn.functional.local_response_norm(x, size, alpha, beta, k)``::

        y[n, c, ...] = x[n, c, ...] / (k + alpha / size * sum_{c'} x[n, c', ...] ** 2) ** beta

    summing over c' in [c - size // 2, c + (size - 1) // 2] (channels outside [0, C) count as
    zero). x has 3 or more dims (N, C, ...), float64, float32, float16 or bfloat16; arithmetic is
    in float32 (float64 for float64), so float16 inputs do not overflow in x ** 2. Any layout:
    NCHW and channels_last outputs keep the input's layout, other strides give a contiguous
    output. The AlexNet paper uses size=5, alpha=1e-4, beta=0.75, k=2.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"lrn: x must be a torch.Tensor, got {type(x).__name__}")
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"lrn: size must be an int, got {size!r}")
    return torch.ops.alexnet_kernels.lrn(x, size, float(alpha), float(beta), float(k))


def _check(x: torch.Tensor, size: int) -> None:
    # The C++ kernels check the same (csrc/lrn_host.h, lrn_check); this copy serves the fake kernels,
    # so that a bad call fails the same way while tracing.
    if x.dim() < 3:
        raise ValueError(f"lrn: x must have 3 or more dims (N, C, ...), got shape {list(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"lrn: x must be a floating-point tensor, got {x.dtype}")
    if size <= 0:
        raise ValueError(f"lrn: size must be positive, got {size}")


def _out_format(x: torch.Tensor) -> torch.memory_format:
    # Mirrors lrn_out_format in csrc/lrn_host.h.
    if x.is_contiguous():
        return torch.contiguous_format
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


@torch.library.register_fake("alexnet_kernels::lrn")
def _lrn_fake(x, size, alpha, beta, k):
    _check(x, size)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_out_format(x))


@torch.library.register_fake("alexnet_kernels::lrn_backward")
def _lrn_backward_fake(grad, x, size, alpha, beta, k):
    _check(x, size)
    torch._check(grad.shape == x.shape,
                 lambda: f"lrn_backward: grad shape {list(grad.shape)} != x shape {list(x.shape)}")
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_out_format(x))


def _setup_context(ctx, inputs, output):
    x, size, alpha, beta, k = inputs
    ctx.save_for_backward(x)
    ctx.params = (size, alpha, beta, k)


def _backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return torch.ops.alexnet_kernels.lrn_backward(grad, x, *ctx.params), None, None, None, None


torch.library.register_autograd("alexnet_kernels::lrn", _backward, setup_context=_setup_context)
