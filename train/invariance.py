"""How AlexNet's fc7 feature and its top class change when the input is translated, scaled or
rotated (the experiment of Zeiler and Fergus, 2014, Figure 5, on fc7):

    python train/invariance.py CKPT --data DIR [--images N] [--out DIR] [--device cpu]

For N images of DIR (evenly spread over it, so over its classes; an ImageFolder tree, or the
ImageNet layout DIR/train, DIR/val, whose val/ images are used), prepared as
evaluation prepares them (shorter side resized, centre crop of the checkpoint's image_size,
normalized), each transform is applied at each magnitude below, and the script reports per
transform and magnitude, over the images:

    feature_distance   mean of ||f(T x) - f(x)|| / ||f(x)||, f the fc7 feature (eval mode)
    top_class_kept     share of images whose top class under T is the original image's
    p_original_class   mean softmax probability of the original image's top class under T

The transforms act on the whole resized image, about its centre, before the centre crop, so
content from beyond the crop moves in where the resized image has any (bilinear interpolation;
what lies outside it is filled with the mean pixel, 0 after normalization):

    translation  vertical shifts of 0, +-5, +-10, +-15, +-20% of image_size (down is positive),
                 in whole pixels (+-45 px at 227, +-13 px at 64)
    scale        factors 0.6 to 1.4 in steps of 0.1 (below 1 the image shrinks)
    rotation     -90 to 90 degrees in steps of 15, counter-clockwise positive

Writes invariance.csv (one row per transform and magnitude) and invariance.png (one column per
transform; rows: feature distance, and top class kept with the original class's probability) to
--out, and prints the table; existing results are replaced only with --overwrite. Exit status:
0 done, 2 a bad argument, checkpoint or data directory (one line on stderr).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from typing import TYPE_CHECKING

if __package__ in (None, ""):  # run as `python train/invariance.py`: import train.* from the repository
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if TYPE_CHECKING:  # annotations only: torch loads once the arguments are read
    import torch

from train.cli import (
    Parser,
    RawDescriptionHelpFormatter,
    UsageError,
    checkpoint_file,
    output_dir,
    output_file,
    parse_device,
    positive_int,
    run_command,
)

PROG = "train/invariance.py"
LAYER = "fc7"

TRANSLATION_FRACTIONS = (-0.2, -0.15, -0.1, -0.05, 0.0, 0.05, 0.1, 0.15, 0.2)
SCALES = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4)
ROTATIONS = tuple(range(-90, 91, 15))
UNITS = {"translation": "px", "scale": "x", "rotation": "deg"}
IDENTITY = {"translation": 0, "scale": 1.0, "rotation": 0}
CSV_COLUMNS = ("transform", "magnitude", "unit", "feature_distance", "top_class_kept", "p_original_class", "images")


def magnitudes(image_size: int) -> dict:
    """{transform: magnitudes} for inputs of image_size pixels; translations in whole pixels."""
    shifts = sorted({round(f * image_size) for f in TRANSLATION_FRACTIONS})
    return {"translation": shifts, "scale": list(SCALES), "rotation": list(ROTATIONS)}


def transform_image(image: torch.Tensor, kind: str, magnitude, crop: int) -> torch.Tensor:
    """The centre crop (crop x crop) of ``image`` ([3, H, W], normalized) after the transform
    ``kind`` at ``magnitude`` about the image's centre; the identity is exactly the plain crop."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    if magnitude != IDENTITY[kind]:
        angle, shift, factor = 0.0, [0, 0], 1.0
        if kind == "translation":
            shift = [0, int(magnitude)]
        elif kind == "scale":
            factor = float(magnitude)
        elif kind == "rotation":
            angle = -float(magnitude)  # affine turns clockwise; the reported angle is counter-clockwise
        else:
            raise ValueError(f"kind must be one of {', '.join(UNITS)}, got {kind!r}")
        image = TF.affine(image, angle=angle, translate=shift, scale=factor, shear=[0.0, 0.0],
                          interpolation=InterpolationMode.BILINEAR, fill=0.0)
    return TF.center_crop(image, [crop, crop])


def _classifier(model: torch.nn.Module, variant: str) -> torch.nn.Module:
    # fc8 by its state_dict name, the checkpoint format's contract: fc8(features_at(x, "fc7"))
    # is forward(x) in eval mode, so one pass gives both the feature and the class.
    return model.get_submodule("fc8" if variant == "paper" else "classifier.6")


