"""relu_dropout's settings, shared by the public functions, the op registrations and the Triton
launchers. Importing this module does not import triton."""
import torch

# What relu_dropout takes (the kernels' dtypes); relu takes float64 as well.
DROPOUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
RELU_DTYPES = (torch.float64, *DROPOUT_DTYPES)

# GPU tiling: 4096 elements a program, 8 warps: 16 elements (4 Philox calls) a thread.
BLOCK_GPU = 4096
WARPS_GPU = 8
# The interpreter runs programs one after another in Python: big tiles make it fast. The mask
# does not depend on the tile.
BLOCK_INTERPRET = 1 << 16

SEED_HIGH = 2**62  # key and counter base are drawn from [0, SEED_HIGH)


def threshold(p: float) -> int:
    """Drop iff the 32-bit random value r < threshold: P(keep) = 1 - threshold / 2**32."""
    return min(int(round(p * 2**32)), 2**32 - 1)


def scale(p: float) -> float:
    """1 / (1 - p); the kernels multiply by its fp32 rounding."""
    return 1.0 / (1.0 - p)


def check_dtype(x: torch.Tensor, fn: str, *, relu: bool = False) -> None:
    """TypeError naming x unless x's dtype is one the op takes (the C++ kernels say the same)."""
    dtypes = RELU_DTYPES if relu else DROPOUT_DTYPES
    if x.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes[:-1])
        raise TypeError(f"{fn}: x must be a {names} or {str(dtypes[-1]).replace('torch.', '')} tensor, "
                        f"got x.dtype={x.dtype}")


def check_p(p: float, fn: str) -> None:
    if not (0.0 <= p < 1.0):  # also rejects NaN
        raise ValueError(f"{fn}: p must be in [0, 1), got p={p}")
