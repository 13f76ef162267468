"""The parameter-free layers of each backend, and conv1 with its ReLU (the package's
convolution with the ReLU fused, on CUDA and on the CPU): the one place that decides which op
computes what. Both variants build their layers from these factories.

A factory that covers two consecutive layers returns a pair, so that the networks keep a module
in each slot: where the custom backend fuses the two ops, the second is nn.Identity (and
torchvision's Sequential indices, hence its state_dict keys, stay as they are).
"""
from types import SimpleNamespace

from torch import nn

from .. import nn as ak_nn

# LRN constants of the paper in torch.nn.LocalResponseNorm's (and Caffe's) convention, where alpha
# is divided by size (the paper's formula without that division would need alpha 5e-4 here).
LRN = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)


BACKENDS = {
    "torch": SimpleNamespace(
        conv1_relu=lambda **conv: (nn.Conv2d(**conv), nn.ReLU(inplace=True)),
        relu=lambda: nn.ReLU(inplace=True),
        relu_dropout=lambda p: (nn.ReLU(inplace=True), nn.Dropout(p)),
        dropout_of_relu=nn.Dropout,
        lrn_max_pool=lambda: (nn.LocalResponseNorm(**LRN), nn.MaxPool2d(3, 2)),
        max_pool=lambda: nn.MaxPool2d(3, 2),
    ),
    "custom": SimpleNamespace(
        conv1_relu=lambda **conv: (ak_nn.Conv2d(**conv, relu=True), nn.Identity()),
        relu=ak_nn.ReLU,
        relu_dropout=lambda p: (ak_nn.ReLUDropout(p), nn.Identity()),
        # Dropout of an input that is nonnegative by construction (torchvision's fc6 input: ReLU,
        # then max and average pooling). ReLU is the identity there, so relu_dropout computes the
        # same function; its backward stops the gradient of an input at exactly 0, which dropout
        # would pass, but such an input came from ReLU outputs at 0, whose own backward stops it:
        # the parameters' gradients are the same (tests/test_models.py).
        dropout_of_relu=ak_nn.ReLUDropout,
        lrn_max_pool=lambda: (ak_nn.LocalResponseNormMaxPool2d(**LRN, kernel_size=3, stride=2), nn.Identity()),
        max_pool=lambda: ak_nn.MaxPool2d(3, 2),
    ),
}
