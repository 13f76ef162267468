"""Correctness tests for alexnet_kernels.relu_dropout (fused ReLU + dropout, and ReLU).

Device "cpu" runs the C++ kernels, "cuda" the Triton kernels. Three implementations of the
random mask are held to each other bit for bit: the C++ kernel, the Triton kernel (on the GPU,
or on CPU tensors under the Triton interpreter, which the root conftest turns on when no GPU is
visible) and a pure-PyTorch Philox (_relu_dropout_reference), itself checked against Random123's
published known-answer vectors. Tensors passed to the interpreter stay near 1e5 elements.
"""
import importlib
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from helpers import have_memory, poison

rdm = importlib.import_module("alexnet_kernels.relu_dropout")  # the module, whatever __init__ exports
ref = importlib.import_module("alexnet_kernels._relu_dropout_reference")
relu_dropout = rdm.relu_dropout
relu = rdm.relu
ops = torch.ops.alexnet_kernels
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HAS_CUDA = torch.cuda.is_available()
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device visible")),
]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp32", "fp16", "bf16"]
INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16,
            torch.float64: torch.int64}
# Where the Triton kernels run here: the GPU, or the CPU under the interpreter.
TRITON_DEVICE = "cuda" if HAS_CUDA else "cpu"
needs_triton = pytest.mark.skipif(
    not HAS_CUDA and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"),
    reason="the Triton kernels need a GPU or TRITON_INTERPRET=1 (the root conftest sets it without a GPU)")


@pytest.fixture(scope="module")
def triton_launch():
    """The Triton launchers (imports triton)."""
    return importlib.import_module("alexnet_kernels._relu_dropout_launch")


def bits(t):
    return t.contiguous().view(INT_VIEW[t.dtype])


