"""alexnet_kernels: hand-written kernels for AlexNet's hot path, as PyTorch custom ops.

    conv2d(x, w, b, stride, padding, *, relu=False)      convolution (+ReLU): CUDA implicit GEMM for conv1
    lrn(x, size=5, alpha=1e-4, beta=0.75, k=1.0)        local response normalization (C++/CUDA)
    max_pool2d(x, kernel_size=3, stride=2, ...)          (overlapping) max pooling (C++/CUDA)
    lrn_max_pool2d(x, size=5, ..., kernel_size=3, stride=2)   LRN then max pooling, fused (C++/CUDA)
    relu_dropout(x, p=0.5, training=True)                fused ReLU + dropout (C++; Triton on CUDA)
    relu(x)                                              ReLU (C++; Triton on CUDA)
    nn.Conv2d, nn.LocalResponseNorm, nn.MaxPool2d, nn.ReLU, nn.ReLUDropout   the same as modules
    nn.LocalResponseNormMaxPool2d                        lrn_max_pool2d as a module
    models.alexnet(variant="paper"|"torchvision", backend="custom"|"torch", devices=None)
    build_info()                                         what was compiled, for which GPUs
"""
from . import _extension

_build_config = _extension.load()

from . import models, nn  # noqa: E402
from .conv import conv2d  # noqa: E402
from .lrn import lrn  # noqa: E402
from .lrn_max_pool import lrn_max_pool2d  # noqa: E402
from .max_pool import max_pool2d  # noqa: E402
from .relu_dropout import relu, relu_dropout  # noqa: E402

# Each custom op of the package: its forward op, and the ops autograd calls for it.
OPS = {
    "conv2d": ("conv2d", "conv2d_backward"),
    "lrn": ("lrn", "lrn_backward"),
    "max_pool2d": ("max_pool2d", "max_pool2d_backward"),
    "lrn_max_pool2d": ("lrn_max_pool2d", "lrn_max_pool2d_backward"),
    "relu_dropout": ("relu_dropout_fwd", "relu_dropout_bwd"),
    "relu": ("relu_fwd", "relu_bwd"),
}


def build_info() -> dict:
    """Versions, compiled GPU architectures, and which ops have CPU and CUDA kernels."""
    import torch

    cfg = _build_config
    return {
        "alexnet_kernels": __version__,
        "torch": torch.__version__,
        "torch_built_against": cfg.TORCH_VERSION,
        "torch_cuda": torch.version.cuda,
        "cuda_kernels_built": cfg.WITH_CUDA,
        "cpu_only_reason": cfg.CPU_ONLY_REASON,
        "nvcc": cfg.NVCC,
        "cuda_archs": cfg.CUDA_ARCH_LIST,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "ops": {
            name: {dev.lower(): all(_extension.has_kernel(op, dev) for op in ops) for dev in ("CPU", "CUDA")}
            for name, ops in OPS.items()
        },
        # Ops whose CUDA kernels are Triton's: compiled at first use for the GPU present (their
        # CPU kernels are C++ and draw the same random mask).
        "triton_ops": ["relu_dropout", "relu"],
    }


__version__ = "0.1.0"
__all__ = ["conv2d", "lrn", "max_pool2d", "lrn_max_pool2d", "relu_dropout", "relu", "nn", "models", "build_info"]
