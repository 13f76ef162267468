"""LRN + max pool 3x3/2 fused: alexnet_kernels.lrn_max_pool2d beside the two separate ops
(alexnet_kernels.lrn then alexnet_kernels.max_pool2d) and beside torch (local_response_norm then
max_pool2d, eager and torch.compile).

On a GPU (--benchmark: batch 128, fp32 and bf16, the paper's two blocks: conv1's [128, 96, 55, 55]
-> 27x27 and conv2's [128, 256, 27, 27] -> 13x13): all four, the fused op's memory floor (forward
reads x and writes y, N + N/4 elements; forward + backward also writes the one-byte index, then
reads x, g and the index and writes dx) and the extra peak memory.

On the CPU (--benchmark: batch cpu_batch, fp32): the fused op, the two ops and torch, timed in
turns in the same process; the thread count is in the table's header.
"""
import pytest
import torch
import torch.nn.functional as F
from timing import block_shapes, floor_ms, interleaved_ms, median_ms, peak_extra_mib, step

import alexnet_kernels as ak

SMOKE_SHAPES = [(2, 8, 13, 13)]
ARGS = (5, 1e-4, 0.75, 2.0)  # the paper's constants


def fused(x):
    return ak.lrn_max_pool2d(x, *ARGS)


def separate(x):
    return ak.max_pool2d(ak.lrn(x, *ARGS), 3, 2)


def torch_block(x):
    return F.max_pool2d(F.local_response_norm(x, *ARGS), 3, 2)


def floor_bytes(x, y, backward):
    es = x.element_size()
    if not backward:  # read x, write y
        return (x.numel() + y.numel()) * es
    # forward: read x, write y and the index; backward: read x, g and the index, write dx.
    return (x.numel() + y.numel()) * es + y.numel() + (x.numel() * es + y.numel() * (es + 1) + x.numel() * es)


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape_i", [0, 1])
def test_lrn_max_pool(full, device, cpu_batch, report, shape_i, dtype, backward):
    all_shapes = block_shapes(full, device, cpu_batch, SMOKE_SHAPES)
    if shape_i >= len(all_shapes):
        pytest.skip("smoke run: one shape")
    if device == "cpu" and dtype == torch.bfloat16:
        pytest.skip("the CPU table is fp32 (torch's CPU local_response_norm has no bfloat16 kernel)")
    shape = all_shapes[shape_i]
    x = torch.randn(shape, device=device, dtype=dtype).requires_grad_(backward)
    with torch.no_grad():
        y = torch_block(x)
    g = torch.randn(y.shape, device=device, dtype=dtype)
    # The same work must give the same answer before its time means anything: the fused op is the
    # two ops' result (tests/test_lrn_max_pool.py holds it to bit for bit), and close to torch's.
    out = step(fused, x, g, backward)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(out.float(), step(separate, x, g, backward).float(), rtol=tol, atol=tol)
    # Against torch by relative norm error: a window whose two largest LRN outputs lie within
    # rounding of each other may select the other one in torch's LRN (a few windows in a million
    # in fp32), which moves one input gradient element; the norm error stays about 1e-3.
    ref = step(torch_block, x, g, backward).float()
    assert ((out.float() - ref).norm() / ref.norm()).item() < 2e-2
    row = {"shape": "x".join(map(str, shape)), "dtype": str(dtype).replace("torch.", ""),
           "pass": "fwd+bwd" if backward else "fwd"}
    fns = [lambda: step(fused, x, g, backward), lambda: step(separate, x, g, backward),
           lambda: step(torch_block, x, g, backward)]
    if device == "cpu":
        t_fused, t_sep, t_torch = interleaved_ms(fns)
        row.update({"threads": torch.get_num_threads()})
    else:
        t_fused, t_sep, t_torch = (median_ms(fn) for fn in fns)
    row.update({"fused ms": t_fused, "lrn+pool ms": t_sep, "torch ms": t_torch,
                "vs lrn+pool": t_sep / t_fused, "vs torch": t_torch / t_fused})
    if full and device == "cuda":
        compiled = torch.compile(torch_block)
        t_comp = median_ms(lambda: step(compiled, x, g, backward))
        nbytes = floor_bytes(x, y, backward)
        row.update({
            "compile ms": t_comp, "vs compile": t_comp / t_fused,
            "floor ms": floor_ms(nbytes), "% of floor": 100 * floor_ms(nbytes) / t_fused,
            "fused extra MiB": peak_extra_mib(fns[0]),
            "lrn+pool extra MiB": peak_extra_mib(fns[1]),
            "torch extra MiB": peak_extra_mib(fns[2]),
        })
    report("lrn + max_pool2d 3x3/2" if device == "cuda" else "lrn + max_pool2d 3x3/2 (CPU)", row)
