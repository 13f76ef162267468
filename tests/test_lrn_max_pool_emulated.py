"""The CUDA kernels of lrn_max_pool2d (csrc/cuda/lrn_max_pool_kernels.cuh), run on the CPU.

tests/cuda_emu/lrn_max_pool_emu.cpp compiles the very kernels and host planning that
lrn_max_pool_cuda.cu launches, with tests/cuda_emu/cuda_emu.h standing in for CUDA, every
sanitizer on (memcheck, initcheck, racecheck, synccheck: a shuffle every lane must reach, a
partial warp, a read outside a tensor all fail the launch), and records every launch. Each test
runs a kernel path through its own planning -- the NCHW forward (lanes cut into chunks of output
columns and a helper lane, row bands, channel segments), the channels_last forward (lanes as
channels, walking column segments), the NCHW backward (lrn.h's backward column walk on the pooled
gradient gathered from the index) and the channels_last backward (channel lanes, column pairs),
32- and 64-bit indices -- checks from the launch log that the path it names is the one that ran,
and compares the result with the CPU kernel (the same functions: bit for bit in forward), with lrn
followed by max_pool2d, and with torch in float64. The counters test reports the kernels' memory
traffic against the floor. What the emulator cannot check (speed, the GPU's fp32 fast powers and
fused multiply-adds: on the CPU they are libm's and two roundings) test_lrn_max_pool.py's CUDA tests
check on the device.
"""
import pytest
import torch
import torch.nn.functional as F
from cuda_emu import build
from helpers import poison, rel_err

import alexnet_kernels as ak

OPS = torch.ops.alexnet_kernels
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}


@pytest.fixture(scope="module")
def emu():
    m = build.load("lrn_max_pool_emu")
    rt = build.runtime(m)
    rt.configure(memcheck=True, initcheck=True, racecheck=True, synccheck=True, count=True, multiprocessors=2)
    return m


