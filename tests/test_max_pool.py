"""alexnet_kernels.max_pool2d against torch.nn.functional.max_pool2d.

float32 and float64 results must be identical to torch's, forward and backward: same values,
same tie winner (so the gradient lands on the same element), same accumulation order.
"""
import pytest
import torch
import torch.nn.functional as F
from helpers import DEVICES, have_memory, layouts, poison, rel_err, requires_cuda

import alexnet_kernels as ak

# (input shape, kernel_size, stride, padding, dilation, ceil_mode)
CASES = [
    ((2, 5, 13, 13), 3, 2, 0, 1, False),          # AlexNet's overlapping pool
    ((2, 3, 27, 27), 3, 2, 0, 1, True),
    ((1, 4, 12, 11), 3, 2, 1, 1, True),           # padding + ceil: last window partly outside
    ((3, 2, 10, 9), (2, 3), (1, 2), (1, 0), 1, False),
    ((2, 3, 11, 12), 3, 2, 1, 2, False),          # dilation
    ((2, 3, 9, 10), (3, 2), (3, 1), (1, 1), (2, 3), True),
    ((2, 3, 8, 9), 3, 1, 1, 1, False),            # 3x3 at stride 1: unrolled forward, general backward
    ((1, 2, 10, 11), 3, 3, 1, 1, True),           # 3x3 at stride 3
    ((1, 1, 7, 7), 7, 1, 3, 1, False),            # window as large as the image
    ((4, 6, 5, 8), 2, 2, 0, 1, False),            # non-overlapping
    ((2, 3, 6, 6), 1, 1, 0, 1, False),            # 1x1
    # 3x3/2 on planes whose output rows are shorter than a vector (torchvision's net at 64x64):
    # 16 planes to a block on the CPU, the last block short
    ((3, 7, 15, 15), 3, 2, 0, 1, False),
    ((2, 17, 7, 7), 3, 2, 0, 1, False),
    ((1, 33, 3, 3), 3, 2, 0, 1, False),
    ((2, 9, 16, 16), 3, 2, 0, 1, False),          # even width: the last column in no window
]


def ids(case):
    return "x".join(map(str, case[0])) + f"-k{case[1]}s{case[2]}p{case[3]}d{case[4]}{'c' if case[5] else ''}"


def torch_pool(x, case):
    _, k, s, p, d, c = case
    return F.max_pool2d(x, k, s, p, d, ceil_mode=c)


def ours(x, case):
    _, k, s, p, d, c = case
    return ak.max_pool2d(x, k, s, p, d, c)


