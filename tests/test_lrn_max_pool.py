"""alexnet_kernels.lrn_max_pool2d against lrn followed by max_pool2d, and against torch.

The fused op must give the composition's results: the same pooled values and winners, bit for bit
(the LRN values it pools are alexnet_kernels.lrn's), and gradients within 1e-6 relative in fp32;
both are checked against torch's F.max_pool2d(F.local_response_norm(...)) in float64 as well.
"""
import pytest
import torch
import torch.nn.functional as F
from helpers import DEVICES, have_memory, layouts, poison, rel_err, requires_cuda

import alexnet_kernels as ak
from alexnet_kernels.lrn_max_pool import fused
from alexnet_kernels.max_pool import _pair

OPS = torch.ops.alexnet_kernels
PAPER = (5, 1e-4, 0.75, 2.0)  # size, alpha, beta, k
# float32 against torch in float64: an LRN value's few roundings, and the pool picks among them
# (a near tie may pick the other of two values within that error, which moves the result no more).
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}
GRAD_TOL_VS_COMPOSED = 1e-6  # fp32, against lrn then max_pool2d

# (shape, (size, alpha, beta, k)): conv1/conv2-like planes, odd and even H and W, C around the
# LRN window, one output row or column, large alpha (the power matters).
CASES = [
    ((2, 16, 13, 13), PAPER),
    ((3, 7, 9, 12), (5, 1e-2, 0.75, 2.0)),
    ((1, 5, 3, 3), (5, 0.5, 0.75, 1.0)),     # one output
    ((2, 3, 8, 11), (5, 2.0, 0.6, 1.5)),     # C < size: every window clipped
    ((1, 1, 7, 5), (5, 1.0, 0.75, 1.0)),     # one channel
    ((2, 9, 27, 4), (5, 1e-2, 1.2, 0.5)),    # one output column; beta > 1, k < 1
]


def ids(case):
    return "x".join(map(str, case[0])) + f"-a{case[1][1]}"


