"""The ops behind relu_dropout and relu, beyond their schemas (csrc/ops.cpp) and CPU kernels
(csrc/cpu/relu_dropout_cpu.cpp): the CUDA implementations (the Triton kernels, imported at the
first CUDA call), the fake kernels for torch.compile, and autograd.

    relu_dropout_fwd(x, seed, p) -> y      seed: CPU int64 [Philox key, counter base]
    relu_dropout_bwd(grad, y, p) -> dx     grad * 1/(1-p) where y > 0
    relu_fwd(x) -> y
    relu_bwd(grad, y) -> dx                grad where y > 0

Each forward saves only its output y: y > 0 exactly where the element was kept and x > 0. The
backward ops are linear in grad (their own backward is themselves), so double backward works.
The checks here repeat the C++ ones, so that CUDA calls and tracing fail the same way.
"""
import torch

from . import _relu_dropout_config as cfg

_ops = torch.ops.alexnet_kernels
_NS = "alexnet_kernels::"


def _check_fwd(x: torch.Tensor, seed: torch.Tensor, p: float) -> None:
    cfg.check_dtype(x, "relu_dropout_fwd")
    cfg.check_p(p, "relu_dropout_fwd")
    if seed.dtype != torch.int64 or seed.numel() != 2 or seed.device.type != "cpu":
        raise ValueError(
            "relu_dropout_fwd: seed must be a CPU int64 tensor of 2 elements [key, counter base], "
            f"got dtype={seed.dtype}, numel={seed.numel()}, device={seed.device}"
        )


def _check_bwd(grad: torch.Tensor, y: torch.Tensor, fn: str, *, relu: bool) -> None:
    cfg.check_dtype(grad, fn, relu=relu)
    if grad.shape != y.shape or grad.dtype != y.dtype or grad.device != y.device:
        raise ValueError(
            f"{fn}: grad and y must have the same shape, dtype and device, got grad {list(grad.shape)} "
            f"{grad.dtype} on {grad.device} and y {list(y.shape)} {y.dtype} on {y.device}"
        )


def _launch():
    from . import _relu_dropout_launch  # imports triton: only when a kernel is first needed

    return _relu_dropout_launch


# ---- CUDA: the Triton kernels ------------------------------------------------------------------


def _relu_dropout_fwd_cuda(x, seed, p):
    _check_fwd(x, seed, p)
    key, base = seed.tolist()  # a CPU tensor: no device sync
    return _launch().relu_dropout_fwd(x, key, base, p)


def _relu_dropout_bwd_cuda(grad, y, p):
    _check_bwd(grad, y, "relu_dropout_bwd", relu=False)
    cfg.check_p(p, "relu_dropout_bwd")
    return _launch().relu_bwd(grad, y, cfg.scale(p))


def _relu_fwd_cuda(x):
    cfg.check_dtype(x, "relu_fwd", relu=True)
    return _launch().relu_fwd(x)


def _relu_bwd_cuda(grad, y):
    _check_bwd(grad, y, "relu_bwd", relu=True)
    return _launch().relu_bwd(grad, y, 1.0)


for _name, _fn in [("relu_dropout_fwd", _relu_dropout_fwd_cuda), ("relu_dropout_bwd", _relu_dropout_bwd_cuda),
                   ("relu_fwd", _relu_fwd_cuda), ("relu_bwd", _relu_bwd_cuda)]:
    torch.library.register_kernel(_NS + _name, "cuda", _fn)


# ---- fake kernels: a contiguous tensor like the first argument ---------------------------------


def _like(t: torch.Tensor) -> torch.Tensor:
    return torch.empty(t.shape, dtype=t.dtype, device=t.device)


@torch.library.register_fake(_NS + "relu_dropout_fwd")
def _relu_dropout_fwd_fake(x, seed, p):
    _check_fwd(x, seed, p)
    return _like(x)


@torch.library.register_fake(_NS + "relu_dropout_bwd")
def _relu_dropout_bwd_fake(grad, y, p):
    _check_bwd(grad, y, "relu_dropout_bwd", relu=False)
    return _like(grad)


@torch.library.register_fake(_NS + "relu_fwd")
def _relu_fwd_fake(x):
    cfg.check_dtype(x, "relu_fwd", relu=True)
    return _like(x)


@torch.library.register_fake(_NS + "relu_bwd")
def _relu_bwd_fake(grad, y):
    _check_bwd(grad, y, "relu_bwd", relu=True)
    return _like(grad)


# ---- autograd: one setup_context per op --------------------------------------------------------


def _relu_dropout_fwd_setup(ctx, inputs, output):
    _x, _seed, p = inputs
    ctx.save_for_backward(output)
    ctx.p = p


def _relu_dropout_fwd_backward(ctx, grad):
    (y,) = ctx.saved_tensors
    return _ops.relu_dropout_bwd(grad, y, ctx.p), None, None


def _relu_dropout_bwd_setup(ctx, inputs, output):
    _grad, y, p = inputs
    ctx.save_for_backward(y)
    ctx.p = p


def _relu_dropout_bwd_backward(ctx, gg):
    # linear in grad; the derivative w.r.t. y is 0 almost everywhere
    (y,) = ctx.saved_tensors
    return _ops.relu_dropout_bwd(gg, y, ctx.p), None, None


def _relu_fwd_setup(ctx, inputs, output):
    ctx.save_for_backward(output)


def _relu_fwd_backward(ctx, grad):
    (y,) = ctx.saved_tensors
    return _ops.relu_bwd(grad, y)


def _relu_bwd_setup(ctx, inputs, output):
    _grad, y = inputs
    ctx.save_for_backward(y)


def _relu_bwd_backward(ctx, gg):
    (y,) = ctx.saved_tensors
    return _ops.relu_bwd(gg, y), None


torch.library.register_autograd(_NS + "relu_dropout_fwd", _relu_dropout_fwd_backward,
                                setup_context=_relu_dropout_fwd_setup)
torch.library.register_autograd(_NS + "relu_dropout_bwd", _relu_dropout_bwd_backward,
                                setup_context=_relu_dropout_bwd_setup)
torch.library.register_autograd(_NS + "relu_fwd", _relu_fwd_backward, setup_context=_relu_fwd_setup)
torch.library.register_autograd(_NS + "relu_bwd", _relu_bwd_backward, setup_context=_relu_bwd_setup)