def fc7_and_probabilities(model: torch.nn.Module, variant: str, x: torch.Tensor):
    """(fc7 features [N, 4096], softmax over the classes [N, C]), float32 on the CPU."""
    import torch

    with torch.no_grad():
        feature = model.features_at(x, LAYER)
        logits = _classifier(model, variant)(feature)
    return feature.float().cpu(), torch.softmax(logits.float(), dim=1).cpu()


def measure(model: torch.nn.Module, variant: str, images, image_size: int, device="cpu", batch_size: int = 64,
            table: dict = None) -> list:
    """The rows of the report (dicts with CSV_COLUMNS) for ``images`` (normalized [3, H, W]
    tensors, H and W at least image_size; sizes may differ), the model in eval mode; ``table``:
    the magnitudes per transform (default magnitudes(image_size)). A forward pass takes about
    ``batch_size`` images: several magnitudes' worth when there are fewer images than that, since
    on a CPU each pass costs about as much for 3 images as for 30 (it reads all of fc6 and fc7)."""
    import torch

    table = magnitudes(image_size) if table is None else table
    if model.training:
        raise ValueError("model must be in eval mode: dropout would change fc7 between passes")
    jobs = [(kind, m) for kind, ms in table.items() for m in ms if m != IDENTITY[kind]]
    sums = {(kind, m): [0.0, 0, 0, 0.0, 0] for kind, ms in table.items() for m in ms}  # dist, n_dist, kept, p, n

    def run(chunk, group):
        x = torch.stack([transform_image(img, kind, m, image_size) for kind, m in group for img in chunk])
        f, p = fc7_and_probabilities(model, variant, x.to(device))
        return zip(group, f.split(len(chunk)), p.split(len(chunk)))

    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        [(_, f0, p0)] = run(chunk, [("translation", 0)])
        top0, norm0 = p0.argmax(1), f0.norm(dim=1)
        alive = norm0 > 0  # an all-zero feature has no relative distance: left out of the mean
        results = [((kind, m), f0, p0) for kind, ms in table.items() for m in ms if m == IDENTITY[kind]]
        per_pass = max(1, batch_size // len(chunk))
        for j in range(0, len(jobs), per_pass):
            results.extend(run(chunk, jobs[j:j + per_pass]))
        for key, f, p in results:
            s = sums[key]
            s[0] += ((f - f0).norm(dim=1)[alive] / norm0[alive]).sum().item()
            s[1] += int(alive.sum())
            s[2] += int((p.argmax(1) == top0).sum())
            s[3] += p.gather(1, top0[:, None]).sum().item()
            s[4] += len(chunk)
    rows = []
    for (kind, m), (dist, n_dist, kept, prob, n) in sums.items():
        rows.append(dict(transform=kind, magnitude=m, unit=UNITS[kind],
                         feature_distance=dist / n_dist if n_dist else float("nan"),
                         top_class_kept=kept / n, p_original_class=prob / n, images=n))
    return rows


def load_images(root: str, resize: int, variant: str, count: int) -> list:
    """``count`` images of ``root`` (data.analysis_dir: the tree, or its val/), all if fewer, evenly
    spread over its sorted files, resized (shorter side ``resize``) and normalized for
    ``variant``, not cropped: the transforms use what lies beyond the crop. Unreadable files are
    skipped with a warning."""
    from torchvision import transforms

    from train.data import DataError, SafeImageFolder, Skipped, analysis_dir, normalization

    root = analysis_dir(root)
    prepare = transforms.Compose([transforms.Resize(resize), transforms.ToTensor(), normalization(variant)])
    folder = SafeImageFolder(root, prepare, allow_empty=True)
    n = len(folder)
    k = min(count, n)
    picks = sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})
    images = []
    for index in picks:
        item = folder[index]
        if isinstance(item, Skipped):
            print(f"{PROG}: warning: skipping {item.path}: {item.reason}", file=sys.stderr)
            continue
        images.append(item[0])
    if not images:
        raise DataError(f"--data {root}: none of the {len(picks)} chosen images could be read")
    return images


def format_table(rows: list) -> str:
    lines = [f"{'transform':<12} {'magnitude':>10} {'fc7 distance':>13} {'top class kept':>15} "
             f"{'P(original class)':>18}"]
    for r in rows:
        m = f"{r['magnitude']:g} {r['unit']}"
        lines.append(f"{r['transform']:<12} {m:>10} {r['feature_distance']:>13.4f} {r['top_class_kept']:>15.1%} "
                     f"{r['p_original_class']:>18.4f}")
    return "\n".join(lines)


