"""AlexNet, as in the paper (two towers, optionally on two devices) and as in torchvision, on
this package's kernels or on PyTorch's ops. docs/models.md describes the variants, backends,
features_at, ablations, devices, streams and data parallel training.

    alexnet(variant="paper"|"torchvision", num_classes=1000, backend="custom"|"torch",
            devices=None, *, streams=True, dropout=0.5, remove=(), init="paper")

paper.py and torchvision.py hold the two networks, backends.py the ops each backend builds them
from, placement.py the towers' devices and CUDA streams.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch

from .backends import BACKENDS
from .base import LAYERS, REMOVABLE, AlexNetBase, check_num_classes, check_remove
from .paper import INITS, PaperAlexNet
from .placement import check_devices, place
from .torchvision import TorchvisionAlexNet

__all__ = ["alexnet", "PaperAlexNet", "TorchvisionAlexNet", "LAYERS", "REMOVABLE", "INITS"]


def alexnet(variant: str = "paper", num_classes: int = 1000, backend: str = "custom",
            devices: Union[None, str, torch.device, Sequence[Union[str, torch.device]]] = None, *,
            streams: bool = True, dropout: float = 0.5, remove: Sequence[str] = (),
            init: str = "paper") -> AlexNetBase:
    """AlexNet: variant "paper" (two towers) or "torchvision"; backend "custom" (this package's
    kernels) or "torch"; devices: None (the CPU, until moved with .to()), or one device per tower
    (fewer: the rest on the first); streams: one CUDA stream per tower (paper variant);
    dropout: the dropout probability; remove: layers of REMOVABLE to leave out (ablations);
    init: the paper variant's initialization, "paper" or "caffe" (INITS; torchvision's variant
    keeps torchvision's). Every argument is checked before any parameter is made."""
    if variant not in ("paper", "torchvision"):
        raise ValueError(f"variant must be 'paper' or 'torchvision', got {variant!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'custom' or 'torch', got {backend!r}")
    check_num_classes(num_classes)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(map(repr, INITS))}, got {init!r}")
    remove = check_remove(remove)
    devices = check_devices(devices, 2 if variant == "paper" else 1, variant)
    if variant == "torchvision":
        model = TorchvisionAlexNet(num_classes, backend, float(dropout), remove)
        return model if devices is None else model.to(devices[0])
    model = PaperAlexNet(num_classes, backend, float(dropout), bool(streams), remove, init)
    if devices is not None:
        place(model.towers, model.fc8, devices)
    return model
