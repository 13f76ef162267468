"""The parameter-free layers of each backend, and conv1 with its ReLU: the one place that decides
which op computes what. Both variants build their layers from these factories.

A factory that covers two consecutive layers returns a pair, so that the networks keep a module
in each slot: where the custom backend fuses the two ops, the second is nn.Identity (and
torchvision's Sequential indices, hence its state_dict keys, stay as they are).
"""
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from .. import nn as ak_nn

# LRN constants of the paper in torch.nn.LocalResponseNorm's (and Caffe's) convention, where alpha
# is divided by size (the paper's formula without that division would need alpha 5e-4 here).
LRN = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)


class Conv1ReLU(ak_nn.Conv2d):
    """conv1 and its ReLU for backend="custom": the package's implicit-GEMM convolution with the
    ReLU fused on CUDA; torch's convolution and ReLU on the CPU, where the package's kernel is a
    reference (about 100x slower than torch's at AlexNet sizes). Same parameters as nn.Conv2d,
    so state_dicts carry over."""

    def __init__(self, **conv):
        super().__init__(**conv, relu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            return super().forward(x)
        return F.relu(F.conv2d(x, self.weight, self.bias, self.stride, self.padding))


BACKENDS = {
    "torch": SimpleNamespace(
        conv1_relu=lambda **conv: (nn.Conv2d(**conv), nn.ReLU(inplace=True)),
        relu=lambda: nn.ReLU(inplace=True),
        relu_dropout=lambda p: (nn.ReLU(inplace=True), nn.Dropout(p)),
        lrn_max_pool=lambda: (nn.LocalResponseNorm(**LRN), nn.MaxPool2d(3, 2)),
        max_pool=lambda: nn.MaxPool2d(3, 2),
    ),
    "custom": SimpleNamespace(
        conv1_relu=lambda **conv: (Conv1ReLU(**conv), nn.Identity()),
        relu=ak_nn.ReLU,
        relu_dropout=lambda p: (ak_nn.ReLUDropout(p), nn.Identity()),
        lrn_max_pool=lambda: (ak_nn.LocalResponseNorm(**LRN), ak_nn.MaxPool2d(3, 2)),
        max_pool=lambda: ak_nn.MaxPool2d(3, 2),
    ),
}
