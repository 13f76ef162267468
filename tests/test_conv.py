"""alexnet_kernels.conv2d against torch.nn.functional.conv2d: the CPU GEMM kernels (csrc/cpu/conv_cpu.cpp)
everywhere, the CUDA kernels (implicit GEMM, row-staged and gather, and the reference kernels) on a
GPU."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from helpers import DEVICES, layouts, poison, rel_err, requires_cuda

import alexnet_kernels as ak

# Relative norm error against float64: fp32 1e-5, bf16/fp16 1e-2.
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}

# (input shape, out channels, kernel, stride, padding)
CASES = [
    ((1, 3, 227, 227), 4, 11, 4, 0),      # AlexNet conv1, paper (fewer filters: CPU time)
    ((2, 3, 224, 224), 3, 11, 4, 2),      # AlexNet conv1, torchvision
    ((3, 2, 13, 17), 5, (3, 5), (2, 1), (1, 2)),
    ((2, 4, 9, 9), 6, 1, 1, 0),           # 1x1
    ((1, 1, 5, 6), 2, (7, 8), 3, (1, 1)),  # kernel as large as the padded input
    ((2, 3, 12, 11), 4, 5, 2, 2),
]


def ids(c):
    return "x".join(map(str, c[0])) + f"-K{c[1]}k{c[2]}s{c[3]}p{c[4]}"


def make(case, device, dtype=torch.float32, seed=0):
    shape, k, ks, _, _ = case
    ks = (ks, ks) if isinstance(ks, int) else ks
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(device, dtype)
    w = (torch.randn(k, shape[1], *ks, generator=g) * 0.1).to(device, dtype)
    b = torch.randn(k, generator=g).to(device, dtype)
    return x, w, b


def reference(x, w, b, case, relu):
    y = F.conv2d(x.double(), w.double(), None if b is None else b.double(), case[3], case[4])
    return torch.relu(y) if relu else y


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=ids)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("with_bias", [True, False])
def test_forward_backward_against_float64(device, case, relu, with_bias):
    x, w, b = make(case, device)
    b = b if with_bias else None
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    b64 = b.double().requires_grad_() if with_bias else None
    ref = reference(x64, w64, b64, case, relu)
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1)).to(device)
    ref.backward(g.double())
    for name, xl in layouts(x):
        xl = xl.detach().requires_grad_()
        wl = w.detach().clone().requires_grad_()
        bl = b.detach().clone().requires_grad_() if with_bias else None
        poison(device)
        y = ak.conv2d(xl, wl, bl, case[3], case[4], relu=relu)
        assert y.shape == ref.shape and not y.isnan().any(), name
        assert rel_err(y, ref) < TOL[torch.float32], name
        y.backward(g)
        assert rel_err(xl.grad, x64.grad) < TOL[torch.float32], name
        assert rel_err(wl.grad, w64.grad) < TOL[torch.float32], name
        if with_bias:
            assert rel_err(bl.grad, b64.grad) < TOL[torch.float32], name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(device, dtype):
    case = CASES[1]
    x, w, b = make(case, device, dtype)
    ref = reference(x, w, b, case, True)
    y = ak.conv2d(x, w, b, case[3], case[4], relu=True)
    assert y.dtype == dtype and rel_err(y, ref) < TOL[dtype]
    wl = w.clone().requires_grad_()
    ak.conv2d(x, wl, b, case[3], case[4]).sum().backward()
    w64 = w.double().requires_grad_()
    reference(x, w64, b, case, False).sum().backward()
    assert rel_err(wl.grad, w64.grad) < TOL[dtype]


# The CUDA implicit-GEMM forward (csrc/cuda/conv_cuda.cu) at the filter counts its tiles are
# built for (96: 96-wide tiles; 64: 64-wide; 100: two 64-wide tiles, the second masked), batches
# that leave the last 128-pixel tile part empty, both layouts and a strided input. conv1's shapes
# take the row-staged kernels (no padding: paper; padding: torchvision), the fifth case takes them
# in fp32 only (an odd column stride sends bf16 / fp16 to the gather kernels), the last the
# gather kernels (a small output plane). fp32 at 1e-5 also proves no TF32 crept in (TF32 alone is
# ~1e-3).
FAST_CASES = [
    ((3, 3, 227, 227), 96, 11, 4, 0),     # paper conv1
    ((128, 3, 227, 227), 96, 11, 4, 0),   # paper conv1, the benchmark's batch
    ((257, 3, 224, 224), 64, 11, 4, 2),   # torchvision conv1, odd batch
    ((1, 3, 224, 224), 64, 11, 4, 2),
    ((2, 3, 61, 67), 100, (11, 9), (4, 3), (2, 5)),
    ((5, 1, 33, 29), 96, 7, 2, 3),
]


def misaligned(x, shift):
    """x's values in a view whose data pointer is `shift` elements past 16-byte alignment (the
    row-staged kernels copy rows by 16-byte chunks where the alignment allows, element by element
    elsewhere)."""
    storage = torch.full((x.numel() + 8,), float("nan"), dtype=x.dtype, device=x.device)
    view = storage[shift:shift + x.numel()].view_as(x)
    view.copy_(x)
    return view


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the implicit-GEMM path is CUDA-only: runs on the device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", FAST_CASES, ids=ids)
def test_fast_forward_cuda(case, dtype):
    x, w, b = make(case, "cuda", dtype)
    for relu in (False, True):
        ref = reference(x, w, b, case, relu)
        for name, xl in layouts(x) + [("offset1", misaligned(x, 1)), ("offset3", misaligned(x, 3))]:
            poison("cuda", 4 * ref.numel() * ref.element_size())
            y = ak.conv2d(xl, w, b, case[3], case[4], relu=relu)
            assert y.dtype == dtype and y.shape == ref.shape and not y.isnan().any(), name
            assert rel_err(y, ref) < TOL[dtype], (name, relu)
        yl = ak.conv2d(x.contiguous(memory_format=torch.channels_last), w, None, case[3], case[4], relu=relu)
        assert yl.is_contiguous(memory_format=torch.channels_last)
        assert rel_err(yl, reference(x, w, None, case, relu)) < TOL[dtype]
        # Weight and bias gradients (the implicit GEMM's reduction over pixels), conv1's case: the
        # input needs no gradient. The backward masks by the forward output (y > 0); at batch 128
        # some of the 37M outputs lie within rounding of 0, where float64's sign may differ, so
        # the reference takes its mask from our y.
        g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2)).to("cuda", dtype)
        for name, xl in layouts(x)[:2]:
            wl, bl = w.clone().requires_grad_(), b.clone().requires_grad_()
            y = ak.conv2d(xl, wl, bl, case[3], case[4], relu=relu)
            w64, b64 = w.double().requires_grad_(), b.double().requires_grad_()
            pre = reference(x, w64, b64, case, False)
            pre.backward((g * (y > 0)).double() if relu else g.double())
            y.backward(g.contiguous(memory_format=xl_format(xl)))
            assert rel_err(wl.grad, w64.grad) < TOL[dtype], (name, relu)
            assert rel_err(bl.grad, b64.grad) < TOL[dtype], (name, relu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the implicit-GEMM path is CUDA-only: runs on the device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_forward_weight_at_odd_offset_cuda(dtype):
    # 96 filters of 2x4x4 = 32 taps: nothing to pad, so the packed weight could alias w, here a
    # view starting one element into its storage (not 16-byte aligned).
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 23, 19, generator=g).to("cuda", dtype)
    storage = torch.randn(96 * 32 + 1, generator=g).to("cuda", dtype) * 0.1
    w = storage[1:].view(96, 2, 4, 4)
    assert w.data_ptr() % 16 != 0
    y = ak.conv2d(x, w, None, 2, 1)
    ref = F.conv2d(x.double(), w.double(), None, 2, 1)
    assert rel_err(y, ref) < TOL[dtype]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the implicit-GEMM path is CUDA-only: runs on the device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_forward_non_finite_cuda(dtype):
    """An inf in x reaches exactly the outputs whose window holds it (the bf16 kernel reads 16 taps
    per 11-tap row and must zero the 5 extra: a neighbour's inf there would make 0 * inf = NaN)."""
    case = FAST_CASES[0]
    x, w, b = make(case, "cuda", dtype)
    x[1, 1, 100, 37] = float("inf")
    x[2, 0, 5, 200] = float("-inf")
    ref = reference(x, w, b, case, False)
    y = ak.conv2d(x, w, b, case[3], case[4]).double()
    assert torch.equal(y.isnan(), ref.isnan()) and torch.equal(y.isinf(), ref.isinf())
    fin = ref.isfinite()
    assert rel_err(y[fin], ref[fin]) < TOL[dtype]


def xl_format(t):
    cl = not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if cl else torch.contiguous_format


# The CPU kernels' GEMM path at conv1's shapes: a batch of at least as many images as threads (one
# image per task, single-threaded GEMMs), a single image (the GEMM's own threads); each image in
# slices of 1444 pixels (2^19 im2col elements / 363 taps), the last one partial; and the default
# CPU run's 64x64 images (225 output pixels), six to a GEMM, the last group partial.
CPU_GEMM_CASES = [
    ((4, 3, 227, 227), 96, 11, 4, 0),
    ((1, 3, 224, 224), 64, 11, 4, 2),
    ((2, 3, 320, 320), 8, 11, 4, 1),
    ((13, 3, 64, 64), 64, 11, 4, 2),
]


@pytest.mark.parametrize("case", CPU_GEMM_CASES, ids=ids)
@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_gemm_conv1_shapes(case, threads):
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x, w, b = make(case, "cpu")
        xl, wl, bl = (t.clone().requires_grad_() for t in (x, w, b))
        y = ak.conv2d(xl, wl, bl, case[3], case[4], relu=True)
        x64, w64, b64 = (t.double().requires_grad_() for t in (x, w, b))
        pre = reference(x64, w64, b64, case, False)
        assert rel_err(y, torch.relu(pre)) < TOL[torch.float32]
        # The backward masks by the forward output it is given (y > 0, as torch.relu's backward):
        # among a million outputs some lie within fp32 rounding of 0, where float64's sign may
        # differ, so the reference takes its mask from y too.
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        pre.backward((g * (y > 0)).double())
        y.backward(g)
        for got, want in ((xl.grad, x64.grad), (wl.grad, w64.grad), (bl.grad, b64.grad)):
            assert rel_err(got, want) < TOL[torch.float32]
    finally:
        torch.set_num_threads(saved)


# The weight gradient's GEMM goes through oneDNN where PyTorch's kernels run AVX-512, MKL's sgemm
# elsewhere (csrc/cpu/conv_cpu.cpp, gemm_nn); ATEN_CPU_CAPABILITY picks the path in a fresh
# process (a capability above the machine's is capped to it, so on an AVX2 machine both runs take MKL).
_EITHER_GEMM = """
import torch, alexnet_kernels as ak
torch.manual_seed(0)
x = torch.randn(13, 3, 64, 64)
w = (torch.randn(64, 3, 11, 11) * 0.1).requires_grad_()
b = torch.randn(64).requires_grad_()
w64, b64 = w.detach().double().requires_grad_(), b.detach().double().requires_grad_()
g = torch.randn(13, 64, 15, 15)
y = ak.conv2d(x, w, b, 4, 2, relu=True)
y.backward(g)
pre = torch.nn.functional.conv2d(x.double(), w64, b64, 4, 2)
pre.backward((g * (y > 0)).double())
err = lambda a, r: ((a.double() - r).norm() / r.norm()).item()
print(torch.backends.cpu.get_cpu_capability(), err(w.grad, w64.grad), err(b.grad, b64.grad))
"""


@pytest.mark.parametrize("capability", ["avx2", "avx512"])
def test_cpu_weight_gradient_either_gemm(capability):
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability, "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", _EITHER_GEMM], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    _, err_w, err_b = out.stdout.split()
    assert float(err_w) < TOL[torch.float32] and float(err_b) < TOL[torch.float32], out.stdout


