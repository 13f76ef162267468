"""Data for train/run.py: the paper's augmentation, ImageFolder trees that may hold unreadable
files, the generated default set, and samplers that can resume an epoch part way through.

Randomness: every random choice of a sample's augmentation (crop, flip, lighting) comes from a
seed made of (run seed, epoch, sample index) -- ``SeededSamples`` -- and the order of an epoch
from (run seed, epoch) -- ``EpochSampler``. So a batch is the same whichever worker loads it, and
a resumed run sees exactly the batches an uninterrupted one would have.
"""
import itertools
import os
import signal
from dataclasses import dataclass

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, default_collate
from torchvision import datasets, transforms

from .cli import UsageError
from .synthetic import SyntheticShapes

# torchvision's ImageNet channel statistics (of pixel values scaled to 0..1).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The principal components of ImageNet's RGB pixel values (on a 0..1 scale) used for AlexNet's
# "lighting" augmentation (section 4.1 of the paper), as published with fb.resnet.torch.
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


class DataError(UsageError):
    """A data directory that cannot be used (missing, empty, wrongly laid out)."""


class Lighting:
    """AlexNet's PCA colour augmentation on a [3, H, W] tensor in [0, 1]: adds
    eigvec @ (alpha * eigval) to every pixel, alpha ~ N(0, alphastd) per image and component.
    (torchvision has no such transform.)"""

    def __init__(self, alphastd: float = 0.1):
        self.alphastd = alphastd
        self.eigval = torch.tensor(PCA_EIGVAL)
        self.eigvec = torch.tensor(PCA_EIGVEC)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.alphastd == 0:
            return img
        alpha = torch.randn(3) * self.alphastd
        return img + (self.eigvec @ (alpha * self.eigval)).view(3, 1, 1)

    def __repr__(self) -> str:
        return f"Lighting(alphastd={self.alphastd})"


def normalization(variant: str) -> transforms.Normalize:
    """The input scale each variant's initialization expects. The paper's network takes pixel
    values 0..255 minus the mean pixel, as in the paper and Caffe's AlexNet: its N(0, 0.01) weights
    are sized for that range (on inputs scaled to unit variance its features would be swamped by
    the biases of 1). torchvision's takes (x - mean) / std of 0..1 values, as torchvision does."""
    if variant == "paper":
        return transforms.Normalize(IMAGENET_MEAN, (1 / 255,) * 3)  # (x - mean) * 255
    return transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)


def train_transform(image_size: int, resize: int, normalize, alphastd: float = 0.1) -> transforms.Compose:
    """The paper's training augmentation: shorter side to ``resize``, a random image_size crop,
    a random horizontal flip, PCA lighting, then ``normalize`` (normalization(variant))."""
    return transforms.Compose([
        transforms.Resize(resize),
        transforms.RandomCrop(image_size),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        Lighting(alphastd),
        normalize,
    ])


def eval_transform(image_size: int, resize: int, normalize, ten_crop: bool = False) -> transforms.Compose:
    """Evaluation: shorter side to ``resize``, then the centre crop ([3, S, S]) or, with ten_crop,
    the four corner crops, the centre one and their mirror images ([10, 3, S, S]); then
    ``normalize``."""
    if not ten_crop:
        return transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(image_size),
                                   transforms.ToTensor(), normalize])
    return transforms.Compose([
        transforms.Resize(resize),
        transforms.ToTensor(),
        transforms.TenCrop(image_size),
        transforms.Lambda(torch.stack),  # the tuple of crops -> [10, 3, S, S]
        normalize,
    ])


@dataclass(frozen=True)
class Skipped:
    """What a dataset returns in place of a sample whose file could not be read."""
    path: str
    reason: str


class SafeImageFolder(datasets.ImageFolder):
    """torchvision's ImageFolder that returns ``Skipped(path, reason)`` for a file PIL cannot
    read (corrupt, truncated, not an image) instead of raising; collate_skipping drops them."""

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        try:
            sample = self.loader(path)
        except (OSError, ValueError, Image.DecompressionBombError) as e:  # UnidentifiedImageError is an OSError
            return Skipped(path, f"{type(e).__name__}: {e}")
        if self.transform is not None:
            sample = self.transform(sample)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return sample, target


