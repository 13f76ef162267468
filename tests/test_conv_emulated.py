"""The CUDA implicit-GEMM conv kernels (csrc/cuda/conv_igemm*.cuh), run on the CPU.

tests/cuda_emu/conv_emu.cpp compiles the very kernels and host planning that conv_cuda.cu
launches, with tests/cuda_emu/cuda_emu.h standing in for CUDA: a block's threads as cooperative
fibers, barriers for __syncthreads, warp exchanges for shuffles, mma.sync and ldmatrix (fragment
layouts from the PTX ISA), cp.async as a synchronous copy (docs/emulator.md). So a machine without a GPU checks
their tiling, indexing, bounds, padding, staging, chunking and epilogues against F.conv2d in
float64. What it cannot check -- speed, and whether the GPU's mma.sync and ldmatrix agree with the
ISA as read here -- test_conv.py's CUDA tests check on the device. The extension takes about a
minute to compile (once per source change, cached in build/).

Two forward kernel families: "rows" (input rows staged in shared memory; conv1 and its kin) and
"gather" (any tap count up to 1024). Each case states which one the planning picks, so that a
change of eligibility cannot silently move a test to the other family; conv1-like cases run
both.
"""
import pytest
import torch
import torch.nn.functional as F
from cuda_emu import build
from helpers import rel_err

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}
HALF = [torch.bfloat16, torch.float16]

# (input shape, out channels, kernel, stride, padding, kind picked for fp32, for bf16 / fp16).
# The gather kernels take small output planes (a 128-pixel tile over more than eight output
# rows), more than 12 (fp32) or outside 8..16 (bf16) taps per row, and odd column strides in
# bf16; the rows kernels take conv1's shapes.
CASES = [
    # paper conv1 (96 filters: 96-wide tiles, no padding), an image of 529 output pixels: the
    # last tile part empty; 33 tap rows: the last step has one (fp32: an odd, zero-padded tap)
    ((1, 3, 99, 99), 96, 11, 4, 0, "rows", "rows"),
    # torchvision conv1 (64: 64-wide tiles, padding)
    ((1, 3, 96, 100), 64, 11, 4, 2, "rows", "rows"),
    # 100 filters (a second, masked tile), unequal padding, two images: tiles across images
    ((2, 3, 95, 97), 100, 11, 4, (1, 3), "rows", "rows"),
    # 22 output columns: a tile over seven output rows
    ((1, 3, 95, 95), 64, 11, 4, 1, "rows", "rows"),
    # 9 taps per row, stride 2 (bf16: an even column stride), 16 of a 64-wide tile
    ((1, 2, 40, 120), 16, (5, 9), (3, 2), (2, 4), "rows", "rows"),
    # an odd column stride and 7 taps: rows for fp32 (3 tap rows: an odd last step), gather for bf16
    ((1, 1, 30, 200), 8, (3, 7), (1, 3), (1, 0), "rows", "gather"),
    # small planes: gather
    ((2, 3, 35, 35), 96, 11, 4, 0, "gather", "gather"),
    ((1, 3, 36, 40), 64, 11, 4, 2, "gather", "gather"),
    ((2, 2, 13, 11), 100, (3, 5), (2, 1), (1, 2), "gather", "gather"),
    ((2, 4, 20, 20), 8, 16, 2, 3, "gather", "gather"),  # 1024 taps, the most the tap table holds
    ((3, 1, 9, 9), 5, 1, 1, 0, "gather", "gather"),      # a single tap
]
ROWS = [c for c in CASES if c[5] == "rows"]


def ids(c):
    return "x".join(map(str, c[0])) + f"-K{c[1]}"


def pair(v):
    return [v, v] if isinstance(v, int) else list(v)


@pytest.fixture(scope="module")
def emu():
    return build.load("conv_emu")


def make(case, dtype, seed=0):
    shape, k, ks, s, p = case[:5]
    ks = (ks, ks) if isinstance(ks, int) else ks
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(dtype)
    w = (torch.randn(k, shape[1], *ks, generator=g) * 0.1).to(dtype)
    b = torch.randn(k, generator=g).to(dtype)
    return x, w, b, pair(s), pair(p)