def make(shape, dtype, kind="randn", seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    if kind == "ties":
        x = torch.randint(-2, 3, shape, generator=g).float()
    elif kind == "nan":
        x = torch.randn(shape, generator=g) * scale
        r = torch.rand(shape, generator=g)
        x[r < 0.03] = float("nan")
        x[(r >= 0.03) & (r < 0.05)] = float("-inf")
    else:
        x = torch.randn(shape, generator=g) * scale
    return x.to(dtype)


def layout(x, name):
    if name == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if name == "strided":  # H and W swapped in memory: neither layout
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    return x.contiguous()


def index_of(launch):
    return launch.split(">(")[0].rsplit(", ", 1)[1]


def run(emu, x, params, force_64bit=False, segments=0, grad_tol=1e-6):
    """Forward with and without the index, then backward; each against the CPU kernel, the
    composition and torch. Returns the three launches."""
    size, alpha, beta, k = params
    dtype = x.dtype
    poison("cpu", 1 << 20)  # (outputs a kernel forgets to write then show up as NaN)
    y, index = emu.forward(x, size, alpha, beta, k, True, force_64bit, segments)
    y_cpu, index_cpu = OPS.lrn_max_pool2d(x, size, alpha, beta, k, [3, 3], [2, 2], True)
    torch.testing.assert_close(y, y_cpu, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(index, index_cpu)
    y_c, index_c = OPS.max_pool2d(ak.lrn(x, size, alpha, beta, k), [3, 3], [2, 2], [0, 0], [1, 1], False, True)
    torch.testing.assert_close(y, y_c, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(index, index_c)
    assert y.stride() == y_cpu.stride() and index.stride() == index_cpu.stride()
    y2, none = emu.forward(x, size, alpha, beta, k, False, force_64bit, segments)
    torch.testing.assert_close(y2, y, rtol=0, atol=0, equal_nan=True)
    assert none.numel() == 0
    ref = F.max_pool2d(F.local_response_norm(x.double(), size, alpha, beta, k), 3, 2)
    fin = ~ref.isnan()
    assert torch.equal(y.isnan(), ref.isnan())
    assert rel_err(y[fin], ref[fin]) < TOL[dtype]

    g = make(y.shape, dtype, seed=1, scale=1.0)
    poison("cpu", 1 << 20)
    dx = emu.backward(g, index, x, size, alpha, beta, k, force_64bit, segments)
    dx_cpu = OPS.lrn_max_pool2d_backward(g, index, x, size, alpha, beta, k, [3, 3], [2, 2])
    assert dx.stride() == dx_cpu.stride()
    assert torch.equal(dx.isnan(), dx_cpu.isnan())  # (NaN only where x has them: unwritten ones would show)
    fin = ~dx_cpu.isnan()
    assert rel_err(dx[fin], dx_cpu[fin]) < grad_tol
    if dtype in (torch.float32, torch.float64) and x.isfinite().all():
        x64 = x.detach().double().requires_grad_()
        F.max_pool2d(F.local_response_norm(x64, size, alpha, beta, k), 3, 2).backward(g.double())
        assert rel_err(dx, x64.grad) < TOL[dtype]
    launches = emu.launches()
    assert len(launches) == 3, launches
    index_t = "long" if force_64bit else "int"
    assert all(index_of(launch) == index_t for launch in launches), launches
    return launches


PARAMS = (5, 1e-2, 0.75, 2.0)

# NCHW: output widths around the lane chunks (Q = min(OW, 31) outputs and a helper per chunk,
# 32 // (Q + 1) chunks per warp): OW 1 (16 chunks a warp), 6, 13 (2), 15 (2, full), 31 (one chunk
# of 32 lanes), 32 and 40 (two chunks a row, the second short); odd and even H (a band's second
# output row missing); C around the LRN window and the 4-channel groups.
NCHW = [
    ((2, 5, 5, 3), 0),
    ((1, 3, 9, 13), 0),
    ((2, 9, 27, 27), 2),
    ((1, 7, 8, 31), 0),
    ((1, 2, 7, 63), 0),
    ((1, 4, 5, 65), 0),
    ((1, 6, 4, 81), 3),
    ((3, 17, 6, 9), 3),
    ((1, 1, 3, 7), 0),
    ((2, 12, 11, 12), 5),
]


def case_id(c):
    return "x".join(map(str, c[0])) + f"-seg{c[1]}"


@pytest.mark.parametrize("case", NCHW, ids=case_id)
def test_nchw_kernels(emu, case):
    shape, segments = case
    x = make(shape, torch.float32)
    fwd, fwd2, bwd = run(emu, x, PARAMS, segments=segments)
    assert "lrn_max_pool_forward_nchw<true, true, float" in fwd, fwd
    assert "lrn_max_pool_forward_nchw<true, false, float" in fwd2, fwd2
    assert "lrn_max_pool_backward_nchw<true, float" in bwd, bwd
    if segments:  # forward: segments are the fastest part of the 1-D grid; backward: blockIdx.y
        per = -(-shape[1] // segments)
        assert f",{-(-shape[1] // per)})" in bwd, bwd


@pytest.mark.parametrize("kind", ["ties", "nan"])
@pytest.mark.parametrize("name", ["contiguous", "channels_last", "strided"])
def test_ties_and_nan(emu, kind, name):
    x = layout(make((2, 11, 13, 15), torch.float32, kind), name)
    fwd, _, bwd = run(emu, x, PARAMS)
    path = "nhwc" if name == "channels_last" else "nchw"
    assert f"lrn_max_pool_forward_{path}" in fwd and f"lrn_max_pool_backward_{path}" in bwd


# channels_last: C around the warps' 28 forward and 24 backward channels (with the halo lanes),
# widths with an odd last column pair, forced column segments.
NHWC = [
    ((2, 5, 7, 7), 0),
    ((1, 28, 9, 11), 0),
    ((1, 29, 5, 12), 2),
    ((2, 24, 6, 9), 3),
    ((1, 50, 11, 5), 0),
    ((1, 3, 3, 3), 0),
]


@pytest.mark.parametrize("case", NHWC, ids=case_id)
def test_nhwc_kernels(emu, case):
    shape, segments = case
    x = layout(make(shape, torch.float32), "channels_last")
    fwd, fwd2, bwd = run(emu, x, PARAMS, segments=segments)
    assert "lrn_max_pool_forward_nhwc<true, float" in fwd, fwd
    assert "lrn_max_pool_forward_nhwc<false, float" in fwd2, fwd2
    assert "lrn_max_pool_backward_nhwc<float" in bwd, bwd


@pytest.mark.parametrize("name", ["contiguous", "channels_last", "strided"])
def test_64bit_index(emu, name):
    x = layout(make((2, 10, 9, 11), torch.float32), name)
    run(emu, x, PARAMS, force_64bit=True, segments=2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16], ids=["fp64", "bf16", "fp16"])
@pytest.mark.parametrize("name", ["contiguous", "channels_last"])
def test_dtypes(emu, dtype, name):
    x = layout(make((2, 9, 11, 9), dtype), name)
    # 16-bit: the CPU kernel and the emulated one round the same fp32 values; the gradients pass
    # through the dtype's rounding of the pooled gradient alike.
    run(emu, x, PARAMS, grad_tol=1e-6 if dtype == torch.float64 else TOL[dtype])


def test_exact_powers_variant(emu):
    # k = 0 rules out the .ftz powers (lrn_fast_powers): the NCHW kernels' other variant runs.
    x = make((2, 7, 9, 9), torch.float32)
    fwd, _, bwd = run(emu, x, (5, 1e-2, 0.75, 0.0))
    assert "lrn_max_pool_forward_nchw<false, true, float" in fwd and "lrn_max_pool_backward_nchw<false" in bwd


def test_expanded_gradient(emu):
    # y.sum().backward() hands backward an expanded gradient: the host makes it dense first.
    x = make((2, 6, 9, 11), torch.float32)
    y, index = emu.forward(x, *PARAMS, True, False, 0)
    g = torch.ones(()).expand(y.shape)
    dx = emu.backward(g, index, x, *PARAMS, False, 0)
    xr = x.clone().requires_grad_()
    ak.max_pool2d(ak.lrn(xr, *PARAMS)).sum().backward()
    assert rel_err(dx, xr.grad) < 1e-6
    emu.launches()


def test_planned_segments_and_grid(emu):
    # Few images: the planning (2 emulated SMs) splits the channels into segments of at least 16,
    # an even number (the forward's groups of 4 channels: a multiple of 4), as for conv2's block.
    x = make((1, 64, 9, 9), torch.float32)
    fwd, _, bwd = run(emu, x, PARAMS)
    assert "grid=(4,1)" in fwd, fwd  # 1 block of 8 warps x 4 segments of 16 channels
    assert ",2)" in bwd, bwd  # backward: 64 channels in 2 segments of 32


def floors(x, y, dtype_size):
    fwd = x.numel() * dtype_size + y.numel() * (dtype_size + 1)
    bwd = x.numel() * dtype_size + y.numel() * (dtype_size + 1) + x.numel() * dtype_size
    return fwd, bwd


@pytest.mark.parametrize("name", ["contiguous", "channels_last"])
def test_counters(emu, name):
    """Memory traffic of each kernel at a conv2-like plane under the emulator's counters: the
    unique DRAM sectors against the floor (x read once, y and the index written once; backward x,
    the gradient and the index read once, dx written once), and how well requests coalesce. The
    figures are printed for the record (pytest -s)."""
    rt = build.runtime(emu)
    x = layout(make((2, 32, 27, 27), torch.float32), name)
    with rt.configured(multiprocessors=132), rt.record() as launches:
        y, index = emu.forward(x, *PARAMS, True, False, 0)
        g = make(y.shape, torch.float32, seed=1)
        dx = emu.backward(g, index, x, *PARAMS, False, 0)
    emu.launches()
    fwd_floor, bwd_floor = floors(x, y, 4)
    fwd, bwd = [launch for launch in launches if "lrn_max_pool" in launch.kernel]
    for launch, floor in ((fwd, fwd_floor), (bwd, bwd_floor)):
        print(f"\n{name}: {launch.summary()}\n  dram_bytes / floor = {launch.dram_bytes / floor:.4f}, "
              f"loads {launch.global_load.requests} req, {launch.global_load.sectors_per_request:.2f} sectors/req, "
              f"efficiency {launch.global_load.efficiency:.3f}; stores {launch.global_store.requests} req, "
              f"{launch.global_store.sectors_per_request:.2f} sectors/req, "
              f"efficiency {launch.global_store.efficiency:.3f}; shuffles {launch.shuffles}; uniform {launch.uniform}")
        # Every byte the op needs is read or written, and not much else: the halos and clamped
        # lanes re-read what L1/L2 hold, they add no unique sector.
        assert floor <= launch.dram_bytes <= 1.02 * floor, (launch.dram_bytes, floor)
    assert rel_err(dx, OPS.lrn_max_pool2d_backward(g, index, x, *PARAMS, [3, 3], [2, 2])) < 1e-6