def write_csv(rows: list, path: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({**r, **{k: f"{r[k]:.6g}" for k in ("feature_distance", "top_class_kept", "p_original_class")}})


def plot(rows: list, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(r["transform"] for r in rows))
    fig, axes = plt.subplots(2, len(kinds), figsize=(4.2 * len(kinds), 6.5), sharex="col", squeeze=False)
    labels = {"translation": "vertical shift (px, down +)", "scale": "scale factor",
              "rotation": "rotation (degrees, counter-clockwise +)"}
    for col, kind in enumerate(kinds):
        rs = [r for r in rows if r["transform"] == kind]
        ms = [r["magnitude"] for r in rs]
        top, bottom = axes[0][col], axes[1][col]
        top.plot(ms, [r["feature_distance"] for r in rs], "o-")
        top.set(title=kind, ylabel=f"{LAYER} distance ||f(Tx)-f(x)|| / ||f(x)||" if col == 0 else None)
        top.set_ylim(bottom=0)
        bottom.plot(ms, [r["top_class_kept"] for r in rs], "o-", label="top class kept (share)")
        bottom.plot(ms, [r["p_original_class"] for r in rs], "s--", label="P(original top class)")
        bottom.set(xlabel=labels.get(kind, kind), ylim=(0, 1.05), ylabel="share / probability" if col == 0 else None)
        for ax in (top, bottom):
            ax.axvline(IDENTITY.get(kind, 0), color="grey", lw=0.8, ls=":")
            ax.grid(alpha=0.3)
    axes[1][0].legend(loc="lower left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n", 1)[1], formatter_class=RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CKPT",
                   help="a checkpoint of train/run.py, or a state_dict of torchvision.models.alexnet (.pth)")
    p.add_argument("--data", metavar="DIR", required=True, help="an ImageFolder tree DIR/<class>/<image>, or the "
                   "ImageNet layout DIR/train/..., DIR/val/... (its val/ images are used)")
    p.add_argument("--images", type=positive_int, default=100,
                   help="images to measure on (all if DIR has fewer); they are held in memory, resized")
    p.add_argument("--out", metavar="DIR",
                   help="where invariance.csv and invariance.png go (default: CKPT's directory)")
    p.add_argument("--device", default="cpu", help="where the model runs (cpu, cuda, cuda:1)")
    p.add_argument("--backend", choices=("custom", "torch"), default="custom",
                   help="custom: alexnet_kernels' LRN, max pooling and ReLU; torch: torch.nn's")
    p.add_argument("--resize", type=positive_int,
                   help="shorter side images are resized to before the transforms and the crop (default: "
                        "train/run.py's, 256 for crops of 224 and more, image_size * 8/7 below)")
    p.add_argument("--batch-size", type=positive_int, default=64,
                   help="images per forward pass (transformed copies included)")
    p.add_argument("--overwrite", action="store_true", help="replace invariance.csv and invariance.png if --out "
                   "holds them")
    return p


def run(args) -> int:
    from train.checkpoint import load_model
    from train.config import default_resize
    from train.data import analysis_dir

    device = parse_device(args.device)
    analysis_dir(args.data)  # before the checkpoint, which takes seconds to load
    checkpoint_file(args.checkpoint)
    model, config = load_model(args.checkpoint, backend=args.backend, device=device)
    if LAYER in model.removed:
        raise UsageError(f"{args.checkpoint}: a network without {LAYER}, the layer this measures")
    variant, size = config["variant"], config["image_size"]
    resize = args.resize or default_resize(size)
    if resize < size:
        raise UsageError(
            f"--resize {resize}: smaller than the checkpoint's image_size {size}, which is cropped from it")
    out = output_dir(args.out or os.path.dirname(os.path.abspath(args.checkpoint)), "--out")
    csv_path, png_path = (output_file(os.path.join(out, name), "--out", suffix, args.overwrite)
                          for name, suffix in (("invariance.csv", ".csv"), ("invariance.png", ".png")))
    images = load_images(args.data, resize, variant, args.images)
    rows = measure(model, variant, images, size, device, args.batch_size)
    name = os.path.basename(args.checkpoint)
    print(f"{name}: {variant} variant at {size}x{size}, {len(images)} images of {args.data}, {LAYER}")
    print(format_table(rows))
    try:
        write_csv(rows, csv_path)
        plot(rows, png_path, f"{name} ({variant}, {size}x{size}): {LAYER} and top class under transforms, "
                             f"{len(images)} images")
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write the results ({e.strerror or e})") from None
    print(f"wrote {csv_path} and {png_path}")
    return 0


def main(argv=None) -> int:
    return run_command(PROG, run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
