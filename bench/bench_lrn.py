"""LRN: alexnet_kernels.lrn beside torch's local_response_norm (eager and torch.compile).

On a GPU (--benchmark: batch 128, fp32 and bf16): ours, torch eager and torch.compile, the
memory floor (forward reads x and writes y, 2 N elements; forward + backward also reads x and g
and writes dx, 5 N in all) and the extra peak memory. Targets on the H100 at [128, 96, 55, 55]
fp32: forward >= 10x torch and within 1.5x of the floor; forward + backward >= 8x torch with
extra peak memory at most 2x the input.

On the CPU (--benchmark: batch cpu_batch, fp32): ours beside torch's op, timed in turns in the
same process; the thread count is in the table's header.
"""
import pytest
import torch
import torch.nn.functional as F
from timing import block_shapes, floor_ms, interleaved_ms, median_ms, peak_extra_mib, step

import alexnet_kernels as ak

SMOKE_SHAPES = [(2, 8, 9, 9)]
ARGS = (5, 1e-4, 0.75, 2.0)  # the paper's constants


def torch_lrn(x):
    return F.local_response_norm(x, *ARGS)


def ours(x):
    return ak.lrn(x, *ARGS)


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape_i", [0, 1])
def test_lrn(full, device, cpu_batch, report, shape_i, dtype, backward):
    all_shapes = block_shapes(full, device, cpu_batch, SMOKE_SHAPES)
    if shape_i >= len(all_shapes):
        pytest.skip("smoke run: one shape")
    if device == "cpu" and dtype == torch.bfloat16:
        pytest.skip("the CPU table is fp32 (torch's CPU local_response_norm has no bfloat16 kernel)")
    shape = all_shapes[shape_i]
    x = torch.randn(shape, device=device, dtype=dtype).requires_grad_(backward)
    g = torch.randn(shape, device=device, dtype=dtype)
    # The same work must give the same answer before its time means anything.
    torch.testing.assert_close(step(ours, x, g, backward).float(), step(torch_lrn, x, g, backward).float(),
                               rtol=2e-2, atol=2e-2)
    row = {"shape": "x".join(map(str, shape)), "dtype": str(dtype).replace("torch.", ""),
           "pass": "fwd+bwd" if backward else "fwd"}
    if device == "cpu":
        t_ours, t_torch = interleaved_ms([lambda: step(ours, x, g, backward), lambda: step(torch_lrn, x, g, backward)])
        row.update({"threads": torch.get_num_threads()})
    else:
        t_ours = median_ms(lambda: step(ours, x, g, backward))
        t_torch = median_ms(lambda: step(torch_lrn, x, g, backward))
    row.update({"ours ms": t_ours, "torch ms": t_torch, "speedup": t_torch / t_ours})
    if full and device == "cuda":
        compiled = torch.compile(torch_lrn)
        t_comp = median_ms(lambda: step(compiled, x, g, backward))
        nbytes = x.numel() * x.element_size() * (5 if backward else 2)
        row.update({
            "compile ms": t_comp, "vs compile": t_comp / t_ours,
            "floor ms": floor_ms(nbytes), "% of floor": 100 * floor_ms(nbytes) / t_ours,
            "ours extra MiB": peak_extra_mib(lambda: step(ours, x, g, backward)),
            "torch extra MiB": peak_extra_mib(lambda: step(torch_lrn, x, g, backward)),
            "input MiB": x.numel() * x.element_size() / 2**20,
        })
    report("lrn" if device == "cuda" else "lrn (CPU)", row)
