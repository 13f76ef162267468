"""Pictures of what a trained AlexNet has learned, from a checkpoint of train/run.py or a plain
state_dict of torchvision.models.alexnet (which loads into the torchvision variant):

    python train/visualize.py filters CKPT [--out PNG]     # conv1's filters as RGB images
    python train/visualize.py patches CKPT --data DIR --layer convK [--channels 0,5,9] [--out PNG]
                                     # the 9 dataset patches exciting each channel most

Each picture is one subcommand; ``python train/visualize.py SUBCOMMAND --help`` describes its
flags. Exit status: 0 done, 2 a bad argument, checkpoint, data directory or output path (reported
as one line on stderr). torch is imported only once the arguments are read.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, NamedTuple, Optional

if __package__ in (None, ""):  # run as `python train/visualize.py`: import train.* from the repository
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if TYPE_CHECKING:  # annotations only: torch loads once the arguments are read
    import numpy as np
    import torch

from train.cli import (
    HelpFormatter,
    Parser,
    UsageError,
    checkpoint_file,
    output_file,
    parse_device,
    positive_int,
    run_command,
)

PROG = "train/visualize.py"


# ==============================================================================================
# filters: conv1's filters as RGB images
# ==============================================================================================

FILTER_COLUMNS = 16  # a tower's 48 filters fill 3 rows, torchvision's 64 fill 4
FILTER_ZOOM = 4  # an 11x11 filter becomes 44x44 pixels
FILTER_GAP = 2  # pixels of background around every cell
FILTER_BACKGROUND = 1.0  # white: no scaled filter is uniformly white, so cells stay distinct
FILTER_TITLE_HEIGHT = 22  # pixels of the strip above each block that holds its title


def conv1_weights(model: torch.nn.Module, variant: str) -> list:
    """conv1's filters as [(title, weights [N, 3, k, k] on the CPU)], one entry per block of the
    picture: the paper variant's two towers, or torchvision's single layer. Read through the
    state_dict names (the checkpoint format), not through module attributes."""
    state = model.state_dict()  # (tensors: torch is loaded)
    if variant == "paper":
        names = sorted((k for k in state if k.startswith("towers.") and k.endswith(".conv1.weight")),
                       key=lambda k: int(k.split(".")[1]))
        return [(f"tower {k.split('.')[1]} ({state[k].shape[0]})", state[k].detach().float().cpu()) for k in names]
    w = state["features.0.weight"].detach().float().cpu()
    return [(f"conv1 ({w.shape[0]})", w)]


def scale_filters(blocks: list, scale: str = "layer") -> list:
    """Each block's weights min-max scaled to [0, 1]: ``scale="layer"`` with one minimum and
    maximum over every block together (both towers), ``"filter"`` with each filter's own. A
    constant filter, whose range is empty, becomes mid-grey."""
    import torch

    if scale == "layer":
        everything = torch.cat([w.flatten() for _, w in blocks])
        lo, hi = everything.min(), everything.max()
        return [(title, _min_max(w, lo, hi)) for title, w in blocks]
    if scale == "filter":
        out = []
        for title, w in blocks:
            flat = w.flatten(1)
            lo, hi = flat.min(1).values.view(-1, 1, 1, 1), flat.max(1).values.view(-1, 1, 1, 1)
            out.append((title, _min_max(w, lo, hi)))
        return out
    raise ValueError(f"scale must be 'layer' or 'filter', got {scale!r}")


def _min_max(w: torch.Tensor, lo, hi) -> torch.Tensor:
    import torch

    span = hi - lo
    return torch.where(span > 0, (w - lo) / torch.where(span > 0, span, 1), 0.5)


def filter_grid(scaled: torch.Tensor, columns: int = FILTER_COLUMNS, zoom: int = FILTER_ZOOM,
                gap: int = FILTER_GAP) -> np.ndarray:
    """The filters ``scaled`` ([N, 3, k, k], values in [0, 1]) as one RGB image, float32
    [H, W, 3]: filter i in row i // columns, column i % columns, each pixel a zoom x zoom block
    (nearest neighbour), ``gap`` background pixels between and around the cells. Cell (r, c)
    starts at y = gap + r * (k * zoom + gap), x = gap + c * (k * zoom + gap)."""
    import numpy as np

    if scaled.dim() != 4 or scaled.shape[1] != 3:
        raise ValueError(f"scaled must be RGB filters [N, 3, k, k], got shape {tuple(scaled.shape)}")
    n, _, kh, kw = scaled.shape
    rows = -(-n // columns)
    cell_h, cell_w = kh * zoom + gap, kw * zoom + gap
    grid = np.full((gap + rows * cell_h, gap + min(n, columns) * cell_w, 3), FILTER_BACKGROUND, np.float32)
    cells = scaled.permute(0, 2, 3, 1).numpy().repeat(zoom, axis=1).repeat(zoom, axis=2)
    for i, cell in enumerate(cells):
        y, x = gap + (i // columns) * cell_h, gap + (i % columns) * cell_w
        grid[y:y + kh * zoom, x:x + kw * zoom] = cell
    return grid


def filter_grids(model: torch.nn.Module, variant: str, scale: str = "layer", zoom: int = FILTER_ZOOM) -> list:
    """[(title, grid)] of conv1: the arrays the PNG shows, one per block (see filter_grid)."""
    return [(title, filter_grid(w, zoom=zoom)) for title, w in scale_filters(conv1_weights(model, variant), scale)]


def filters_png_size(grids: list) -> tuple:
    """(width, height) in pixels of the PNG that filters_image makes of ``grids``."""
    return max(g.shape[1] for _, g in grids), sum(FILTER_TITLE_HEIGHT + g.shape[0] for _, g in grids)


def filters_image(grids: list):
    """The blocks stacked top to bottom, each under a white strip of FILTER_TITLE_HEIGHT pixels
    holding its title, as an RGB PIL image exactly as wide as the widest grid. Drawn with PIL
    rather than matplotlib so every filter pixel lands on whole image pixels, unresampled."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", filters_png_size(grids), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=FILTER_TITLE_HEIGHT - 8)
    y = 0
    for title, grid in grids:
        draw.text((FILTER_GAP + 2, y + 3), title, fill="black", font=font)
        y += FILTER_TITLE_HEIGHT
        image.paste(Image.fromarray(np.rint(grid * 255).astype(np.uint8), "RGB"), (0, y))
        y += grid.shape[0]
    return image