def make_x(shape, device, dtype=torch.float32, kind="randn", seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    if kind == "ties":  # few distinct values: LRN gives equal values, windows tie for the maximum
        x = torch.randint(-2, 3, shape, generator=g).float()
    elif kind == "nan":  # NaNs and infinities sprinkled in
        x = torch.randn(shape, generator=g) * scale
        r = torch.rand(shape, generator=g)
        x[r < 0.03] = float("nan")
        x[(r >= 0.03) & (r < 0.05)] = float("-inf")
        x[(r >= 0.05) & (r < 0.06)] = float("inf")
    else:
        x = torch.randn(shape, generator=g) * scale
    return x.to(device=device, dtype=dtype)


def composed(x, params, with_index=True):
    """lrn then max_pool2d, through the separate ops (the index from max_pool2d's own op)."""
    y = ak.lrn(x, *params)
    return OPS.max_pool2d(y, [3, 3], [2, 2], [0, 0], [1, 1], False, with_index)


def torch_ref(x, params):
    return F.max_pool2d(F.local_response_norm(x, *params), 3, 2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=ids)
@pytest.mark.parametrize("kind", ["randn", "ties", "nan"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_identical_to_composition(device, case, kind, dtype):
    shape, params = case
    x = make_x(shape, device, dtype, kind)
    ref64 = torch_ref(x.double(), params)
    for name, xl in layouts(x):
        poison(device)
        y, index = OPS.lrn_max_pool2d(xl, *params, [3, 3], [2, 2], True)
        y_c, index_c = composed(xl, params)
        assert y.shape == ref64.shape and y.dtype == dtype, name
        torch.testing.assert_close(y, y_c, rtol=0, atol=0, equal_nan=True, msg=name)
        assert torch.equal(index, index_c), name
        y2 = ak.lrn_max_pool2d(xl, *params)  # without the index
        torch.testing.assert_close(y2, y_c, rtol=0, atol=0, equal_nan=True, msg=name)
        if kind != "nan":
            assert rel_err(y, ref64) < TOL[dtype], name
        else:  # NaN where torch has NaN; elsewhere close
            assert torch.equal(y.isnan(), ref64.isnan()), name
            fin = ~ref64.isnan()
            assert rel_err(y[fin], ref64[fin]) < TOL[dtype], name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=ids)
@pytest.mark.parametrize("kind", ["randn", "ties"])
def test_backward_matches_composition(device, case, kind):
    shape, params = case
    x = make_x(shape, device, torch.float32, kind)
    x64 = x.double().requires_grad_()
    ref64 = torch_ref(x64, params)
    g = make_x(ref64.shape, device, torch.float32, seed=1, scale=1.0)
    ref64.backward(g.double())
    for name, xl in layouts(x):
        xf = xl.detach().requires_grad_()
        poison(device)
        ak.lrn_max_pool2d(xf, *params).backward(g)
        xc = xl.detach().requires_grad_()
        ak.max_pool2d(ak.lrn(xc, *params)).backward(g)
        assert xf.grad.shape == x.shape and not xf.grad.isnan().any(), name
        assert rel_err(xf.grad, xc.grad) < GRAD_TOL_VS_COMPOSED, name
        assert rel_err(xf.grad, x64.grad) < TOL[torch.float32], name
        if device == "cpu":
            # The CPU kernels run the separate ops' own functions, in the same order.
            assert torch.equal(xf.grad, xc.grad), name


@pytest.mark.parametrize("case", CASES[:5], ids=ids)
def test_gradcheck_cpu(case):
    shape, params = case
    x = make_x(shape, "cpu", torch.float64, scale=1.0).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: ak.lrn_max_pool2d(t, *params), (x,))
    assert torch.autograd.gradcheck(
        lambda t: ak.lrn_max_pool2d(t.contiguous(memory_format=torch.channels_last), *params), (x,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(device, dtype):
    # Reference: torch in float32 on the same (rounded) inputs, its LRN output rounded to the dtype
    # before the pool (as the op's is, and the separate lrn op's output): the same winners, so the
    # gradients compare (an fp32 pool would pick another of two values that round alike).
    x = make_x((3, 20, 13, 15), device, dtype)
    x32 = x.float().requires_grad_()
    lrn32 = F.local_response_norm(x32, *PAPER)
    ref = F.max_pool2d(lrn32 + (lrn32.to(dtype).float() - lrn32).detach(), 3, 2)
    g = make_x(ref.shape, device, dtype, seed=1, scale=1.0)
    ref.backward(g.float())
    for name, xl in layouts(x):
        xf = xl.detach().requires_grad_()
        y = ak.lrn_max_pool2d(xf, *PAPER)
        assert y.dtype == dtype, name
        y_c, _ = composed(xl, PAPER, False)
        torch.testing.assert_close(y, y_c, rtol=0, atol=0, msg=name)  # LRN rounded to dtype, then pooled
        assert rel_err(y, ref) < TOL[dtype], name
        y.backward(g)
        xc = xl.detach().requires_grad_()
        ak.max_pool2d(ak.lrn(xc, *PAPER)).backward(g)
        # Both round the pooled gradient to the dtype before LRN's backward, as the composition does.
        assert rel_err(xf.grad, xc.grad) < TOL[dtype], name
        assert rel_err(xf.grad, x32.grad) < TOL[dtype], name


@pytest.mark.parametrize("device", DEVICES)
def test_output_layouts(device):
    x = make_x((2, 6, 11, 9), device).requires_grad_()
    y = ak.lrn_max_pool2d(x)
    assert y.is_contiguous()
    y.sum().backward()  # (an expanded gradient)
    assert x.grad.is_contiguous()
    cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    y = ak.lrn_max_pool2d(cl)
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    y.sum().backward()
    assert cl.grad.is_contiguous(memory_format=torch.channels_last)
    assert ak.lrn_max_pool2d(x.detach()[..., ::2]).is_contiguous()  # strided: contiguous, as max_pool2d
    for xl in (x.detach(), cl.detach(), x.detach()[:, :, 1:, 2:]):
        assert ak.lrn_max_pool2d(xl).stride() == ak.max_pool2d(ak.lrn(xl)).stride()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0, 8, 9, 9), (1, 8, 9, 9), (1, 3, 3, 3)])
