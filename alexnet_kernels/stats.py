"""Per-layer statistics of AlexNet, measured on the model definition itself.

    python -m alexnet_kernels.stats [--variant paper|torchvision] [--input-size N] [--num-classes K]

    layer_table(variant="paper", input_size=None, num_classes=1000) -> list[LayerRow]
    group_totals(rows) -> list[GroupTotal]          early convs, later convs, fc layers, total
    receptive_field(variant, layer, input_size=None) -> ReceptiveField(size, jump, start)

Nothing here is typed in: ``layer_table`` builds ``alexnet(variant, backend="torch")`` on the
meta device, runs one image through it with forward hooks on its convolutions, linear layers,
poolings and LRNs, and derives every number from the shapes the hooks saw and the modules'
attributes. docs/stats.md states the rows, groups and conventions (receptive field, FLOPs,
activation memory).
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from typing import List, NamedTuple, Optional

import torch
from torch import nn

from .models import alexnet

__all__ = ["LayerRow", "GroupTotal", "ReceptiveField", "InputSizeError", "layer_table", "group_totals",
           "receptive_field", "format_table", "main", "DEFAULT_INPUT_SIZE", "BYTES_PER_ELEMENT"]

VARIANTS = ("paper", "torchvision")
DEFAULT_INPUT_SIZE = {"paper": 227, "torchvision": 224}
BYTES_PER_ELEMENT = 4  # fp32
GROUPS = ("early convs", "later convs", "fc layers")

# The module types that get a row; everything else (ReLU, dropout, flatten) keeps the geometry.
_KINDS = ((nn.Conv2d, "conv"), (nn.Linear, "fc"), (nn.LocalResponseNorm, "lrn"), (nn.MaxPool2d, "pool"),
          (nn.AdaptiveAvgPool2d, "avgpool"))


class InputSizeError(ValueError):
    """An input size the variant does not accept; ``reason`` says why, without the prefix."""

    def __init__(self, input_size, reason: str):
        super().__init__(f"input_size={input_size!r}: {reason}")
        self.input_size, self.reason = input_size, reason


@dataclass(frozen=True)
class LayerRow:
    """One layer, for one image. Channel counts are all towers' together; ``towers`` is 2 for a
    paper layer computed half by each tower. ``*_size`` is height = width (None: an fc layer's
    flat vector). ``kernel``, ``stride``, ``padding`` and ``filters`` are None where the layer
    has none; ``rf_jump`` and ``rf_padding`` are None after an irregular adaptive pooling."""
    name: str
    kind: str                 # conv, lrn, pool, avgpool or fc
    group: str                # one of GROUPS
    towers: int
    in_channels: int          # channels (fc: features) of the layer's input, all towers
    in_channels_per_tower: int  # the part of them each tower reads (paper conv2: 48 of 96)
    in_size: Optional[int]
    filters: Optional[int]    # output channels or neurons of a conv / fc layer, all towers
    fan_in: Optional[int]     # inputs per output unit: channels seen x kernel area (conv), features (fc)
    kernel: Optional[int]
    stride: Optional[int]
    padding: Optional[int]
    out_channels: int
    out_size: Optional[int]
    rf_size: int
    rf_jump: Optional[int]
    rf_padding: Optional[int]
    activations: int          # output elements per image
    params: int
    flops: int

    @property
    def activation_bytes(self) -> int:
        return self.activations * BYTES_PER_ELEMENT

    @property
    def receptive_field(self) -> "ReceptiveField":
        start = None if self.rf_padding is None else -self.rf_padding
        return ReceptiveField(self.rf_size, self.rf_jump, start)


class ReceptiveField(NamedTuple):
    """Unit (y, x) of a layer sees input pixels [start + y * jump, start + y * jump + size) along
    each axis (start <= 0: the effective padding, negated). May reach outside the image."""
    size: int
    jump: Optional[int]
    start: Optional[int]

    def window(self, y: int, x: int):
        """(top, left, bottom, right) of unit (y, x)'s window, bottom and right exclusive, not
        clipped to the image."""
        if self.jump is None:
            raise ValueError("this layer's units have no regular spacing (irregular adaptive pooling)")
        top, left = self.start + y * self.jump, self.start + x * self.jump
        return top, left, top + self.size, left + self.size


@dataclass(frozen=True)
class GroupTotal:
    name: str                 # one of GROUPS, or "total"
    layers: tuple
    activations: int
    params: int
    flops: int

    @property
    def activation_bytes(self) -> int:
        return self.activations * BYTES_PER_ELEMENT


def _check_variant(variant) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be 'paper' or 'torchvision', got {variant!r}")


def _check_size_arg(input_size) -> None:
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise InputSizeError(input_size, "must be a positive int")


def _build(variant: str, num_classes: int):
    """The model and a device to feed it on: meta where the ops support it (no memory, no
    arithmetic), else the CPU (one forward pass, about a GFLOP)."""
    try:
        with torch.device("meta"):
            model = alexnet(variant, num_classes=num_classes, backend="torch")
        return model, torch.device("meta")
    except (NotImplementedError, RuntimeError):
        return alexnet(variant, num_classes=num_classes, backend="torch"), torch.device("cpu")


def _trace(variant: str, input_size: int, num_classes: int):
    """[(key, [(tower, module, input shape, output shape), ...]), ...] in first-call order: one
    entry per layer, one tuple per tower that ran it."""
    model, device = _build(variant, num_classes)
    model.eval()
    names = {}
    for name, module in model.named_modules():
        if isinstance(module, tuple(t for t, _ in _KINDS)):
            m = re.fullmatch(r"towers\.(\d+)\.(.+)", name)
            names[module] = (int(m.group(1)), m.group(2)) if m else (0, name)
    layers = {}  # dicts keep insertion order: the order of the forward pass

    def hook(module, inputs, output):
        tower, key = names[module]
        layers.setdefault(key, []).append((tower, module, tuple(inputs[0].shape), tuple(output.shape)))

    handles = [m.register_forward_hook(hook) for m in names]
    try:
        with torch.no_grad():
            try:
                model(torch.zeros(1, 3, input_size, input_size, device=device))
            except ValueError as e:
                if "x:" not in str(e):
                    raise
                # The model's own check of the image size: the minimum comes from the definition.
                raise InputSizeError(input_size, str(e).split("x: ", 1)[-1]) from None
    finally:
        for h in handles:
            h.remove()
    return list(layers.items())


def _kind(module: nn.Module) -> str:
    for cls, kind in _KINDS:
        if isinstance(module, cls):
            return kind
    raise TypeError(f"no row kind for {type(module).__name__}")


def _single(value, what: str) -> int:
    """An int from an int or a square pair; non-square geometry is not AlexNet's."""
    if isinstance(value, (tuple, list)):
        if len(set(value)) != 1:
            raise RuntimeError(f"{what}: expected the same value along both axes, got {value}")
        value = value[0]
    return int(value)


