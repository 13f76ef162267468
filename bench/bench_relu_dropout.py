"""ReLU + dropout: alexnet_kernels' fused relu_dropout beside F.dropout(F.relu(x)).

    pytest bench/bench_relu_dropout.py --benchmark     # full sizes: on the GPU, or the CPU table
    pytest bench/bench_relu_dropout.py                 # smoke: tiny shapes

GPU (``--benchmark`` on a CUDA machine): shapes [128, 4096] (fc6/fc7 activations) and
[128, 290400] (= 96*55*55, conv1's output flattened), fp32 and bf16, forward and
forward+backward, p = 0.5, ours (the Triton kernel) beside eager ``F.dropout(F.relu(x))`` and
its ``torch.compile``. Each time is timing.median_ms: the median of CUDA-event timings after
warm-up, with L2 flushed before every call. Rows: the times, the speedup over eager and over
compiled, the percent of the memory floor (forward 2 * N * itemsize bytes: read x, write y;
forward+backward 5 * N * itemsize: + read g and y, write dx; over the copy bandwidth measured in
the same run), and the peak extra memory of one call (output, saved tensors and dx; inputs
excluded).

CPU (no CUDA device): shapes [128, 4096] and [cpu_batch, 290400], fp32, forward and
forward+backward, ours (the C++ kernel) beside eager ``F.dropout(F.relu(x))`` in the same
process, the two calls interleaved so that both see the same load on a shared machine; median
and best of the repeats, wall clock, at torch's intra-op thread count (a column of the table).

Nothing here asserts speed; every timed pair is first checked to do the same work.
"""
import importlib
import statistics
import time

import pytest
import torch
import torch.nn.functional as F
from timing import floor_ms, median_ms, peak_extra_mib, step

rdm = importlib.import_module("alexnet_kernels.relu_dropout")

P = 0.5
GPU_SHAPES = [(128, 4096), (128, 290400)]
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


def check_same_work(x, g, backward):
    """Ours and eager agree on what they can: 0 wherever x <= 0, and (p = 0.5) 2 * x (forward)
    or 2 * g (input gradient) or 0 elsewhere."""
    for op in (ours, eager):
        out = step(op, x, g, backward)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert bool((out[x.detach() <= 0] == 0).all())
        twice = 2 * (g if backward else x.detach())
        live = out != 0
        assert torch.equal(out[live], twice[live])
        if x.numel() >= 1000:  # about half of the positive elements survive
            assert 0.4 < live.sum().item() / (x > 0).sum().item() < 0.6


def interleaved_ms(fns: dict, repeats: int, warmup: int = 3):
    """Wall time of each of fns in ms, calls alternating between them: (medians, bests)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return ({name: statistics.median(t) for name, t in times.items()},
            {name: min(t) for name, t in times.items()})


def test_relu_dropout_smoke(device):
    """Forward and forward+backward run at tiny shapes and do the same work as eager."""
    for shape in SMOKE_SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            for backward in (False, True):
                x, g = inputs(shape, dtype, device, backward)
                check_same_work(x, g, backward)


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("shape_i", [0, 1])
def test_relu_dropout_cpu(full, device, cpu_batch, report, shape_i, backward):
    if device != "cpu":
        pytest.skip("the CPU table is measured on a machine without a GPU (the GPU rows run here)")
    shape = [(128, 4096), (cpu_batch, 290400)][shape_i] if full else SMOKE_SHAPES[shape_i]
    x, g = inputs(shape, torch.float32, "cpu", backward)
    check_same_work(x, g, backward)
    medians, bests = interleaved_ms({"ours": lambda: step(ours, x, g, backward),
                                     "torch": lambda: step(eager, x, g, backward)},
                                    repeats=15 if full else 3)
    report(f"relu_dropout (p={P}) vs F.dropout(F.relu(x)), CPU, fp32", {
        "shape": "x".join(map(str, shape)), "pass": "fwd+bwd" if backward else "fwd",
        "threads": torch.get_num_threads(),
        "ours ms": medians["ours"], "torch ms": medians["torch"],
        "torch / ours": medians["torch"] / medians["ours"],
        "ours best ms": bests["ours"], "torch best ms": bests["torch"],
        "torch / ours (best)": bests["torch"] / bests["ours"],
    })


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape_i", [0, 1])
def test_relu_dropout(full, device, report, shape_i, dtype, backward):
    if device != "cuda":
        pytest.skip("GPU rows: CUDA-event timing needs a CUDA device (test_relu_dropout_cpu is the CPU table)")
    shape = (GPU_SHAPES if full else SMOKE_SHAPES)[shape_i]
    x, g = inputs(shape, dtype, "cuda", backward)
    check_same_work(x, g, backward)
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
