"""ReLU + dropout: alexnet_kernels' fused relu_dropout beside F.dropout(F.relu(x)) (eager and
torch.compile).

    pytest bench/bench_relu_dropout.py --benchmark     # full AlexNet sizes, needs CUDA
    pytest bench/bench_relu_dropout.py                 # smoke: tiny shapes (CPU: Triton interpreter)

With ``--benchmark`` on a CUDA machine: shapes [128, 4096] (fc6/fc7 activations) and
[128, 290400] (= 96*55*55, conv1's output flattened), fp32 and bf16, forward and forward+backward,
p = 0.5, for

* ours:      ``relu_dropout(x, p, True)``
* eager:     ``F.dropout(F.relu(x), p, True)``
* compiled:  ``torch.compile`` of that expression (default Inductor backend; full run only)

Each time is timing.median_ms: the median of CUDA-event timings after warm-up, with L2 flushed
before every call, so that the 2 MiB [128, 4096] tensors are not served from L2.  Rows go through bench/conftest.py's ``report``
fixture (one table at the end of the session) with: the times, the speedup over eager and over
compiled, the percent of the memory floor, and the peak extra memory:

* floor = bytes the fused op must move / the copy bandwidth measured in the same run: forward
  2 * N * itemsize (read x, write y), forward+backward 5 * N * itemsize (+ read g and y, write dx).
  "% floor" = floor time / our time.
* peak extra = ``torch.cuda.max_memory_allocated()`` during one call minus what was allocated
  before it: inputs excluded; the output, what autograd saves (fwd+bwd) and dx included.

Without ``--benchmark`` on a GPU the timing test runs the smoke shapes (no torch.compile);
without CUDA it is skipped and ``test_relu_dropout_smoke`` only checks that forward and backward
run at tiny shapes (on CPU that is the Triton interpreter).  Nothing here asserts speed.
"""
import importlib

import pytest
import torch
import torch.nn.functional as F

from timing import floor_ms, median_ms, peak_extra_mib, step

rdm = importlib.import_module("alexnet_kernels.relu_dropout")

HAS_CUDA = torch.cuda.is_available()
P = 0.5
FULL_SHAPES = [(128, 4096), (128, 290400)]
SMOKE_SHAPES = [(4, 64), (2, 3, 5, 7)]


def ours(x):
    return rdm.relu_dropout(x, P, True)


def eager(x):
    return F.dropout(F.relu(x), P, True)


def inputs(shape, dtype, device, backward):
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(shape, generator=gen).to(device=device, dtype=dtype).requires_grad_(backward)
    g = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    return x, g


def test_relu_dropout_smoke():
    """Forward and forward+backward run at tiny shapes, ours and eager agree on what they can."""
    device = "cuda" if HAS_CUDA else "cpu"
    for shape in SMOKE_SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            for backward in (False, True):
                x, g = inputs(shape, dtype, device, backward)
                out = step(ours, x, g, backward)
                ref = step(eager, x, g, backward)
                assert out.shape == ref.shape == x.shape and out.dtype == ref.dtype == dtype
                # both are 0 wherever x <= 0, and (p = 0.5) 2 * x or 2 * g or 0 elsewhere
                assert bool((out[x.detach() <= 0] == 0).all())
                twice = 2 * (g if backward else x.detach())
                live = out != 0
                assert torch.equal(out[live], twice[live])


@pytest.mark.skipif(not HAS_CUDA, reason="timing uses CUDA events and needs a CUDA device "
                    "(test_relu_dropout_smoke covers the CPU / Triton-interpreter path)")
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape_i", [0, 1])
def test_relu_dropout(full, report, shape_i, dtype, backward):
    shapes = FULL_SHAPES if full else SMOKE_SHAPES
    shape = shapes[shape_i]
    x, g = inputs(shape, dtype, "cuda", backward)
    row = {"shape": "x".join(map(str, shape)), "dtype": str(dtype).replace("torch.", ""),
           "pass": "fwd+bwd" if backward else "fwd"}
    impls = {"ours": ours, "eager": eager}
    if full:
        impls["compile"] = torch.compile(eager, dynamic=False)
    times = {name: median_ms(lambda op=op: step(op, x, g, backward)) for name, op in impls.items()}
    for name, t in times.items():
        row[f"{name} ms"] = t
    row["vs eager"] = times["eager"] / times["ours"]
    if "compile" in times:
        row["vs compile"] = times["compile"] / times["ours"]
    floor = floor_ms((5 if backward else 2) * x.numel() * x.element_size())
    row["floor ms"] = floor
    row["% of floor"] = 100 * floor / times["ours"]
    for name, op in impls.items():
        row[f"{name} extra MiB"] = peak_extra_mib(lambda op=op: step(op, x, g, backward))
    row["input MiB"] = x.numel() * x.element_size() / 2**20
    report(f"relu_dropout (p={P}) vs F.dropout(F.relu(x))", row)
    assert all(t > 0 for t in times.values())
