"""Off-the-shelf features (DeCAF): a trained AlexNet's fc6 or fc7 activations as the input of
linear classifiers for another image set, against the same classifiers on raw pixels.

    python train/features.py runs/<run>/checkpoint.pt --data DIR --layer fc7
    python train/features.py alexnet.pth --data DIR --layer fc6 --splits 10   # torchvision weights

DIR is an ImageFolder tree, DIR/<class>/<image>, or the ImageNet layout DIR/train/<class>/*,
DIR/val/<class>/*, whose val/ images (which the network did not train on) are used. Every image
goes through the network in eval
mode as train/run.py evaluates it (shorter side resized, centre crop at the checkpoint's image
size, the variant's normalization); unreadable files are skipped with a warning. The layer's
activations (after its ReLU, N x 4096) go to --out, an .npz holding

    features [N, 4096] float32, labels [N] int64, classes [C] str, paths [N] str,
    pixels [N, 3 * P * P] uint8 (the baseline's input), layer, checkpoint

Then, for --splits random stratified splits holding out --test-size of the images, it trains a
logistic regression and a linear SVM (each after a StandardScaler, in one Pipeline) on the
features and, as the baseline, on the raw pixels: the same centre crop resized to P x P
(--pixels-size) and flattened. It prints each classifier's held-out accuracy, mean and std over
the splits, and writes that table beside the .npz as .csv and .json (with every split's
accuracy); an existing --out is replaced only with --overwrite. Exit status: 0 done, 2 a bad
argument, checkpoint or data directory (one line). torch is imported once the arguments are read.
"""
import argparse
import csv
import json
import math
import os
import sys
import warnings

if __package__ in (None, ""):  # run as `python train/features.py`: import train.* from the repository
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from train.cli import HelpFormatter, Parser, UsageError, checkpoint_file, output_file, parse_device, run_command

PROG = "train/features.py"
FEATURE_LAYERS = ("fc6", "fc7")
CLASSIFIERS = ("logistic regression", "linear SVM")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("checkpoint", metavar="CKPT", help="a checkpoint of train/run.py, or a state_dict of "
                   "torchvision.models.alexnet")
    p.add_argument("--data", metavar="DIR", required=True, help="an ImageFolder tree DIR/<class>/<image>, or the "
                   "ImageNet layout DIR/train/..., DIR/val/... (its val/ images are used)")
    p.add_argument("--layer", choices=FEATURE_LAYERS, required=True,
                   help="the layer whose activations are the features")
    p.add_argument("--out", metavar="FILE", help="the .npz to write (default: features-<data>-<layer>.npz beside "
                   "the checkpoint); the report goes beside it as .csv and .json")
    p.add_argument("--splits", type=int, default=5, help="random stratified train/test splits")
    p.add_argument("--test-size", type=float, default=0.3, help="share of the images each split holds out")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits and the classifiers")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--device", default="cpu", help="where the network runs (cpu, cuda, cuda:1)")
    p.add_argument("--backend", choices=("custom", "torch"), default="custom",
                   help="custom: alexnet_kernels' kernels; torch: torch.nn's")
    p.add_argument("--workers", type=int, default=1, help="data loading processes (0: in this process)")
    p.add_argument("--pixels-size", type=int, default=32, help="side of the raw-pixel baseline's images")
    p.add_argument("--overwrite", action="store_true", help="replace --out (and its .csv and .json) if it exists")
    return p


# --------------------------------------------------------------------------------------------
# classifiers
# --------------------------------------------------------------------------------------------


def make_classifiers(seed: int = 0) -> dict:
    """The linear classifiers, each standardizing its inputs first (fc activations and pixels
    have very different scales, and both solvers converge far better on standardized inputs)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    return {
        "logistic regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed)),
        "linear SVM": make_pipeline(StandardScaler(), LinearSVC(max_iter=10000, random_state=seed)),
    }


def evaluate_classifiers(x: np.ndarray, y: np.ndarray, splits: int = 5, test_size: float = 0.3,
                         seed: int = 0) -> dict:
    """{classifier name: [held-out accuracy of each split]} of make_classifiers() trained on
    ``splits`` random stratified splits of (x, y), each holding out ``test_size`` of the rows.
    The splits depend on seed alone, so features and pixels are compared on the same splits.
    A classifier that stops before converging is reported once as a warning on stderr."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedShuffleSplit

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    check_split_sizes(np.bincount(np.unique(y, return_inverse=True)[1]), test_size)
    splitter = StratifiedShuffleSplit(n_splits=splits, test_size=test_size, random_state=seed)
    accuracies = {name: [] for name in CLASSIFIERS}
    unconverged = set()
    for train, test in splitter.split(x, y):
        for name, classifier in make_classifiers(seed).items():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                classifier.fit(x[train], y[train])
            if any(issubclass(w.category, ConvergenceWarning) for w in caught):
                unconverged.add(name)
            accuracies[name].append(float((classifier.predict(x[test]) == y[test]).mean()))
    for name in sorted(unconverged):
        print(f"warning: the {name} did not converge on some splits (its accuracy may be a little low)",
              file=sys.stderr)
    return accuracies


