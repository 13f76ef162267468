"""Modules over the package's ops, drop-in for their torch.nn namesakes."""
import math
import numbers

import torch

from .conv import conv2d
from .lrn import lrn
from .lrn_max_pool import lrn_max_pool2d
from .max_pool import _pair, max_pool2d
from .relu_dropout import _check_p, relu, relu_dropout

__all__ = ["Conv2d", "LocalResponseNorm", "MaxPool2d", "LocalResponseNormMaxPool2d", "ReLU", "ReLUDropout"]


class Conv2d(torch.nn.Conv2d):
    """torch.nn.Conv2d on alexnet_kernels.conv2d, with the same constructor and parameter names
    (so state_dicts carry over), plus ``relu=True`` to fuse the following ReLU. groups and
    dilation must be 1, padding a number or pair (or "valid"), padding_mode "zeros"."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None, *, relu=False):
        if padding == "valid":
            padding = 0
        if isinstance(padding, str):
            raise ValueError(f"Conv2d: padding={padding!r} is not supported (give a number or a pair)")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        if self.groups != 1 or self.dilation != (1, 1) or self.padding_mode != "zeros":
            raise ValueError("Conv2d: only groups=1, dilation=1 and padding_mode='zeros' are supported")
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight, self.bias
        # Under autocast, as torch.nn.Conv2d (float64 is left alone, as autocast does): the op
        # itself is not on autocast's lists, so the cast is here.
        if torch.is_autocast_enabled(x.device.type) and x.dtype != torch.float64:
            dtype = torch.get_autocast_dtype(x.device.type)
            x, w, b = x.to(dtype), w.to(dtype), None if b is None else b.to(dtype)
        return conv2d(x, w, b, self.stride, self.padding, relu=self.relu)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", relu=True" if self.relu else "")


def _number(value, name: str, module: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{module}: {name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{module}: {name} must be finite, got {value!r}")
    return float(value)


class LocalResponseNorm(torch.nn.Module):
    """torch.nn.LocalResponseNorm on alexnet_kernels.lrn (same arguments, same results); bad
    arguments raise here, at construction."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"LocalResponseNorm: size must be an int, got {size!r}")
        if size <= 0:
            raise ValueError(f"LocalResponseNorm: size must be positive, got {size}")
        self.size = size
        self.alpha = _number(alpha, "alpha", "LocalResponseNorm")
        self.beta = _number(beta, "beta", "LocalResponseNorm")
        self.k = _number(k, "k", "LocalResponseNorm")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lrn(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class MaxPool2d(torch.nn.Module):
    """torch.nn.MaxPool2d on alexnet_kernels.max_pool2d (same arguments, same results); bad
    arguments raise here, at construction.

    return_indices is not supported: the op keeps a one-byte window position for its own
    backward, not torch's int64 flat indices.
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__()
        if return_indices:
            raise ValueError("MaxPool2d: return_indices=True is not supported (use torch.nn.MaxPool2d)")
        k = _pair(kernel_size, "kernel_size", "MaxPool2d")
        s = k if stride is None else _pair(stride, "stride", "MaxPool2d")
        p = _pair(padding, "padding", "MaxPool2d")
        d = _pair(dilation, "dilation", "MaxPool2d")
        if min(k) <= 0:
            raise ValueError(f"MaxPool2d: kernel_size must be positive, got {kernel_size!r}")
        if min(s) <= 0:
            raise ValueError(f"MaxPool2d: stride must be positive, got {stride!r}")
        if min(d) <= 0:
            raise ValueError(f"MaxPool2d: dilation must be positive, got {dilation!r}")
        if min(p) < 0 or p[0] > k[0] // 2 or p[1] > k[1] // 2:
            raise ValueError(
                f"MaxPool2d: padding must be non-negative and at most half of kernel_size, got padding {padding!r} "
                f"for kernel_size {kernel_size!r}"
            )
        if not isinstance(ceil_mode, bool):
            raise TypeError(f"MaxPool2d: ceil_mode must be a bool, got {ceil_mode!r}")
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.dilation, self.ceil_mode = padding, dilation, ceil_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class LocalResponseNormMaxPool2d(torch.nn.Module):
    """LocalResponseNorm(size, alpha, beta, k) followed by MaxPool2d(kernel_size, stride), fused
    (alexnet_kernels.lrn_max_pool2d: the same results, one pass over the input); bad arguments
    raise here, at construction. The defaults are the paper's conv -> ReLU -> LRN -> pool block
    but for k, which the paper sets to 2 (torch's default is 1)."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, kernel_size=3,
                 stride=2):
        super().__init__()
        name = "LocalResponseNormMaxPool2d"
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"{name}: size must be an int, got {size!r}")
        if size <= 0:
            raise ValueError(f"{name}: size must be positive, got {size}")
        ks = _pair(kernel_size, "kernel_size", name)
        st = ks if stride is None else _pair(stride, "stride", name)
        if min(ks) <= 0:
            raise ValueError(f"{name}: kernel_size must be positive, got {kernel_size!r}")
        if min(st) <= 0:
            raise ValueError(f"{name}: stride must be positive, got {stride!r}")
        self.size = size
        self.alpha = _number(alpha, "alpha", name)
        self.beta = _number(beta, "beta", name)
        self.k = _number(k, "k", name)
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lrn_max_pool2d(x, self.size, self.alpha, self.beta, self.k, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return (f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")


class ReLUDropout(torch.nn.Module):
    """torch.nn.ReLU followed by torch.nn.Dropout(p), fused (alexnet_kernels.relu_dropout); plain
    ReLU in eval mode and at p = 0, which, like torch.nn.ReLU, takes float64 too."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = _check_p(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.p > 0:
            return relu_dropout(x, self.p, True)
        return relu(x)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ReLU(torch.nn.Module):
    """torch.nn.ReLU on the Triton kernel alexnet_kernels.relu (not in place; autograd keeps the
    output only)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu(x)
