"""torchvision.models.AlexNet on either backend: the same modules at the same indices, so
state_dicts load into and from ``torchvision.models.alexnet()`` unchanged and the model computes
the same function (docs/models.md)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .backends import BACKENDS
from .base import REMOVABLE, AlexNetBase

MIN_SIZE = 63  # torchvision's: conv1 (11x11/4, padding 2) and three 3x3/2 poolings leave 1 pixel


class TorchvisionAlexNet(AlexNetBase):
    """torchvision's single-tower AlexNet; its layers are made here, from the backend's
    factories."""

    def __init__(self, num_classes: int = 1000, backend: str = "custom", dropout: float = 0.5,
                 remove: Sequence[str] = ()):
        super().__init__()
        ops = BACKENDS[backend]
        self.removed = tuple(remove)
        kept = {layer: layer not in self.removed for layer in REMOVABLE}

        def gone(n: int) -> list:  # placeholders that keep the later modules' indices
            return [nn.Identity() for _ in range(n)]

        conv1, relu1 = ops.conv1_relu(in_channels=3, out_channels=64, kernel_size=11, stride=4, padding=2)
        features = [conv1, relu1, ops.max_pool(),
                    nn.Conv2d(64, 192, kernel_size=5, padding=2), ops.relu(), ops.max_pool()]
        channels = 192
        for layer, out in (("conv3", 384), ("conv4", 256)):
            if kept[layer]:
                features += [nn.Conv2d(channels, out, kernel_size=3, padding=1), ops.relu()]
                channels = out
            else:
                features += gone(2)
        features += [nn.Conv2d(channels, 256, kernel_size=3, padding=1), ops.relu(), ops.max_pool()]
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        # torchvision's dropouts sit on the *inputs* of fc6 and fc7: a removed fc layer takes its
        # input dropout with it.
        # The input of each dropout is nonnegative (the features' output: conv5's ReLU, then max and
        # average pooling; or fc6's ReLU): dropout_of_relu is the dropout for it.
        if kept["fc6"] and kept["fc7"]:
            relu6, drop7 = ops.relu_dropout(dropout)  # fc7's input dropout right after fc6's ReLU
            fc6 = [ops.dropout_of_relu(dropout), nn.Linear(256 * 6 * 6, 4096), relu6]
            fc7 = [drop7, nn.Linear(4096, 4096), ops.relu()]
        else:
            fc6 = [ops.dropout_of_relu(dropout), nn.Linear(256 * 6 * 6, 4096), ops.relu()] if kept["fc6"] else gone(3)
            fc7 = [ops.dropout_of_relu(dropout), nn.Linear(4096 if kept["fc6"] else 256 * 6 * 6, 4096), ops.relu()] \
                if kept["fc7"] else gone(3)
        inputs = 4096 if kept["fc6"] or kept["fc7"] else 256 * 6 * 6
        self.classifier = nn.Sequential(*fc6, *fc7, nn.Linear(inputs, num_classes))

    def _check_size(self, h: int, w: int) -> None:
        if min(h, w) < MIN_SIZE:
            raise ValueError(f"x: the torchvision variant takes images of at least "
                             f"{MIN_SIZE}x{MIN_SIZE}, got {h}x{w}")

    # Where each layer ends: features[:end] for the convolutions, classifier[:end] for the rest.
    _FEATURES_END = {"conv1": 2, "conv2": 5, "conv3": 8, "conv4": 10, "conv5": 12}
    _CLASSIFIER_END = {"fc6": 4, "fc7": 6, "fc8": 7}
    # Where each layer's parameters are: (Sequential, index).
    _MODULE = {"conv1": ("features", 0), "conv2": ("features", 3), "conv3": ("features", 6),
               "conv4": ("features", 8), "conv5": ("features", 10),
               "fc6": ("classifier", 1), "fc7": ("classifier", 4), "fc8": ("classifier", 6)}

    def _layer_modules(self, layer: str) -> list:
        sequential, index = self._MODULE[layer]
        return [getattr(self, sequential)[index]]

    def _init_fc8(self, fc8: nn.Linear) -> None:
        pass  # torchvision's AlexNet keeps nn.Linear's own initialisation, which fc8 was made with

    def _set_fc8(self, fc8: nn.Linear) -> None:
        self.classifier[6] = fc8

    def _forward(self, x: torch.Tensor, stop: str) -> torch.Tensor:
        if stop in self._FEATURES_END:
            return self.features[: self._FEATURES_END[stop]](x)
        h = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier[: self._CLASSIFIER_END[stop]](h)
