"""The CUDA max-pool kernels (csrc/cuda/max_pool_kernels.cuh), run on the CPU.

tests/cuda_emu/max_pool_emu.cpp compiles the very kernels and host planning that
max_pool_cuda.cu launches, with tests/cuda_emu/cuda_emu.h standing in for CUDA, and records
every launch. Each test runs a kernel path through its own planning -- the unrolled 3x3/2
kernels (forward walking output columns in row segments, backward gathering runs of a row;
NCHW and channels_last) and the general kernels (other windows, padding, dilation, ceil mode,
strided tensors, the backward that recomputes winners from x), 32- and 64-bit indices --
checks from the launch log that the path it names is the one that ran, and compares the result
with torch and with the CPU kernel bit for bit, ties and NaN included, on odd sizes and
partial blocks.
"""
import pytest
import torch
import torch.nn.functional as F
from cuda_emu import build
from helpers import poison

import alexnet_kernels  # noqa: F401  (the CPU kernels the emulated ones are compared with)


@pytest.fixture(scope="module")
def emu():
    return build.load("max_pool_emu")


def make(shape, dtype, kind, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "ties":  # few distinct values: most windows tie for the maximum
        x = torch.randint(-2, 3, shape, generator=g).float()
    elif kind == "nan":  # NaNs and infinities sprinkled in
        x = torch.randn(shape, generator=g)
        r = torch.rand(shape, generator=g)
        x[r < 0.05] = float("nan")
        x[(r >= 0.05) & (r < 0.08)] = float("-inf")
        x[(r >= 0.08) & (r < 0.10)] = float("inf")
    else:
        x = torch.randn(shape, generator=g)
    return x.to(dtype)


def layout(x, name):
    if name == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if name == "strided":  # H and W swapped in memory: neither layout
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    return x.contiguous()


def index_of(launch):
    return launch.split(">(")[0].rsplit(", ", 1)[1]


def run(emu, x, case, name, force_64bit=False, segments=0, kind="randn"):
    """Forward with the index, then backward from the index and from x; checks both against
    torch and the CPU kernel; returns the three launches."""
    k, s, p, d, c = case
    xl = layout(x, name)
    ref_x = x.clone().requires_grad_()
    ref = F.max_pool2d(ref_x, k, s, p, d, ceil_mode=c)
    g = make(ref.shape, x.dtype, "randn", seed=1)
    ref.backward(g)
    args = ([k, k] if isinstance(k, int) else list(k), [s, s] if isinstance(s, int) else list(s),
            [p, p] if isinstance(p, int) else list(p), [d, d] if isinstance(d, int) else list(d), c)
    poison("cpu", 1 << 20)  # (outputs a kernel forgets to write then show up as NaN)
    y, index = emu.forward(xl, *args, True, force_64bit, segments)
    y_cpu, index_cpu = torch.ops.alexnet_kernels.max_pool2d(xl, *args, True)
    torch.testing.assert_close(y, ref, rtol=0, atol=0, equal_nan=True, msg=name)
    torch.testing.assert_close(y, y_cpu, rtol=0, atol=0, equal_nan=True, msg=name)
    assert torch.equal(index, index_cpu), name
    assert y.is_contiguous(memory_format=torch.channels_last if name == "channels_last" else torch.contiguous_format)
    y2, _ = emu.forward(xl, *args, False, force_64bit, segments)  # without the index
    torch.testing.assert_close(y2, ref, rtol=0, atol=0, equal_nan=True, msg=name)
    cl = name == "channels_last"
    gl = layout(g, name)
    poison("cpu", 1 << 20)
    dx = emu.backward(gl, index, None, list(x.shape), *args, cl, force_64bit)
    torch.testing.assert_close(dx, ref_x.grad, rtol=0, atol=0, msg=name)
    dx_cpu = torch.ops.alexnet_kernels.max_pool2d_backward(gl, index, None, list(x.shape), *args, cl)
    assert torch.equal(dx, dx_cpu)
    dx2 = emu.backward(gl, None, xl, list(x.shape), *args, cl, force_64bit)
    torch.testing.assert_close(dx2, ref_x.grad, rtol=0, atol=0, msg=name)
    launches = emu.launches()
    assert len(launches) == 4, launches
    index_t = "long" if force_64bit else "int"
    assert all(index_of(launch) == index_t for launch in launches), launches
    return launches


# (input shape, kernel_size, stride, padding, dilation, ceil_mode)
FIXED = [
    ((2, 5, 13, 13), 3, 2, 0, 1, False),   # AlexNet's: every window inside
    ((1, 3, 27, 27), 3, 2, 0, 1, True),    # ceil mode that adds no window
    ((3, 2, 8, 12), 3, 2, 0, 1, False),    # even sizes: the last row and column are left out
    ((1, 40, 7, 9), 3, 2, 0, 1, False),    # many channels (channels_last: C is the fastest index)
    ((2, 3, 3, 5), 3, 2, 0, 1, False),     # one output row
]


def fixed_ids(case):
    return "x".join(map(str, case[0])) + ("-ceil" if case[5] else "")


@pytest.mark.parametrize("kind", ["randn", "ties", "nan"])
@pytest.mark.parametrize("name", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", FIXED, ids=fixed_ids)
def test_3x3s2_kernels(emu, case, name, kind):
    x = make(case[0], torch.float32, kind)
    layout_name = "kNhwc" if name == "channels_last" else "kNchw"
    for force_64bit, segments in ((False, 0), (True, 2), (False, 3)):
        fwd, fwd2, bwd, bwd_x = run(emu, x, case[1:], name, force_64bit, segments)
        assert f"max_pool3x3s2_forward<(alexnet_kernels::PoolLayout){int(layout_name == 'kNhwc')}, true" in fwd
        assert f"max_pool3x3s2_forward<(alexnet_kernels::PoolLayout){int(layout_name == 'kNhwc')}, false" in fwd2
        assert f"max_pool3x3s2_backward<(alexnet_kernels::PoolLayout){int(layout_name == 'kNhwc')}," in bwd
        assert "max_pool_backward_general" in bwd_x


def test_3x3s2_forward_segments(emu):
    # 13 output rows in forced segments of 5, 5, 3 rows; and the planned split (the emulator
    # reports 2 multiprocessors, so few columns are split into row segments).
    x = make((1, 2, 27, 9), torch.float32, "ties")
    fwd = run(emu, x, (3, 2, 0, 1, False), "contiguous", segments=3)[0]
    assert "grid=(1,3)" in fwd, fwd
    fwd = run(emu, x, (3, 2, 0, 1, False), "contiguous")[0]
    assert "grid=(1,3)" in fwd, fwd  # 13 rows: at most 13 // 4 segments of >= 4 rows


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16], ids=["fp64", "bf16", "fp16"])
def test_3x3s2_kernels_dtypes(emu, dtype):
    x = make((2, 4, 11, 9), dtype, "ties")
    for name in ("contiguous", "channels_last"):
        x64 = x.detach().double().clone().requires_grad_()
        ref = F.max_pool2d(x64, 3, 2)
        g = make(ref.shape, dtype, "randn", 1)
        ref.backward(g.double())
        xl = layout(x, name)
        y, index = emu.forward(xl, [3, 3], [2, 2], [0, 0], [1, 1], False, True, False, 0)
        torch.testing.assert_close(y.double(), ref, rtol=0, atol=0)
        dx = emu.backward(layout(g, name), index, None, list(x.shape), [3, 3], [2, 2], [0, 0], [1, 1], False,
                          name == "channels_last", False)
        # fp32 sums rounded once: exact for fp64, one rounding for the 16-bit types
        tol = {torch.float64: 0, torch.bfloat16: 8e-3, torch.float16: 1e-3}[dtype]
        torch.testing.assert_close(dx.double(), x64.grad, rtol=tol, atol=tol)
        cpu = torch.ops.alexnet_kernels.max_pool2d_backward(layout(g, name), index, None, list(x.shape), [3, 3], [2, 2],
                                                           [0, 0], [1, 1], False, name == "channels_last")
        assert torch.equal(dx, cpu)
        launches = emu.launches()
        assert "max_pool3x3s2_forward" in launches[0] and "max_pool3x3s2_backward" in launches[1], launches


