"""Shared test utilities: devices, random inputs, poisoned allocations, error norms."""
import os
from contextlib import contextmanager

import pytest
import torch

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            not torch.cuda.is_available(),
            reason="no CUDA device: the CUDA kernels run on the GPU machine (bench/gpu_check.sh)",
        ),
    ),
]

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Relative norm error ||a - e|| / ||e||, computed in float64."""
    a, e = actual.double(), expected.double()
    return ((a - e).norm() / e.norm().clamp_min(1e-300)).item()


def poison(device, nbytes: int = 64 << 20) -> None:
    """Fill memory the next allocations will likely reuse with NaN, so that an output element a
    kernel forgets to write shows up as a mismatch. On CUDA the caching allocator hands freed
    blocks straight back: one large block for outputs over 1 MiB (its large pool) and 2 MiB
    segments of 64 KiB blocks for the smaller ones (its small pool, which a large block never
    serves). On the CPU it is a best effort (malloc's free lists)."""
    junk = [torch.full((nbytes // 4,), float("nan"), device=device)]
    if torch.device(device).type == "cuda":
        junk += [torch.full((1 << 14,), float("nan"), device=device) for _ in range(256)]
    del junk


def layouts(x: torch.Tensor):
    """The same values in the layouts a kernel must accept: (name, tensor)."""
    out = [("contiguous", x.contiguous())]
    if x.dim() == 4:
        out.append(("channels_last", x.contiguous(memory_format=torch.channels_last)))
        # Spatial dims swapped in memory: no view merges them, the kernel sees odd strides.
        out.append(("transposed_hw", x.transpose(2, 3).contiguous().transpose(2, 3)))
    # Every other element of a twice-as-wide tensor: strided along the last dim.
    wide = torch.empty(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype, device=x.device)
    wide[..., ::2] = x
    wide[..., 1::2] = float("nan")
    out.append(("strided_last", wide[..., ::2]))
    return out


def have_memory(nbytes: int) -> bool:
    """Whether this machine has nbytes of memory available (CPU): the kernel's MemAvailable, which
    counts the page cache it would drop (free pages alone miss it, after a build or a clone)."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        avail = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return False
    return avail >= nbytes


@contextmanager
def ieee_fp32():
    """float32 matmuls and cuDNN convolutions in IEEE fp32 (TF32 off) inside the block, through
    the switches train/precision.py uses: once those are set, the legacy allow_tf32 flags raise
    when read or set (mixed APIs), and pytest's monkeypatch cannot restore the new ones."""
    saved = torch.get_float32_matmul_precision(), torch.backends.cudnn.conv.fp32_precision
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.conv.fp32_precision = saved[1]
