"""AlexNet, as in the paper (two towers, optionally on two devices) and as in torchvision.

    alexnet(variant="paper"|"torchvision", num_classes=1000, backend="custom"|"torch",
            devices=None, *, streams=True, dropout=0.5, remove=()) -> PaperAlexNet | TorchvisionAlexNet

Variants
--------
"paper" (Krizhevsky, Sutskever and Hinton, 2012): two towers ("GPU columns") of 48/128/192/192/128
filters, conv1 11x11/4 (no padding) on 3x227x227, conv2 5x5 (padding 2), conv3-5 3x3 (padding 1);
spatial size 227 -> 55 -> (pool) 27 -> 27 -> (pool) 13 -> 13 -> 13 -> 13 -> (pool) 6. ReLU after
every convolution and hidden fc layer; LRN after the ReLU of conv1 and conv2; overlapping 3x3/2 max
pooling after both LRNs and after conv5; fc6 and fc7 of 4096 (2048 per tower), each followed by
ReLU and dropout, as in the paper; fc8 of num_classes. conv2, conv4 and conv5 see only their own
tower; conv3, fc6, fc7 and fc8 see both, so those are the only places activations cross between
the towers. LRN normalizes across a tower's own channels (48 or 128): each of the paper's GPUs ran
its own normalization layer. LRN constants: size 5, alpha 1e-4, beta 0.75, k 2, in the
convention of torch.nn.LocalResponseNorm and Caffe (alpha is divided by size: the paper's
formula without that division would need alpha 5e-4 here). Initialisation as in the paper:
weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6 and fc7 (to give the ReLUs positive
inputs early on), 0 in conv1, conv3 and fc8. 60,965,224 parameters with 1000 classes.

Parameters are named towers.<t>.<layer>.{weight,bias} (t = 0, 1; layer conv1..conv5, fc6, fc7)
and fc8.{weight,bias}. ``PaperAlexNet.grouped_forward`` evaluates the same parameters as one
single-device network (conv2/4/5 as groups=2 convolutions on the concatenated channels, conv3 and
the fc layers as full ones), with PyTorch's own ops: the reference the towers are tested against.

"torchvision": torchvision.models.AlexNet (64/192/384/256/256 filters, one tower, default PyTorch
init, AdaptiveAvgPool2d((6, 6)), dropout on the *inputs* of fc6 and fc7), with the same modules at
the same indices, so state_dicts load into and from ``torchvision.models.alexnet()`` unchanged and
the model computes the same function. It accepts any image of at least 63x63 (torchvision's
min_size): conv1 (11x11/4, padding 2) and three 3x3/2 poolings must leave at least one pixel.

Backends
--------
backend="custom" runs LRN, max pooling and ReLU on this package's kernels and fuses each ReLU
that a dropout follows into one ``relu_dropout`` kernel (fc6 and fc7 in the paper variant, fc6 in
torchvision's, whose fc7 input dropout comes right after fc6's ReLU). backend="torch" builds the
same model from torch.nn's modules, with the same parameter names, so one state_dict runs on
both and any difference between their outputs is the kernels'. With backend="custom", conv1 and
its ReLU are one alexnet_kernels.conv2d call (bias and ReLU fused) on CUDA devices; on the CPU,
where the package's convolution is a slow reference kernel, conv1 stays torch's (see
``_Conv1ReLU``). conv2 to conv5 and the linear layers are PyTorch's in both backends.

features_at(x, layer)
---------------------
Returns the activations of one layer, for feature extraction, computing only what it needs:
conv1..conv5 give the output of the convolution's ReLU (before LRN and pooling), N x C x H x W;
fc6 and fc7 give the output of the layer's ReLU and of the dropout that follows it before the
next layer (paper: both; torchvision: fc6 only, its fc7 has no dropout after it), N x 4096; fc8
gives the logits, the same as forward. Dropout is the identity in eval mode, the mode in which
to extract features. For the paper variant the towers' channels are concatenated (tower 0
first), on tower 0's device. Shapes for the paper variant: conv1 96x55x55, conv2 256x27x27,
conv3 and conv4 384x13x13, conv5 256x13x13; for torchvision at 224x224: 64x55x55, 192x27x27,
384x13x13, 256x13x13, 256x13x13.

Ablations: remove=
------------------
remove= any subset of REMOVABLE (conv3, conv4, fc6, fc7) builds the network without those layers,
for experiments like those of the paper's discussion ("removing any of the middle layers results
in a loss of about 2% for the top-1 performance"): each removed layer goes with its ReLU (and
dropout), and the next kept layer takes what the removed one would have been fed, so its input
size changes and nothing else does. The inputs of each filter or neuron (-: removed):

    paper                    conv4   conv5   fc7    fc8
    full                     192     192     4096   4096
    without conv3            128     192     4096   4096
    without conv4            -       192     4096   4096
    without conv3, conv4     -       128     4096   4096
    without fc6              192     192     9216   4096
    without fc7              192     192     -      4096
    without fc6, fc7         192     192     -      9216

Without conv3, conv4 reads its own tower's pool2 output (128 channels, 13x13): conv4 keeps its
own-tower connectivity, so the towers then meet only at the fc layers. Without fc6, fc7 reads
both towers' pool5 outputs, flattened and concatenated (9216), as fc6 did. The LRN and pooling
that came before a removed layer stay where they were in the data flow. torchvision's variant is
rewired the same way (conv4 in 192 without conv3; conv5 in 384 without conv4, 192 without both;
fc7 in 9216 without fc6; fc8 in 9216 without both fc layers); its dropouts sit on the *inputs*
of fc6 and fc7, so a removed fc layer takes its input dropout with it: without fc6 one dropout
remains, on fc7's input (the flattened pool5 features); without fc7, fc6's ReLU feeds fc8 with
no dropout between them, as fc7's ReLU did. Without both, neither variant has any dropout.

The kept layers keep their parameter names (torchvision's keep their Sequential indices, the
removed ones holding parameter-free nn.Identity placeholders), so their state_dict keys are the
full network's and the removed layers' keys are simply absent; layers whose input size changed
have other shapes, of course. Initialisation is the variant's own for the kept layers (the
paper's: biases 1 in conv2, conv4, conv5, fc6, fc7 whether or not their neighbours are there).
features_at(x, removed layer) raises ValueError; grouped_forward follows the removal too.
``model.removed`` is the removed layers, ``model.layers`` the kept ones, in LAYERS order.

Fine-tuning: ``model.replace_fc8(num_classes)`` puts a freshly initialised fc8 (the variant's
init) in place of the old one, and ``model.layer_modules(layer)`` gives the modules holding a
layer's parameters (both towers' for the paper variant), e.g. to freeze the layers below one.

Devices: the paper's model parallelism
--------------------------------------
devices=("cuda:0", "cuda:1") puts tower 0 (and fc8) on the first device and tower 1 on the
second; devices=("cuda:0",) or devices=None put everything on one device (None: the CPU, until
the module is moved with .to()). Any pair works, ("cuda:0", "cpu") and ("cpu", "cpu") included.
The forward pass follows the parameters: each tower runs where its parameters are, the input may
be on any device, and the output lands on tower 0's device. Activations cross devices only into
conv3, fc6, fc7 and fc8, as copies the devices synchronize among themselves (non_blocking to a
GPU; to the CPU a copy must wait for the GPU anyway).

The towers run concurrently on CUDA: forward issues each layer for tower 0, then for tower 1,
each on its own device, and never waits for a GPU (except to copy to the CPU), so the two
devices' queues run side by side (on the CPU the towers run one after the other). With
streams=True (the default) each tower's work goes to its own CUDA stream, so two towers on the
*same* GPU overlap too; streams=False issues everything on each device's current stream (one
GPU: the towers then run one after the other), which is there to measure what the streams buy.
The side streams first wait for each device's current stream (which wrote the parameters and
the input), and the current streams wait for the side streams before forward returns, so the
caller sees ordinary stream semantics; autograd runs each backward op on the stream of its
forward op, so backward overlaps the same way.

Data parallel (torchrun + DistributedDataParallel)
--------------------------------------------------
One GPU per replica: ``torchrun --nproc-per-node=G train.py`` and in each process::

    dist.init_process_group("nccl")              # "gloo" for CPU training
    rank = int(os.environ["LOCAL_RANK"]); torch.cuda.set_device(rank)
    model = DistributedDataParallel(alexnet(devices=(f"cuda:{rank}",)), device_ids=[rank])

The paper's model parallelism inside data parallelism, each replica a two-GPU pair:
``torchrun --nproc-per-node=G//2`` and::

    torch.cuda.set_device(2 * rank)
    model = alexnet("paper", devices=(f"cuda:{2 * rank}", f"cuda:{2 * rank + 1}"))
    model = DistributedDataParallel(model)       # device_ids=None: a multi-device module

DDP keeps separate gradient buckets per device and all-reduces each with the other replicas'
matching bucket.
Inputs may be on any device; targets go on the output's device, cuda:{2 * rank}. Without dropout
(p=0 or eval mode) the gradients equal those of one process over the whole batch
(tests/test_models.py checks this with gloo, including a model with devices=("cpu", "cpu")).
"""
from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace
from typing import NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from . import nn as ak_nn