def collate_skipping(batch):
    """default_collate over the readable samples -> (images, labels, [Skipped, ...]); images and
    labels are None when no sample of the batch could be read."""
    skipped = [s for s in batch if isinstance(s, Skipped)]
    good = [s for s in batch if not isinstance(s, Skipped)]
    if not good:
        return None, None, skipped
    images, labels = default_collate(good)
    return images, labels, skipped


class SeededSamples(Dataset):
    """``dataset`` whose item i is produced under torch's global RNG seeded from (seed, epoch, i),
    so its random augmentation does not depend on the process, the worker or what was drawn
    before. The global RNG of the caller is left as it was. Set ``epoch`` before each epoch's
    DataLoader iterator is made (workers copy the dataset then)."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(((self.seed * 1_000_003 + self.epoch) * 1_000_003 + index) % 2**63)
            return self.dataset[index]


class EpochSampler(DistributedSampler):
    """DistributedSampler (an order per epoch from (seed, epoch), one shard per rank) that can
    start an epoch part way: ``set_epoch(epoch, start)`` skips the first ``start`` samples of this
    rank's order, the ones a resumed run has already trained on."""

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return super().__len__() - self.start


def _has_images(directory: str) -> bool:
    for _, _, files in os.walk(directory):
        if any(f.lower().endswith(datasets.folder.IMG_EXTENSIONS) for f in files):
            return True
    return False


def check_image_folder(directory: str, what: str) -> None:
    """DataError unless ``directory`` is an ImageFolder tree: class subdirectories holding images."""
    if not os.path.isdir(directory):
        raise DataError(f"{what} {directory}: no such directory")
    classes = [e for e in os.scandir(directory) if e.is_dir()]
    if not classes:
        loose = any(e.is_file() and e.name.lower().endswith(datasets.folder.IMG_EXTENSIONS)
                    for e in os.scandir(directory))
        raise DataError(f"{what} {directory}: "
                        + ("images lie directly in it; expected one subdirectory per class (<class>/<image>)" if loose
                           else "empty: expected one subdirectory per class holding images"))
    if not any(_has_images(c.path) for c in classes):
        raise DataError(f"{what} {directory}: no images ({', '.join(datasets.folder.IMG_EXTENSIONS)}) in its "
                        f"{len(classes)} class subdirectories")


def split_dirs(root: str, what: str = "--data"):
    """The one rule for a data directory, as the README states it: ``root/train`` and
    ``root/val`` (the ImageNet layout) when root/train exists, else ``root`` itself, one
    ImageFolder tree: (train dir, val dir), or (root, None). DataError if root is neither."""
    if not os.path.isdir(root):
        raise DataError(f"{what} {root}: no such directory")
    if not os.path.exists(os.path.join(root, "train")):
        check_image_folder(root, what)
        return root, None
    train_dir, val_dir = os.path.join(root, "train"), os.path.join(root, "val")
    check_image_folder(train_dir, what)
    if not os.path.isdir(val_dir):
        raise DataError(f"{what} {root}: has train/ but no val/ "
                        f"(expected {root}/train/<class>/* and {root}/val/<class>/*)")
    check_image_folder(val_dir, what)
    return train_dir, val_dir


def analysis_dir(root: str, what: str = "--data") -> str:
    """The images a checkpoint's analyses (features.py, invariance.py, visualize.py patches)
    read from ``root``: its val/ in the ImageNet layout (images the network was not trained on),
    else the tree itself."""
    train_dir, val_dir = split_dirs(root, what)
    return val_dir or train_dir


