"""alexnet_kernels.lrn against torch.nn.functional.local_response_norm."""
import pytest
import torch
import torch.nn.functional as F
from helpers import DEVICES, have_memory, layouts, poison, rel_err

import alexnet_kernels as ak

# Relative norm error allowed against a float64 reference computed by torch from the same inputs.
# float32: a handful of roundings in a window sum and a pow; float16/bfloat16: one rounding of
# the output (unit roundoff 2^-11 and 2^-8) plus the fp32 arithmetic, against an fp32 reference.
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}

# (shape, size, alpha, beta, k): odd and even sizes, sizes beyond C, 3-D, 4-D and 5-D inputs.
CASES = [
    ((2, 16, 7, 9), 5, 1e-4, 0.75, 2.0),  # the paper's constants
    ((3, 8, 5, 5), 4, 1e-3, 0.75, 1.0),   # even size: asymmetric window
    ((1, 5, 3, 4), 1, 0.5, 0.5, 1.0),      # size 1: per-element
    ((2, 3, 4, 4), 7, 0.9, 1.2, 0.5),      # window wider than C on both sides
    ((2, 4, 6), 3, 2.0, 0.75, 1.0),        # 3-D (N, C, L)
    ((1, 6, 2, 3, 5), 6, 0.3, 0.9, 1.5),   # 5-D (N, C, D, H, W)
    ((5, 33, 1, 1), 2, 1.0, 0.6, 3.0),     # fc-like, even size
    ((2, 3, 4, 5), 5, 0.7, 0.75, 1.0),     # size 5 (the column path in NCHW) with C < size
    ((1, 6, 3, 3), 5, 1e-4, 0.75, 2.0),    # size 5, C = 6: every window clipped on some side
]


def reference(x, size, alpha, beta, k):
    return F.local_response_norm(x.double(), size, alpha, beta, k)


def make_x(shape, device, dtype=torch.float32, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Values of both signs and well away from zero: large alpha * x^2 terms test the pow.
    return (torch.randn(shape, generator=g) * scale).to(device=device, dtype=dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-size{c[1]}")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_matches_torch(device, case, dtype):
    shape, size, alpha, beta, k = case
    x = make_x(shape, device, dtype)
    ref = reference(x, size, alpha, beta, k)
    for name, xl in layouts(x):
        poison(device)
        y = ak.lrn(xl, size, alpha, beta, k)
        assert y.shape == x.shape and y.dtype == dtype, name
        assert not y.isnan().any(), f"{name}: unwritten (poisoned) output elements"
        assert rel_err(y, ref) < TOL[dtype], name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-size{c[1]}")
def test_backward_matches_torch(device, case):
    shape, size, alpha, beta, k = case
    x = make_x(shape, device)
    g = make_x(shape, device, seed=1)
    x64 = x.double().requires_grad_()
    reference(x64, size, alpha, beta, k).backward(g.double())
    for name, xl in layouts(x):
        xl = xl.detach().requires_grad_()
        poison(device)
        ak.lrn(xl, size, alpha, beta, k).backward(g)
        assert rel_err(xl.grad, x64.grad) < TOL[torch.float32], name


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-size{c[1]}")
def test_gradcheck_cpu(case):
    shape, size, alpha, beta, k = case
    x = make_x(shape, "cpu", torch.float64, scale=1.0).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: ak.lrn(t, size, alpha, beta, k), (x,))
    assert torch.autograd.gradcheck(lambda t: ak.lrn(t.contiguous(memory_format=torch.channels_last)
                                                     if t.dim() == 4 else t, size, alpha, beta, k), (x,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_against_fp32(device, dtype):
    x = make_x((4, 32, 13, 13), device, dtype)
    g = make_x((4, 32, 13, 13), device, dtype, seed=1)
    # Reference: torch in float32 on the same (rounded) inputs.
    x32 = x.float().requires_grad_()
    ref = F.local_response_norm(x32, 5, 1e-4, 0.75, 2.0)
    ref.backward(g.float())
    for name, xl in layouts(x):
        xl = xl.detach().requires_grad_()
        y = ak.lrn(xl, 5, 1e-4, 0.75, 2.0)
        y.backward(g)
        assert y.dtype == dtype
        assert rel_err(y, ref) < TOL[dtype], name
        assert rel_err(xl.grad, x32.grad) < TOL[dtype], name


@pytest.mark.parametrize("device", DEVICES)
def test_fp16_large_values_do_not_overflow(device):
    # x^2 exceeds fp16's largest finite value (65504) here; the result itself is small.
    x = make_x((2, 8, 4, 4), device, scale=1.0).abs().add(300.0).half()
    y = ak.lrn(x, 5, 1e-2, 0.75, 1.0)
    ref = F.local_response_norm(x.float(), 5, 1e-2, 0.75, 1.0)
    assert torch.isfinite(ref).all() and torch.isfinite(y).all()
    assert rel_err(y, ref) < TOL[torch.float16]


@pytest.mark.parametrize("device", DEVICES)
def test_output_layout(device):
    x = make_x((2, 6, 5, 7), device)
    assert ak.lrn(x).is_contiguous()
    cl = x.contiguous(memory_format=torch.channels_last)
    y = ak.lrn(cl)
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    assert ak.lrn(x[..., ::2]).is_contiguous()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0, 8, 5, 5), (1, 8, 5, 5), (4, 0, 3, 3), (2, 3, 0)])
def test_empty_and_batch_one(device, shape):
    x = make_x(shape, device).requires_grad_()
    y = ak.lrn(x, 3)
    assert y.shape == x.shape
    torch.testing.assert_close(y.double(), reference(x.detach(), 3, 1e-4, 0.75, 1.0), rtol=0, atol=1e-6)
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_bad_input():
    x = torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match="x must have 3 or more dims"):
        ak.lrn(torch.randn(4, 3))
    with pytest.raises(ValueError, match="size must be positive"):
        ak.lrn(x, 0)
    with pytest.raises(ValueError, match="size must be positive"):
        ak.lrn(x, -3)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        ak.lrn(torch.ones(2, 4, 3, 3, dtype=torch.int32))
    with pytest.raises(TypeError, match="size must be an int"):
        ak.lrn(x, 2.5)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        ak.lrn([[1.0]])
    with pytest.raises(ValueError, match="grad shape"):
        torch.ops.alexnet_kernels.lrn_backward(torch.randn(2, 4, 3, 2), x, 5, 1e-4, 0.75, 1.0)
    with pytest.raises(TypeError, match="grad dtype"):
        torch.ops.alexnet_kernels.lrn_backward(x.double(), x, 5, 1e-4, 0.75, 1.0)