def cpu_plan(shape, k, stride, padding):
    return torch.ops.alexnet_kernels.conv2d_cpu_plan(torch.empty(shape), torch.empty(k, shape[1], 11, 11),
                                                     [stride] * 2, [padding] * 2)


@pytest.mark.parametrize(("shape", "padding", "threads", "plan"), [
    # 64x64: 225 output pixels; 2^19 // 363 = 1444 columns fit one GEMM, so 6 images do.
    ((32, 3, 64, 64), 2, 2, [225, 6, 6]),    # 6 groups of 5 or 6, three per thread
    ((32, 3, 64, 64), 2, 1, [225, 6, 6]),
    ((13, 3, 64, 64), 2, 2, [225, 4, 4]),    # 3 groups would leave one thread a group short: 4
    ((3, 3, 64, 64), 2, 2, [225, 2, 2]),
    ((1, 3, 64, 64), 2, 2, [225, 1, 1]),
    ((128, 3, 64, 64), 2, 2, [225, 6, 22]),
    ((4, 3, 227, 227), 0, 2, [1444, 1, 4]),  # 3025 pixels: each image in slices of 1444
    ((4, 3, 96, 96), 2, 2, [529, 2, 2]),     # 529 pixels: two to a GEMM
    ((4, 3, 128, 128), 2, 2, [961, 1, 4]),   # 961: one
])
def test_cpu_plan(shape, padding, threads, plan):
    """How the CPU kernels cut conv1 into GEMMs: small images several to a GEMM, the groups spread
    evenly over the threads; large images one per work item, in slices."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert cpu_plan(shape, 64, 4, padding) == plan
    finally:
        torch.set_num_threads(saved)


def test_cpu_grouped_images_layouts():
    """Several small images to one GEMM (the default CPU run's 64x64), in every input layout, with
    a gradient that is not contiguous: each image's outputs and gradients land in its own place."""
    case = CPU_GEMM_CASES[-1]
    assert cpu_plan(case[0], case[1], case[3], case[4])[1] > 1, "the case no longer groups images"
    x, w, b = make(case, "cpu")
    x64, w64, b64 = (t.double().requires_grad_() for t in (x, w, b))
    ref = reference(x64, w64, b64, case, True)
    g = torch.randn(ref.shape[::-1], generator=torch.Generator().manual_seed(1)).permute(3, 2, 1, 0)
    ref.backward(g.double())
    for name, xl in layouts(x):
        xl = xl.detach().requires_grad_()
        wl, bl = w.clone().requires_grad_(), b.clone().requires_grad_()
        poison("cpu")
        y = ak.conv2d(xl, wl, bl, case[3], case[4], relu=True)
        assert rel_err(y, ref) < TOL[torch.float32], name
        y.backward(g)
        for got, want in ((xl.grad, x64.grad), (wl.grad, w64.grad), (bl.grad, b64.grad)):
            assert rel_err(got, want) < TOL[torch.float32], name


@pytest.mark.parametrize("relu", [False, True])
def test_cpu_non_finite(relu):
    """inf and NaN in x reach exactly the outputs whose window holds them (the GEMM path), in both
    output layouts; the fused ReLU keeps NaN, as torch.relu does."""
    case = CASES[1]
    x, w, b = make(case, "cpu")
    x[0, 1, 100, 37] = float("inf")
    x[1, 0, 5, 200] = float("nan")
    ref = reference(x, w, b, case, relu)
    for fmt in (torch.contiguous_format, torch.channels_last):
        y = ak.conv2d(x.contiguous(memory_format=fmt), w, b, case[3], case[4], relu=relu).double()
        assert torch.equal(y.isnan(), ref.isnan()) and torch.equal(y.isinf(), ref.isinf()), fmt
        fin = ref.isfinite()
        assert rel_err(y[fin], ref[fin]) < TOL[torch.float32], fmt


@pytest.mark.parametrize("case", CASES[2:], ids=ids)
def test_gradcheck_cpu(case):
    x, w, b = make(case, "cpu", torch.float64)
    inputs = (x.requires_grad_(), w.requires_grad_(), b.requires_grad_())
    assert torch.autograd.gradcheck(lambda *t: ak.conv2d(*t, case[3], case[4]), inputs)
    # relu: the kink at 0 is not hit by random data
    assert torch.autograd.gradcheck(lambda *t: ak.conv2d(*t, case[3], case[4], relu=True), inputs)


def test_input_gradient_only_when_asked():
    x, w, b = make(CASES[2], "cpu")
    w.requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = ak.conv2d(x, w, b, 2, 1)
    y.sum().backward()
    assert x.grad is None and w.grad is not None
    assert len(saved) == 2  # input and weight; no output without relu


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch_and_layout(device):
    x, w, b = make(((0, 3, 20, 20), 4, 5, 2, 1), device)
    y = ak.conv2d(x, w, b, 2, 1)
    assert y.shape == (0, 4, 9, 9)
    x, w, b = make(CASES[5], device)
    y = ak.conv2d(x.contiguous(memory_format=torch.channels_last), w, b, 2, 2)
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_module_state_dict_round_trip():
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(3, 8, 11, stride=4, padding=2)
    ours = ak.nn.Conv2d(3, 8, 11, stride=4, padding=2, relu=True)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 63, 63)
    torch.testing.assert_close(ours(x), torch.relu(ref(x)), rtol=1e-5, atol=1e-5)
    assert "relu=True" in repr(ours)
    with pytest.raises(ValueError, match="groups=1"):
        ak.nn.Conv2d(4, 4, 3, groups=2)


