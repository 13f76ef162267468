"""Max pool 3x3/2: alexnet_kernels.max_pool2d beside torch's max_pool2d (eager and torch.compile).

On a GPU (--benchmark: batch 128, fp32 and bf16): ours, torch eager and torch.compile, the
memory floor (forward reads x and writes y, N + N/4 elements for 3x3/2, plus N/4 index bytes
when training; forward + backward also reads g and the index and writes dx) and the extra peak
memory. Targets on the H100 at [128, 96, 55, 55] fp32: forward >= 1.5x torch, forward +
backward >= 2x torch.

On the CPU (--benchmark: batch cpu_batch, fp32): ours beside torch's op, timed in turns in the
same process; the thread count is in the table's header.
"""
import pytest
import torch
import torch.nn.functional as F
from timing import block_shapes, floor_ms, interleaved_ms, median_ms, peak_extra_mib, step

import alexnet_kernels as ak

SMOKE_SHAPES = [(2, 8, 13, 13)]
# The default CPU run's three pools (torchvision's net at 64x64, batch 128): planes of 15x15,
# 7x7 and 3x3, whose output rows are shorter than a vector.
DEFAULT_RUN_SHAPES = [(128, 64, 15, 15), (128, 192, 7, 7), (128, 256, 3, 3)]


def torch_pool(x):
    return F.max_pool2d(x, 3, 2)


def ours(x):
    return ak.max_pool2d(x, 3, 2)


def floor_bytes(x, y, backward):
    es = x.element_size()
    if not backward:
        return (x.numel() + y.numel()) * es
    # fwd: read x, write y and the index; bwd: read g and the index, write dx.
    return (x.numel() + y.numel()) * es + y.numel() + (y.numel() * es + y.numel() + x.numel() * es)


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape_i", [0, 1])
def test_max_pool(full, device, cpu_batch, report, shape_i, dtype, backward):
    all_shapes = block_shapes(full, device, cpu_batch, SMOKE_SHAPES)
    if shape_i >= len(all_shapes):
        pytest.skip("smoke run: one shape")
    if full and device == "cpu" and dtype == torch.bfloat16:
        pytest.skip("the CPU table is fp32")
    shape = all_shapes[shape_i]
    x = torch.randn(shape, device=device, dtype=dtype).requires_grad_(backward)
    with torch.no_grad():
        y = torch_pool(x)
    g = torch.randn(y.shape, device=device, dtype=dtype)
    torch.testing.assert_close(step(ours, x, g, backward), step(torch_pool, x, g, backward), rtol=1e-2, atol=1e-2)
    row = {"shape": "x".join(map(str, shape)), "dtype": str(dtype).replace("torch.", ""),
           "pass": "fwd+bwd" if backward else "fwd"}
    if device == "cpu":
        t_ours, t_torch = interleaved_ms([lambda: step(ours, x, g, backward), lambda: step(torch_pool, x, g, backward)])
        row.update({"threads": torch.get_num_threads()})
    else:
        t_ours = median_ms(lambda: step(ours, x, g, backward))
        t_torch = median_ms(lambda: step(torch_pool, x, g, backward))
    row.update({"ours ms": t_ours, "torch ms": t_torch, "speedup": t_torch / t_ours})
    if full and device == "cuda":
        compiled = torch.compile(torch_pool)
        t_comp = median_ms(lambda: step(compiled, x, g, backward))
        nbytes = floor_bytes(x, y, backward)
        row.update({
            "compile ms": t_comp, "vs compile": t_comp / t_ours,
            "floor ms": floor_ms(nbytes), "% of floor": 100 * floor_ms(nbytes) / t_ours,
            "ours extra MiB": peak_extra_mib(lambda: step(ours, x, g, backward)),
            "torch extra MiB": peak_extra_mib(lambda: step(torch_pool, x, g, backward)),
        })
    report("max_pool2d 3x3/2" if device == "cuda" else "max_pool2d 3x3/2 (CPU)", row)


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("shape", DEFAULT_RUN_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_max_pool_default_run_cpu(full, device, report, shape, backward):
    """The default CPU run's pools, fp32, ours beside torch's in turns (smoke: batch 2)."""
    if device != "cpu":
        pytest.skip("the default run on a GPU is the paper's net (test_max_pool's shapes)")
    shape = shape if full else (2, *shape[1:])
    x = torch.randn(shape).requires_grad_(backward)
    g = torch.randn(torch_pool(x.detach()).shape)
    torch.testing.assert_close(step(ours, x, g, backward), step(torch_pool, x, g, backward), rtol=0, atol=0)
    t_ours, t_torch = interleaved_ms([lambda: step(ours, x, g, backward), lambda: step(torch_pool, x, g, backward)])
    report("max_pool2d 3x3/2 (CPU)", {"shape": "x".join(map(str, shape)), "dtype": "float32",
                                      "pass": "fwd+bwd" if backward else "fwd", "threads": torch.get_num_threads(),
                                      "ours ms": t_ours, "torch ms": t_torch, "speedup": t_torch / t_ours})