def assert_bitwise_equal(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype
    a, b = a.cpu(), b.cpu()
    eq = bits(a) == bits(b)
    assert bool(eq.all()), f"{int((~eq).sum())} of {a.numel()} elements differ"


def randn_nonzero(*shape, dtype=torch.float32, device="cpu", gen=None):
    """Random input with no exact zeros (so x > 0 / x < 0 are unambiguous)."""
    x = torch.randn(shape, generator=gen, device="cpu", dtype=torch.float32)
    x = torch.where(x == 0, torch.full_like(x, 0.5), x)
    x = x.to(dtype)
    x = torch.where(x == 0, torch.full_like(x, 0.5), x)
    return x.to(device)


def cpu_gen(seed):
    return torch.Generator(device="cpu").manual_seed(seed)


def dev_gen(device, seed):
    return torch.Generator(device=device).manual_seed(seed)


def expected_forward(x, keep, p):
    """relu(x) * keep / (1-p): one fp32 multiply by fp32(1/(1-p)), rounded once to x.dtype."""
    scale = torch.tensor(1.0 / (1.0 - p), dtype=torch.float32, device=x.device)
    kept = (x.float() * scale).to(x.dtype)
    return torch.where(keep & (x > 0), kept, torch.zeros((), dtype=x.dtype, device=x.device))


def expected_backward(g, x, keep, p):
    scale = torch.tensor(1.0 / (1.0 - p), dtype=torch.float32, device=g.device)
    scaled = (g.float() * scale).to(g.dtype)
    return torch.where(keep & (x > 0), scaled, torch.zeros((), dtype=g.dtype, device=g.device))


def rng_states(device):
    """The default generators' states a relu_dropout on ``device`` could touch: the CPU's (where
    the seed is drawn) and the device's own."""
    return [torch.get_rng_state()] + ([torch.cuda.get_rng_state()] if device == "cuda" else [])


def same_states(a, b):
    return all(torch.equal(s, t) for s, t in zip(a, b))


def replay_seed(x, gen):
    """The [key, counter base] that relu_dropout(x, generator=gen) is about to draw."""
    clone = torch.Generator(device=gen.device)
    clone.set_state(gen.get_state())
    return rdm._draw_seed(clone)


SEED = torch.tensor([0x1234_5678_9ABC_DEF, 0x3_0000_0001_2345], dtype=torch.int64)


# ------------------------------------------------------------------------------------------------
# the Philox stream: known answers, and the three implementations against each other
# ------------------------------------------------------------------------------------------------


def test_reference_philox_known_answers():
    """The PyTorch oracle reproduces Random123's known-answer vectors for Philox-4x32-10
    (kat_vectors: counter words c0..c3, key words k0 k1 -> outputs)."""
    m = 0xFFFFFFFF
    cases = [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((m, m, m, m), (m, m), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ]

    def i64(lo, hi):  # two uint32 words as the int64 holding them
        v = lo | hi << 32
        return torch.tensor(v - 2**64 if v >= 2**63 else v)

    for c, k, expected in cases:
        out = ref.philox4x32_10(i64(*k), i64(c[0], c[1]), torch.tensor(c[2]), torch.tensor(c[3]))
        assert [int(v) for v in out] == list(expected)


@pytest.mark.parametrize("impl", ["cpp", pytest.param("triton", marks=needs_triton)])
def test_known_answer_mask(impl, request):
    """Key 0, counter 0: outputs 0x6627e8d5 0xe169c58d 0xbc57ac4c 0x9b00dbd8 decide elements 0..3.
    p = 0.625 drops r < 0xa0000000: elements 0 and 3; p = 0.75 (< 0xc0000000) all but element 1."""
    x = torch.ones(4)
    seed = torch.zeros(2, dtype=torch.int64)
    for p, expected in [(0.625, [0, 1, 1, 0]), (0.75, [0, 1, 0, 0]), (0.5, [0, 1, 1, 1])]:
        if impl == "cpp":
            y = ops.relu_dropout_fwd(x, seed, p)
        else:
            y = request.getfixturevalue("triton_launch").relu_dropout_fwd(x.to(TRITON_DEVICE), 0, 0, p).cpu()
        scale = torch.tensor(1 / (1 - p), dtype=torch.float32)
        assert torch.equal(y, torch.tensor(expected, dtype=torch.float32) * scale), p


ODD_SHAPES = [(), (1,), (3,), (5,), (7, 9), (4097,), (3, 33337)]


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("p", [0.5, 0.3, 0.9])
def test_cpp_equals_triton_bitwise(triton_launch, dtype, p):
    """The C++ forward draws the Triton kernel's mask, element for element, at odd sizes (not
    multiples of 4, of the C++ block or of the Triton tile; the largest spans several threads'
    spans and interpreter programs), and both equal the PyTorch Philox."""
    key, base = SEED.tolist()
    for shape in ODD_SHAPES:
        x = randn_nonzero(*shape, dtype=dtype, gen=cpu_gen(sum(shape) + 1))
        poison("cpu")
        y_cpp = ops.relu_dropout_fwd(x, SEED, p)
        y_triton = triton_launch.relu_dropout_fwd(x.to(TRITON_DEVICE), key, base, p)
        assert_bitwise_equal(y_cpp, y_triton)
        assert_bitwise_equal(y_cpp, ref.relu_dropout(x, SEED, p))
        # backward: grad * scale where y > 0, and ReLU's
        g = randn_nonzero(*shape, dtype=dtype, gen=cpu_gen(sum(shape) + 2))
        assert_bitwise_equal(ops.relu_dropout_bwd(g, y_cpp, p),
                             triton_launch.relu_bwd(g.to(TRITON_DEVICE), y_triton, 1 / (1 - p)))
        r = ops.relu_fwd(x)
        assert_bitwise_equal(r, triton_launch.relu_fwd(x.to(TRITON_DEVICE)))
        assert_bitwise_equal(ops.relu_bwd(g, r), triton_launch.relu_bwd(g.to(TRITON_DEVICE), r.to(TRITON_DEVICE), 1.0))


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("layout", ["transposed", "sliced", "channels_last"])
def test_cpp_equals_triton_non_contiguous(triton_launch, dtype, layout):
    if layout == "channels_last":
        x = randn_nonzero(3, 5, 9, 11, dtype=dtype, gen=cpu_gen(40)).to(memory_format=torch.channels_last)
    else:
        base = randn_nonzero(97, 131, dtype=dtype, gen=cpu_gen(41))
        x = base.t() if layout == "transposed" else base[3:90:2, 1::3]
    assert not x.is_contiguous()
    key, base_ctr = SEED.tolist()
    y_cpp = ops.relu_dropout_fwd(x, SEED, 0.4)
    assert y_cpp.is_contiguous()
    assert_bitwise_equal(y_cpp, triton_launch.relu_dropout_fwd(x.to(TRITON_DEVICE), key, base_ctr, 0.4))
    assert_bitwise_equal(y_cpp, ops.relu_dropout_fwd(x.contiguous(), SEED, 0.4))  # row-major index


@needs_triton
def test_cuda_implementations_run_the_triton_kernels(triton_launch):
    """The functions registered as the ops' CUDA kernels, run on tensors the Triton kernels take
    here (CUDA, or CPU under the interpreter): the C++ kernels' bits, float64 relu through torch
    ops, float64 relu_dropout refused."""
    impl = importlib.import_module("alexnet_kernels._relu_dropout_ops")
    for name in ("relu_dropout_fwd", "relu_dropout_bwd", "relu_fwd", "relu_bwd"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"alexnet_kernels::{name}", "CUDA"), name
    x = randn_nonzero(37, 41, gen=cpu_gen(50))
    g = randn_nonzero(37, 41, gen=cpu_gen(51))
    xd, gd = x.to(TRITON_DEVICE), g.to(TRITON_DEVICE)
    y = impl._relu_dropout_fwd_cuda(xd, SEED, 0.3)
    assert_bitwise_equal(y, ops.relu_dropout_fwd(x, SEED, 0.3))
    assert_bitwise_equal(impl._relu_dropout_bwd_cuda(gd, y, 0.3), ops.relu_dropout_bwd(g, y.cpu(), 0.3))
    r = impl._relu_fwd_cuda(xd)
    assert_bitwise_equal(r, torch.relu(x))
    assert_bitwise_equal(impl._relu_bwd_cuda(gd, r), ops.relu_bwd(g, r.cpu()))
    assert_bitwise_equal(impl._relu_fwd_cuda(xd.double()), torch.relu(x.double()))
    assert_bitwise_equal(impl._relu_bwd_cuda(gd.double(), r.double()), torch.where(x > 0, g, 0.0).double())
    with pytest.raises(TypeError, match=F64_MESSAGE):
        impl._relu_dropout_fwd_cuda(xd.double(), SEED, 0.3)
    with pytest.raises(TypeError, match=F64_MESSAGE):
        impl._relu_dropout_bwd_cuda(gd.double(), r.double(), 0.3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("p", [0.5, 0.3])
def test_forward_matches_philox_reference_bitwise(device, dtype, p):
    # 100011 elements: not a multiple of 4, several threads on the CPU, several programs on the GPU
    x = randn_nonzero(3, 33337, dtype=dtype, device=device, gen=cpu_gen(3))
    poison(device)
    y = ops.relu_dropout_fwd(x, SEED, p)
    assert_bitwise_equal(y, ref.relu_dropout(x, SEED, p))
    keep = ref.keep_mask(SEED, x.numel(), p, device).view(x.shape)
    assert_bitwise_equal(y, expected_forward(x, keep, p))


@pytest.mark.skipif(not HAS_CUDA, reason="compares the CPU kernel with the GPU kernel: needs a CUDA device")
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_cpu_and_cuda_drop_the_same_units_cuda(dtype):
    """A CPU run and a GPU run with the same seed give the same bits, through the public function."""
    x = randn_nonzero(257, 4099, dtype=dtype, gen=cpu_gen(42))
    y_cpu = relu_dropout(x, 0.5, generator=cpu_gen(43))
    y_gpu = relu_dropout(x.cuda(), 0.5, generator=cpu_gen(43))
    assert_bitwise_equal(y_cpu, y_gpu)


def test_cpu_result_does_not_depend_on_threads():
    """The CPU kernel splits the work over threads at 4-element groups; any split draws the same."""
    x = randn_nonzero(5, 100003, gen=cpu_gen(44))
    saved = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            outs.append(ops.relu_dropout_fwd(x, SEED, 0.5))
    finally:
        torch.set_num_threads(saved)
    for y in outs[1:]:
        assert_bitwise_equal(y, outs[0])


@pytest.mark.parametrize("device", DEVICES)
def test_64bit_philox_counter(device):
    """The Philox counter is 64-bit: counters crossing 2**32 carry into the high word (checked
    against the reference), and counter c + 2**32 does not repeat counter c's random stream (it
    would if the counter were truncated to 32 bits, i.e. beyond 2**32 groups of elements)."""
    n = 4096
    x = (torch.rand(n, generator=cpu_gen(4)) + 0.5).to(device)
    key = 987654321987654321

    def run(base):
        seed = torch.tensor([key, base], dtype=torch.int64)
        y = ops.relu_dropout_fwd(x, seed, 0.5)
        assert_bitwise_equal(y, ref.relu_dropout(x, seed, 0.5))
        return y != 0

    run(2**32 - 300)  # groups 0..1023 cross the 2**32 boundary
    assert not torch.equal(run(0), run(2**32))
    assert not torch.equal(run(5), run(5 + 2**40))


# ------------------------------------------------------------------------------------------------
# distribution of the mask
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_kept_fraction_within_5_sigma(device, p):
    n = 1 << 20
    x = (torch.rand(n, generator=cpu_gen(1)) + 0.25).to(device)  # all positive
    y = relu_dropout(x, p, generator=dev_gen(device, 2))
    keep = (y != 0).cpu()

    def check(k, count):
        mean, sigma = count * (1 - p), math.sqrt(count * p * (1 - p))
        assert abs(int(k.sum()) - mean) < 5 * sigma, (int(k.sum()), mean, sigma)

    check(keep, n)
    # each of the four Philox outputs (element index mod 4) is unbiased
    for lane in range(4):
        check(keep[lane::4], n // 4)
    # neighbours are independent: P(both kept) == (1-p)^2, within 5 sigma
    both = (keep[:-1] & keep[1:]).double().mean().item()
    q = (1 - p) ** 2
    assert abs(both - q) < 5 * math.sqrt(q * (1 - q) / (n - 1))


# ------------------------------------------------------------------------------------------------
# exact values and gradients
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("p", [0.5, 0.2])
def test_kept_values_and_backward_exact(device, dtype, p):
    gen = dev_gen(device, 5)
    x = randn_nonzero(257, 129, dtype=dtype, device=device, gen=cpu_gen(6)).requires_grad_()
    seed = replay_seed(x, gen)
    keep = ref.keep_mask(seed, x.numel(), p, device).view(x.shape)

    y = relu_dropout(x, p, generator=gen)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert_bitwise_equal(y.detach(), expected_forward(x.detach(), keep, p))
    # kept values are relu(x) / (1-p) in x's dtype to within one rounding (1 ulp)
    expected = torch.where(keep, F.relu(x.detach()) / (1 - p), torch.zeros((), dtype=dtype, device=device))
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(y.detach(), expected, rtol=eps, atol=0)

    g = randn_nonzero(257, 129, dtype=dtype, device=device, gen=cpu_gen(7))
    y.backward(g)
    assert_bitwise_equal(x.grad, expected_backward(g, x.detach(), keep, p))
    # the same as autograd through torch's relu * mask / (1 - p)
    xt = x.detach().float().requires_grad_()
    (F.relu(xt) * keep / (1 - p)).backward(g.float())
    torch.testing.assert_close(x.grad.float(), xt.grad, rtol=eps, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_nan_inf_and_signed_zero(device):
    """A kept NaN stays NaN and a dropped one is 0 (F.dropout would give NaN); +inf kept is +inf;
    -inf and -0.0 give 0 and -0.0 as torch.relu does."""
    n = 4096
    x = torch.full((n,), float("nan"))
    x[1::4], x[2::4], x[3::4] = float("inf"), float("-inf"), -0.0
    x = x.to(device)
    y = ops.relu_dropout_fwd(x, SEED, 0.5).cpu()
    keep = ref.keep_mask(SEED, n, 0.5, "cpu")
    assert torch.isnan(y[0::4][keep[0::4]]).all() and (y[0::4][~keep[0::4]] == 0).all()
    assert (y[1::4][keep[1::4]] == float("inf")).all() and (y[1::4][~keep[1::4]] == 0).all()
    assert (y[2::4] == 0).all()
    assert_bitwise_equal(y[3::4][keep[3::4]], torch.full((int(keep[3::4].sum()),), -0.0))
    assert_bitwise_equal(relu(x).cpu(), torch.relu(x).cpu())


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(device):
    """relu_dropout takes no float64 (the kernels' dtypes), so its gradcheck runs in float32: the
    function is linear on each side of 0 and the inputs stay 0.1 or more away from it, so central
    differences with eps 1e-2 are exact up to fp32 rounding (about 2e-5 relative here)."""
    x = randn_nonzero(7, 9, device=device, gen=cpu_gen(8))
    x = (x.sign() * (x.abs() + 0.1)).requires_grad_()
    seed = torch.tensor([11, 22], dtype=torch.int64)

    def f(t):
        return ops.relu_dropout_fwd(t, seed, 0.4)

    tol = dict(eps=1e-2, atol=1e-3, rtol=1e-3)
    with pytest.warns(UserWarning, match="double precision"):
        assert torch.autograd.gradcheck(f, (x,), **tol)
        assert torch.autograd.gradgradcheck(f, (x,), **tol)
    x64 = randn_nonzero(7, 9, dtype=torch.float64, device=device, gen=cpu_gen(8)).requires_grad_()
    assert torch.autograd.gradcheck(ops.relu_fwd, (x64,))
    assert torch.autograd.gradgradcheck(ops.relu_fwd, (x64,))


@pytest.mark.parametrize("device", DEVICES)
def test_double_backward_fp32(device):
    x = randn_nonzero(1000, device=device, gen=cpu_gen(9)).requires_grad_()
    gen = dev_gen(device, 10)
    y = relu_dropout(x, 0.25, generator=gen)
    g = randn_nonzero(1000, device=device, gen=cpu_gen(11)).requires_grad_()
    (dx,) = torch.autograd.grad(y, x, g, create_graph=True)
    v = randn_nonzero(1000, device=device, gen=cpu_gen(12))
    (dg,) = torch.autograd.grad((dx * v).sum(), g)
    live = y.detach() > 0
    scale = torch.tensor(1 / 0.75, dtype=torch.float32, device=device)
    assert_bitwise_equal(dg, torch.where(live, v * scale, torch.zeros((), device=device)))


# ------------------------------------------------------------------------------------------------
# random state
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_seed_reproducibility_and_fresh_masks(device):
    x = (torch.rand(4099, generator=cpu_gen(13)) + 0.5).to(device)
    torch.manual_seed(1234)
    a1 = relu_dropout(x, 0.5)
    a2 = relu_dropout(x, 0.5)
    torch.manual_seed(1234)
    b1 = relu_dropout(x, 0.5)
    b2 = relu_dropout(x, 0.5)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)  # manual_seed reproduces the run
    assert not torch.equal(a1, a2)  # consecutive calls draw different masks
    torch.manual_seed(4321)
    assert not torch.equal(relu_dropout(x, 0.5), a1)

    # explicit generators: same seed -> same mask, different seed -> different mask, and the
    # default generators are not consumed
    before = rng_states(device)
    c1 = relu_dropout(x, 0.5, generator=dev_gen(device, 7))
    c2 = relu_dropout(x, 0.5, generator=dev_gen(device, 7))
    c3 = relu_dropout(x, 0.5, generator=dev_gen(device, 8))
    assert same_states(before, rng_states(device))
    assert torch.equal(c1, c2) and not torch.equal(c1, c3)
    # a CPU generator may drive a tensor on any device
    d1 = relu_dropout(x, 0.5, generator=cpu_gen(9))
    d2 = relu_dropout(x, 0.5, generator=cpu_gen(9))
    assert torch.equal(d1, d2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_eval_and_p0_are_exactly_relu(device, dtype):
    x = randn_nonzero(300, 301, dtype=dtype, device=device, gen=cpu_gen(14))
    g = randn_nonzero(300, 301, dtype=dtype, device=device, gen=cpu_gen(15))
    ref_x = x.clone().requires_grad_()
    torch.relu(ref_x).backward(g)

    before = rng_states(device)
    for fn in (lambda t: relu_dropout(t, 0.5, training=False),
               lambda t: relu_dropout(t, 0.0, training=True),
               lambda t: relu_dropout(t, 0, True),
               relu):
        xx = x.clone().requires_grad_()
        y = fn(xx)
        assert_bitwise_equal(y.detach(), torch.relu(x))
        y.backward(g)
        assert_bitwise_equal(xx.grad, ref_x.grad)
    assert same_states(before, rng_states(device))  # no random numbers drawn for eval / p = 0


@pytest.mark.parametrize("device", DEVICES)
def test_relu_float64(device):
    """relu (not relu_dropout) takes float64, as torch.relu: forward and backward exact."""
    x = randn_nonzero(33, 65, dtype=torch.float64, device=device, gen=cpu_gen(16)).requires_grad_()
    g = randn_nonzero(33, 65, dtype=torch.float64, device=device, gen=cpu_gen(17))
    y = relu(x)
    y.backward(g)
    assert_bitwise_equal(y.detach(), torch.relu(x.detach()))
    assert_bitwise_equal(x.grad, torch.where(x.detach() > 0, g, 0.0))


# ------------------------------------------------------------------------------------------------
# memory: what autograd saves
# ------------------------------------------------------------------------------------------------


def saved_tensors_of(fn, x):
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fn(x)
    return y, saved


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_autograd_saves_only_the_output(device, dtype):
    x = randn_nonzero(64, 1000, dtype=dtype, device=device, gen=cpu_gen(16)).requires_grad_()
    for fn in (lambda t: relu_dropout(t, 0.5, generator=dev_gen(device, 1)), relu):
        y, saved = saved_tensors_of(fn, x)
        assert len(saved) == 1, [tuple(s.shape) for s in saved]
        (s,) = saved
        # it is y itself: no mask, no copy of x, no seed
        assert s.data_ptr() == y.data_ptr() and s.shape == y.shape and s.dtype == dtype
        nbytes = sum(t.numel() * t.element_size() for t in saved)
        assert nbytes == x.numel() * x.element_size()
    # torch's unfused relu + dropout saves the relu output and a mask on top of that
    _, torch_saved = saved_tensors_of(lambda t: F.dropout(F.relu(t), 0.5, True), x)
    assert sum(t.numel() * t.element_size() for t in torch_saved) > nbytes


# ------------------------------------------------------------------------------------------------
# shapes, layouts, dtypes
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("layout", ["transposed", "sliced", "channels_last"])
def test_non_contiguous_input(device, dtype, layout):
    if layout == "channels_last":
        base = randn_nonzero(4, 6, 9, 11, dtype=dtype, device=device, gen=cpu_gen(17))
        base = base.to(memory_format=torch.channels_last).requires_grad_()
        x = base
    else:
        base = randn_nonzero(97, 130, dtype=dtype, device=device, gen=cpu_gen(18)).requires_grad_()
        x = base.t() if layout == "transposed" else base[3:90:2, 1::3]
    assert not x.is_contiguous()
    p = 0.4
    gen = dev_gen(device, 19)
    seed = replay_seed(x, gen)
    y = relu_dropout(x, p, generator=gen)
    assert y.shape == x.shape and y.is_contiguous()  # output layout: contiguous, x's shape
    # the mask follows the row-major index of x, i.e. same as for x.contiguous()
    assert_bitwise_equal(y.detach(), ops.relu_dropout_fwd(x.detach().contiguous(), seed, p))

    g = randn_nonzero(*x.shape, dtype=dtype, device=device, gen=cpu_gen(20))
    y.backward(g)
    keep = ref.keep_mask(seed, x.numel(), p, device).view(x.shape)
    expected = torch.zeros_like(base)
    expected_view = expected.t() if layout == "transposed" else (
        expected[3:90:2, 1::3] if layout == "sliced" else expected)
    expected_view.copy_(expected_backward(g, x.detach(), keep, p))
    assert_bitwise_equal(base.grad, expected)

    # relu on the same non-contiguous input
    assert_bitwise_equal(relu(x.detach()), torch.relu(x.detach()).contiguous())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0,), (3, 0, 5)])
def test_empty_tensor(device, shape):
    for fn in (lambda t: relu_dropout(t, 0.5), lambda t: relu_dropout(t, 0.5, False), relu):
        x = torch.empty(shape, device=device).requires_grad_()
        y = fn(x)
        assert y.shape == x.shape
        y.sum().backward()
        assert x.grad.shape == x.shape
    for p in (0.5, 0.0):
        out = ops.relu_dropout_fwd(torch.empty(shape, device=device), torch.zeros(2, dtype=torch.int64), p)
        assert out.shape == shape


@pytest.mark.parametrize("device", DEVICES)
def test_scalar_and_odd_sizes(device):
    for shape in [(), (1,), (3,), (5,), (4097,)]:
        x = (torch.rand(shape, generator=cpu_gen(21)) + 0.5).to(device)
        seed = torch.tensor([5, 6], dtype=torch.int64)
        assert_bitwise_equal(ops.relu_dropout_fwd(x, seed, 0.5), ref.relu_dropout(x, seed, 0.5))


# ------------------------------------------------------------------------------------------------
# argument validation
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_p", [-0.1, 1.5, float("nan"), float("inf"), "0.5", None])
def test_invalid_p_raises(bad_p):
    x = torch.randn(8)
    with pytest.raises(ValueError, match="p"):
        relu_dropout(x, bad_p)
    with pytest.raises(ValueError, match="p"):
        relu_dropout(x, bad_p, training=False)


def test_p_equal_one_rejected_clearly():
    with pytest.raises(ValueError, match=r"p=1"):
        relu_dropout(torch.randn(8), 1.0)
    with pytest.raises(ValueError, match=r"p=1"):
        relu_dropout(torch.randn(8), 1)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.uint8])