def run_filters(args) -> int:
    from train.checkpoint import load_model

    checkpoint_file(args.checkpoint)
    out = output_file(args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)),
                                               "conv1_filters.png"), "--out", ".png", args.overwrite)
    model, config = load_model(args.checkpoint, backend="torch", device="cpu")  # weights only: no kernels run
    grids = filter_grids(model, config["variant"], args.scale, args.zoom)
    try:
        filters_image(grids).save(out, format="PNG")
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write it ({e.strerror or e})") from None
    width, height = filters_png_size(grids)
    scaled = "over the whole layer" if args.scale == "layer" else "per filter"
    print(f"{out}: conv1 of the {config['variant']} variant, {' + '.join(t for t, _ in grids)}, "
          f"min-max scaled {scaled}, {width}x{height} pixels")
    return 0


def add_filters_command(subparsers) -> None:
    p = subparsers.add_parser(
        "filters", help="a PNG grid of conv1's filters", formatter_class=HelpFormatter,
        description="A PNG grid of conv1's filters, each filter's 3 x 11 x 11 weights shown as an RGB image "
                    "(min-max scaled to 0..255), enlarged with nearest neighbour, 16 a row: the paper variant's "
                    "in two blocks, tower 0 and tower 1 (48 each, as in the paper's Figure 3); the torchvision "
                    "variant's 64 in one.")
    p.add_argument("checkpoint", metavar="CKPT",
                   help="a checkpoint of train/run.py, or a state_dict of torchvision.models.alexnet (.pth)")
    p.add_argument("--out", metavar="PNG", default=None,
                   help="where to write the picture (default: conv1_filters.png beside CKPT)")
    p.add_argument("--scale", choices=("layer", "filter"), default="layer",
                   help="min-max scale over the whole layer (both towers), as the paper's figure, so filters "
                        "compare by strength and weak or dead ones look flat; or over each filter, which "
                        "shows every filter's pattern at full contrast, weak ones' noise included")
    p.add_argument("--zoom", type=positive_int, default=FILTER_ZOOM,
                   help="screen pixels per weight (nearest neighbour)")
    p.add_argument("--overwrite", action="store_true", help="replace the picture if it exists")
    p.set_defaults(run=run_filters)