def test_module_under_autocast():
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(3, 8, 11, stride=4, padding=2)
    ours = ak.nn.Conv2d(3, 8, 11, stride=4, padding=2)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 63, 63, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_ref, y = ref(x), ours(x)
    assert y.dtype == y_ref.dtype == torch.bfloat16
    assert rel_err(y, y_ref.float()) < TOL[torch.bfloat16]
    y.float().sum().backward()  # through the casts to the fp32 parameters and input
    assert ours.weight.grad.dtype == torch.float32 and x.grad is not None


def test_bad_input():
    x, w, b = make(CASES[2], "cpu")
    with pytest.raises(ValueError, match="input channels"):
        ak.conv2d(x, w[:, :1], b)
    with pytest.raises(ValueError, match="larger than the padded input"):
        ak.conv2d(x, torch.randn(5, 2, 20, 3), None)
    with pytest.raises(ValueError, match="stride must be positive"):
        ak.conv2d(x, w, b, 0)
    with pytest.raises(TypeError, match="weight dtype"):
        ak.conv2d(x, w.double(), b)
    with pytest.raises(ValueError, match="input must be 4-D"):
        ak.conv2d(x[0], w, b)
    with pytest.raises(ValueError, match="bias must have shape"):
        ak.conv2d(x, w, b[:2])
    with pytest.raises(TypeError, match="stride must be an int or a pair"):
        ak.conv2d(x, w, b, "2")


