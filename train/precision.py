"""--precision: what fp32, tf32, bf16 and fp16 mean for a training step.

fp32   float32 everywhere, TF32 off for matmuls and cuDNN convolutions (IEEE fp32 arithmetic)
tf32   float32 tensors, TF32 tensor-core arithmetic for matmuls and convolutions (CUDA only)
bf16   autocast to bfloat16; float32 weights and optimizer
fp16   autocast to float16, the loss scaled by torch.amp.GradScaler so small gradients survive
"""
from contextlib import nullcontext

import torch

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
_AUTOCAST_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}


def set_float32_arithmetic(precision: str) -> None:
    """TF32 on for "tf32", off (IEEE) otherwise: a process-wide setting of torch. Matmuls through
    torch.set_float32_matmul_precision, which keeps the old and new views of the flag in step
    (Inductor reads get_float32_matmul_precision, which raises after matmul.fp32_precision =
    "tf32" alone); cuDNN convolutions through their fp32_precision."""
    tf32 = precision == "tf32"
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.conv.fp32_precision = "tf32" if tf32 else "ieee"


def autocast(precision: str, device_type: str):
    """The autocast context of a forward pass (and its loss) at ``precision`` on ``device_type``."""
    dtype = _AUTOCAST_DTYPE.get(precision)
    return nullcontext() if dtype is None else torch.autocast(device_type, dtype=dtype)


def grad_scaler(precision: str, device_type: str) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 (a disabled one passes the loss and step through)."""
    return torch.amp.GradScaler(device_type, enabled=precision == "fp16")
