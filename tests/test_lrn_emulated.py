"""The CUDA LRN kernels (csrc/cuda/lrn_kernels.cuh), run on the CPU.

tests/cuda_emu/lrn_emu.cpp compiles the very kernels and host planning that lrn_cuda.cu
launches, with tests/cuda_emu/cuda_emu.h standing in for CUDA, and records every launch. Each
test runs a kernel path through its own planning -- the column kernels (size 5, NCHW order) with
their channel segments and the element kernels (other sizes, channels_last, strided inputs),
forward and backward, 32- and 64-bit indices -- checks from the launch log that the path it
names is the one that ran, and compares the result with torch in float64 and with the CPU kernel
(ak.lrn), on random shapes with odd sizes, channel counts around the window and partial blocks.
What the emulator cannot check (speed, the fp32 fast powers of the GPU: on the CPU they are
libm's) test_lrn.py's CUDA tests check on the device.
"""
import random

import pytest
import torch
import torch.nn.functional as F
from cuda_emu import build
from helpers import poison, rel_err

import alexnet_kernels as ak

TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 8e-3}
# Emulated against the CPU kernel: the same element functions, in the same order.
TOL_CPU = {torch.float64: 1e-14, torch.float32: 1e-6, torch.bfloat16: 8e-3}


@pytest.fixture(scope="module")
def emu():
    return build.load("lrn_emu")


def make(shape, dtype, seed, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale).to(dtype)


def layout(x, name):
    if name == "channels_last":
        return x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
    if name == "strided":  # every other element of a twice-as-wide tensor
        wide = torch.full((*x.shape[:-1], 2 * x.shape[-1]), float("nan"), dtype=x.dtype)
        wide[..., ::2] = x
        return wide[..., ::2]
    return x.contiguous()


def check(emu, x, size, params, kernel, backward, force_64bit, segments, dtype):
    alpha, beta, k = params
    g = make(x.shape, dtype, 7)
    if backward:
        x64 = x.detach().double().requires_grad_()
        F.local_response_norm(x64, size, alpha, beta, k).backward(g.double())
        ref = x64.grad
        poison("cpu", 1 << 20)  # (outputs a kernel forgets to write then show up as NaN)
        out = emu.backward(g, x, size, alpha, beta, k, force_64bit, segments)
        cpu = torch.ops.alexnet_kernels.lrn_backward(g, x, size, alpha, beta, k)
    else:
        ref = F.local_response_norm(x.double(), size, alpha, beta, k)
        poison("cpu", 1 << 20)
        out = emu.forward(x, size, alpha, beta, k, force_64bit, segments)
        cpu = ak.lrn(x, size, alpha, beta, k)
    launches = emu.launches()
    assert len(launches) == 1, launches
    index = "long" if force_64bit else "int"
    assert kernel in launches[0] and launches[0].split(">(")[0].endswith(f", {index}"), launches
    assert out.shape == x.shape and out.dtype == dtype and not out.isnan().any()
    assert rel_err(out, ref) < TOL[dtype], launches[0]
    assert rel_err(out, cpu) < TOL_CPU[dtype], launches[0]
    return launches[0]


