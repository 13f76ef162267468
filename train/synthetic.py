"""The default data set: images generated from a seed, nothing to download.

Each class is one shape in one colour, drawn at a random position, size and rotation over a noisy
background tinted with the same colour. Every image is a function of (seed, index) alone, so the
set is the same on every machine, in any process and in any order. The colour covers the whole
image, so even a freshly initialized AlexNet's features carry it and the network learns it within
a few thousand images; the shape is the finer cue (and the only one beyond 10 classes).
"""
import math

import torch
from torch.utils.data import Dataset

# 10 colours far apart in RGB (0..1): the corners of the RGB cube, orange and purple.
COLOURS = {
    "red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.1), "blue": (0.1, 0.2, 0.9), "yellow": (0.95, 0.9, 0.1),
    "cyan": (0.1, 0.85, 0.9), "magenta": (0.9, 0.1, 0.85), "white": (0.95, 0.95, 0.95),
    "black": (0.05, 0.05, 0.05), "orange": (1.0, 0.55, 0.0), "purple": (0.5, 0.1, 0.7),
}

# How much of the class colour the background takes (the rest is a random grey).
TINT = 0.5

# 10 shapes in a unit frame (u, v): the mask of each, from u, v and rho = sqrt(u^2 + v^2).
SHAPES = {
    "disk": lambda u, v, rho: rho < 1,
    "square": lambda u, v, rho: torch.maximum(u.abs(), v.abs()) < 0.75,
    "triangle": lambda u, v, rho: _triangle(u, v),
    "ring": lambda u, v, rho: (rho > 0.55) & (rho < 1),
    "cross": lambda u, v, rho: ((u.abs() < 0.25) & (v.abs() < 0.9)) | ((v.abs() < 0.25) & (u.abs() < 0.9)),
    "bar": lambda u, v, rho: (u.abs() < 1) & (v.abs() < 0.3),
    "striped disk": lambda u, v, rho: (rho < 1) & (torch.sin(3 * math.pi * u) > 0),
    "checkerboard": lambda u, v, rho: (torch.maximum(u.abs(), v.abs()) < 0.8)
    & ((torch.floor(2 * u) + torch.floor(2 * v)) % 2 == 0),
    "half disk": lambda u, v, rho: (rho < 1) & (v > 0),
    "two dots": lambda u, v, rho: (((u - 0.5) ** 2 + v**2) < 0.16) | (((u + 0.5) ** 2 + v**2) < 0.16),
}


def _triangle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    inside = torch.ones_like(u, dtype=torch.bool)
    for k in range(3):
        a = math.pi / 2 + 2 * math.pi * k / 3
        inside &= u * math.cos(a) + v * math.sin(a) < 0.5
    return inside


class SyntheticShapes(Dataset):
    """``length`` RGB images of size x size (float in [0, 1], [3, size, size], then ``transform``
    if given) and their labels (index % num_classes, 2 to 100 classes): class c is colour c % 10
    and shape (c + c // 10) % 10, so every class has its own pair.

    ``seed`` picks the set: use different seeds for training and held-out images.
    """

    def __init__(self, length: int, size: int, num_classes: int = 10, seed: int = 0, transform=None):
        if length < 1 or size < 8 or not 2 <= num_classes <= 100:
            raise ValueError(f"SyntheticShapes: need length >= 1, size >= 8 and 2 <= num_classes <= 100, "
                             f"got {length}, {size}, {num_classes}")
        self.length, self.size, self.num_classes, self.seed = length, size, num_classes, seed
        self.transform = transform
        self.classes = [f"{list(COLOURS)[c % 10]} {list(SHAPES)[(c + c // 10) % 10]}" for c in range(num_classes)]
        coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
        self._y, self._x = torch.meshgrid(coords, coords, indexing="ij")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        if not 0 <= index < self.length:
            raise IndexError(f"SyntheticShapes: index {index} out of range [0, {self.length})")
        label = index % self.num_classes
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)

        def uniform(lo: float, hi: float) -> float:
            return lo + (hi - lo) * torch.rand((), generator=g).item()

        cx, cy, radius, angle = uniform(-0.45, 0.45), uniform(-0.45, 0.45), uniform(0.5, 0.8), uniform(0, 2 * math.pi)
        dx, dy = self._x - cx, self._y - cy
        u = (dx * math.cos(angle) + dy * math.sin(angle)) / radius
        v = (-dx * math.sin(angle) + dy * math.cos(angle)) / radius
        mask = SHAPES[list(SHAPES)[(label + label // 10) % 10]](u, v, torch.sqrt(u * u + v * v))

        colour = torch.tensor(list(COLOURS.values())[label % 10])
        shade = (colour + 0.05 * torch.randn(3, generator=g)).clamp(0, 1)
        tint = TINT * colour + (1 - TINT) * uniform(0.25, 0.6)
        background = tint[:, None, None] + 0.08 * torch.randn(1, self.size, self.size, generator=g)
        image = torch.where(mask, shade[:, None, None], background).clamp_(0, 1)
        return (image if self.transform is None else self.transform(image)), label
