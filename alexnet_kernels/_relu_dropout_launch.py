"""Launchers of relu_dropout's Triton kernels: the CUDA implementations of the ops and, on CPU
tensors under TRITON_INTERPRET=1, the tests' oracle of the C++ kernels. Imports triton.

Inputs are made contiguous; outputs are contiguous tensors of the input's shape. relu on float64
(no Triton kernel: the kernels compute in fp32) runs torch ops with the same rules."""
from contextlib import nullcontext

import torch
import triton

from . import _relu_dropout_config as cfg
from ._relu_dropout_triton import INTERPRET, _relu_bwd_kernel, _relu_dropout_fwd_kernel, _relu_fwd_kernel


def _grid_and_options(t: torch.Tensor, n: int):
    if t.device.type != "cuda" and not INTERPRET:
        raise RuntimeError(f"relu_dropout: the Triton kernels need a CUDA tensor (or TRITON_INTERPRET=1), "
                           f"got a tensor on {t.device}")
    if INTERPRET:  # no compile per BLOCK there; don't pad tiny tensors to 64K
        block = max(16, min(cfg.BLOCK_INTERPRET, triton.next_power_of_2(n)))
        return (triton.cdiv(n, block),), {"BLOCK": block}
    return (triton.cdiv(n, cfg.BLOCK_GPU),), {"BLOCK": cfg.BLOCK_GPU, "num_warps": cfg.WARPS_GPU}


def _on_device(t: torch.Tensor):
    """Triton launches on the current CUDA device and its current stream, not on the tensor's:
    make t's device current (a tower on a second GPU, issued from the first one's context)."""
    return torch.cuda.device(t.device) if t.is_cuda else nullcontext()


def relu_dropout_fwd(x: torch.Tensor, key: int, base: int, p: float) -> torch.Tensor:
    x = x.contiguous()
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    n = x.numel()
    if n == 0:
        return y
    grid, options = _grid_and_options(x, n)
    with _on_device(x):
        _relu_dropout_fwd_kernel[grid](x, y, key, base, n, cfg.threshold(p), cfg.scale(p),
                                      SOFT_BF16=INTERPRET, **options)
    return y


def relu_fwd(x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    if x.dtype == torch.float64:
        return torch.where(x < 0, torch.zeros((), dtype=x.dtype, device=x.device), x)
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    n = x.numel()
    if n == 0:
        return y
    grid, options = _grid_and_options(x, n)
    with _on_device(x):
        _relu_fwd_kernel[grid](x, y, n, **options)
    return y


def relu_bwd(grad: torch.Tensor, y: torch.Tensor, scale: float) -> torch.Tensor:
    """dx = grad * scale where not (y <= 0), else 0 (scale 1 for relu)."""
    grad, y = grad.contiguous(), y.contiguous()
    if grad.dtype == torch.float64:  # relu only: scale is 1
        return torch.where(y <= 0, torch.zeros((), dtype=grad.dtype, device=grad.device), grad)
    dx = torch.empty_like(grad, memory_format=torch.contiguous_format)
    n = grad.numel()
    if n == 0:
        return dx
    grid, options = _grid_and_options(grad, n)
    with _on_device(grad):
        _relu_bwd_kernel[grid](grad, y, dx, n, scale, SOFT_BF16=INTERPRET, **options)
    return dx