def check_split_sizes(per_class, test_size: float, where: str = "the data") -> None:
    """UsageError unless stratified splits holding out ``test_size`` can put every class
    (``per_class``: image counts) on both sides: at least 2 images per class, and at least one
    test and one training image per class in all."""
    per_class = list(per_class)
    n, classes = sum(per_class), len(per_class)
    if classes < 2:
        raise UsageError(f"{where}: {classes} class(es); a classifier needs at least 2")
    fewest = min(per_class)
    if fewest < 2:
        raise UsageError(f"{where}: a class has {fewest} image(s); each needs at least 2 so that every split "
                         f"trains and tests on it")
    n_test = math.ceil(test_size * n)
    if n_test < classes or n - n_test < classes:
        raise UsageError(f"{where}: {n} images in {classes} classes are too few for --test-size {test_size:g}: "
                         f"a split would test on {n_test} and train on {n - n_test} images, and each needs at "
                         f"least one per class")


# --------------------------------------------------------------------------------------------
# extraction
# --------------------------------------------------------------------------------------------


class Views:
    """An image as (the network's input: run.py's evaluation crop, the baseline's raw pixels:
    that crop resized to pixels_size squared, uint8, flattened)."""

    def __init__(self, image_size: int, variant: str, pixels_size: int):
        from torchvision import transforms

        from train import data
        from train.config import default_resize

        resize = default_resize(image_size)
        self.net = data.eval_transform(image_size, resize, data.normalization(variant))
        self.pixels = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(image_size),
                                          transforms.Resize((pixels_size, pixels_size)), transforms.PILToTensor()])

    def __call__(self, image):
        return self.net(image), self.pixels(image).flatten()


def extract(model, loader, layer: str, device) -> tuple:
    """(features float32 [N, F], pixels uint8 [N, P], labels [N], paths of the skipped files)
    over the loader's readable images, in its order."""
    import torch

    features, pixels, labels, skipped = [], [], [], []
    for batch, targets, bad in loader:
        for s in bad:
            print(f"warning: skipped unreadable image {s.path} ({s.reason})", file=sys.stderr)
        skipped += [s.path for s in bad]
        if batch is None:
            continue
        images, raw = batch
        with torch.no_grad():
            features.append(model.features_at(images.to(device), layer).float().cpu())
        pixels.append(raw)
        labels.append(targets)
    if not features:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.uint8), np.zeros(0, np.int64), skipped
    return (torch.cat(features).numpy(), torch.cat(pixels).numpy(), torch.cat(labels).numpy().astype(np.int64),
            skipped)


def dataset(root: str, image_size: int, variant: str, pixels_size: int):
    """The images of ``root`` (data.analysis_dir: the tree, or its val/) as a SafeImageFolder
    with Views as the transform; a DataError (a UsageError) if it is neither layout."""
    from train import data

    return data.SafeImageFolder(data.analysis_dir(root), Views(image_size, variant, pixels_size), allow_empty=True)


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------


def check_args(args) -> None:
    checkpoint_file(args.checkpoint)
    positive = {"--splits": args.splits, "--batch-size": args.batch_size, "--pixels-size": args.pixels_size}
    for flag, value in positive.items():
        if value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    if not 0 < args.test_size < 1:
        raise UsageError(f"--test-size must be in (0, 1), got {args.test_size:g}")
    if args.workers < 0:
        raise UsageError(f"--workers must not be negative, got {args.workers}")
    if args.out is None:
        name = os.path.basename(os.path.normpath(args.data)) or "data"
        args.out = os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), f"features-{name}-{args.layer}.npz")
    output_file(args.out, "--out", ".npz", args.overwrite)


def load(args):
    """(model, config) of the checkpoint, with the UsageErrors of a bad one, device or layer."""
    from train import checkpoint

    model, config = checkpoint.load_model(args.checkpoint, backend=args.backend, device=parse_device(args.device))
    if args.layer in config["remove"]:
        raise UsageError(f"--layer {args.layer}: the checkpoint's network has no {args.layer} (it was trained "
                         f"without {', '.join(config['remove'])})")
    return model, config