def test_non_floating_dtype_raises_type_error(dtype):
    x = torch.ones(8, dtype=dtype)
    with pytest.raises(TypeError, match="x"):
        relu_dropout(x, 0.5)
    with pytest.raises(TypeError, match="x"):
        relu(x)
    with pytest.raises(TypeError, match="x must be"):
        ops.relu_fwd(x)


F64_MESSAGE = r"x must be a float32, float16 or bfloat16 tensor, got x.dtype=torch.float64"


@pytest.mark.parametrize("device", DEVICES)
def test_float64_refused_on_every_path(device):
    """relu_dropout takes float32, float16 and bfloat16 only: float64 is a TypeError naming x in
    training, in eval, at p = 0, with a generator, from the op called directly (the C++ or CUDA
    kernel and the fake kernel that tracing runs), before any random number is drawn."""
    x = torch.randn(4, 8, dtype=torch.float64, device=device)
    before = rng_states(device)
    calls = [lambda: relu_dropout(x, 0.5), lambda: relu_dropout(x, 0.5, training=False),
             lambda: relu_dropout(x, 0.0), lambda: relu_dropout(x, 0.5, generator=dev_gen(device, 1)),
             lambda: relu_dropout(torch.empty(0, dtype=torch.float64, device=device), 0.5),
             lambda: ops.relu_dropout_fwd(x, torch.zeros(2, dtype=torch.int64), 0.5),
             lambda: ops.relu_dropout_bwd(x, x, 0.5)]
    for call in calls:
        with pytest.raises(TypeError, match=F64_MESSAGE):
            call()
    assert same_states(before, rng_states(device))
    torch._dynamo.reset()
    compiled = torch.compile(lambda t: relu_dropout(t, 0.5), fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match=F64_MESSAGE):  # dynamo wraps what the fake kernel raises
        compiled(x)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(), pytest.raises(TypeError, match=F64_MESSAGE):
        ops.relu_dropout_fwd(torch.empty(4, dtype=torch.float64, device=device), torch.zeros(2, dtype=torch.int64), 0.5)