def reference(x, w, b, s, p, relu):
    y = F.conv2d(x.double(), w.double(), None if b is None else b.double(), s, p)
    return torch.relu(y) if relu else y


def expected_kind(case, dtype):
    return case[5] if dtype == torch.float32 else case[6]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_forward(emu, case, dtype):
    if dtype == torch.float16 and case not in (CASES[0], CASES[4]):
        pytest.skip("fp16 shares the bf16 kernels: two cases suffice")
    x, w, b, s, p = make(case, dtype)
    assert emu.forward_kind(x, w, s, p) == expected_kind(case, dtype)
    for relu, bias in ((True, b), (False, None)):
        ref = reference(x, w, bias, s, p, relu)
        y = emu.forward(x, w, bias, s, p, relu, "auto")
        assert y.shape == ref.shape and y.dtype == dtype and not y.isnan().any()
        assert rel_err(y, ref) < TOL[dtype], relu


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", [c for c in ROWS if c[6] == "rows"][:3], ids=ids)
def test_forward_gather_on_conv1_shapes(emu, case, dtype):
    # The shapes the rows kernels take, through the gather kernels (the fallback family).
    x, w, b, s, p = make(case, dtype)
    ref = reference(x, w, b, s, p, True)
    assert rel_err(emu.forward(x, w, b, s, p, True, "gather"), ref) < TOL[dtype]


def layouts(x):
    """The input layouts the rows kernels stage differently: contiguous (16-byte copies), channels_last
    and every other column (element copies), and data pointers 1 and 3 elements past 16-byte
    alignment (the rows' alignment phase moves: bf16 / fp16 rows at odd phases are copied element
    by element)."""
    out = [("contiguous", x), ("channels_last", x.contiguous(memory_format=torch.channels_last))]
    wide = torch.full((*x.shape[:-1], 2 * x.shape[-1]), float("nan"), dtype=x.dtype)
    wide[..., ::2] = x
    out.append(("strided", wide[..., ::2]))
    for shift in (1, 3):
        storage = torch.full((x.numel() + 8,), float("nan"), dtype=x.dtype)
        view = storage[shift:shift + x.numel()].view_as(x)
        view.copy_(x)
        assert view.data_ptr() % 16 != 0
        out.append((f"offset{shift}", view))
    return out


