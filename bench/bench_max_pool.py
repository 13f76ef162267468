"""Max pool 3x3/2: alexnet_kernels.max_pool2d beside torch's max_pool2d (eager and torch.compile).

Floor: forward reads x and writes y (N + N/4 elements for 3x3/2, plus N/4 index bytes when
training); forward + backward adds reading g and the index and writing dx. Targets on the H100 at
[128, 96, 55, 55] fp32 (issue 2): forward >= 1.5x torch, forward + backward >= 2x torch.
"""
import pytest
import torch
import torch.nn.functional as F

import alexnet_kernels as ak
from timing import floor_ms, median_ms, peak_extra_mib, step

FULL_SHAPES = [(128, 96, 55, 55), (128, 256, 27, 27)]
SMOKE_SHAPES = [(2, 8, 13, 13)]


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
def test_max_pool(full, report, shape_i, dtype, backward):
    shapes = FULL_SHAPES if full else SMOKE_SHAPES
    if shape_i >= len(shapes):
        pytest.skip("smoke run: one shape")
    shape = shapes[shape_i]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(shape, device=device, dtype=dtype).requires_grad_(backward)
    with torch.no_grad():
        y = torch_pool(x)
    g = torch.randn(y.shape, device=device, dtype=dtype)
    torch.testing.assert_close(step(ours, x, g, backward), step(torch_pool, x, g, backward), rtol=1e-2, atol=1e-2)
    row = {"shape": "x".join(map(str, shape)), "dtype": str(dtype).replace("torch.", ""),
           "pass": "fwd+bwd" if backward else "fwd"}
    t_ours = median_ms(lambda: step(ours, x, g, backward))
    t_torch = median_ms(lambda: step(torch_pool, x, g, backward))
    row.update({"ours ms": t_ours, "torch ms": t_torch, "speedup": t_torch / t_ours})
    if full:
        compiled = torch.compile(torch_pool)
        t_comp = median_ms(lambda: step(compiled, x, g, backward))
        nbytes = floor_bytes(x, y, backward)
        row.update({
            "compile ms": t_comp, "vs compile": t_comp / t_ours,
            "floor ms": floor_ms(nbytes), "% of floor": 100 * floor_ms(nbytes) / t_ours,
            "ours extra MiB": peak_extra_mib(lambda: step(ours, x, g, backward)),
            "torch extra MiB": peak_extra_mib(lambda: step(torch_pool, x, g, backward)),
        })
    report("max_pool2d 3x3/2", row)