def test_op_validates_p_and_seed_when_called_directly():
    x = torch.randn(8)
    good = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match="p"):
        ops.relu_dropout_fwd(x, good, 1.0)
    with pytest.raises(ValueError, match="p"):
        ops.relu_dropout_bwd(x, x, -0.5)
    for bad in (torch.zeros(2, dtype=torch.int32), torch.zeros(3, dtype=torch.int64)):
        with pytest.raises(ValueError, match="seed"):
            ops.relu_dropout_fwd(x, bad, 0.5)
    with pytest.raises(ValueError, match="grad and y"):
        ops.relu_dropout_bwd(x, torch.randn(9), 0.5)
    with pytest.raises(ValueError, match="grad and y"):
        ops.relu_bwd(x, x.half())


@pytest.mark.skipif(not HAS_CUDA, reason="a seed on the GPU needs a CUDA device")
def test_op_rejects_a_cuda_seed_cuda():
    x = torch.randn(8, device="cuda")
    with pytest.raises(ValueError, match="seed must be a CPU int64 tensor"):  # it is read on the host
        ops.relu_dropout_fwd(x, torch.zeros(2, dtype=torch.int64, device="cuda"), 0.5)


# ------------------------------------------------------------------------------------------------
# torch.library / torch.compile / import cost
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x = randn_nonzero(5, 37, device=device, gen=cpu_gen(22))
    g = randn_nonzero(5, 37, device=device, gen=cpu_gen(23))
    seed = torch.tensor([1, 2], dtype=torch.int64)
    y = ops.relu_dropout_fwd(x, seed, 0.5)
    r = ops.relu_fwd(x)
    torch.library.opcheck(ops.relu_dropout_fwd, (x.clone().requires_grad_(), seed, 0.5))
    torch.library.opcheck(ops.relu_dropout_bwd, (g.clone().requires_grad_(), y, 0.5))
    torch.library.opcheck(ops.relu_fwd, (x.clone().requires_grad_(),))
    torch.library.opcheck(ops.relu_bwd, (g.clone().requires_grad_(), r))
    torch.library.opcheck(ops.relu_fwd, (x.double().requires_grad_(),))
    torch.library.opcheck(ops.relu_dropout_fwd, (x.bfloat16().t(), seed, 0.3))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph_forward_backward(device):
    torch._dynamo.reset()

    def f(t):
        return relu_dropout(t, 0.5, True) * 3.0 + relu(t)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    x0 = randn_nonzero(33, 65, device=device, gen=cpu_gen(24))
    g = randn_nonzero(33, 65, device=device, gen=cpu_gen(25))

    x = x0.clone().requires_grad_()
    torch.manual_seed(99)
    y = compiled(x)
    y.backward(g)

    xe = x0.clone().requires_grad_()
    torch.manual_seed(99)
    ye = f(xe)
    ye.backward(g)
    # aot_eager runs the same ops on the same default generator as eager
    assert_bitwise_equal(y.detach(), ye.detach())
    assert_bitwise_equal(x.grad, xe.grad)

    # and the gradient is the documented one: 3 * g * 2 where kept & x > 0, + g where x > 0
    dropped_out = (y.detach() - torch.relu(x0)) / 3.0
    live = dropped_out > 0
    torch.testing.assert_close(x.grad, torch.where(live, g * 6.0, 0.0) + torch.where(x0 > 0, g, 0.0))