@requires_cuda
def test_mixed_devices_cuda():
    """A tensor on the wrong device is named, whichever argument it is (the CUDA kernels guard
    the device of their first CUDA tensor, so a CPU one reaches the op's own check)."""
    x, w, b = make(CASES[5], "cuda")
    with pytest.raises(RuntimeError, match="weight is on cpu but input is on cuda"):
        ak.conv2d(x, w.cpu(), b)
    with pytest.raises(RuntimeError, match="weight is on cuda:0 but input is on cpu"):
        ak.conv2d(x.cpu(), w, b.cpu())
    with pytest.raises(RuntimeError, match="bias is on cpu but input is on cuda"):
        ak.conv2d(x, w, b.cpu())
    grad = torch.randn(2, 4, 6, 6, device="cuda")
    with pytest.raises(RuntimeError, match="grad is on cuda:0 but input is on cpu"):
        torch.ops.alexnet_kernels.conv2d_backward(grad, x.cpu(), w.cpu(), None, [2, 2], [2, 2], False,
                                                  [False, True, True])


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x, w, b = make(CASES[2], device)
    for relu in (False, True):
        torch.library.opcheck(torch.ops.alexnet_kernels.conv2d.default,
                              (x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), [2, 1], [1, 2], relu))
    y = torch.ops.alexnet_kernels.conv2d(x, w, b, [2, 1], [1, 2], True).detach()
    g = torch.randn_like(y)
    for mask in ([True, True, True], [False, True, False]):
        torch.library.opcheck(torch.ops.alexnet_kernels.conv2d_backward.default,
                              (g, x.detach(), w.detach(), y, [2, 1], [1, 2], True, mask))


def test_compile_fullgraph():
    x, w, b = make(CASES[5], "cpu")
    w.requires_grad_()
    fn = torch.compile(lambda x, w, b: ak.conv2d(x, w, b, 2, 2, relu=True).sum(), fullgraph=True, backend="aot_eager")
    fn(x, w, b).backward()
    w_ref = w.detach().clone().requires_grad_()
    torch.relu(F.conv2d(x, w_ref, b, 2, 2)).sum().backward()
    torch.testing.assert_close(w.grad, w_ref.grad, rtol=1e-4, atol=1e-4)
