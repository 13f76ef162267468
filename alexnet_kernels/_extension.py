"""Loading of the compiled extension (alexnet_kernels._C) and the report of what it holds."""
import importlib

import torch

_REBUILD = (
    "Rebuild it against the torch you run, from the repository root:\n"
    "    pip install --no-build-isolation --no-deps -e .\n"
    "(plain `pip install -e .` builds in an isolated environment with whatever torch pip picks "
    "there, which may not be the one installed here)."
)


def load():
    """Import _C, refusing an extension built against another torch.

    A C++ extension is tied to the exact torch it was compiled with; loaded into another it fails
    with undefined symbols or, worse, loads and crashes. setup.py records the torch version in
    _build_config.py, so the mismatch is caught here, before the shared object is touched.
    """
    try:
        cfg = importlib.import_module("alexnet_kernels._build_config")
    except ImportError:
        raise ImportError(
            "alexnet_kernels: the compiled extension is missing (no _build_config.py): the package "
            "was not built. Install it with `pip install -e .` from the repository root."
        ) from None
    if cfg.TORCH_VERSION != torch.__version__:
        raise ImportError(
            f"alexnet_kernels was built against torch {cfg.TORCH_VERSION}, but torch "
            f"{torch.__version__} is running.\n{_REBUILD}"
        )
    try:
        importlib.import_module("alexnet_kernels._C")
    except (ImportError, OSError) as e:
        raise ImportError(f"alexnet_kernels: the compiled extension failed to load: {e}\n{_REBUILD}") from e
    return cfg


def has_kernel(op: str, device: str) -> bool:
    """Whether alexnet_kernels::<op> has a kernel registered for a device type ("CPU", "CUDA")."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"alexnet_kernels::{op}", device)
