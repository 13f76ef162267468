"""glibc malloc settings for training on the CPU.

glibc serves an allocation above its mmap threshold (which adapts, but never past 32 MB) with
fresh pages from mmap, and unmaps them when it is freed. A training step allocates and frees
the same large buffers every time: the fully connected layers' weight gradients (151 MB for fc6
of torchvision's net, 67 MB for fc7) and whatever else passes 32 MB. Each step then faults
every page of them back in, and the kernel zeroes each one. On the 2-core machine of
bench/RESULTS.md the default run's step took 110,000 page faults and spent about a fifth of its
CPU time in the kernel. With every allocation served from the heap and the heap never trimmed,
freed buffers stay mapped and the next step reuses them: no faults after the first few steps.

The cost: the process keeps its peak memory until it exits (a training run reaches its peak
every step anyway), and the heap's fragments add some (9% more resident memory in the default
run). PyTorch's CPU tuning guide reaches the same end by preloading jemalloc or tcmalloc; this
needs nothing installed.
"""
import ctypes

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # <malloc.h>
NEVER_TRIM = 2**31 - 1  # mallopt takes an int


def keep_freed_memory() -> bool:
    """Makes this process's glibc malloc serve every allocation from its heap (no mmap) and
    never give the heap's free top back to the system. Returns whether both settings took:
    False where the C library has no mallopt or refuses them (musl's is a no-op)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1