def test_empty_and_batch_one(device, shape):
    x = make_x(shape, device).requires_grad_()
    y = ak.lrn_max_pool2d(x, *PAPER)
    ref = torch_ref(x.detach().double(), PAPER)
    assert y.shape == ref.shape
    if y.numel():
        assert rel_err(y, ref) < TOL[torch.float32]
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_what_autograd_saves():
    # x (the ReLU before keeps it anyway) and one byte per output; nothing of the LRN output's size.
    x = make_x((2, 4, 27, 27), "cpu").requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = ak.lrn_max_pool2d(x)
    assert sorted((str(t.dtype), tuple(t.shape)) for t in saved) == sorted(
        [("torch.uint8", tuple(y.shape)), ("torch.float32", tuple(x.shape))])
    with torch.no_grad():
        _, index = OPS.lrn_max_pool2d(x, 5, 1e-4, 0.75, 1.0, [3, 3], [2, 2], False)
    assert index.numel() == 0


def test_backward_without_forward_index():
    # Called as an op without the index while x requires grad: backward finds the winners again.
    x = make_x((2, 5, 9, 9), "cpu").requires_grad_()
    y, _ = OPS.lrn_max_pool2d(x, *PAPER, [3, 3], [2, 2], False)
    g = make_x(y.shape, "cpu", seed=1)
    y.backward(g)
    xc = x.detach().requires_grad_()
    ak.lrn_max_pool2d(xc, *PAPER).backward(g)
    assert torch.equal(x.grad, xc.grad)