def report_rows(results: dict, dims: dict) -> list:
    """One row per (input, classifier): mean and std of the accuracy, and every split's."""
    return [dict(input=source, dims=dims[source], classifier=name, accuracy_mean=float(np.mean(accs)),
                 accuracy_std=float(np.std(accs)), splits=len(accs), accuracies=accs)
            for source, by_classifier in results.items() for name, accs in by_classifier.items()]


def format_table(rows: list) -> str:
    sources = list(dict.fromkeys(r["input"] for r in rows))
    width = max(len(s) for s in sources + ["input"])
    lines = [f"{'input':<{width}}  {'dims':>5}  " + "  ".join(f"{c:<21}" for c in CLASSIFIERS).rstrip()]
    for source in sources:
        cells = {r["classifier"]: r for r in rows if r["input"] == source}
        dims = next(iter(cells.values()))["dims"]
        accuracy = (f"{cells[c]['accuracy_mean']:.3f} ± {cells[c]['accuracy_std']:.3f}" for c in CLASSIFIERS)
        lines.append(f"{source:<{width}}  {dims:>5}  " + "  ".join(a.ljust(21) for a in accuracy).rstrip())
    return "\n".join(lines)


def write_report(out: str, rows: list, meta: dict) -> tuple:
    """out's .csv (one row per input and classifier) and .json (meta and the rows): their paths."""
    stem = os.path.splitext(out)[0]
    with open(stem + ".csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["input", "dims", "classifier", "accuracy_mean", "accuracy_std", "splits", "accuracies"])
        for r in rows:
            writer.writerow([r["input"], r["dims"], r["classifier"], f"{r['accuracy_mean']:.6f}",
                             f"{r['accuracy_std']:.6f}", r["splits"], " ".join(f"{a:.6f}" for a in r["accuracies"])])
    with open(stem + ".json", "w") as f:
        json.dump(dict(meta, results=rows), f, indent=2)
    return stem + ".csv", stem + ".json"


def run(args) -> int:
    check_args(args)
    from torch.utils.data import DataLoader

    from train import data

    model, config = load(args)
    image_size, variant = config["image_size"], config["variant"]
    images = dataset(args.data, image_size, variant, args.pixels_size)
    where = f"--data {args.data}"
    check_split_sizes(np.bincount(images.targets, minlength=len(images.classes)), args.test_size, where)
    loader = DataLoader(images, args.batch_size, shuffle=False, num_workers=args.workers,
                        collate_fn=data.collate_skipping)
    print(f"{args.layer} features of {args.checkpoint} ({variant} variant, {image_size}x{image_size} centre crops) "
          f"for {args.data}: {len(images)} image files, {len(images.classes)} classes", flush=True)
    features, pixels, labels, skipped = extract(model, loader, args.layer, args.device)
    check_split_sizes(np.bincount(labels, minlength=len(images.classes)), args.test_size,
                      f"{where} (without its {len(skipped)} unreadable files)" if skipped else where)
    unreadable = set(skipped)
    paths = [p for p, _ in images.samples if p not in unreadable]
    with open(args.out, "wb") as f:  # a file object: np.savez would otherwise pick the name's suffix
        np.savez(f, features=features, labels=labels, classes=np.array(images.classes), paths=np.array(paths),
                 pixels=pixels, layer=args.layer, checkpoint=os.path.abspath(args.checkpoint))
    print(f"features: {args.out} ({features.shape[0]} x {features.shape[1]})", flush=True)

    pixel_source = f"pixels {args.pixels_size}x{args.pixels_size}"
    results = {source: evaluate_classifiers(x, labels, args.splits, args.test_size, args.seed)
               for source, x in ((args.layer, features), (pixel_source, pixels))}
    rows = report_rows(results, {args.layer: features.shape[1], pixel_source: pixels.shape[1]})
    majority = np.bincount(labels).max() / len(labels)
    print(f"held-out accuracy over {args.splits} random stratified splits holding out {args.test_size:.0%} "
          f"(mean ± std; the most frequent class alone: {majority:.3f}):")
    print(format_table(rows))
    meta = dict(checkpoint=os.path.abspath(args.checkpoint), data=os.path.abspath(args.data), layer=args.layer,
                variant=variant, image_size=image_size, images=int(len(labels)), skipped=skipped,
                classes=list(images.classes), splits=args.splits, test_size=args.test_size, seed=args.seed,
                pixels_size=args.pixels_size, majority_class_accuracy=float(majority))
    csv_path, json_path = write_report(args.out, rows, meta)
    print(f"report: {csv_path}, {json_path}")
    return 0


def main(argv=None) -> int:
    return run_command(PROG, run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
