"""The network of Krizhevsky, Sutskever and Hinton (2012): two towers and fc8 (docs/models.md).

Parameters are named towers.<t>.<layer>.{weight,bias} (t = 0, 1; conv1..conv5, fc6, fc7) and
fc8.{weight,bias}. Where each tower runs is placement.py's business; what each tower computes,
and where the towers exchange activations, is this file's.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import placement
from .backends import BACKENDS, LRN
from .base import AlexNetBase

SIZE = 227  # the only input size: conv1 11x11/4 and three 3x3/2 poolings end at 6x6

# Initializations (the networks' weights are N(0, std), biases constants):
#   paper  the paper's: std 0.01 everywhere, biases 1 in conv2, conv4, conv5, fc6 and fc7
#          (to give the ReLUs positive inputs early on), 0 elsewhere.
#   caffe  Caffe's bvlc_alexnet: std 0.005 for fc6 and fc7, biases 0.1 where the paper has 1.
#          Its fc7 output starts far less dominated by the biases; see docs/training.md.
INITS = {
    "paper": dict(std=0.01, fc_std=0.01, bias=1.0),
    "caffe": dict(std=0.01, fc_std=0.005, bias=0.1),
}
_BIASED = ("conv2", "conv4", "conv5", "fc6", "fc7")  # the layers whose biases start positive


def init_(module: nn.Module, layer: str, init: str) -> None:
    """Initializes one conv or linear layer named ``layer`` as the ``init`` recipe says."""
    spec = INITS[init]
    nn.init.normal_(module.weight, 0.0, spec["fc_std"] if layer in ("fc6", "fc7") else spec["std"])
    nn.init.constant_(module.bias, spec["bias"] if layer in _BIASED else 0.0)


class PaperAlexNet(AlexNetBase):
    """The paper's two-tower network; see docs/models.md."""

    def __init__(self, num_classes: int = 1000, backend: str = "custom", dropout: float = 0.5,
                 streams: bool = True, remove: Sequence[str] = (), init: str = "paper"):
        super().__init__()
        ops = BACKENDS[backend]
        self.removed = tuple(remove)
        self.towers = nn.ModuleList(_Tower(ops, dropout, self.removed) for _ in range(2))
        self.fc8 = nn.Linear(2 * self.towers[0].out_features, num_classes)
        self.dropout, self.streams, self.init = dropout, streams, init
        self._steps, self._tail = _paper_steps(self.removed)
        for name, module in self.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                init_(module, name.rsplit(".", 1)[-1], init)

    def _layer_modules(self, layer: str) -> list:
        return [self.fc8] if layer == "fc8" else [getattr(t, layer) for t in self.towers]

    def _init_fc8(self, fc8: nn.Linear) -> None:
        init_(fc8, "fc8", self.init)

    def _set_fc8(self, fc8: nn.Linear) -> None:
        self.fc8 = fc8

    def _check_size(self, h: int, w: int) -> None:
        if (h, w) != (SIZE, SIZE):
            raise ValueError(f"x: the paper variant takes {SIZE}x{SIZE} images, got {h}x{w}")

    def _forward(self, x: torch.Tensor, stop: str) -> torch.Tensor:
        # Each layer is issued for tower 0, then for tower 1, each where its parameters are, and
        # nothing waits for a GPU: the two devices' (or streams') queues run side by side.
        places = placement.places([next(t.parameters()).device for t in self.towers], self.streams)
        placement.enter(places)
        hs = [placement.hand_over(x, placement.Place(x.device), p) for p in places]
        for layer, before, exchange, after in self._steps:
            hs = [t.run(before, h, p) for t, h, p in zip(self.towers, hs, places)]
            if exchange:
                hs = [placement.gather(hs, places, i) for i in range(len(places))]
            hs = [t.run(after, h, p) for t, h, p in zip(self.towers, hs, places)]
            if layer == stop:
                break
        else:  # stop == "fc8": what the removed fc layers would have started with (pool5, flatten)
            hs = [t.run(self._tail, h, p) for t, h, p in zip(self.towers, hs, places)]
        out = placement.gather(hs, places, 0)
        if stop == "fc8":
            with placement.on(places[0].stream):
                out = self.fc8(out)
        return placement.leave(out, places)

    def grouped_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same network as one single-device model, on x's device, with PyTorch's ops: each
        layer's weights are the towers' concatenated (tower 0's filters first), conv2, conv4 and
        conv5 are groups=2 convolutions, conv1, conv3 and the fc layers full ones, and LRN runs
        on each tower's half of the channels. This is how single-GPU AlexNets (Caffe's) express
        the towers; forward must compute the same function with the same gradients."""
        self._check_input(x)
        t0 = self.towers[0]

        def cat(layer: str, what: str) -> torch.Tensor:
            return torch.cat([getattr(getattr(t, layer), what).to(x.device) for t in self.towers])

        def conv(h: torch.Tensor, layer: str, groups: int) -> torch.Tensor:
            c = getattr(t0, layer)
            return F.relu(F.conv2d(h, cat(layer, "weight"), cat(layer, "bias"), c.stride, c.padding,
                                   groups=groups))

        def lrn_pool(h: torch.Tensor) -> torch.Tensor:
            h = torch.cat([F.local_response_norm(half, **LRN) for half in h.chunk(2, dim=1)], dim=1)
            return F.max_pool2d(h, 3, 2)

        def fc(h: torch.Tensor, layer: str) -> torch.Tensor:
            h = F.relu(F.linear(h, cat(layer, "weight"), cat(layer, "bias")))
            return F.dropout(h, self.dropout, self.training)

        h = lrn_pool(conv(x, "conv1", 1))
        h = lrn_pool(conv(h, "conv2", 2))
        # Without conv3 the groups=2 conv4 (or conv5) splits pool2's 256 channels into the
        # towers' halves, which is the towers' own-tower connectivity.
        for layer, groups in (("conv3", 1), ("conv4", 2), ("conv5", 2)):
            if layer not in self.removed:
                h = conv(h, layer, groups)
        h = torch.flatten(F.max_pool2d(h, 3, 2), 1)
        for layer in ("fc6", "fc7"):
            if layer not in self.removed:
                h = fc(h, layer)
        return F.linear(h, self.fc8.weight.to(x.device), self.fc8.bias.to(x.device))


# Each layer of the paper net as the towers compute it from the previous layer's output:
# (layer, modules each tower runs first, whether the towers then exchange activations (each
# tower continues on both towers' outputs, concatenated), modules each tower runs last).
_PAPER_LAYERS = (
    ("conv1", (), False, ("conv1", "relu1")),
    ("conv2", ("lrn1", "pool1"), False, ("conv2", "relu2")),
    ("conv3", ("lrn2", "pool2"), True, ("conv3", "relu3")),
    ("conv4", (), False, ("conv4", "relu4")),
    ("conv5", (), False, ("conv5", "relu5")),
    ("fc6", ("pool5", "flatten"), True, ("fc6", "relu6", "drop6")),
    ("fc7", (), True, ("fc7", "relu7", "drop7")),
)


def _paper_steps(removed: Sequence[str]) -> tuple:
    """(_PAPER_LAYERS without the removed layers, modules each tower runs before fc8). The
    modules a removed layer ran first (LRN, pooling, flatten) move to the next kept layer, or
    before fc8 if none is left; its exchange goes with it, since the next layer keeps its own
    connectivity (conv4 its own tower, fc7 both)."""
    steps, pending = [], ()
    for layer, before, exchange, after in _PAPER_LAYERS:
        if layer in removed:
            pending += before
        else:
            steps.append((layer, pending + before, exchange, after))
            pending = ()
    return tuple(steps), pending


class _Tower(nn.Module):
    """One of the paper's GPU columns: half of each layer's filters or neurons, conv1 to fc7.
    The layers of the paper variant are made here, from the backend's factories."""

    def __init__(self, ops, dropout: float, removed: Sequence[str] = ()):
        super().__init__()
        self.conv1, self.relu1 = ops.conv1_relu(in_channels=3, out_channels=48, kernel_size=11, stride=4)
        self.lrn1, self.pool1 = ops.lrn_max_pool()
        self.conv2, self.relu2 = nn.Conv2d(48, 128, 5, padding=2), ops.relu()
        self.lrn2, self.pool2 = ops.lrn_max_pool()
        channels = 128  # of this tower's input to the next convolution
        if "conv3" not in removed:
            self.conv3, self.relu3 = nn.Conv2d(2 * 128, 192, 3, padding=1), ops.relu()
            channels = 192
        if "conv4" not in removed:
            self.conv4, self.relu4 = nn.Conv2d(channels, 192, 3, padding=1), ops.relu()
            channels = 192
        self.conv5, self.relu5 = nn.Conv2d(channels, 128, 3, padding=1), ops.relu()
        self.pool5, self.flatten = ops.max_pool(), nn.Flatten()
        features = 128 * 6 * 6  # this tower's share of the next fc layer's input
        if "fc6" not in removed:
            self.fc6 = nn.Linear(2 * features, 2048)
            self.relu6, self.drop6 = ops.relu_dropout(dropout)
            features = 2048
        if "fc7" not in removed:
            self.fc7 = nn.Linear(2 * features, 2048)
            self.relu7, self.drop7 = ops.relu_dropout(dropout)
            features = 2048
        self.out_features = features

    def run(self, names: Sequence[str], h: torch.Tensor, place: placement.Place) -> torch.Tensor:
        """Applies the named submodules in order, on place's stream."""
        with placement.on(place.stream):
            for name in names:
                h = self._modules[name](h)
        return h