def test_import_does_not_import_triton():
    """Importing the package (and so starting train/run.py) and running the ops on the CPU does
    not pay for importing triton: it is imported when a Triton kernel is first needed."""
    code = ("import sys, torch, alexnet_kernels as ak\n"
            "assert 'triton' not in sys.modules, 'import'\n"
            "x = torch.randn(64, 33, requires_grad=True)\n"
            "(ak.relu_dropout(x, 0.5) + ak.relu(x)).sum().backward()\n"
            "assert 'triton' not in sys.modules, 'CPU ops'\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]


# ------------------------------------------------------------------------------------------------
# > 2**31 elements
# ------------------------------------------------------------------------------------------------


@pytest.mark.large
@pytest.mark.parametrize("device", DEVICES)
def test_more_than_2_31_elements(device):
    n = 2**31 + 4101
    if device == "cpu" and not have_memory(12 << 30):
        pytest.skip("needs 12 GiB of free memory")
    if device == "cuda" and torch.cuda.mem_get_info()[0] < (24 << 30):
        pytest.skip("needs 24 GiB of free GPU memory")
    gen = torch.Generator(device=device).manual_seed(26)
    x = torch.empty(n, device=device, dtype=torch.bfloat16).uniform_(-0.5, 1.5, generator=gen)
    seed = replay_seed(x, gen)
    y = relu_dropout(x, 0.5, generator=gen)
    windows = [(start, min(start + 40_000, n)) for start in (2**31 - 20_000, (n - 40_000) // 4 * 4)]
    xs = [x[a:b].clone() for a, b in windows]
    del x
    # backward with g = y: dx = 2 y where y > 0
    dx = ops.relu_dropout_bwd(y, y, 0.5)
    for (a, b), xw in zip(windows, xs):  # a window across the 2**31 element boundary, and the tail
        keep = ref.keep_mask(seed, b - a, 0.5, device, start=a)
        assert_bitwise_equal(y[a:b], expected_forward(xw, keep, 0.5))
        assert_bitwise_equal(dx[a:b], expected_backward(y[a:b], xw, keep, 0.5))
    del y, dx


# ------------------------------------------------------------------------------------------------
# module, GPU compilation, launch count
# ------------------------------------------------------------------------------------------------


def test_module():
    import alexnet_kernels as ak

    m = ak.nn.ReLUDropout(0.5)
    x = torch.randn(64, 256)
    torch.manual_seed(0)
    y = m(x)
    kept = y != 0
    assert torch.equal(y[kept], 2 * x[kept]) and (x[kept] > 0).all()
    # About half of the positive elements survive (p = 0.5; 8k positives: 0.4-0.6 is > 15 sigma).
    assert 0.4 < kept.sum().item() / (x > 0).sum().item() < 0.6
    m.eval()
    assert torch.equal(m(x), torch.relu(x))
    assert "p=0.5" in repr(m)
    # eval and p = 0 are plain ReLU, which takes float64 (a float64 model with dropout off runs);
    # dropping takes the kernels' dtypes only
    x64 = x.double()
    assert torch.equal(m(x64), torch.relu(x64))
    assert torch.equal(ak.nn.ReLUDropout(0.0)(x64), torch.relu(x64))
    with pytest.raises(TypeError, match=F64_MESSAGE):
        m.train()(x64)
    for bad in (1.0, -0.1, "0.5"):
        with pytest.raises(ValueError, match="p"):
            ak.nn.ReLUDropout(bad)


def test_triton_kernels_compile_for_sm90_vectorized():
    """The Triton kernels compile for the H100 (sm_90) on any machine, GPU or not: 128-bit global
    loads and stores only (the seed arrives as kernel arguments, not as a load) and no shared
    memory (the Philox outputs are interleaved in registers)."""
    out = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "triton_aot.py")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert len(report["kernels"]) == 9
    for k in report["kernels"]:
        assert k["shared"] == 0, k
        assert set(k["stores"]) == {"st.global.v4.b32"}, k
        assert set(k["loads"]) == {"ld.global.v4.b32"}, k


@pytest.mark.skipif(not HAS_CUDA, reason="counts CUDA kernel launches: needs a CUDA device")
def test_cuda_one_launch_per_direction():
    """At the fc layers' size, forward is one kernel (no seed kernel before it) and backward one
    kernel, as the CUDA profiler sees them."""
    from torch.profiler import ProfilerActivity, profile

    x = randn_nonzero(128, 4096, device="cuda", gen=cpu_gen(31)).requires_grad_()
    g = randn_nonzero(128, 4096, device="cuda", gen=cpu_gen(32))
    relu_dropout(x, 0.5).backward(g)  # compile the kernels first
    x.grad = None
    torch.cuda.synchronize()
    for direction in ("forward", "backward"):
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            if direction == "forward":
                y = relu_dropout(x, 0.5)
            else:
                y.backward(g)
            torch.cuda.synchronize()
        kernels = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        assert len(kernels) == 1, (direction, kernels)
