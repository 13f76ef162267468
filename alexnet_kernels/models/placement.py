"""Where the paper net's towers run: devices, CUDA streams, and the hand-over of activations
between them (docs/models.md, "Devices and streams").

A ``Place`` is a device and the stream work is issued on there (None: the device's current
stream). ``enter`` orders the side streams after the current ones, ``hand_over`` and ``gather``
move activations between places, ``leave`` orders the current streams after the side ones: the
caller sees ordinary stream semantics. Nothing here knows AlexNet's layers.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import NamedTuple, Optional, Sequence

import torch
from torch import nn


class Place(NamedTuple):
    """Where a tower's work is issued: its device, and a CUDA stream (None: the device's
    current stream)."""
    device: torch.device
    stream: Optional[torch.cuda.Stream] = None


def check_devices(devices, towers: int, variant: str, name: str = "devices") -> Optional[list]:
    """``devices`` (None, one device, or a sequence of 1..towers devices, as strings or
    torch.device) as a list of torch.device, CUDA ones with their index; None stays None.
    ValueError starting with ``name`` (the argument or flag) on anything else."""
    if devices is None:
        return None
    if isinstance(devices, (str, torch.device)):
        devices = (devices,)
    try:
        devices = list(devices)
    except TypeError:
        raise ValueError(f"{name} must be None or a sequence of devices, got {devices!r}") from None
    if not 1 <= len(devices) <= towers:
        takes = {1: "one device", 2: "one or two devices"}.get(towers, f"1 to {towers} devices")
        raise ValueError(f"{name}: the {variant} variant has {towers} tower{'s' if towers > 1 else ''}, so it "
                         f"takes {takes}, got {len(devices)}: {', '.join(map(str, devices)) or 'none'}")
    out = []
    for d in devices:
        try:
            dev = torch.device(d)
        except (RuntimeError, TypeError):
            raise ValueError(f"{name}: {d!r} is not a device (cpu, cuda, cuda:1)") from None
        if dev.type == "cuda":
            n = torch.cuda.device_count()
            if n == 0:
                raise ValueError(f"{name}: {d!r} is a CUDA device, but no CUDA device is visible")
            index = torch.cuda.current_device() if dev.index is None else dev.index
            if index >= n:
                raise ValueError(f"{name}: {d!r} does not exist: {n} CUDA device(s) visible")
            dev = torch.device("cuda", index)
        elif dev.type != "cpu":
            raise ValueError(f"{name}: {d!r}: only cpu and cuda devices are supported")
        out.append(dev)
    return out


def place(towers: Sequence[nn.Module], head: nn.Module, devices: Sequence[torch.device]) -> None:
    """Moves tower i to devices[i] (fewer devices than towers: the rest on the first) and the
    head (what follows the towers) to devices[0]."""
    for i, tower in enumerate(towers):
        tower.to(devices[i] if i < len(devices) else devices[0])
    head.to(devices[0])


def places(devices: Sequence[torch.device], streams: bool) -> list:
    """One Place per tower on ``devices`` (a tower's parameters' devices): with streams, each
    CUDA tower gets a stream of its own from PyTorch's pool (cheap to take, nothing to keep), so
    two towers on one GPU overlap; without, every tower uses its device's current stream."""
    return [Place(d, torch.cuda.Stream(d)) if streams and d.type == "cuda" else Place(d) for d in devices]


def on(stream: Optional[torch.cuda.Stream]):
    """Issue work on stream; None: the current stream (without touching CUDA, unlike
    torch.cuda.stream(None), which initializes it to look up the current device)."""
    return nullcontext() if stream is None else torch.cuda.stream(stream)


def enter(places_: Sequence[Place]) -> None:
    """Side streams wait for their device's current stream, which wrote the parameters and
    perhaps the input."""
    for p in places_:
        if p.stream is not None:
            p.stream.wait_stream(torch.cuda.current_stream(p.device))


def hand_over(t: torch.Tensor, src: Place, dst: Place) -> torch.Tensor:
    """t, made by work issued at src, ready for work issued at dst."""
    if src == dst:
        return t
    if t.device == dst.device:  # one GPU, two streams: order them, and keep t's memory for dst
        reader = dst.stream or torch.cuda.current_stream(dst.device)
        reader.wait_stream(src.stream or torch.cuda.current_stream(src.device))
        t.record_stream(reader)
        return t
    # torch copies between devices on the source's current stream, ordered both ways with the
    # destination's current stream: make those the two places' streams. non_blocking to a GPU;
    # to the CPU a copy must wait for the GPU anyway.
    with on(src.stream), on(dst.stream):
        return t.to(dst.device, non_blocking=dst.device.type == "cuda")


def gather(hs: Sequence[torch.Tensor], places_: Sequence[Place], i: int) -> torch.Tensor:
    """All towers' activations (hs[k] made at places_[k]), concatenated along dim 1 at place i."""
    parts = [hand_over(h, p, places_[i]) for h, p in zip(hs, places_)]
    with on(places_[i].stream):
        return torch.cat(parts, dim=1)


def leave(out: torch.Tensor, places_: Sequence[Place]) -> torch.Tensor:
    """out (made at places_[0]) for the caller: the current streams wait for the side streams,
    and out's memory, allocated on a side stream, is kept for the current one."""
    for p in places_:
        if p.stream is not None:
            torch.cuda.current_stream(p.device).wait_stream(p.stream)
    if places_[0].stream is not None:
        out.record_stream(torch.cuda.current_stream(places_[0].device))
    return out