# ==============================================================================================
# patches: the dataset patches that excite a conv layer's channels most
# ==============================================================================================

CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
PATCHES_PER_CHANNEL = 9
DEFAULT_CHANNELS = 8
PATCH_CELL = 1.1  # inches per patch (at 100 dpi: 110 pixels)


class Top(NamedTuple):
    """The strongest units found so far, per channel, strongest first: tensors [C, m], m <= k.
    Entry (c, i) is unit (ys, xs) of image ``images``, with activation ``values``."""
    values: torch.Tensor
    images: torch.Tensor
    ys: torch.Tensor
    xs: torch.Tensor


def top_activations(acts: torch.Tensor, image_ids, k: int = PATCHES_PER_CHANNEL, best: Optional[Top] = None) -> Top:
    """Merges the activations acts [N, C, H, W] of images image_ids [N] into ``best`` (the result
    for the earlier batches, or None): per channel the k strongest units, at most one per image
    -- each image offers only its own strongest unit of the channel (the first in row-major order
    on ties) -- so the k patches come from k different images."""
    import torch

    if acts.dim() != 4:
        raise ValueError(f"acts must be N x C x H x W, got shape {tuple(acts.shape)}")
    n, c, h, w = acts.shape
    image_ids = torch.as_tensor(image_ids, dtype=torch.long).reshape(-1)
    if image_ids.numel() != n:
        raise ValueError(f"image_ids: {image_ids.numel()} ids for {n} images")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    values, where = acts.detach().float().cpu().flatten(2).max(dim=2)  # [N, C]
    cand = Top(values.t(), image_ids.view(1, n).expand(c, n), (where // w).t(), (where % w).t())
    if best is not None:
        if best.values.shape[0] != c:
            raise ValueError(f"best: results for {best.values.shape[0]} channels, acts has {c}")
        cand = Top(*(torch.cat([b, a], dim=1) for b, a in zip(best, cand)))
    values, order = cand.values.topk(min(k, cand.values.shape[1]), dim=1)
    return Top(values, *(t.gather(1, order) for t in cand[1:]))


def default_channels(top: Top, count: int = DEFAULT_CHANNELS) -> list:
    """The ``count`` channels with the highest single activation, in channel order: the first
    channels of a network with dead units may show nothing at all."""
    strongest = top.values[:, 0].topk(min(count, top.values.shape[0])).indices
    return sorted(strongest.tolist())


def parse_channels(text: Optional[str]) -> Optional[list]:
    if text is None:
        return None
    try:
        channels = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--channels {text}: expected channel numbers separated by commas, like 0,5,9") from None
    if any(c < 0 for c in channels):
        raise UsageError(f"--channels {text}: channel numbers start at 0")
    if len(set(channels)) != len(channels):
        raise UsageError(f"--channels {text}: a channel is listed twice")
    return channels


def crop(image: torch.Tensor, window) -> torch.Tensor:
    """image [3, H, W] cut to window (top, left, bottom, right), clipped to the image."""
    top, left, bottom, right = window
    _, h, w = image.shape
    return image[:, max(top, 0):min(bottom, h), max(left, 0):min(right, w)]


def spread(n: int, count: Optional[int]) -> list:
    """``count`` indices spread evenly over range(n), all of them when count is None or >= n: an
    ImageFolder is sorted by class, so its first images would all be of one class."""
    if count is None or count >= n:
        return list(range(n))
    return [i * n // count for i in range(count)]


class _Indexed:
    """The chosen samples of an image folder as (image, index into the folder), or Skipped: a
    map-style dataset for a DataLoader."""

    def __init__(self, folder, indices: list):
        self.folder, self.indices = folder, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        item = self.folder[self.indices[i]]
        return (item[0], self.indices[i]) if isinstance(item, tuple) else item  # else a data.Skipped


def patches_figure(rows: list, title: str):
    """A matplotlib figure: one row per (channel, [(patch [h, w, 3] in 0..1, activation), ...]),
    PATCHES_PER_CHANNEL cells a row (empty cells where a row has fewer)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    width, height = 0.8 + PATCH_CELL * PATCHES_PER_CHANNEL, 0.7 + 1.15 * len(rows)
    fig, axes = plt.subplots(len(rows), PATCHES_PER_CHANNEL, squeeze=False, figsize=(width, height))
    fig.subplots_adjust(left=0.8 / width, right=0.99, bottom=0.1 / height, top=1 - 0.6 / height,
                        wspace=0.1, hspace=0.3)
    for axes_row, (channel, cells) in zip(axes, rows):
        for i, ax in enumerate(axes_row):
            ax.set_xticks([])
            ax.set_yticks([])
            if i >= len(cells):
                ax.axis("off")
                continue
            patch, value = cells[i]
            ax.imshow(patch, interpolation="nearest")
            ax.set_title(f"{value:.3g}", fontsize=7)
        axes_row[0].set_ylabel(f"channel {channel}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig


def run_patches(args) -> int:
    if args.layer not in CONV_LAYERS:
        raise UsageError(f"--layer {args.layer}: patches are cut for convolutional layers only: "
                         f"{', '.join(CONV_LAYERS)}")
    channels = parse_channels(args.channels)
    checkpoint_file(args.checkpoint)
    out = output_file(args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)),
                                               f"patches_{args.layer}.png"), "--out", ".png", args.overwrite)
    import torch
    from torch.utils.data import DataLoader

    from alexnet_kernels.stats import layer_table
    from train.checkpoint import load_model
    from train.config import default_resize  # the resize train/run.py evaluates with
    from train.data import DataError, SafeImageFolder, analysis_dir, collate_skipping, eval_transform, normalization

    device = parse_device(args.device)
    root = analysis_dir(args.data)  # the quick checks before the slow load
    # The package's kernels on a GPU; on the CPU torch's ops compute the same function faster.
    model, config = load_model(args.checkpoint, backend="custom" if device.type == "cuda" else "torch",
                               device=device)
    variant, size = config["variant"], config["image_size"]
    if model.removed:  # layer_table's receptive fields are the full network's
        raise UsageError(f"{args.checkpoint}: a network without {', '.join(model.removed)}; patches takes a full "
                         f"network (the receptive fields of an ablated one are not tabulated)")
    row = next((r for r in layer_table(variant, size) if r.name == args.layer), None)
    if row is None:
        raise UsageError(f"--layer {args.layer}: the {variant} network has no such layer")
    if channels is not None and max(channels) >= row.out_channels:
        raise UsageError(f"--channels: {args.layer} has channels 0..{row.out_channels - 1}, got {max(channels)}")
    rf = row.receptive_field

    # Unnormalized images, to crop from; the network gets them normalized as in training.
    folder = SafeImageFolder(root, eval_transform(size, default_resize(size), torch.nn.Identity()),
                             allow_empty=True)
    indices = spread(len(folder), args.max_images)
    loader = DataLoader(_Indexed(folder, indices), batch_size=args.batch_size, shuffle=False,
                        collate_fn=collate_skipping)
    normalize = normalization(variant)
    top, skipped = None, 0
    with torch.no_grad():
        for images, ids, bad in loader:
            skipped += len(bad)
            if images is not None:
                top = top_activations(model.features_at(normalize(images).to(device), args.layer), ids, best=top)
    if top is None:
        raise DataError(f"--data {args.data}: none of its {len(indices)} image(s) could be read")
    if channels is None:
        channels = default_channels(top)

    rows = []
    for channel in channels:
        cells = []
        for i in range(top.values.shape[1]):
            image = folder[int(top.images[channel, i])][0]
            patch = crop(image, rf.window(int(top.ys[channel, i]), int(top.xs[channel, i])))
            cells.append((patch.permute(1, 2, 0).clamp(0, 1).numpy(), top.values[channel, i].item()))
        rows.append((channel, cells))
    read = len(indices) - skipped
    title = (f"{args.layer} of {os.path.basename(args.checkpoint)} ({variant}): the {top.values.shape[1]} strongest "
             f"of {read} image(s), receptive field {rf.size}x{rf.size}")
    fig = patches_figure(rows, title)
    try:
        fig.savefig(out, dpi=100)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write it ({e.strerror or e})") from None
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    note = f"; {skipped} unreadable image(s) skipped" if skipped else ""
    print(f"{out}: channels {','.join(map(str, channels))} of {args.layer}, {read} image(s){note}")
    return 0


def add_patches_command(subparsers) -> None:
    p = subparsers.add_parser(
        "patches", help="the dataset patches that excite chosen channels of a conv layer most",
        description="For chosen channels of a convolutional layer, the 9 images of an ImageFolder dataset "
                    "whose strongest unit of the channel responds most (at most one unit per image), each "
                    "cropped to that unit's receptive field (clipped to the image), as a PNG grid: one row per "
                    "channel, strongest first, each patch titled with its activation (after the ReLU). Images "
                    "are prepared as train/run.py evaluates: shorter side resized, centre crop of the "
                    "checkpoint's image size.")
    p.add_argument("checkpoint", metavar="CKPT",
                   help="a checkpoint of train/run.py, or a state_dict of torchvision.models.alexnet (.pth)")
    p.add_argument("--data", metavar="DIR", required=True, help="an ImageFolder tree DIR/<class>/<image>, or "
                   "the ImageNet layout DIR/train/..., DIR/val/... (its val/ images are used)")
    p.add_argument("--layer", required=True, metavar="convK", help=f"one of {', '.join(CONV_LAYERS)}")
    p.add_argument("--channels", metavar="LIST",
                   help=f"channels to show, e.g. 0,5,9 (default: the {DEFAULT_CHANNELS} channels with the highest "
                        "activation over the images, in channel order)")
    p.add_argument("--out", metavar="PNG", default=None,
                   help="where to write the picture (default: patches_<layer>.png beside CKPT)")
    p.add_argument("--max-images", type=positive_int, metavar="N", default=None,
                   help="use N images spread evenly over DIR (default: all)")
    p.add_argument("--batch-size", type=positive_int, metavar="B", default=32, help="images per forward pass")
    p.add_argument("--device", default="cpu", help="cpu, or cuda[:K] (the package's kernels)")
    p.add_argument("--overwrite", action="store_true", help="replace the picture if it exists")
    p.set_defaults(run=run_patches)


# ==============================================================================================
# the command line
# ==============================================================================================

# Each subcommand's section above defines add_<name>_command(subparsers), which adds its parser
# and sets its defaults' ``run`` to the function that carries it out; list it here.
COMMANDS = (add_filters_command, add_patches_command)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0].rstrip(":") + ".", formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True, parser_class=Parser)
    for add in COMMANDS:
        add(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(f"{PROG} {args.command}", args.run, args)


if __name__ == "__main__":
    sys.exit(main())