# Windows the unrolled forward does not take; the backward takes its unrolled gather for 3x3/2
# with padding (from the index), the general gather otherwise.
GENERAL = [
    ((1, 4, 12, 11), 3, 2, 1, 1, True),            # padding + ceil: last window partly outside
    ((2, 3, 10, 9), (2, 3), (1, 2), (1, 0), 1, False),
    ((2, 3, 11, 12), 3, 2, 1, 2, False),           # dilation
    ((2, 3, 9, 10), (3, 2), (3, 1), (1, 1), (2, 3), True),
    ((2, 3, 8, 9), 3, 1, 1, 1, False),             # 3x3 at stride 1
    ((1, 2, 10, 11), 3, 3, 1, 1, True),            # 3x3 at stride 3
    ((3, 2, 6, 6), 1, 1, 0, 1, False),             # 1x1
    ((2, 3, 14, 12), 3, 2, 0, 1, True),            # 3x3/2 whose ceil-mode window leaves the image
]


@pytest.mark.parametrize("name", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("case", GENERAL, ids=lambda c: "x".join(map(str, c[0])) + f"-k{c[1]}s{c[2]}p{c[3]}d{c[4]}")
def test_general_kernels(emu, case, name):
    x = make(case[0], torch.float32, "ties")
    k, s, _, d, _ = case[1:]
    unrolled_bwd = k == 3 and s == 2 and d == 1 and name != "strided"
    for force_64bit in (False, True):
        fwd, fwd2, bwd, bwd_x = run(emu, x, case[1:], name, force_64bit)
        assert "max_pool_forward_general" in fwd and "max_pool_forward_general" in fwd2
        assert ("max_pool3x3s2_backward" if unrolled_bwd else "max_pool_backward_general") in bwd
        assert "max_pool_backward_general" in bwd_x


def test_strided_3x3s2_takes_general_kernels(emu):
    x = make((2, 3, 13, 11), torch.float32, "nan")
    fwd, _, bwd, _ = run(emu, x, (3, 2, 0, 1, False), "strided")
    assert "max_pool_forward_general" in fwd and "max_pool_backward_general" in bwd


def test_expanded_gradient(emu):
    # y.sum().backward() hands backward an expanded (stride 0) gradient: the general gather.
    x = make((2, 3, 13, 13), torch.float32, "ties")
    y, index = emu.forward(x, [3, 3], [2, 2], [0, 0], [1, 1], False, True, False, 0)
    g = torch.ones(()).expand(y.shape)
    dx = emu.backward(g, index, None, list(x.shape), [3, 3], [2, 2], [0, 0], [1, 1], False, False, False)
    xr = x.clone().requires_grad_()
    F.max_pool2d(xr, 3, 2).sum().backward()
    torch.testing.assert_close(dx, xr.grad, rtol=0, atol=0)
    assert "max_pool_backward_general" in emu.launches()[1]


# The NCHW backward from the index stores through shared memory: a warp's 32 runs of a row
# (kPoolRun = 8 inputs each) cover one stretch of dx across row and plane ends, and the warp
# stores it 32 consecutive elements at a time. Widths that are and are not multiples of the run,
# a row of one run, padding 0 and 1 (a run starting in the left padding), planes smaller than a
# warp (a warp spans many planes), several warps with a partial last one.
BWD_STRETCH = [
    ((1, 1, 3, 3), 0),     # one partial warp of 1 thread
    ((2, 7, 1, 1), 1),     # 1x1 planes: each run one element
    ((3, 5, 3, 4), 1),     # 3 threads per plane: a warp spans 11 planes
    ((2, 3, 5, 8), 0),     # W = the run
    ((2, 3, 5, 8), 1),     # W = the run, padding: a second run of one column per row
    ((1, 2, 7, 7), 1),
    ((2, 3, 6, 16), 0),    # W a multiple of the run
    ((1, 3, 5, 17), 1),
    ((1, 2, 9, 33), 0),
    ((1, 1, 3, 64), 1),
    ((2, 4, 27, 27), 1),   # several blocks, a partial last warp
]


@pytest.mark.parametrize("case", BWD_STRETCH, ids=lambda c: "x".join(map(str, c[0])) + f"-p{c[1]}")
def test_3x3s2_backward_stretch(emu, case):
    shape, pad = case
    x = make(shape, torch.float32, "randn")
    for force_64bit in (False, True):
        bwd = run(emu, x, (3, 2, pad, 1, False), "contiguous", force_64bit)[2]
        assert "max_pool3x3s2_backward<(alexnet_kernels::PoolLayout)0," in bwd


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64], ids=["bf16", "fp16", "fp64"])
@pytest.mark.parametrize("case", BWD_STRETCH[2:], ids=lambda c: "x".join(map(str, c[0])) + f"-p{c[1]}")
def test_3x3s2_backward_stretch_dtypes(emu, case, dtype):
    shape, pad = case
    win = ([3, 3], [2, 2], [pad, pad], [1, 1], False)
    x = make(shape, dtype, "ties")
    x64 = x.detach().double().clone().requires_grad_()
    ref = F.max_pool2d(x64, 3, 2, pad)
    g = make(ref.shape, dtype, "randn", 1)
    ref.backward(g.double())
    _, index = emu.forward(x, *win, True, False, 0)
    for force_64bit in (False, True):
        poison("cpu", 1 << 20)
        dx = emu.backward(g, index, None, list(shape), *win, False, force_64bit)
        tol = {torch.float64: 0, torch.bfloat16: 8e-3, torch.float16: 1e-3}[dtype]
        torch.testing.assert_close(dx.double(), x64.grad, rtol=tol, atol=tol)
        cpu = torch.ops.alexnet_kernels.max_pool2d_backward(g, index, None, list(shape), *win, False)
        assert torch.equal(dx, cpu)
        launches = emu.launches()
        assert "max_pool3x3s2_backward<(alexnet_kernels::PoolLayout)0," in launches[-1], launches