@pytest.mark.parametrize("args, error, message", [
    ((0,), ValueError, "size must be positive"),
    ((-2,), ValueError, "size must be positive"),
    ((2.0,), TypeError, "size must be an int"),
    ((True,), TypeError, "size must be an int"),
    ((5, "1e-4"), TypeError, "alpha must be a number"),
    ((5, 1e-4, float("nan")), ValueError, "beta must be finite"),
    ((5, 1e-4, 0.75, None), TypeError, "k must be a number"),
])
def test_module_rejects_bad_arguments_at_construction(args, error, message):
    with pytest.raises(error, match="LocalResponseNorm: " + message):
        ak.nn.LocalResponseNorm(*args)


def test_module_matches_torch():
    x = make_x((2, 7, 4, 5), "cpu")
    m = ak.nn.LocalResponseNorm(3, alpha=1e-2, beta=0.6, k=2)
    assert rel_err(m(x), torch.nn.LocalResponseNorm(3, alpha=1e-2, beta=0.6, k=2)(x.double())) < TOL[torch.float32]
    assert "3, alpha=0.01, beta=0.6, k=2.0" in repr(m)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_mixed_devices_cuda():
    x = torch.randn(2, 4, 3, 3, device="cuda")
    for grad, xx in ((x, x.cpu()), (x.cpu(), x)):
        with pytest.raises(RuntimeError, match="grad is on"):
            torch.ops.alexnet_kernels.lrn_backward(grad, xx, 5, 1e-4, 0.75, 1.0)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x = make_x((2, 7, 4, 5), device)
    g = make_x((2, 7, 4, 5), device, seed=1)
    for _, xl in layouts(x):
        torch.library.opcheck(torch.ops.alexnet_kernels.lrn.default, (xl.requires_grad_(), 5, 1e-4, 0.75, 2.0))
        torch.library.opcheck(torch.ops.alexnet_kernels.lrn_backward.default, (g, xl.detach(), 4, 1e-3, 0.75, 1.0))


@pytest.mark.large
@pytest.mark.parametrize("device", DEVICES)
def test_more_than_2_31_elements(device):
    # 2^31 + 4 bfloat16 elements (4 GiB): the flat index and the offsets need 64 bits. Few
    # channels and a small window keep the CPU run short; the indexing is what is under test.
    n, c, s = 2, 2, (1 << 29) + 1
    if device == "cpu" and not have_memory(12 << 30):
        pytest.skip("needs 12 GiB of free memory")
    if device == "cuda" and torch.cuda.mem_get_info()[0] < (12 << 30):
        pytest.skip("needs 12 GiB of free GPU memory")
    x = torch.empty((n, c, s), dtype=torch.bfloat16, device=device).uniform_(-4, 4)
    y = ak.lrn(x, 3, 1e-2, 0.75, 1.0)
    # LRN is per (n, spatial) column: a slice of columns from the far end checks the top offsets.
    tail = slice(s - 4096, s)
    ref = F.local_response_norm(x[:, :, tail].float(), 3, 1e-2, 0.75, 1.0)
    assert rel_err(y[:, :, tail], ref) < TOL[torch.bfloat16]
    del y
    g = torch.ones_like(x)
    dx = torch.ops.alexnet_kernels.lrn_backward(g, x, 3, 1e-2, 0.75, 1.0)
    xt = x[:, :, tail].float().requires_grad_()
    F.local_response_norm(xt, 3, 1e-2, 0.75, 1.0).backward(torch.ones_like(xt))
    assert rel_err(dx[:, :, tail], xt.grad) < TOL[torch.bfloat16]
    del dx
    # Size 5 walks (n, s) columns instead (csrc/lrn.h): its 64-bit offsets, forward and backward.
    y = ak.lrn(x, 5, 1e-2, 0.75, 1.0)
    ref = F.local_response_norm(x[:, :, tail].float(), 5, 1e-2, 0.75, 1.0)
    assert rel_err(y[:, :, tail], ref) < TOL[torch.bfloat16]
    del y
    dx = torch.ops.alexnet_kernels.lrn_backward(g, x, 5, 1e-2, 0.75, 1.0)
    xt = x[:, :, tail].float().requires_grad_()
    F.local_response_norm(xt, 5, 1e-2, 0.75, 1.0).backward(torch.ones_like(xt))
    assert rel_err(dx[:, :, tail], xt.grad) < TOL[torch.bfloat16]