def image_folder_splits(root: str, image_size: int, resize: int, normalize, ten_crop: bool, alphastd: float,
                        val_fraction: float, seed: int):
    """(train set, held-out set, class names) from ``root`` (split_dirs): root/train and
    root/val, or root itself as one ImageFolder of which a seeded ``val_fraction`` is held out.
    The two splits must have the same classes."""
    train_tf = train_transform(image_size, resize, normalize, alphastd)
    eval_tf = eval_transform(image_size, resize, normalize, ten_crop)
    train_dir, val_dir = split_dirs(root)
    if val_dir:
        train_set = SafeImageFolder(train_dir, train_tf, allow_empty=True)
        val_set = SafeImageFolder(val_dir, eval_tf, allow_empty=True)
        if val_set.classes != train_set.classes:
            missing = sorted(set(train_set.classes) ^ set(val_set.classes))
            raise DataError(f"--data {root}: train/ and val/ have different classes "
                            f"({len(train_set.classes)} and {len(val_set.classes)}; differing: {', '.join(missing[:5])}"
                            f"{' ...' if len(missing) > 5 else ''})")
        return train_set, val_set, train_set.classes
    full_train = SafeImageFolder(root, train_tf, allow_empty=True)
    full_eval = SafeImageFolder(root, eval_tf, allow_empty=True)
    n = len(full_train)
    n_val = max(1, round(n * val_fraction))
    if n_val >= n:
        raise DataError(f"--data {root}: {n} image(s) is too few to hold out {val_fraction:.0%} for validation")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(full_train, order[n_val:]), Subset(full_eval, order[:n_val]), full_train.classes


def synthetic_splits(train_images: int, val_images: int, image_size: int, normalize, num_classes: int, seed: int):
    """The generated default set (train/synthetic.py), then ``normalize`` (normalization(variant))."""
    train_set = SyntheticShapes(train_images, image_size, num_classes, seed=2 * seed + 1, transform=normalize)
    val_set = SyntheticShapes(val_images, image_size, num_classes, seed=2 * seed + 2, transform=normalize)
    return train_set, val_set, train_set.classes


# --------------------------------------------------------------------------------------------
# train/run.py's data sets and loaders
# --------------------------------------------------------------------------------------------


def build_datasets(args):
    """(train set with seeded augmentation, held-out set, class names) of a run."""
    normalize = normalization(args.variant)
    if args.data:
        train_set, val_set, classes = image_folder_splits(
            args.data, args.image_size, args.resize, normalize, args.ten_crop, args.lighting, args.val_fraction,
            args.seed)
    else:
        train_set, val_set, classes = synthetic_splits(
            args.train_images, args.val_images, args.image_size, normalize, args.classes, args.seed)
    return SeededSamples(train_set, args.seed), val_set, classes


def _worker_init(_worker_id: int) -> None:
    # Ctrl-C is the main process's to handle (it finishes the step and saves a checkpoint).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_loaders(args, train_set, val_set):
    """Loaders: the training one over EpochSampler (seeded order, this rank's shard, resumable),
    the held-out one over this rank's share (every image exactly once across ranks)."""
    pin = args.devices[0].type == "cuda"
    common = dict(num_workers=args.workers, pin_memory=pin, collate_fn=collate_skipping,
                  worker_init_fn=_worker_init if args.workers else None)
    sampler = EpochSampler(train_set, args.world_size, args.rank, shuffle=True, seed=args.seed)
    train_loader = DataLoader(train_set, args.batch_size, sampler=sampler, drop_last=True,
                              generator=torch.Generator(), **common)
    if len(train_loader) == 0:
        per_process = len(train_set) // args.world_size
        fits = 1 << (max(per_process, 1).bit_length() - 1)  # the largest power of two that makes a batch
        raise DataError(f"the training set has {len(train_set)} images: fewer than one batch of --batch-size "
                        f"{args.batch_size}{' per process' if args.world_size > 1 else ''}; give a smaller one, "
                        f"e.g. --batch-size {fits}")
    val_share = Subset(val_set, range(args.rank, len(val_set), args.world_size))
    val_batch = max(1, args.batch_size // 10) if args.ten_crop else args.batch_size
    val_loader = DataLoader(val_share, val_batch, shuffle=False, generator=torch.Generator(), **common)
    return train_loader, val_loader


def epoch_batches(loader, epoch: int, start: int, seed: int):
    """The loader's iterator for ``epoch`` from batch ``start`` on, its order and augmentation
    drawn from (seed, epoch) alone."""
    loader.sampler.set_epoch(epoch, start * loader.batch_size)
    loader.dataset.epoch = epoch
    loader.generator.manual_seed(seed * 1_000_003 + epoch)  # the workers' base seed
    return iter(loader)