# Random shapes around the column kernel's edges: C below, at and above the window and the
# 8-channel load groups, spatial sizes that leave partial 256-thread blocks.
_rng = random.Random(0)
COLUMN_CASES = [((_rng.randint(1, 3), c, _rng.randint(1, 9), _rng.choice([1, 3, 5, 7, 13])), seg)
                for c, seg in [(1, 0), (3, 0), (5, 2), (6, 3), (9, 2), (16, 0), (17, 5), (24, 3), (37, 4), (40, 1)]]


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("case", COLUMN_CASES, ids=lambda c: "x".join(map(str, c[0])) + f"-seg{c[1]}")
def test_column_kernels(emu, case, backward):
    shape, segments = case
    x = make(shape, torch.float32, 1)
    kind = "lrn_backward_columns<5" if backward else "lrn_forward_columns<5"
    launch = check(emu, x, 5, (1e-2, 0.75, 2.0), kind, backward, False, segments, torch.float32)
    if segments:  # the planned number of segments was overridden: the grid shows it
        per = -(-shape[1] // segments)
        assert f",{-(-shape[1] // per)})" in launch


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=["fp64", "fp32", "bf16"])
def test_column_kernels_64bit_and_dtypes(emu, dtype, backward):
    x = make((2, 19, 5, 9), dtype, 2)
    kind = "lrn_backward_columns<5" if backward else "lrn_forward_columns<5"
    for force_64bit, segments in ((True, 3), (False, 0)):
        check(emu, x, 5, (1e-4, 0.75, 2.0), kind, backward, force_64bit, segments, dtype)


def test_column_kernels_planned_segments(emu):
    # Few columns (one image of 3x3): the planning splits the channels, as for conv2's LRN on a
    # GPU (the emulator reports 2 multiprocessors).
    x = make((1, 96, 3, 3), torch.float32, 3)
    launch = check(emu, x, 5, (1e-4, 0.75, 2.0), "lrn_forward_columns<5", False, False, 0, torch.float32)
    assert ",3)" in launch  # 96 channels in 3 segments of 32


def test_column_kernels_exact_powers(emu):
    # k = 0 (and |beta| > 126/128) rule out the GPU's .ftz powers: the other variant runs.
    x = make((2, 11, 4, 5), torch.float32, 4)
    for params in ((1e-2, 0.75, 0.0), (1e-2, 1.5, 1.0)):
        launch = check(emu, x, 5, params, "lrn_forward_columns<5, false", False, False, 2, torch.float32)
        assert "false" in launch
        check(emu, x, 5, params, "lrn_backward_columns<5, false", True, False, 2, torch.float32)


# (shape, size, layout): other sizes and channels_last take the element kernels (3-, 4- and
# 5-D); strided size-5 inputs walk columns with their own strides.
ELEMENT_CASES = [
    ((2, 16, 7, 9), 5, "channels_last"),
    ((3, 8, 5, 5), 4, "contiguous"),
    ((1, 5, 3, 4), 1, "strided"),
    ((2, 3, 4, 4), 7, "channels_last"),
    ((2, 4, 6), 3, "contiguous"),
    ((1, 6, 2, 3, 5), 6, "channels_last"),
    ((5, 33, 1, 1), 2, "contiguous"),
    ((2, 9, 5, 3), 5, "strided"),
    ((1, 6, 3, 3), 5, "channels_last"),
    ((3, 10, 3, 7), 3, "strided"),
]


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("case", ELEMENT_CASES, ids=lambda c: "x".join(map(str, c[0])) + f"-size{c[1]}-{c[2]}")
def test_element_kernels(emu, case, backward):
    shape, size, name = case
    x = layout(make(shape, torch.float32, 5), name)
    if size == 5 and name != "channels_last":  # a strided NCHW input still walks columns
        kind = "lrn_backward_columns<5" if backward else "lrn_forward_columns<5"
    elif backward:
        kind = f"lrn_elements<{5 if size == 5 else 0},"
    else:
        kind = "lrn_elements<-1,"
    for force_64bit in (False, True):
        check(emu, x, size, (0.3, 0.75, 1.5), kind, backward, force_64bit, 0, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=["fp64", "bf16"])
def test_element_kernels_dtypes(emu, dtype):
    x = layout(make((2, 12, 3, 5), dtype, 6), "channels_last")
    check(emu, x, 5, (1e-3, 0.75, 2.0), "lrn_elements<-1", False, False, 0, dtype)
    check(emu, x, 5, (1e-3, 0.75, 2.0), "lrn_elements<5", True, False, 0, dtype)
    check(emu, x, 3, (1e-3, 0.75, 2.0), "lrn_elements<0", True, True, 0, dtype)