# Parameters the fused kernels do not take: the composition runs, with its results.
FALLBACK = [
    dict(size=3),
    dict(size=4, alpha=1e-2),
    dict(kernel_size=2, stride=2),
    dict(kernel_size=3, stride=1),
    dict(kernel_size=(3, 2), stride=(2, 1)),
    dict(kernel_size=3, stride=None),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kwargs", FALLBACK, ids=lambda k: "-".join(f"{a}{b}" for a, b in k.items()))
def test_other_parameters_compose(device, kwargs):
    x = make_x((2, 7, 12, 11), device).requires_grad_()
    full = dict(size=5, alpha=1e-4, beta=0.75, k=2.0, kernel_size=3, stride=2) | kwargs
    stride = full["stride"] if full["stride"] is not None else full["kernel_size"]
    assert not fused(full["size"], _pair(full["kernel_size"], "kernel_size"), _pair(stride, "stride"))
    y = ak.lrn_max_pool2d(x, **full)
    xc = x.detach().requires_grad_()
    y_c = ak.max_pool2d(ak.lrn(xc, full["size"], full["alpha"], full["beta"], full["k"]), full["kernel_size"], stride)
    torch.testing.assert_close(y, y_c, rtol=0, atol=0)
    g = make_x(y.shape, device, seed=1)
    y.backward(g)
    y_c.backward(g)
    torch.testing.assert_close(x.grad, xc.grad, rtol=0, atol=0)


def test_bad_input():
    x = make_x((2, 4, 9, 9), "cpu")
    with pytest.raises(TypeError, match="lrn_max_pool2d: x must be a torch.Tensor"):
        ak.lrn_max_pool2d([[1.0]])
    with pytest.raises(ValueError, match="lrn_max_pool2d: x must be 4-D"):
        ak.lrn_max_pool2d(torch.randn(4, 9, 9))
    with pytest.raises(TypeError, match="lrn_max_pool2d: x must be a floating-point tensor"):
        ak.lrn_max_pool2d(torch.ones(2, 4, 9, 9, dtype=torch.int32))
    with pytest.raises(TypeError, match="lrn_max_pool2d: size must be an int"):
        ak.lrn_max_pool2d(x, 5.0)
    with pytest.raises(ValueError, match="lrn_max_pool2d: size must be positive"):
        ak.lrn_max_pool2d(x, 0)
    with pytest.raises(TypeError, match="lrn_max_pool2d: kernel_size must be an int or a pair"):
        ak.lrn_max_pool2d(x, kernel_size=(3, 3, 3))
    with pytest.raises(ValueError, match="lrn_max_pool2d: x must have non-zero C, H and W"):
        ak.lrn_max_pool2d(torch.randn(2, 0, 9, 9))
    with pytest.raises(ValueError, match="lrn_max_pool2d: output size would be 0x4"):
        ak.lrn_max_pool2d(torch.randn(2, 4, 2, 9))
    # The op itself names what it does not take.
    with pytest.raises(ValueError, match="lrn_max_pool2d: the fused kernels take size 5"):
        OPS.lrn_max_pool2d(x, 3, 1e-4, 0.75, 1.0, [3, 3], [2, 2], False)
    with pytest.raises(ValueError, match="lrn_max_pool2d: the fused kernels take kernel_size 3 and stride 2"):
        OPS.lrn_max_pool2d(x, 5, 1e-4, 0.75, 1.0, [2, 2], [2, 2], False)
    y, index = OPS.lrn_max_pool2d(x, 5, 1e-4, 0.75, 1.0, [3, 3], [2, 2], True)
    with pytest.raises(ValueError, match="lrn_max_pool2d_backward: grad has shape"):
        OPS.lrn_max_pool2d_backward(torch.randn(2, 4, 3, 4), index, x, 5, 1e-4, 0.75, 1.0, [3, 3], [2, 2])
    with pytest.raises(TypeError, match="lrn_max_pool2d_backward: grad dtype"):
        OPS.lrn_max_pool2d_backward(y.double(), index, x, 5, 1e-4, 0.75, 1.0, [3, 3], [2, 2])
    with pytest.raises(TypeError, match="lrn_max_pool2d_backward: index must be uint8"):
        OPS.lrn_max_pool2d_backward(y, index.int(), x, 5, 1e-4, 0.75, 1.0, [3, 3], [2, 2])
    with pytest.raises(ValueError, match="lrn_max_pool2d_backward: index shape"):
        OPS.lrn_max_pool2d_backward(y, index[:, :, :2], x, 5, 1e-4, 0.75, 1.0, [3, 3], [2, 2])


@pytest.mark.parametrize("args, error, message", [
    ((0,), ValueError, "size must be positive"),
    ((2.0,), TypeError, "size must be an int"),
    ((5, "1e-4"), TypeError, "alpha must be a number"),
    ((5, 1e-4, float("nan")), ValueError, "beta must be finite"),
    ((5, 1e-4, 0.75, None), TypeError, "k must be a number"),
    ((5, 1e-4, 0.75, 2.0, 0), ValueError, "kernel_size must be positive"),
    ((5, 1e-4, 0.75, 2.0, 3, -1), ValueError, "stride must be positive"),
    ((5, 1e-4, 0.75, 2.0, (3, 3, 3)), TypeError, "kernel_size must be an int or a pair"),
])
def test_module_rejects_bad_arguments_at_construction(args, error, message):
    with pytest.raises(error, match="LocalResponseNormMaxPool2d: " + message):
        ak.nn.LocalResponseNormMaxPool2d(*args)


def test_module_matches_the_two_modules():
    x = make_x((2, 8, 13, 13), "cpu")
    m = ak.nn.LocalResponseNormMaxPool2d(5, alpha=1e-4, beta=0.75, k=2)
    ref = torch.nn.Sequential(ak.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2), ak.nn.MaxPool2d(3, 2))
    torch.testing.assert_close(m(x), ref(x), rtol=0, atol=0)
    assert "5, alpha=0.0001, beta=0.75, k=2.0, kernel_size=3, stride=2" in repr(m)
    assert not list(m.parameters())


