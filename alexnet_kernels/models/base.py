"""What both AlexNet variants share: the layer names, forward / features_at / layer_modules /
replace_fc8, and the checks of their arguments."""
from __future__ import annotations

import torch
from torch import nn

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
# The layers an ablation may remove; the others carry the network's input, its output, or the
# LRN and pooling that set the spatial sizes.
REMOVABLE = ("conv3", "conv4", "fc6", "fc7")


class AlexNetBase(nn.Module):
    """A variant defines _forward(x, stop), _check_size, _layer_modules, _init_fc8, _set_fc8."""

    removed: tuple = ()

    @property
    def layers(self) -> tuple:
        """The layers this network has (LAYERS without the removed ones), in order."""
        return tuple(layer for layer in LAYERS if layer not in self.removed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self._forward(x, "fc8")

    def features_at(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        """The activations of ``layer`` (one of LAYERS) for images x, computing only what they
        need: conv1..conv5 after the convolution's ReLU (before LRN and pooling), fc6 and fc7
        after their ReLU and dropout, fc8 the logits. The paper variant's towers are
        concatenated, tower 0 first, on tower 0's device."""
        self._check_layer(layer, "features_at")
        self._check_input(x)
        return self._forward(x, layer)

    def layer_modules(self, layer: str) -> list:
        """The modules that hold ``layer``'s parameters: both towers' for the paper variant's
        conv1..fc7, one module otherwise."""
        self._check_layer(layer, "layer_modules")
        return self._layer_modules(layer)

    def replace_fc8(self, num_classes: int) -> nn.Linear:
        """Replaces fc8 by a fresh one with ``num_classes`` outputs, the same inputs, device and
        dtype, initialised as this variant initialises fc8; returns it. The head of a network
        fine-tuned for another task."""
        check_num_classes(num_classes)
        (old,) = self._layer_modules("fc8")
        new = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
        self._init_fc8(new)
        self._set_fc8(new)
        return new

    def _check_layer(self, layer: str, what: str) -> None:
        if layer not in LAYERS:
            raise ValueError(f"{what}: layer must be one of {', '.join(LAYERS)}, got {layer!r}")
        if layer in self.removed:
            raise ValueError(f"{what}: layer {layer} was removed from this network "
                             f"(remove={', '.join(self.removed)}); it has {', '.join(self.layers)}")

    def _check_input(self, x) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"x must be a batch of RGB images (N, 3, H, W), got shape {tuple(x.shape)}")
        self._check_size(x.shape[2], x.shape[3])


def check_num_classes(num_classes) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")


def check_remove(remove) -> tuple:
    """``remove`` as a tuple of layer names in LAYERS order (duplicates dropped), or a
    ValueError naming what is not in REMOVABLE. A single name may be given as a string."""
    if isinstance(remove, str):
        remove = (remove,)
    try:
        names = list(remove)
    except TypeError:
        raise ValueError(f"remove must be a sequence of layer names, got {remove!r}") from None
    unknown = [n for n in names if n not in REMOVABLE]
    if unknown:
        raise ValueError(f"remove: {', '.join(map(repr, unknown))} cannot be removed; the removable layers "
                         f"are {', '.join(REMOVABLE)}")
    return tuple(layer for layer in REMOVABLE if layer in names)