@pytest.mark.parametrize("dtype,most", [(torch.float32, 5.0), (torch.bfloat16, 3.0)], ids=["fp32", "bf16"])
@pytest.mark.parametrize("width", [55, 27])
def test_3x3s2_backward_nchw_stores_coalesced(emu, width, dtype, most):
    # AlexNet's two pools: a warp request stores 32 consecutive elements of dx, at most one
    # sector more than aligned (5 for fp32, 3 for bf16); a thread storing its own run put the
    # lanes 32 (fp32) or 16 bytes apart: 25 to 31 sectors per fp32 request, 16 per bf16 one at
    # W = 55.
    from cuda_emu import build as emu_build

    shape = (1, 8, width, width)
    x = make(shape, dtype, "randn")
    win = ([3, 3], [2, 2], [0, 0], [1, 1], False)
    _, index = emu.forward(x, *win, True, False, 0)
    g = make((1, 8, (width - 3) // 2 + 1, (width - 3) // 2 + 1), dtype, "randn", 1)
    with emu_build.runtime(emu).record() as launches:
        emu.backward(g, index, None, list(shape), *win, False, False)
    (launch,) = launches
    assert "max_pool3x3s2_backward" in launch.kernel
    assert launch.global_store.sectors_per_request <= most, launch.global_store
    assert launch.global_store.bytes == x.numel() * x.element_size()  # each element stored once
