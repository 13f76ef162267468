"""Fused ReLU + dropout, and ReLU, as the custom ops alexnet_kernels::relu_dropout_fwd / _bwd and
relu_fwd / _bwd.

Kernels: C++ on the CPU (csrc/cpu/relu_dropout_cpu.cpp, rules in csrc/relu_dropout.h), Triton on
CUDA (_relu_dropout_triton.py, imported at the first CUDA call). Both draw the same Philox
stream, so a CPU run and a GPU run with the same seed drop the same units. This file holds the
public functions; the ops' registration is in _relu_dropout_ops.py, the reasoning behind the
design (seed scheme, what autograd saves, tiling and floors) in docs/relu_dropout.md.
"""
from typing import Optional

import torch

from . import _relu_dropout_config as cfg
from . import _relu_dropout_ops  # noqa: F401  (registers the ops' CUDA kernels, fakes, autograd)

__all__ = ["relu_dropout", "relu"]

_ops = torch.ops.alexnet_kernels


def _check_x(x, fn: str, *, relu: bool = False) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: x must be a torch.Tensor, got {type(x).__name__}")
    cfg.check_dtype(x, fn, relu=relu)


def _check_p(p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise ValueError(f"relu_dropout: p must be a float in [0, 1), got p={p!r}")
    p = float(p)
    if p == 1.0:
        raise ValueError(
            "relu_dropout: p=1 is not supported: it would drop every element and scale by "
            "1/(1-p)=inf; p must be in [0, 1) (use torch.zeros_like for an all-zero output)"
        )
    cfg.check_p(p, "relu_dropout")
    return p


def _draw_seed(generator: Optional[torch.Generator]) -> torch.Tensor:
    """int64[2] = [Philox key, counter base] on the CPU, from ``generator`` (a CUDA generator's
    draw is copied over: one sync) or the CPU default generator."""
    if generator is None:
        return torch.randint(0, cfg.SEED_HIGH, (2,), dtype=torch.int64)
    seed = torch.randint(0, cfg.SEED_HIGH, (2,), dtype=torch.int64, device=generator.device, generator=generator)
    return seed.cpu()


def relu(x: torch.Tensor) -> torch.Tensor:
    """``torch.relu(x)`` (float64, float32, float16 or bfloat16) as a kernel of this package; the
    output is contiguous and autograd saves only the output."""
    _check_x(x, "relu", relu=True)
    return _ops.relu_fwd(x)


def relu_dropout(
    x: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """``dropout(relu(x), p, training)`` in one pass.

    Training: ``relu(x) * mask / (1 - p)``, mask ~ Bernoulli(1 - p) per element, drawn from a
    Philox stream seeded by two int64s from ``generator`` (default: torch's CPU generator, so
    ``torch.manual_seed`` reproduces a run and consecutive calls differ). A kept element is
    ``fp32(x) * fp32(1 / (1 - p))`` rounded once to x's dtype; dropped elements and ``x < 0`` give
    0 (a dropped NaN too). ``training=False`` or ``p == 0``: exactly ``relu(x)``, no random
    number drawn.

    x: float32, float16 or bfloat16 (TypeError otherwise, float64 included, on every path: eval
    and p = 0 too), any shape and strides; the mask follows the row-major index, the output is
    contiguous. p: in [0, 1) (ValueError otherwise; p = 1 would scale by inf). Backward keeps only
    the output y, as ReLU does (the mask is y > 0).
    """
    _check_x(x, "relu_dropout")
    p = _check_p(p)
    if not training or p == 0.0 or x.numel() == 0:
        return _ops.relu_fwd(x)
    return _ops.relu_dropout_fwd(x, _draw_seed(generator), p)