def make_x(shape, device, dtype=torch.float32, kind="randn", seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "ties":  # few distinct values: most windows have a tie for the maximum
        x = torch.randint(-2, 3, shape, generator=g).float()
    elif kind == "nan":  # NaNs and infinities sprinkled in
        x = torch.randn(shape, generator=g)
        r = torch.rand(shape, generator=g)
        x[r < 0.05] = float("nan")
        x[(r >= 0.05) & (r < 0.08)] = float("-inf")
        x[(r >= 0.08) & (r < 0.10)] = float("inf")
    elif kind == "neginf":  # mostly -inf: whole windows of -inf, whose gradient goes to the first tap inside
        x = torch.randn(shape, generator=g)
        x[torch.rand(shape, generator=g) >= 0.1] = float("-inf")
    else:
        x = torch.randn(shape, generator=g)
    return x.to(device=device, dtype=dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=ids)
@pytest.mark.parametrize("kind", ["randn", "ties", "nan", "neginf"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_backward_identical_to_torch(device, case, kind, dtype):
    x = make_x(case[0], device, dtype, kind)
    ref_x = x.clone().requires_grad_()
    ref = torch_pool(ref_x, case)
    g = make_x(ref.shape, device, dtype, seed=1)
    ref.backward(g)
    for name, xl in layouts(x):
        xl = xl.detach().requires_grad_()
        poison(device)
        y = ours(xl, case)
        assert y.shape == ref.shape, name
        torch.testing.assert_close(y, ref, rtol=0, atol=0, equal_nan=True, msg=name)
        y.backward(g)
        torch.testing.assert_close(xl.grad, ref_x.grad, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(4, 8, 27, 27), (3, 17, 15, 15)], ids=["27x27", "15x15"])
def test_half_precision(device, dtype, shape):
    # Max is exact in any precision; the gradient sums (overlapping windows) are accumulated in
    # fp32 and rounded once, so they match an fp32 reference to the dtype's rounding.
    case = CASES[0]
    x = make_x(shape, device, dtype, "ties")
    x32 = x.float().requires_grad_()
    ref = torch_pool(x32, case)
    g = make_x(ref.shape, device, dtype, seed=1)
    ref.backward(g.float())
    for name, xl in layouts(x):
        xl = xl.detach().requires_grad_()
        y = ours(xl, case)
        assert y.dtype == dtype
        torch.testing.assert_close(y.float(), ref, rtol=0, atol=0, msg=name)
        y.backward(g)
        assert rel_err(xl.grad, x32.grad) < {torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype], name


@pytest.mark.parametrize("device", DEVICES)
def test_large_window_recomputes(device):
    # 17 x 17 = 289 taps: no one-byte index, backward recomputes the winners from x.
    case = ((2, 3, 20, 21), 17, 2, 8, 1, False)
    x = make_x(case[0], device, kind="ties")
    ref_x = x.clone().requires_grad_()
    ref = torch_pool(ref_x, case)
    ref.sum().backward()
    xl = x.clone().requires_grad_()
    y = ours(xl, case)
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    y.sum().backward()
    torch.testing.assert_close(xl.grad, ref_x.grad, rtol=0, atol=0)


@pytest.mark.parametrize("case", CASES[:6], ids=ids)
def test_gradcheck_cpu(case):
    x = make_x(case[0], "cpu", torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: ours(t, case), (x,))


def test_what_autograd_saves():
    # One byte per output, nothing of the input's size (torch saves x and an int64 index).
    x = make_x((2, 4, 27, 27), "cpu").requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = ak.max_pool2d(x)
    assert [(t.dtype, tuple(t.shape)) for t in saved] == [(torch.uint8, tuple(y.shape))]
    with torch.no_grad():
        y2, index = torch.ops.alexnet_kernels.max_pool2d(x, [3, 3], [2, 2], [0, 0], [1, 1], False, False)
    assert index.numel() == 0


@pytest.mark.parametrize("device", DEVICES)
def test_layouts_batches_and_unbatched(device):
    x = make_x((2, 6, 11, 11), device)
    assert ak.max_pool2d(x).is_contiguous()
    y = ak.max_pool2d(x.contiguous(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    for shape in [(0, 3, 9, 9), (1, 3, 9, 9), (3, 9, 9)]:
        xs = make_x(shape, device).requires_grad_()
        y = ak.max_pool2d(xs)
        ref = F.max_pool2d(xs.detach(), 3, 2)
        assert y.shape == ref.shape
        torch.testing.assert_close(y, ref, rtol=0, atol=0)
        y.sum().backward()
        assert xs.grad.shape == xs.shape


def test_modules():
    x = make_x((2, 3, 15, 15), "cpu")
    m = ak.nn.MaxPool2d(3, 2, ceil_mode=True)
    torch.testing.assert_close(m(x), torch.nn.MaxPool2d(3, 2, ceil_mode=True)(x), rtol=0, atol=0)
    torch.testing.assert_close(ak.nn.MaxPool2d(2)(x), torch.nn.MaxPool2d(2)(x), rtol=0, atol=0)
    assert "kernel_size=3" in repr(m)
    with pytest.raises(ValueError, match="return_indices"):
        ak.nn.MaxPool2d(3, return_indices=True)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(kernel_size=0), ValueError, "kernel_size must be positive"),
    (dict(kernel_size=(3, -1)), ValueError, "kernel_size must be positive"),
    (dict(kernel_size=3, stride=0), ValueError, "stride must be positive"),
    (dict(kernel_size=3, dilation=0), ValueError, "dilation must be positive"),
    (dict(kernel_size=3, padding=2), ValueError, "padding must be non-negative and at most half"),
    (dict(kernel_size=3, padding=-1), ValueError, "padding must be non-negative and at most half"),
    (dict(kernel_size=2.5), TypeError, "kernel_size must be an int or a pair"),
    (dict(kernel_size=(3, 3, 3)), TypeError, "kernel_size must be an int or a pair"),
    (dict(kernel_size=3, stride="2"), TypeError, "stride must be an int or a pair"),
    (dict(kernel_size=3, ceil_mode=1), TypeError, "ceil_mode must be a bool"),
])
def test_module_rejects_bad_arguments_at_construction(kwargs, error, message):
    with pytest.raises(error, match="MaxPool2d: " + message):
        ak.nn.MaxPool2d(**kwargs)


@requires_cuda
def test_mixed_devices_cuda():
    """The backward's index on another device than its gradient is named (the CUDA kernel guards
    the device of its first CUDA tensor, so a CPU one reaches the op's own check)."""
    x = torch.randn(2, 3, 13, 13, device="cuda")
    _, index = torch.ops.alexnet_kernels.max_pool2d(x, [3, 3], [2, 2], [0, 0], [1, 1], False, True)
    grad = torch.randn(2, 3, 6, 6, device="cuda")
    params = ([2, 3, 13, 13], [3, 3], [2, 2], [0, 0], [1, 1], False, False)
    with pytest.raises(RuntimeError, match="index is on cpu"):
        torch.ops.alexnet_kernels.max_pool2d_backward(grad, index.cpu(), None, *params)
    with pytest.raises(RuntimeError, match="index is on cuda:0"):
        torch.ops.alexnet_kernels.max_pool2d_backward(grad.cpu(), index, None, *params)


def test_bad_input():
    x = torch.randn(2, 3, 9, 9)
    with pytest.raises(ValueError, match="x must be 4-D"):
        ak.max_pool2d(torch.randn(9, 9))
    with pytest.raises(ValueError, match="kernel_size must be positive"):
        ak.max_pool2d(x, 0)
    with pytest.raises(ValueError, match="stride must be positive"):
        ak.max_pool2d(x, 3, -1)
    with pytest.raises(ValueError, match="dilation must be positive"):
        ak.max_pool2d(x, 3, 2, 0, 0)
    with pytest.raises(ValueError, match="padding must be non-negative and at most half of kernel_size"):
        ak.max_pool2d(x, 3, 2, 2)
    with pytest.raises(ValueError, match="larger than the padded input"):
        ak.max_pool2d(x, 11, 2)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        ak.max_pool2d(torch.ones(2, 3, 9, 9, dtype=torch.int64))
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair"):
        ak.max_pool2d(x, (3, 3, 3))
    with pytest.raises(ValueError, match="non-zero C, H and W"):
        ak.max_pool2d(torch.randn(2, 0, 9, 9))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x = make_x((2, 3, 11, 10), device)
    for _, xl in layouts(x):
        for with_index in (True, False):
            args = (xl.detach().requires_grad_(), [3, 3], [2, 2], [1, 1], [1, 1], True, with_index)
            torch.library.opcheck(torch.ops.alexnet_kernels.max_pool2d.default, args)
    y, index = torch.ops.alexnet_kernels.max_pool2d(x, [3, 3], [2, 2], [0, 0], [1, 1], False, True)
    g = make_x(y.shape, device, seed=1)
    torch.library.opcheck(torch.ops.alexnet_kernels.max_pool2d_backward.default,
                          (g, index, None, list(x.shape), [3, 3], [2, 2], [0, 0], [1, 1], False, False))
    torch.library.opcheck(torch.ops.alexnet_kernels.max_pool2d_backward.default,
                          (g, None, x, list(x.shape), [3, 3], [2, 2], [0, 0], [1, 1], False, False))


@pytest.mark.large
@pytest.mark.parametrize("device", DEVICES)
def test_more_than_2_31_elements(device):
    # [2, 1, 32769, 32769] bfloat16 = 2^31 + 2^17 + 2 elements: 64-bit flat index and offsets.
    n, h = 2, 32769
    if device == "cpu" and not have_memory(12 << 30):
        pytest.skip("needs 12 GiB of free memory")
    if device == "cuda" and torch.cuda.mem_get_info()[0] < (12 << 30):
        pytest.skip("needs 12 GiB of free GPU memory")
    x = torch.empty((n, 1, h, h), dtype=torch.bfloat16, device=device).uniform_(-4, 4).requires_grad_()
    y = ak.max_pool2d(x)
    # The far corner: its windows read the highest offsets.
    corner = x[1:, :, -101:, -101:].detach().float()
    torch.testing.assert_close(y[1:, :, -50:, -50:].float(), F.max_pool2d(corner, 3, 2), rtol=0, atol=0)
    y.backward(torch.ones_like(y))
    cr = corner.clone().requires_grad_()
    F.max_pool2d(cr, 3, 2).backward(torch.ones(1, 1, 50, 50, device=device))
    # Row/column -101 also gets gradient from windows that start outside the corner: skip it.
    torch.testing.assert_close(x.grad[1:, :, -100:, -100:].float(), cr.grad[..., 1:, 1:], rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["randn", "ties", "nan", "neginf"])
def test_small_planes_with_gaps_between_rows_and_planes(kind):
    """The CPU's small-plane 3x3/2 path reads planes and rows through their strides: a slice of
    every other channel, rows padded to 19 columns, both."""
    case = ((3, 34, 15, 15), 3, 2, 0, 1, False)
    base = make_x((3, 34, 15, 19), "cpu", kind=kind)
    for name, x in (("every other channel", base[:, ::2, :, :15].contiguous()),
                    ("padded rows", base[:, :17, :, :15]),
                    ("both", base[:, ::2, :, :15])):
        assert x.stride(-1) == 1
        ref_x = x.detach().clone().requires_grad_()
        ref = torch_pool(ref_x, case)
        g = make_x(ref.shape, "cpu", seed=1)
        ref.backward(g)
        xl = x.detach().requires_grad_()
        y = ours(xl, case)
        torch.testing.assert_close(y, ref, rtol=0, atol=0, equal_nan=True, msg=name)
        y.backward(g)
        torch.testing.assert_close(xl.grad, ref_x.grad, rtol=0, atol=0, msg=name)
