"""Timing and reporting helpers for bench/: CUDA-event medians, peak memory, memory floors, and
the shapes the LRN and max-pool benchmarks share.

A benchmark row is measured on the device in the same run as its reference: absolute times on a
shared GPU drift, ratios in one run do not.
"""
import os
import statistics
import time

import torch

# The activations entering AlexNet's two LRN / max-pool blocks (after conv1 and after conv2), per image.
BLOCK_SHAPES = [(96, 55, 55), (256, 27, 27)]


def block_shapes(full: bool, device: str, cpu_batch: int, smoke: list) -> list:
    """The shapes a block benchmark runs: BLOCK_SHAPES at batch 128 on a GPU and at cpu_batch on
    the CPU when full, else its smoke shapes."""
    if not full:
        return smoke
    return [(128 if device == "cuda" else cpu_batch, *s) for s in BLOCK_SHAPES]


# Where the measured device-to-device copy bandwidth is cached for the process (bytes/s).
_BANDWIDTH = {}


def median_ms(fn, warmup: int = 10, iters: int = 50, flush_l2: bool = True) -> float:
    """Median wall time of fn() in ms: CUDA events around each call on a GPU, perf_counter on CPU.

    With flush_l2 (the default), a 256 MiB buffer is overwritten before each timed call, outside
    the events, so that tensors smaller than the L2 cache (50 MiB on the H100) are read from
    HBM as they would be inside a network, not from the cache the previous call warmed.
    """
    for _ in range(warmup):
        fn()
    if not torch.cuda.is_available():
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)
    flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda") if flush_l2 else None
    times = []
    for _ in range(iters):
        if flush is not None:
            flush.zero_()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
        del out
    return statistics.median(times)


def step(op, x, g, backward: bool):
    """One timed unit of work: op(x) without autograd, or op(x) and its backward with grad g
    (returns the input gradient)."""
    if not backward:
        with torch.no_grad():
            return op(x)
    return torch.autograd.grad(op(x), x, g)[0]


def peak_extra_mib(fn) -> float:
    """Peak CUDA memory allocated while fn() runs, above what was allocated before, in MiB."""
    if not torch.cuda.is_available():
        return float("nan")
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del out
    return peak / 2**20


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth (bytes read + written per second), measured once per run
    on a 1 GiB buffer: the memory floor's denominator. bench/gpu_check.sh measures it once at the
    start of a call and passes it on in $ALEXNET_COPY_BW, so every table of the call shares it."""
    if "bw" not in _BANDWIDTH and os.environ.get("ALEXNET_COPY_BW"):
        _BANDWIDTH["bw"] = float(os.environ["ALEXNET_COPY_BW"])
    if "bw" not in _BANDWIDTH:
        src = torch.empty(1 << 28, dtype=torch.float32, device="cuda")
        dst = torch.empty_like(src)
        ms = median_ms(lambda: dst.copy_(src), warmup=5, iters=20, flush_l2=False)
        _BANDWIDTH["bw"] = 2 * src.numel() * 4 / (ms * 1e-3)
        del src, dst
    return _BANDWIDTH["bw"]


def floor_ms(nbytes: float) -> float:
    """The fewest bytes the kernel must move over the measured bandwidth, in ms."""
    return nbytes / copy_bandwidth() * 1e3


# Measured matmul throughput per dtype, cached for the process (FLOP/s).
_PEAK = {}


def matmul_peak_tflops(dtype: torch.dtype) -> float:
    """The device's attainable dense throughput for ``dtype`` in TFLOP/s, measured once per run:
    an 8192^3 matmul (cuBLAS) with TF32 off, so fp32 is the FP32 pipes' figure and bf16 / fp16
    the tensor cores'. The denominator of a compute-bound kernel's "% of peak"."""
    env = "ALEXNET_PEAK_TFLOPS_" + str(dtype).replace("torch.", "").upper()
    if dtype not in _PEAK and os.environ.get(env):
        _PEAK[dtype] = float(os.environ[env])
    if dtype not in _PEAK:
        saved = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")  # (train/precision.py: why not fp32_precision)
        try:
            a = torch.randn(8192, 8192, device="cuda", dtype=dtype)
            b = torch.randn(8192, 8192, device="cuda", dtype=dtype)
            ms = median_ms(lambda: a @ b, warmup=3, iters=10, flush_l2=False)
        finally:
            torch.set_float32_matmul_precision(saved)
        _PEAK[dtype] = 2 * 8192**3 / (ms * 1e-3) / 1e12
    return _PEAK[dtype]


def interleaved_ms(fns, warmup: int = 2, rounds: int = 7) -> list:
    """Median wall time in ms of each of fns on the CPU, timed in turns (one call of each per
    round, every other round in reverse order), so that a load shared with other processes, or a
    machine whose speed drifts, weighs on all of them alike, and none always follows the same one."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for r in range(rounds):
        turns = list(zip(times, fns))
        for t, fn in turns if r % 2 == 0 else turns[::-1]:
            t0 = time.perf_counter()
            fn()
            t.append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in times]


if __name__ == "__main__":
    # The ceilings of this GPU as shell assignments (bench/gpu_check.sh measures them once per
    # call and exports them to every benchmark of the call).
    print(f"ALEXNET_COPY_BW={copy_bandwidth():.6g}")
    for dt in (torch.float32, torch.bfloat16):
        print(f"ALEXNET_PEAK_TFLOPS_{str(dt).replace('torch.', '').upper()}={matmul_peak_tflops(dt):.6g}")