@requires_cuda
def test_mixed_devices_cuda():
    x = torch.randn(2, 4, 9, 9, device="cuda")
    y, index = OPS.lrn_max_pool2d(x, *PAPER, [3, 3], [2, 2], True)
    with pytest.raises(RuntimeError, match="must be on one device"):
        OPS.lrn_max_pool2d_backward(y, index.cpu(), x, *PAPER, [3, 3], [2, 2])
    with pytest.raises(RuntimeError, match="must be on one device"):
        OPS.lrn_max_pool2d_backward(y.cpu(), index, x, *PAPER, [3, 3], [2, 2])


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x = make_x((2, 7, 11, 10), device)
    for _, xl in layouts(x):
        for with_index in (True, False):
            args = (xl.detach().requires_grad_(with_index), *PAPER, [3, 3], [2, 2], with_index)
            torch.library.opcheck(OPS.lrn_max_pool2d.default, args)
    y, index = OPS.lrn_max_pool2d(x, *PAPER, [3, 3], [2, 2], True)
    g = make_x(y.shape, device, seed=1)
    torch.library.opcheck(OPS.lrn_max_pool2d_backward.default, (g, index, x, *PAPER, [3, 3], [2, 2]))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile(device):
    # A conv -> ReLU -> LRN + pool block under torch.compile(fullgraph=True): forward and gradients
    # equal to eager (the op stays a custom op; its fake kernel gives the shapes and layouts).
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 16, 5, stride=2).to(device)
    block = torch.nn.Sequential(conv, torch.nn.ReLU(), ak.nn.LocalResponseNormMaxPool2d(5, k=2.0))
    x = torch.randn(2, 3, 35, 35, device=device)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")
    for xl in (x, x.contiguous(memory_format=torch.channels_last)):
        y = block(xl)
        yc = compiled(xl)
        torch.testing.assert_close(yc, y, rtol=0, atol=0)
        g = torch.randn_like(y)
        (gw,) = torch.autograd.grad(y, conv.weight, g)
        (gwc,) = torch.autograd.grad(yc, conv.weight, g)
        torch.testing.assert_close(gwc, gw, rtol=0, atol=0)


@pytest.mark.large
@pytest.mark.parametrize("device", DEVICES)
def test_more_than_2_31_elements(device):
    # [1, 2, 32769, 32769] bfloat16 = 2^31 + 2^17 + 2 elements in one image: 64-bit offsets inside
    # the image, forward and backward. Two channels keep the CPU run short; the indexing is what is
    # under test, checked at the far corner (the highest offsets) against the composition there.
    h = 32769
    # x, its gradient (4 GiB each), the output, index and output gradient (2.5 GiB together)
    if device == "cpu" and not have_memory(14 << 30):
        pytest.skip("needs 14 GiB of free memory")
    if device == "cuda" and torch.cuda.mem_get_info()[0] < (14 << 30):
        pytest.skip("needs 14 GiB of free GPU memory")
    x = torch.empty((1, 2, h, h), dtype=torch.bfloat16, device=device).uniform_(-4, 4).requires_grad_()
    y = ak.lrn_max_pool2d(x, 5, 1e-2, 0.75, 1.0)
    corner = x.detach()[:, :, -101:, -101:]
    y_c = ak.max_pool2d(ak.lrn(corner, 5, 1e-2, 0.75, 1.0))
    torch.testing.assert_close(y[:, :, -50:, -50:], y_c, rtol=0, atol=0)
    y.backward(torch.ones_like(y))
    del y
    cr = corner.clone().requires_grad_()
    ak.max_pool2d(ak.lrn(cr, 5, 1e-2, 0.75, 1.0)).backward(torch.ones(1, 2, 50, 50, dtype=x.dtype, device=device))
    # Row/column -101 also gets gradient from windows that start outside the corner: skip it.
    assert rel_err(x.grad[:, :, -100:, -100:], cr.grad[..., 1:, 1:]) < TOL[torch.bfloat16]