# 64 filters: every layout; 100 filters (two tiles): every layout in fp32, and in bf16 the two
# that differ there -- channels_last with K not a multiple of 8 (16-byte stores do not fit the
# output rows: stored element by element) and an odd phase.
@pytest.mark.parametrize(("case", "dtype", "names"), [
    (ROWS[1], torch.float32, None), (ROWS[1], torch.bfloat16, None), (ROWS[2], torch.float32, None),
    (ROWS[2], torch.bfloat16, ("channels_last", "offset1")),
], ids=["K64-fp32", "K64-bf16", "K100-fp32", "K100-bf16"])
def test_forward_layouts(emu, case, dtype, names):
    x, w, b, s, p = make(case, dtype)
    ref = reference(x, w, b, s, p, True)
    for name, xl in layouts(x):
        if names is not None and name not in names:
            continue
        assert emu.forward_kind(xl, w, s, p) == expected_kind(case, dtype), name
        y = emu.forward(xl, w, b, s, p, True, "auto")
        assert y.is_contiguous(memory_format=torch.channels_last) == (name == "channels_last"), name
        assert rel_err(y, ref) < TOL[dtype], name
    # A weight view one element into its storage: the packed copy must not alias it.
    storage = torch.cat([torch.zeros(1, dtype=dtype), w.flatten()])
    assert rel_err(emu.forward(x, storage[1:].view_as(w), b, s, p, True, "auto"), ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_forward_gather_layouts(emu, dtype):
    x, w, b, s, p = make(CASES[7], dtype)
    ref = reference(x, w, b, s, p, True)
    for name, xl in layouts(x)[:3]:
        assert rel_err(emu.forward(xl, w, b, s, p, True, "auto"), ref) < TOL[dtype], name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_forward_rows_non_finite(emu, dtype):
    """An inf in x reaches exactly the outputs whose window holds it. The bf16 kernel reads 16 taps
    per (c, r) row and zeroes the 5 past conv1's 11: a neighbour's inf there would otherwise make
    0 * inf = NaN in outputs whose window does not hold it."""
    x, w, b, s, p = make(ROWS[0], dtype)
    x[0, 1, 40, 17] = float("inf")
    x[0, 2, 3, 60] = float("-inf")
    ref = reference(x, w, b, s, p, False)
    y = emu.forward(x, w, b, s, p, False, "rows").double()
    assert torch.equal(y.isnan(), ref.isnan()) and torch.equal(y.isinf(), ref.isinf())
    assert ref.isnan().any() or ref.isinf().any()
    fin = ref.isfinite()
    assert rel_err(y[fin], ref[fin]) < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_weight_and_bias_gradient(emu, case, dtype):
    if dtype == torch.float16 and case not in (CASES[0], CASES[8]):
        pytest.skip("fp16 shares the bf16 kernels: two cases suffice")
    x, w, b, s, p = make(case, dtype)
    for relu in (False, True):
        w64, b64 = w.double().requires_grad_(), b.double().requires_grad_()
        ref = reference(x, w64, b64, s, p, relu)
        g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
        ref.backward(g.double())
        y = ref.detach().to(dtype) if relu else None  # the ReLU mask comes from the forward output
        dw, db = emu.weight_grad(g, x, w, y, s, p, relu)
        assert rel_err(dw, w64.grad) < TOL[dtype], relu
        assert rel_err(db, b64.grad) < TOL[dtype], relu


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_weight_gradient_multi_chunk(emu, dtype):
    # 3025 output pixels: more than one chunk of at most 2048 (two here, on the emulator's 2 SMs),
    # each over several table fills, the second chunk shorter.
    x, w, b, s, p = make(((1, 3, 227, 227), 16, 11, 4, 0), dtype)
    assert emu.wgrad_plan(55 * 55, 3, 64, 384, 2) == (1513, 2)
    w64, b64 = w.double().requires_grad_(), b.double().requires_grad_()
    ref = reference(x, w64, b64, s, p, False)
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    ref.backward(g.double())
    dw, db = emu.weight_grad(g, x, w, None, s, p, False)
    assert rel_err(dw, w64.grad) < TOL[dtype] and rel_err(db, b64.grad) < TOL[dtype]


def test_weight_gradient_channels_last(emu):
    x, w, _, s, p = make(CASES[0], torch.float32)
    w64 = w.double().requires_grad_()
    ref = reference(x, w64, None, s, p, False)
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2))
    ref.backward(g.double())
    fmt = torch.channels_last
    dw, _ = emu.weight_grad(g.contiguous(memory_format=fmt), x.contiguous(memory_format=fmt),
                            w.contiguous(memory_format=fmt), None, s, p, False)
    assert dw.is_contiguous(memory_format=fmt) and rel_err(dw, w64.grad) < TOL[torch.float32]


def test_weight_gradient_waves(emu):
    """The weight gradient's grid is whole waves of two blocks per SM: at conv1 on an H200's 132 SMs,
    batch 128 (387,200 pixels, 3 tap tiles of 128 for both filter counts), 264 chunks = 792
    blocks = 3 waves (chunks capped at 2048 pixels alone would give 190 chunks = 570 blocks,
    2.16 waves)."""
    M = 128 * 55 * 55
    for kpad in (64, 96):
        chunk, chunks = emu.wgrad_plan(M, 3, kpad, 384, 132)
        assert (chunk, chunks) == (1467, 264) and chunks * 3 == 3 * 264
    # In general: every pixel in exactly one chunk, at most 2048 per chunk, and on problems of
    # more than a wave's worth of chunks, a last wave short by less than one chunk's tiles.
    for M in (1, 17, 529, 3025, 50_000, 387_200, 1_548_800):
        for tiles in (1, 2, 3, 8):
            for sms in (1, 2, 132):
                chunk, chunks = emu.wgrad_plan(M, tiles, 64, 384, sms)
                assert (chunks - 1) * chunk < M <= chunks * chunk and chunk <= 2048
                slots, blocks = 2 * sms, chunks * tiles
                waves = -(-blocks // slots)
                if M >= 50_000:
                    assert waves * slots - blocks < tiles, (M, tiles, sms)