__all__ = ["alexnet", "PaperAlexNet", "TorchvisionAlexNet", "LAYERS", "REMOVABLE"]

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
# The layers an ablation may remove; the others carry the network's input, its output, or the
# LRN and pooling that set the spatial sizes.
REMOVABLE = ("conv3", "conv4", "fc6", "fc7")

_LRN = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)
_PAPER_SIZE = 227
_BIAS_ONE = ("conv2", "conv4", "conv5", "fc6", "fc7")  # the paper's layers with biases 1
_TORCHVISION_MIN_SIZE = 63


# The parameter-free layers of each backend, as module factories. Pairs fill two slots (the
# second nn.Identity where the custom backend fuses two ops), so the torchvision indices hold.
class _Conv1ReLU(ak_nn.Conv2d):
    """conv1 and the ReLU after it, for backend="custom": the package's implicit-GEMM convolution
    with the ReLU fused on CUDA; torch's convolution and ReLU on the CPU, where the package's
    kernel is only a reference (about 100x slower than torch's at AlexNet sizes). Same
    parameters as nn.Conv2d, so state_dicts carry over."""

    def __init__(self, **conv):
        super().__init__(**conv, relu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            return super().forward(x)
        return F.relu(F.conv2d(x, self.weight, self.bias, self.stride, self.padding))


_BACKENDS = {
    "torch": SimpleNamespace(
        conv1_relu=lambda **conv: (nn.Conv2d(**conv), nn.ReLU(inplace=True)),
        relu=lambda: nn.ReLU(inplace=True),
        relu_dropout=lambda p: (nn.ReLU(inplace=True), nn.Dropout(p)),
        lrn=lambda: nn.LocalResponseNorm(**_LRN),
        max_pool=lambda: nn.MaxPool2d(3, 2),
    ),
    "custom": SimpleNamespace(
        conv1_relu=lambda **conv: (_Conv1ReLU(**conv), nn.Identity()),
        relu=ak_nn.ReLU,
        relu_dropout=lambda p: (ak_nn.ReLUDropout(p), nn.Identity()),
        lrn=lambda: ak_nn.LocalResponseNorm(**_LRN),
        max_pool=lambda: ak_nn.MaxPool2d(3, 2),
    ),
}


class _AlexNet(nn.Module):
    """What both variants share: forward, features_at, the layers' modules, fc8 replacement and
    the input checks."""

    removed: tuple = ()

    @property
    def layers(self) -> tuple:
        """The layers this network has (LAYERS without the removed ones), in order."""
        return tuple(layer for layer in LAYERS if layer not in self.removed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self._forward(x, "fc8")

    def features_at(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        """The activations of ``layer`` (one of LAYERS) for images x: see the module docstring."""
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
        _check_num_classes(num_classes)
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


class PaperAlexNet(_AlexNet):
    """The network of Krizhevsky et al. (2012): two towers and fc8; see the module docstring."""

    def __init__(self, num_classes: int = 1000, backend: str = "custom", dropout: float = 0.5,
                 streams: bool = True, remove: Sequence[str] = ()):
        super().__init__()
        ops = _BACKENDS[backend]
        self.removed = tuple(remove)
        self.towers = nn.ModuleList(_Tower(ops, dropout, self.removed) for _ in range(2))
        self.fc8 = nn.Linear(2 * self.towers[0].out_features, num_classes)
        self.dropout, self.streams = dropout, streams
        self._steps, self._tail = _paper_steps(self.removed)
        for name, module in self.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.constant_(module.bias, 1.0 if name.rsplit(".", 1)[-1] in _BIAS_ONE else 0.0)

    def _layer_modules(self, layer: str) -> list:
        return [self.fc8] if layer == "fc8" else [getattr(t, layer) for t in self.towers]

    @staticmethod
    def _init_fc8(fc8: nn.Linear) -> None:
        nn.init.normal_(fc8.weight, 0.0, 0.01)
        nn.init.zeros_(fc8.bias)

    def _set_fc8(self, fc8: nn.Linear) -> None:
        self.fc8 = fc8

    def _check_size(self, h: int, w: int) -> None:
        if (h, w) != (_PAPER_SIZE, _PAPER_SIZE):
            raise ValueError(f"x: the paper variant takes {_PAPER_SIZE}x{_PAPER_SIZE} images, got {h}x{w}")

    def _forward(self, x: torch.Tensor, stop: str) -> torch.Tensor:
        places = [_Place(next(t.parameters()).device) for t in self.towers]
        if self.streams:  # streams from PyTorch's pool: cheap to take, and nothing to keep
            places = [_Place(p.device, torch.cuda.Stream(p.device)) if p.device.type == "cuda" else p
                      for p in places]
        for p in places:
            if p.stream is not None:  # the current stream wrote the parameters (and maybe x)
                p.stream.wait_stream(torch.cuda.current_stream(p.device))
        hs = [_hand_over(x, _Place(x.device), p) for p in places]
        for layer, before, exchange, after in self._steps:
            hs = [t.run(before, h, p) for t, h, p in zip(self.towers, hs, places)]
            if exchange:
                hs = [_gather(hs, places, i) for i in range(len(places))]
            hs = [t.run(after, h, p) for t, h, p in zip(self.towers, hs, places)]
            if layer == stop:
                break
        else:  # stop == "fc8": what the removed fc layers would have started with (pool5, flatten)
            hs = [t.run(self._tail, h, p) for t, h, p in zip(self.towers, hs, places)]
        out = _gather(hs, places, 0)
        if stop == "fc8":
            with _on(places[0].stream):
                out = self.fc8(out)
        for p in places:
            if p.stream is not None:
                torch.cuda.current_stream(p.device).wait_stream(p.stream)
        if places[0].stream is not None:  # allocated on the side stream, used on the current one
            out.record_stream(torch.cuda.current_stream(places[0].device))
        return out

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
            h = torch.cat([F.local_response_norm(half, **_LRN) for half in h.chunk(2, dim=1)], dim=1)
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
    """One of the paper's GPU columns: half of each layer's filters or neurons, conv1 to fc7."""

    def __init__(self, ops: SimpleNamespace, dropout: float, removed: Sequence[str] = ()):
        super().__init__()
        self.conv1, self.relu1 = ops.conv1_relu(in_channels=3, out_channels=48, kernel_size=11, stride=4)
        self.lrn1, self.pool1 = ops.lrn(), ops.max_pool()
        self.conv2, self.relu2 = nn.Conv2d(48, 128, 5, padding=2), ops.relu()
        self.lrn2, self.pool2 = ops.lrn(), ops.max_pool()
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

    def run(self, names: Sequence[str], h: torch.Tensor, place: "_Place") -> torch.Tensor:
        """Applies the named submodules in order, on place's stream."""
        with _on(place.stream):
            for name in names:
                h = self._modules[name](h)
        return h


class _Place(NamedTuple):
    """Where a tower's work is issued: its device, and a CUDA stream (None: the device's
    current stream)."""
    device: torch.device
    stream: Optional[torch.cuda.Stream] = None


def _on(stream: Optional[torch.cuda.Stream]):
    """Issue work on stream; None: the current stream (without touching CUDA, unlike
    torch.cuda.stream(None), which initializes it to look up the current device)."""
    return nullcontext() if stream is None else torch.cuda.stream(stream)


def _hand_over(t: torch.Tensor, src: _Place, dst: _Place) -> torch.Tensor:
    """t, made by work issued at src, ready for work issued at dst."""
    if src == dst:
        return t
    if t.device == dst.device:  # one GPU, two streams: order them, and keep t's memory for dst
        reader = dst.stream or torch.cuda.current_stream(dst.device)
        reader.wait_stream(src.stream or torch.cuda.current_stream(src.device))
        t.record_stream(reader)
        return t
    # torch copies between devices on the source's current stream, ordered both ways with the
    # destination's current stream: make those the two places' streams.
    with _on(src.stream), _on(dst.stream):
        return t.to(dst.device, non_blocking=dst.device.type == "cuda")


def _gather(hs: Sequence[torch.Tensor], places: Sequence[_Place], i: int) -> torch.Tensor:
    """All towers' activations, concatenated along dim 1 at place i."""
    parts = [_hand_over(h, p, places[i]) for h, p in zip(hs, places)]
    with _on(places[i].stream):
        return torch.cat(parts, dim=1)


class TorchvisionAlexNet(_AlexNet):
    """torchvision.models.AlexNet on either backend: same modules, indices and function."""

    def __init__(self, num_classes: int = 1000, backend: str = "custom", dropout: float = 0.5,
                 remove: Sequence[str] = ()):
        super().__init__()
        ops = _BACKENDS[backend]
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
        if kept["fc6"] and kept["fc7"]:
            relu6, drop7 = ops.relu_dropout(dropout)  # fc7's input dropout right after fc6's ReLU
            fc6 = [nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), relu6]
            fc7 = [drop7, nn.Linear(4096, 4096), ops.relu()]
        else:
            fc6 = [nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), ops.relu()] if kept["fc6"] else gone(3)
            fc7 = [nn.Dropout(dropout), nn.Linear(4096 if kept["fc6"] else 256 * 6 * 6, 4096), ops.relu()] \
                if kept["fc7"] else gone(3)
        inputs = 4096 if kept["fc6"] or kept["fc7"] else 256 * 6 * 6
        self.classifier = nn.Sequential(*fc6, *fc7, nn.Linear(inputs, num_classes))

    def _check_size(self, h: int, w: int) -> None:
        if min(h, w) < _TORCHVISION_MIN_SIZE:
            raise ValueError(f"x: the torchvision variant takes images of at least "
                             f"{_TORCHVISION_MIN_SIZE}x{_TORCHVISION_MIN_SIZE}, got {h}x{w}")

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

    @staticmethod
    def _init_fc8(fc8: nn.Linear) -> None:
        pass  # torchvision's AlexNet keeps nn.Linear's own initialisation, which fc8 was made with

    def _set_fc8(self, fc8: nn.Linear) -> None:
        self.classifier[6] = fc8

    def _forward(self, x: torch.Tensor, stop: str) -> torch.Tensor:
        if stop in self._FEATURES_END:
            return self.features[: self._FEATURES_END[stop]](x)
        h = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier[: self._CLASSIFIER_END[stop]](h)


def _check_devices(devices, towers: int, variant: str) -> Optional[list]:
    """devices as a list of torch.device (cuda with its index), or a ValueError naming it."""
    if devices is None:
        return None
    if isinstance(devices, (str, torch.device)):
        devices = (devices,)
    try:
        devices = list(devices)
    except TypeError:
        raise ValueError(f"devices must be None or a sequence of devices, got {devices!r}") from None
    if not 1 <= len(devices) <= towers:
        raise ValueError(f"devices: the {variant} variant has {towers} tower(s), so it takes 1 to "
                         f"{towers} devices, got {len(devices)}: {devices!r}")
    out = []
    for d in devices:
        try:
            dev = torch.device(d)
        except (RuntimeError, TypeError):
            raise ValueError(f"devices: {d!r} is not a device") from None
        if dev.type == "cuda":
            n = torch.cuda.device_count()
            if n == 0:
                raise ValueError(f"devices: {d!r} is a CUDA device, but no CUDA device is visible")
            index = torch.cuda.current_device() if dev.index is None else dev.index
            if index >= n:
                raise ValueError(f"devices: {d!r} does not exist: {n} CUDA device(s) visible")
            dev = torch.device("cuda", index)
        elif dev.type != "cpu":
            raise ValueError(f"devices: {d!r}: only cpu and cuda devices are supported")
        out.append(dev)
    return out


def _check_num_classes(num_classes) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")


def _check_remove(remove) -> tuple:
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


def alexnet(variant: str = "paper", num_classes: int = 1000, backend: str = "custom",
            devices: Union[None, str, torch.device, Sequence[Union[str, torch.device]]] = None, *,
            streams: bool = True, dropout: float = 0.5, remove: Sequence[str] = ()) -> _AlexNet:
    """AlexNet: variant "paper" (two towers) or "torchvision"; backend "custom" (this package's
    kernels) or "torch"; devices: None, or one device per tower (fewer: the rest on the first);
    streams: one CUDA stream per tower (paper variant; ignored by torchvision's single tower);
    dropout: the dropout probability; remove: layers of REMOVABLE to leave out (ablations).
    Every argument is checked before any parameter is made. See the module docstring."""
    if variant not in ("paper", "torchvision"):
        raise ValueError(f"variant must be 'paper' or 'torchvision', got {variant!r}")
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be 'custom' or 'torch', got {backend!r}")
    _check_num_classes(num_classes)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
    remove = _check_remove(remove)
    devices = _check_devices(devices, 2 if variant == "paper" else 1, variant)
    if variant == "torchvision":
        model = TorchvisionAlexNet(num_classes, backend, float(dropout), remove)
        return model if devices is None else model.to(devices[0])
    model = PaperAlexNet(num_classes, backend, float(dropout), bool(streams), remove)
    if devices is not None:
        for tower, device in zip(model.towers, devices * 2):  # one device: both towers on it
            tower.to(device)
        model.fc8.to(devices[0])
    return model
