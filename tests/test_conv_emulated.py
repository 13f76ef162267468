"""The CUDA implicit-GEMM conv kernels (csrc/cuda/conv_igemm.cuh), run on the CPU.

tests/cuda_emu/conv_emu.cpp compiles the very kernels and host planning that conv_cuda.cu
launches, with tests/cuda_emu/cuda_emu.h standing in for CUDA: one std::thread per CUDA
thread, barriers for __syncthreads, warp exchanges for shuffles and mma.sync (fragment layouts
from the PTX ISA). So a machine without a GPU checks their tiling, indexing, bounds, padding,
chunking and epilogues against F.conv2d in float64. What it cannot check -- speed, and whether
the GPU's mma.sync agrees with the ISA as read here -- test_conv.py's CUDA tests check on the
device. The extension takes about a minute to compile (once per source change, cached by
torch.utils.cpp_extension).
"""
import pytest
import torch
import torch.nn.functional as F

from cuda_emu import build
from helpers import rel_err

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}

# (input shape, out channels, kernel, stride, padding): conv1 of the paper (96 filters: 96-wide
# tiles) and of torchvision (64: 64-wide tiles, padding), 100 filters (a second, masked tile),
# a rectangular kernel with unequal strides, and an image of 529 output pixels, which the weight
# gradient splits into chunks of two table fills, the last chunk part empty; then the extremes
# of the tap count.
CASES = [
    ((2, 3, 35, 35), 96, 11, 4, 0),
    ((1, 3, 36, 40), 64, 11, 4, 2),
    ((2, 2, 13, 11), 100, (3, 5), (2, 1), (1, 2)),
    ((1, 3, 99, 99), 96, 11, 4, 0),
    ((2, 4, 20, 20), 8, 16, 2, 3),   # 1024 taps, the most the tap table holds; 8 of a 64-wide tile
    ((3, 1, 9, 9), 5, 1, 1, 0),      # a single tap
]


def ids(c):
    return "x".join(map(str, c[0])) + f"-K{c[1]}"


@pytest.fixture(scope="module")
def emu():
    return build.load("conv_emu")


def make(case, dtype, seed=0):
    shape, k, ks, s, p = case
    ks = (ks, ks) if isinstance(ks, int) else ks
    s = [s, s] if isinstance(s, int) else list(s)
    p = [p, p] if isinstance(p, int) else list(p)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(dtype)
    w = (torch.randn(k, shape[1], *ks, generator=g) * 0.1).to(dtype)
    b = torch.randn(k, generator=g).to(dtype)
    return x, w, b, s, p


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_forward(emu, case, dtype):
    x, w, b, s, p = make(case, dtype)
    for relu, bias in ((True, b), (False, None)):
        ref = F.conv2d(x.double(), w.double(), None if bias is None else bias.double(), s, p)
        ref = torch.relu(ref) if relu else ref
        y = emu.forward(x, w, bias, s, p, relu)
        assert y.shape == ref.shape and y.dtype == dtype and not y.isnan().any()
        assert rel_err(y, ref) < TOL[dtype], relu


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_forward_layouts(emu, dtype):
    x, w, b, s, p = make(CASES[1], dtype)
    ref = torch.relu(F.conv2d(x.double(), w.double(), b.double(), s, p))
    cl = emu.forward(x.contiguous(memory_format=torch.channels_last), w, b, s, p, True)
    assert cl.is_contiguous(memory_format=torch.channels_last) and rel_err(cl, ref) < TOL[dtype]
    wide = torch.full((*x.shape[:-1], 2 * x.shape[-1]), float("nan"), dtype=dtype)
    wide[..., ::2] = x
    assert rel_err(emu.forward(wide[..., ::2], w, b, s, p, True), ref) < TOL[dtype]
    # A weight view one element into its storage: the packed copy must not alias it.
    storage = torch.cat([torch.zeros(1, dtype=dtype), w.flatten()])
    assert rel_err(emu.forward(x, storage[1:].view_as(w), b, s, p, True), ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_weight_and_bias_gradient(emu, case, dtype):
    x, w, b, s, p = make(case, dtype)
    for relu in (False, True):
        w64, b64 = w.double().requires_grad_(), b.double().requires_grad_()
        ref = F.conv2d(x.double(), w64, b64, s, p)
        ref = torch.relu(ref) if relu else ref
        g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
        ref.backward(g.double())
        y = ref.detach().to(dtype) if relu else None  # the ReLU mask comes from the forward output
        dw, db = emu.weight_grad(g, x, w, y, s, p, relu)
        assert rel_err(dw, w64.grad) < TOL[dtype], relu
        assert rel_err(db, b64.grad) < TOL[dtype], relu


def test_weight_gradient_channels_last(emu):
    x, w, b, s, p = make(CASES[0], torch.float32)
    w64 = w.double().requires_grad_()
    ref = F.conv2d(x.double(), w64, None, s, p)
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2))
    ref.backward(g.double())
    fmt = torch.channels_last
    dw, _ = emu.weight_grad(g.contiguous(memory_format=fmt), x.contiguous(memory_format=fmt),
                            w.contiguous(memory_format=fmt), None, s, p, False)
    assert dw.is_contiguous(memory_format=fmt) and rel_err(dw, w64.grad) < TOL[torch.float32]