def _adaptive_windows(n: int, o: int):
    """Start and size of each window of an adaptive pooling from n to o (PyTorch's formula)."""
    starts = [(i * n) // o for i in range(o)]
    ends = [-((-(i + 1) * n) // o) for i in range(o)]
    return starts, [e - s for s, e in zip(starts, ends)]


def layer_table(variant: str = "paper", input_size: Optional[int] = None, num_classes: int = 1000) -> List[LayerRow]:
    """The rows of the table for one image of input_size x input_size (default: the variant's,
    227 paper, 224 torchvision); see the module docstring for the conventions. ValueError for an
    unknown variant, InputSizeError (a ValueError) for a size the variant does not take."""
    _check_variant(variant)
    if input_size is None:
        input_size = DEFAULT_INPUT_SIZE[variant]
    _check_size_arg(input_size)
    rows = []
    channels, size = 3, input_size          # the previous layer's output (at first the image)
    rf, jump, pad, n = 1, 1, 0, input_size  # the last map with regular spacing, and its size
    convs = fcs = 0
    for key, runs in _trace(variant, input_size, num_classes):
        _, module, in_shape, out_shape = runs[0]
        kind = _kind(module)
        towers = len(runs)
        if any(r[2] != in_shape or r[3] != out_shape for r in runs):
            raise RuntimeError(f"{key}: the towers ran different shapes: {[(r[2], r[3]) for r in runs]}")
        flat_in = channels * (size or 1) ** 2 if kind == "fc" else channels
        if in_shape[1] not in (flat_in, flat_in // towers):
            raise RuntimeError(f"{key}: input of {in_shape[1]} channels per tower does not follow the previous "
                               f"layer's {flat_in}: the model is not a chain of layers")
        out_channels = out_shape[1] * towers
        out_size = out_shape[2] if len(out_shape) == 4 else None
        filters = fan_in = kernel = stride = padding = None
        params = sum(p.numel() for _, m, _, _ in runs for p in m.parameters())
        flops = 0
        if kind in ("conv", "fc"):
            weight = module.weight
            filters, fan_in = out_channels, weight[0].numel()
            # every output element is one dot product over fan_in inputs
            flops = 2 * fan_in * math.prod(out_shape) * towers
        if kind == "conv":
            if _single(module.dilation, f"{key}.dilation") != 1:
                raise RuntimeError(f"{key}: dilated convolutions are not handled")
            kernel, stride = _single(module.kernel_size, f"{key}.kernel_size"), _single(module.stride, f"{key}.stride")
            padding = _single(module.padding, f"{key}.padding")
        elif kind == "pool":
            if _single(module.dilation, f"{key}.dilation") != 1:
                raise RuntimeError(f"{key}: dilated pooling is not handled")
            kernel, stride = _single(module.kernel_size, f"{key}.kernel_size"), _single(module.stride, f"{key}.stride")
            padding = _single(module.padding, f"{key}.padding")
        elif kind == "lrn":
            kernel, stride, padding = 1, 1, 0

        regular = True
        if kind == "avgpool":
            if out_size == size:
                channels = out_channels  # the identity: no row, nothing changes
                continue
            starts, sizes = _adaptive_windows(size, out_size)
            steps = {b - a for a, b in zip(starts, starts[1:])}
            kernel = max(sizes)
            if len(set(sizes)) == 1 and len(steps) == 1 and min(steps) >= 1:
                stride, padding = steps.pop(), 0
            else:
                regular = False

        if kind == "fc":  # a convolution of kernel n over the last spatial map
            row_rf, row_jump, row_pad = rf + (n - 1) * jump, jump, pad
        elif regular:
            row_rf, row_jump, row_pad = rf + (kernel - 1) * jump, jump * stride, pad + padding * jump
        else:
            row_rf, row_jump, row_pad = rf + (kernel - 1) * jump, None, None
        if regular:
            rf, jump, pad = row_rf, row_jump, row_pad
            n = 1 if kind == "fc" else out_size

        if kind == "conv":
            convs += 1
            name = f"conv{convs}"
        elif kind == "fc":
            fcs += 1
            name = f"fc{convs + fcs}"
        elif kind == "avgpool":
            name = "avgpool"
        else:
            name = f"{kind}{convs}"
        group = "fc layers" if kind == "fc" else "early convs" if convs <= 2 else "later convs"
        rows.append(LayerRow(
            name=name, kind=kind, group=group, towers=towers,
            in_channels=flat_in, in_channels_per_tower=in_shape[1], in_size=None if kind == "fc" else size,
            filters=filters, fan_in=fan_in, kernel=kernel, stride=stride, padding=padding,
            out_channels=out_channels, out_size=out_size,
            rf_size=row_rf, rf_jump=row_jump, rf_padding=row_pad,
            activations=math.prod(out_shape) * towers, params=params, flops=flops))
        channels, size = out_channels, out_size
    return rows


def group_totals(rows: List[LayerRow]) -> List[GroupTotal]:
    """Sums per group (GROUPS, in order, those present) and a last "total" over all rows."""
    out = []
    for name in GROUPS + ("total",):
        members = [r for r in rows if name == "total" or r.group == name]
        if members:
            out.append(GroupTotal(name, tuple(r.name for r in members), sum(r.activations for r in members),
                                  sum(r.params for r in members), sum(r.flops for r in members)))
    return out


def receptive_field(variant: str, layer: str, input_size: Optional[int] = None) -> ReceptiveField:
    """(size, jump, start) of ``layer``'s units: unit (y, x) sees input pixels
    [start + y * jump, start + y * jump + size) along each axis; see ReceptiveField.window."""
    rows = layer_table(variant, input_size)
    for row in rows:
        if row.name == layer:
            return row.receptive_field
    raise ValueError(f"layer must be one of {', '.join(r.name for r in rows)} for the {variant} variant, "
                     f"got {layer!r}")


# --------------------------------------------------------------------------------------------
# the table as text
# --------------------------------------------------------------------------------------------


def _count(row: LayerRow, total: int, per_tower: Optional[int] = None) -> str:
    """2x48 where each tower holds its own half, else the plain count."""
    per_tower = total // row.towers if per_tower is None else per_tower
    return f"{row.towers}x{per_tower}" if row.towers > 1 and per_tower * row.towers == total else str(total)


def _opt(value) -> str:
    return "-" if value is None else f"{value:,}"


def _hw(size: Optional[int]) -> str:
    return "-" if size is None else f"{size}x{size}"


def _kib(nbytes: int) -> str:
    return f"{nbytes / 1024:,.1f}"


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f}%" if whole else "    -"


def _align(table: List[List[str]], left: int = 1) -> List[str]:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return ["  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in table]


def format_table(rows: List[LayerRow], variant: str, input_size: int, num_classes: int = 1000) -> str:
    """The layer table, the group totals and the conventions, as aligned plain text."""
    head = ["layer", "in C", "in HxW", "filters", "k", "s", "p", "out C", "out HxW", "RF", "jump", "eff pad",
            "act elems", "act KiB", "params", "FLOPs"]
    table = [head]
    for r in rows:
        # the input each tower reads: all channels (conv3, fc6) or its own half (conv2)
        in_c = (f"{r.towers}x{r.in_channels_per_tower}" if r.towers > 1 and r.in_channels_per_tower < r.in_channels
                else f"{r.in_channels:,}")
        table.append([
            r.name, in_c, _hw(r.in_size), "-" if r.filters is None else _count(r, r.filters),
            _opt(r.kernel), _opt(r.stride), _opt(r.padding), _count(r, r.out_channels), _hw(r.out_size),
            str(r.rf_size), _opt(r.rf_jump), _opt(r.rf_padding),
            f"{r.activations:,}", _kib(r.activation_bytes), f"{r.params:,}", f"{r.flops:,}"])
    totals = group_totals(rows)
    total = totals[-1]
    gtable = [["group", "layers", "act elems", "act KiB", "memory", "params", "params", "FLOPs", "FLOPs"]]
    for g in totals:
        gtable.append([g.name, f"{g.layers[0]}..{g.layers[-1]}", f"{g.activations:,}", _kib(g.activation_bytes),
                       _share(g.activations, total.activations), f"{g.params:,}", _share(g.params, total.params),
                       f"{g.flops:,}", _share(g.flops, total.flops)])
    avgpool = ("avgpool (AdaptiveAvgPool2d) changes the shape here, so it has a row"
               if any(r.kind == "avgpool" for r in rows) else
               "avgpool (AdaptiveAvgPool2d) is the identity at this size and has no row"
               if variant == "torchvision" else None)
    lines = [f"AlexNet, {variant} variant, input 3x{input_size}x{input_size}, {num_classes} classes: "
             f"one image (batch 1), fp32", ""]
    lines += _align(table) + [""] + _align(gtable, left=2) + [""]
    if any(r.towers > 1 for r in rows):
        lines.append("in C: what each tower reads (2x48: each of the 2 towers its own 48 channels; 256: both read "
                     "all 256); filters, out C: 2x48 = 48 per tower.")
    lines += [
        "RF, jump, eff pad: receptive field, effective stride and effective padding in input pixels; unit (y, x) "
        "sees [y*jump - pad, y*jump - pad + RF) per axis. fc layers count as a convolution over the whole last "
        "map.",
        "FLOPs: 1 multiply-add = 2 FLOPs over the real connections (a tower-local filter sees only its tower's "
        "channels); biases, ReLU, LRN, pooling not counted.",
        f"act: the layer's output elements and their bytes at fp32, per image; the input image is "
        f"{3 * input_size ** 2:,} elements ({_kib(3 * input_size ** 2 * BYTES_PER_ELEMENT)} KiB); ReLU and dropout "
        f"rows are left out (same shape, in place).",
    ]
    if avgpool:
        lines.append(avgpool + ".")
    return "\n".join(lines)


def main(argv=None) -> int:
    # exit_on_error=False: argparse raises its errors instead of printing its usage block, so
    # they are reported as one line like every other error here.
    parser = argparse.ArgumentParser(prog="python -m alexnet_kernels.stats", exit_on_error=False,
                                     description="Per-layer sizes, receptive fields, memory, parameters and FLOPs "
                                                 "of AlexNet, computed from the model definition.")
    parser.add_argument("--variant", choices=VARIANTS, default="paper", help="default: paper")
    parser.add_argument("--input-size", type=int, metavar="N",
                        help="image height = width (default: 227 paper, which takes only 227; 224 torchvision, "
                             "which takes 63 and more)")
    parser.add_argument("--num-classes", type=int, default=1000, metavar="K", help="fc8's outputs (default 1000)")
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            raise argparse.ArgumentError(None, f"unrecognized arguments: {' '.join(unknown)}")
    except argparse.ArgumentError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    size = DEFAULT_INPUT_SIZE[args.variant] if args.input_size is None else args.input_size
    try:
        rows = layer_table(args.variant, size, args.num_classes)
    except InputSizeError as e:
        print(f"{parser.prog}: error: --input-size {size}: {e.reason}", file=sys.stderr)
        return 2
    except ValueError as e:  # num_classes, from alexnet()
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    print(format_table(rows, args.variant, size, args.num_classes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
