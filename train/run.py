"""Train AlexNet with alexnet_kernels' kernels, as the paper did.

    python train/run.py                        # the generated default set, no download (README)
    python train/run.py --data /imagenet       # DIR/train/<class>/*, DIR/val/<class>/*
    python train/run.py --devices cuda:0 cuda:1          # the paper's two towers on two GPUs
    torchrun --nproc-per-node=8 train/run.py --data ...  # data parallel, one GPU per process
    python train/run.py --resume runs/<run>/checkpoint.pt
    python train/run.py --remove conv3,conv4   # an ablation: the net without those layers
    python train/run.py --finetune runs/<run>/checkpoint.pt --data DIR --freeze-below fc6
    python train/run.py --compare-cpu          # images/s on the GPU (our kernels) vs the CPU
    python train/run.py --compile              # torch.compile around the kernels

Every flag is described by --help. A run writes to --out (default runs/<timestamp>):
checkpoint.pt (every epoch and on Ctrl-C), metrics.csv (one row per epoch), steps.csv (the loss
of every step), curves.png (at the end) and TensorBoard events when tensorboard is installed.
Exit status: 0 done, 2 bad arguments or data, 3 a loss that is not finite, 130 stopped by Ctrl-C
(after saving a checkpoint to resume from).

Fine-tuning (--finetune CKPT) starts from CKPT's weights (a checkpoint of this script, or a
state_dict of torchvision.models.alexnet), with a fresh fc8 for the new data's classes; the
network (variant, removed layers, image size) is CKPT's. --freeze-below LAYER keeps the layers
before LAYER as they are: no gradient, not in the optimizer (their dropout still runs). The
checkpoints of such a run resume with --resume alone, like any other: every checkpoint records
the variant, removed layers, image size and frozen layers, and --resume takes them from it.
"""
import argparse
import csv
import math
import os
import random
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

if __package__ in (None, ""):  # run as `python train/run.py`: import train.* from the repository
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from train import checkpoint, data
from train.cli import HelpFormatter, Parser, UsageError
from train.measure import fixed_batch_step, images_per_second, train_step
from train.precision import PRECISIONS, autocast, grad_scaler, set_float32_arithmetic

PROG = "train/run.py"
PAPER_SIZE = 227  # the paper variant's input
TORCHVISION_SIZE = 224
PAPER_SPEEDUP = 50  # the paper's estimate of GPU over CPU training speed
# alexnet_kernels.models.LAYERS, spelled out: importing the package (Triton) would cost argument
# errors and --help seconds. tests/test_ablation_finetune.py checks that the two agree.
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")

# The run without --data trains on generated images (train/synthetic.py) with the paper's
# optimizer (SGD, batch 128, lr 0.01, momentum 0.9, weight decay 5e-4) on torchvision's variant,
# not the paper's: from the paper's initialization the paper's fc7 output is ~98% bias, so with
# only 10 classes its fc8 is unstable at learning rates above ~0.002 (measured: 0.01 and 0.002
# blow the loss up within the first steps; at 0.001 it still rose after 16 steps), and a 2-core
# CPU trains it at 2-3 images/s. The CPU recipe uses 64x64 images (~80 images/s on 2 cores, under
# 4 minutes in all); the GPU one the variant's own 224x224. Any flag given overrides its entry.
SYNTHETIC_RECIPES = {
    "cuda": dict(variant="torchvision", image_size=TORCHVISION_SIZE, epochs=4, train_images=7680, val_images=1280),
    "cpu": dict(variant="torchvision", image_size=64, epochs=6, train_images=2560, val_images=512),
}
# With --data: the paper's recipe.
DATA_RECIPE = dict(variant="paper", epochs=90)


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite."""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--data", metavar="DIR", help="ImageNet layout (DIR/train/<class>/*, DIR/val/<class>/*) or "
                   "one ImageFolder tree DIR/<class>/* of which --val-fraction is held out; "
                   "without it, the generated default set (no download)")
    d.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of a single ImageFolder tree held out for validation")
    d.add_argument("--image-size", type=int, help="crop size fed to the model: the paper variant takes only "
                   f"{PAPER_SIZE}; torchvision's any size >= 63 (default {TORCHVISION_SIZE}; 64 in the default "
                   "run on a CPU)")
    d.add_argument("--resize", type=int, help="shorter side images are resized to before cropping "
                   "(default 256, the paper's, for crops of 224 and more; image-size * 8/7 for smaller crops)")
    d.add_argument("--ten-crop", action="store_true", help="evaluate on the four corner crops, the centre crop "
                   "and their mirror images, averaging the softmax (default: the centre crop)")
    d.add_argument("--lighting", type=float, default=0.1, metavar="ALPHASTD",
                   help="std of the PCA colour augmentation (0: off)")
    d.add_argument("--workers", type=int, help="data loading processes per training process; 0 loads in the "
                   "training process (default: 1 on the CPU, whose cores train; min(8, cores) with a GPU)")
    d.add_argument("--classes", type=int, default=10, help="classes of the generated default set")
    d.add_argument("--train-images", type=int, help="images per epoch of the generated set (default: 2560 on a CPU, "
                   "7680 on a GPU)")
    d.add_argument("--val-images", type=int, help="held-out images of the generated set (default: 512 on a CPU, "
                   "1280 on a GPU)")

    m = p.add_argument_group("model")
    m.add_argument("--variant", choices=("paper", "torchvision"),
                   help="the paper's two-tower network or torchvision's "
                   "(default: paper with --data, torchvision without)")
    m.add_argument("--backend", choices=("custom", "torch"), default="custom",
                   help="custom: alexnet_kernels' LRN, max pooling and ReLU/dropout; torch: torch.nn's")
    m.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (TF32 off), tf32, or autocast to bf16 / fp16 (fp16 with loss scaling)")
    m.add_argument("--channels-last", action="store_true", help="NHWC memory format for the model and its input")
    m.add_argument("--compile", action="store_true",
                   help="torch.compile the model (Inductor; our kernels stay custom ops in the graph). The paper "
                        "variant then issues its towers on each device's current stream (streams=False): "
                        "switching CUDA streams in Python would break the graph")
    m.add_argument("--remove", metavar="LAYERS", help="comma-separated layers to leave out of the network "
                   "(any of conv3, conv4, fc6, fc7: ablations); the next layer takes the removed one's input")
    m.add_argument("--finetune", metavar="CKPT", help="start from this checkpoint's weights (of train/run.py, or a "
                   "torchvision AlexNet state_dict), with a new fc8 for this run's classes; its variant, removed "
                   "layers and image size are this run's (a lower --lr than training from scratch, e.g. 0.001, "
                   "is the usual choice)")
    m.add_argument("--freeze-below", metavar="LAYER", choices=LAYERS,
                   help="with --finetune: train only LAYER and the layers after it (e.g. fc6: fc6, fc7 and fc8)")
    m.add_argument("--devices", nargs="+", metavar="DEV", help="where the model runs: one device (cpu, cuda:1), "
                   "or two for the paper variant's towers (cuda:0 cuda:1); default: the first GPU, else the CPU. "
                   "Under torchrun each process uses cuda:LOCAL_RANK")

    r = p.add_argument_group("recipe (the paper's unless noted)")
    r.add_argument("--epochs", type=int, help="epochs (default 90 with --data; without: 6 on a CPU, 4 on a GPU)")
    r.add_argument("--batch-size", type=int, default=128, help="images per step per process")
    r.add_argument("--lr", type=float, default=0.01, help="initial learning rate")
    r.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    r.add_argument("--weight-decay", type=float, default=5e-4, help="SGD weight decay")
    r.add_argument("--lr-factor", type=float, default=0.1,
                   help="learning rate multiplier when the validation top-1 error stops improving")
    r.add_argument("--lr-patience", type=int, default=4,
                   help="epochs without improvement before the learning rate drops (ReduceLROnPlateau)")
    r.add_argument("--seed", type=int, default=0, help="seed of initialization, data order, augmentation and dropout")

    o = p.add_argument_group("run")
    o.add_argument("--out", metavar="DIR",
                   help="run directory (default: runs/<timestamp>; with --resume, the checkpoint's)")
    o.add_argument("--resume", metavar="PATH", help="continue from this checkpoint, exactly as if never stopped")
    o.add_argument("--log-every", type=int, default=10,
                   help="steps between progress updates (each syncs the GPU to read the losses)")
    o.add_argument("--compare-cpu", action="store_true",
                   help=f"measure training images/s on the GPU (custom kernels) and on the CPU (torch's ops, all "
                   f"cores), fp32 both, and print the ratio beside the paper's ~{PAPER_SPEEDUP}x; "
                   "exits with status 2 where there is no GPU")
    o.add_argument("--compare-steps", type=int, default=20, help="timed steps per device for --compare-cpu")
    return p


def default_resize(image_size: int) -> int:
    """256 (the paper's) for crops of 224..256, image_size * 8/7 below, image_size above."""
    return max(image_size, round(256 * min(image_size, TORCHVISION_SIZE) / TORCHVISION_SIZE))


def _check_devices(devices, variant: str) -> list:
    try:
        devs = [torch.device(d) for d in devices]
    except RuntimeError as e:
        raise UsageError(f"--devices: {e}") from None
    if len(devs) > (2 if variant == "paper" else 1):
        takes = "one or two devices" if variant == "paper" else "one device"
        raise UsageError(f"--devices: the {variant} variant takes {takes}, got {len(devs)}")
    for dev in devs:
        if dev.type not in ("cpu", "cuda"):
            raise UsageError(f"--devices: {dev}: only cpu and cuda devices are supported")
        if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
            raise UsageError(f"--devices: {dev} does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
    return devs


def parse_args(argv=None) -> argparse.Namespace:
    """The arguments, defaults resolved (recipe, image size, devices, workers, out dir); a bad
    combination exits with one line and status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        resolve(args)
    except UsageError as e:
        parser.error(str(e))
    return args


def resolve(args: argparse.Namespace) -> None:
    """Fills the defaults that depend on other arguments and the machine; UsageError if they clash."""
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ  # started by torchrun
    args.world_size = int(os.environ["WORLD_SIZE"]) if distributed else 1
    args.rank = int(os.environ["RANK"]) if distributed else 0
    args.local_rank = int(os.environ.get("LOCAL_RANK", "0")) if distributed else 0
    if args.devices is not None and distributed:
        raise UsageError("--devices cannot be combined with torchrun: each process uses cuda:LOCAL_RANK (or the CPU)")
    if args.devices is None:
        args.devices = [f"cuda:{args.local_rank}" if torch.cuda.is_available() else "cpu"]
    network_from_checkpoint(args)
    device_kind = "cuda" if args.devices[0].startswith("cuda") else "cpu"
    # --compare-cpu measures the paper's network, as the paper's ~50x did
    recipe = DATA_RECIPE if args.data or args.compare_cpu else SYNTHETIC_RECIPES[device_kind]
    args.recipe = "paper (--data)" if args.data else f"default run, {device_kind}"
    for name in ("variant", "epochs", "train_images", "val_images"):
        if getattr(args, name, None) is None and name in recipe:
            setattr(args, name, recipe[name])
    if args.image_size is None:
        args.image_size = PAPER_SIZE if args.variant == "paper" else recipe.get("image_size", TORCHVISION_SIZE)
    if args.resize is None:
        args.resize = default_resize(args.image_size)
    args.devices = _check_devices(args.devices, args.variant)
    args.distributed = distributed
    if args.workers is None:
        cores = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        args.workers = min(8, cores) if args.devices[0].type == "cuda" else 1
    _check_values(args)
    if args.out is None:
        args.out = (os.path.dirname(os.path.abspath(args.resume)) if args.resume
                    else os.path.join("runs", time.strftime("%Y%m%d-%H%M%S")))


def _parse_remove(text):
    """--remove's comma-separated names as a tuple in the network's order; None if not given."""
    if text is None:
        return None
    from alexnet_kernels.models import REMOVABLE

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in REMOVABLE]
    if unknown:
        raise UsageError(f"--remove: {', '.join(unknown)} cannot be removed (the removable layers: "
                         f"{', '.join(REMOVABLE)})")
    return tuple(layer for layer in REMOVABLE if layer in names)


def network_from_checkpoint(args: argparse.Namespace) -> None:
    """The network of a --finetune or --resume run is its checkpoint's: variant, removed layers,
    image size (unless given), and for --resume the frozen layers and the fine-tuning source.
    A flag that contradicts the checkpoint is a UsageError. Sets args.remove (a tuple),
    args.freeze_below and args.finetune_source (the checkpoint a fine-tuning run started from)."""
    args.remove = _parse_remove(args.remove)
    args.finetune_source = args.finetune
    if args.finetune and args.resume:
        raise UsageError("--finetune and --resume cannot be combined: a fine-tuning run's checkpoint resumes with "
                         "--resume alone")
    if not (args.finetune or args.resume):
        if args.freeze_below:
            raise UsageError("--freeze-below needs --finetune: the layers of a new network would stay random")
        args.remove = args.remove or ()
        return
    flag, path = ("--finetune", args.finetune) if args.finetune else ("--resume", args.resume)
    if not os.path.isfile(path):
        raise UsageError(f"{flag} {path}: no such file")
    try:
        _, config = checkpoint.read(path, mmap=True)
    except checkpoint.CheckpointError as e:
        if args.resume:
            raise UsageError(f"--resume {path}: not a checkpoint of train/run.py ({e})") from None
        raise UsageError(f"--finetune {e}") from None
    if args.resume and config["format"] != "train/run.py":
        raise UsageError(f"--resume {path}: not a checkpoint of train/run.py (a torchvision state_dict: "
                         f"fine-tune from it with --finetune)")
    checked = [("--variant", "variant", config["variant"]), ("--remove", "remove", config["remove"])]
    if args.resume:
        checked.append(("--freeze-below", "freeze_below", config.get("freeze_below")))
        args.finetune_source = config.get("finetune")
    def shown(value):
        return ",".join(value) if isinstance(value, tuple) else value

    for option, key, value in checked:
        given = getattr(args, key)
        if given is not None and given != value:
            made = f"{option} {shown(value)}" if value else f"no {option}"
            raise UsageError(f"{option} {shown(given)}: the {flag} checkpoint {path} was made with {made}")
        setattr(args, key, value)
    if args.image_size is None:
        args.image_size = config["image_size"]
    if args.finetune and args.out and os.path.isdir(args.out) and \
            os.path.samefile(args.out, os.path.dirname(os.path.abspath(args.finetune))):
        raise UsageError(f"--out {args.out} holds the --finetune checkpoint, which the run would overwrite: "
                         f"choose another run directory")


def _check_values(args: argparse.Namespace) -> None:
    if args.variant == "paper" and args.image_size != PAPER_SIZE:
        raise UsageError(f"--image-size: the paper variant takes {PAPER_SIZE}x{PAPER_SIZE} images, "
                         f"got {args.image_size}")
    if args.image_size < 63:
        raise UsageError(f"--image-size: at least 63 (torchvision's AlexNet minimum), got {args.image_size}")
    if args.resize < args.image_size:
        raise UsageError(f"--resize {args.resize} is smaller than the crop --image-size {args.image_size}")
    positive = {"--epochs": args.epochs, "--batch-size": args.batch_size, "--train-images": args.train_images,
                "--val-images": args.val_images, "--log-every": args.log_every, "--compare-steps": args.compare_steps}
    for flag, value in positive.items():
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    if args.classes < 2:
        raise UsageError(f"--classes must be at least 2, got {args.classes}")
    for flag, value in {"--lr": args.lr, "--lr-factor": args.lr_factor}.items():
        if not value > 0:
            raise UsageError(f"{flag} must be positive, got {value}")
    if args.momentum < 0 or args.weight_decay < 0 or args.lighting < 0 or args.lr_patience < 0 or args.workers < 0:
        raise UsageError("--momentum, --weight-decay, --lighting, --lr-patience and --workers must not be negative")
    if not 0 < args.val_fraction < 1:
        raise UsageError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    if args.ten_crop and not args.data:
        raise UsageError("--ten-crop needs --data: the generated images are made at the crop size")
    if args.precision == "tf32" and args.devices[0].type != "cuda":
        raise UsageError("--precision tf32 needs a CUDA device (TF32 is a tensor-core format)")
    if args.resume and not os.path.isfile(args.resume):
        raise UsageError(f"--resume {args.resume}: no such file")
    if args.freeze_below in args.remove:
        raise UsageError(f"--freeze-below {args.freeze_below}: the network has no {args.freeze_below} "
                         f"(removed: {', '.join(args.remove)})")


def build_model(args) -> torch.nn.Module:
    """The model of this run: the single place it is made. Fine-tuning: the --finetune
    checkpoint's network with a fresh fc8 for args.num_classes. With args.freeze_below, the
    layers before it are frozen (freeze_below); with args.compile, its forward is compiled."""
    from alexnet_kernels.models import PaperAlexNet, alexnet

    if getattr(args, "finetune", None):
        try:
            model, _ = checkpoint.load_model(args.finetune, args.variant, args.backend, args.devices)
        except checkpoint.CheckpointError as e:
            raise UsageError(f"--finetune {e}") from None
        model.replace_fc8(args.num_classes)
    else:
        model = alexnet(args.variant, num_classes=args.num_classes, backend=args.backend, devices=args.devices,
                        remove=getattr(args, "remove", ()))
    freeze_below(model, getattr(args, "freeze_below", None))
    if getattr(args, "compile", False):
        if isinstance(model, PaperAlexNet):
            model.streams = False  # a stream switch is a graph break
        model.compile()  # in place: the module, its state_dict keys and DDP wrapping stay as they are
    return model


def freeze_below(model, layer) -> tuple:
    """Freezes every parameter of the layers of ``model`` before ``layer`` (requires_grad off);
    None freezes nothing. Returns the frozen layers."""
    if layer is None:
        return ()
    frozen = model.layers[: model.layers.index(layer)]
    for name in frozen:
        for module in model.layer_modules(name):
            module.requires_grad_(False)
    return frozen


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


def topk_errors(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> list:
    """How many rows of ``scores`` [N, C] do not have their label among their k highest scores,
    for each k (k > C counts as C: never an error) -- the ILSVRC top-k error, as counts."""
    top = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    hit = top == labels.view(-1, 1)
    return [int((~hit[:, :k].any(dim=1)).sum()) for k in ks]


def chance_errors(num_classes: int) -> tuple:
    """Top-1 and top-5 error of guessing: 1 - 1/C and 1 - min(5, C)/C."""
    return 1 - 1 / num_classes, 1 - min(5, num_classes) / num_classes


# --------------------------------------------------------------------------------------------
# data loading
# --------------------------------------------------------------------------------------------


def build_datasets(args):
    """(train set with seeded augmentation, held-out set, class names)."""
    normalize = data.normalization(args.variant)
    if args.data:
        train_set, val_set, classes = data.image_folder_splits(
            args.data, args.image_size, args.resize, normalize, args.ten_crop, args.lighting, args.val_fraction,
            args.seed)
    else:
        train_set, val_set, classes = data.synthetic_splits(
            args.train_images, args.val_images, args.image_size, normalize, args.classes, args.seed)
    return data.SeededSamples(train_set, args.seed), val_set, classes


def _worker_init(_worker_id: int) -> None:
    # Ctrl-C is the main process's to handle (it finishes the step and saves a checkpoint).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_loaders(args, train_set, val_set):
    """Loaders: the training one over EpochSampler (seeded order, this rank's shard, resumable),
    the held-out one over this rank's share (every image exactly once across ranks)."""
    pin = args.devices[0].type == "cuda"
    common = dict(num_workers=args.workers, pin_memory=pin, collate_fn=data.collate_skipping,
                  worker_init_fn=_worker_init if args.workers else None)
    sampler = data.EpochSampler(train_set, args.world_size, args.rank, shuffle=True, seed=args.seed)
    train_loader = DataLoader(train_set, args.batch_size, sampler=sampler, drop_last=True,
                              generator=torch.Generator(), **common)
    if len(train_loader) == 0:
        raise UsageError(f"the training set has {len(train_set)} images: fewer than one batch of "
                         f"--batch-size {args.batch_size} per process")
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


# --------------------------------------------------------------------------------------------
# the training state, checkpoints and logs
# --------------------------------------------------------------------------------------------


@dataclass
class Position:
    """Where training stands: ``epoch`` (0-based) is in progress with ``epoch_step`` of its batches
    done; ``step`` counts every batch so far. ``sums`` accumulates the epoch's statistics."""
    epoch: int = 0
    epoch_step: int = 0
    step: int = 0
    sums: dict = field(default_factory=lambda: dict(loss=0.0, steps=0, images=0, seconds=0.0, wait=0.0, skipped=0))

    def next_epoch(self) -> None:
        self.epoch, self.epoch_step = self.epoch + 1, 0
        self.sums = Position().sums


@dataclass
class Trainer:
    args: argparse.Namespace
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    scaler: torch.amp.GradScaler
    position: Position
    best_top1: float = math.inf
    warned: set = field(default_factory=set)  # unreadable files already reported

    @property
    def module(self) -> torch.nn.Module:
        """The model without its DistributedDataParallel wrapper."""
        return getattr(self.model, "module", self.model)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


def gather_rng_states(args) -> list:
    """Every rank's RNG states (checkpoint.rng_state), in rank order."""
    state = checkpoint.rng_state()
    if not args.distributed:
        return [state]
    states = [None] * args.world_size
    dist.all_gather_object(states, state)
    return states


def save_checkpoint(trainer: Trainer, path: str) -> None:
    """Model, optimizer, scheduler, scaler, position, every rank's RNG state: written by rank 0,
    atomically (checkpoint.save_atomic)."""
    rng = gather_rng_states(trainer.args)
    if trainer.args.rank != 0:
        return
    p = trainer.position
    checkpoint.save_atomic({
        "model": trainer.module.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "position": dict(epoch=p.epoch, epoch_step=p.epoch_step, step=p.step, sums=p.sums),
        "best_top1": trainer.best_top1,
        "rng": rng,
        "config": {**{k: getattr(trainer.args, k)
                      for k in ("variant", "num_classes", "image_size", "seed", "batch_size", "world_size", "remove",
                                "freeze_below")},
                   "finetune": trainer.args.finetune_source},
    }, path)


def restore(trainer: Trainer, path: str) -> None:
    """Loads a checkpoint into the trainer, RNG states last: the run then continues exactly."""
    try:
        state = checkpoint.load(path)
        config = state["config"]
    except Exception as e:  # not a file torch.load reads, or not one of our checkpoints
        raise UsageError(f"--resume {path}: not a checkpoint of train/run.py ({type(e).__name__}: {e})") from None
    args = trainer.args
    config["remove"] = tuple(config.get("remove") or ())
    config.setdefault("freeze_below", None)
    for key in ("variant", "num_classes", "image_size", "remove", "freeze_below"):
        if config[key] != getattr(args, key):
            raise UsageError(f"--resume {path}: the checkpoint was made with {key}={config[key]}, this run has "
                             f"{key}={getattr(args, key)}")
    trainer.module.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.scaler.load_state_dict(state["scaler"])
    trainer.position = Position(**state["position"])
    trainer.best_top1 = state["best_top1"]
    same_shape = config["world_size"] == args.world_size and config["batch_size"] == args.batch_size
    if len(state["rng"]) == args.world_size:
        checkpoint.set_rng_state(state["rng"][args.rank])
    if not same_shape:
        log(args, f"warning: resuming with a different world size or batch size than the checkpoint's: the run "
                  f"continues but does not repeat the original's batches", problem=True)


def log(args, message: str, problem: bool = False) -> None:
    """A line on rank 0's console, clear of the progress bar: progress on stdout, problems
    (warnings, stops) on stderr."""
    if args.rank == 0:
        tqdm.write(message, file=sys.stderr if problem else sys.stdout)


class RunLog:
    """metrics.csv (one row per epoch), steps.csv (one per step) and TensorBoard, in the run
    directory; rank 0 only. Appends when resuming."""

    METRICS = ("epoch", "step", "train_loss", "val_loss", "top1_err", "top5_err", "lr", "images_per_s",
               "data_wait_s", "epoch_s", "skipped_train", "skipped_val")

    def __init__(self, out: str, enabled: bool):
        self.out, self.enabled, self.tb = out, enabled, None
        if not enabled:
            return
        os.makedirs(out, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            pass
        else:
            self.tb = SummaryWriter(out)

    def _append(self, name: str, columns, rows) -> None:
        path = os.path.join(self.out, name)
        new = not os.path.exists(path)
        with open(path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(columns)
            writer.writerows(rows)

    def steps(self, rows) -> None:
        """rows of (step, epoch, loss, lr)."""
        if self.enabled and rows:
            self._append("steps.csv", ("step", "epoch", "loss", "lr"), rows)
            if self.tb:
                for step, _, loss, lr in rows:
                    self.tb.add_scalar("train/loss", loss, step)
                self.tb.add_scalar("train/lr", rows[-1][3], rows[-1][0])

    def epoch(self, row: dict) -> None:
        if self.enabled:
            self._append("metrics.csv", self.METRICS, [[row[c] for c in self.METRICS]])
            if self.tb:
                for c in self.METRICS[2:]:
                    self.tb.add_scalar(f"epoch/{c}", row[c], row["epoch"])

    def close(self) -> None:
        if self.tb:
            self.tb.close()


def plot_curves(out: str, chance: tuple) -> str:
    """curves.png in ``out`` from its steps.csv and metrics.csv: training loss per step with the
    epochs' held-out loss, and the top-1 / top-5 error per epoch beside chance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def read(name):
        path = os.path.join(out, name)
        if not os.path.exists(path):
            return []
        with open(path, newline="") as f:
            return list(csv.DictReader(f))

    steps, epochs = read("steps.csv"), read("metrics.csv")
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot([int(r["step"]) for r in steps], [float(r["loss"]) for r in steps], lw=0.8,
                 label="training (per step)")
    ax_loss.plot([int(r["step"]) for r in epochs], [float(r["val_loss"]) for r in epochs], "o-", label="held-out")
    ax_loss.set(xlabel="step", ylabel="cross-entropy loss", title="loss")
    ax_loss.legend()
    for key, name, level in (("top1_err", "top-1", chance[0]), ("top5_err", "top-5", chance[1])):
        line, = ax_err.plot([int(r["epoch"]) for r in epochs], [100 * float(r[key]) for r in epochs], "o-",
                            label=f"{name} error")
        ax_err.axhline(100 * level, ls=":", color=line.get_color(), label=f"{name} chance")
    ax_err.set(xlabel="epoch", ylabel="held-out error (%)", title="error", ylim=(0, 100))
    ax_err.legend()
    fig.tight_layout()
    path = os.path.join(out, "curves.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# training and evaluation
# --------------------------------------------------------------------------------------------


class StopRequest:
    """Set by Ctrl-C (SIGINT) while training: the step in progress finishes, then the run saves a
    checkpoint and stops. A second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False

    @contextmanager
    def installed(self):
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            self.requested = True
            signal.signal(signal.SIGINT, previous)

        signal.signal(signal.SIGINT, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def _agree(args, *flags: bool) -> list:
    """The flags, each true if true on any rank (every rank must call this at the same step)."""
    if not args.distributed:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=args.devices[0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def to_device(images, labels, args):
    """A batch on the model's first device, where its output lands too (pinned memory: async)."""
    images = images.to(args.devices[0], non_blocking=True)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(args.devices[0], non_blocking=True)


def train_epoch(trainer: Trainer, loader, runlog: RunLog, stop: StopRequest) -> bool:
    """Trains the epoch in progress from where trainer.position stands; True if it ran to its end,
    False if a stop was requested (after the step in progress). Raises NonFiniteLoss."""
    args, p = trainer.args, trainer.position
    trainer.model.train()
    batches = epoch_batches(loader, p.epoch, p.epoch_step, args.seed)
    bar = tqdm(total=p.epoch_step + len(loader), initial=p.epoch_step, desc=f"epoch {p.epoch + 1}/{args.epochs}",
               unit="batch", disable=args.rank != 0, dynamic_ncols=True)
    window = Window(trainer)
    try:
        while True:
            if stop.requested and not args.distributed:
                window.flush(bar, runlog)
                return False
            t0 = time.perf_counter()
            batch = next(batches, None)
            p.sums["wait"] += time.perf_counter() - t0
            if batch is None:
                window.flush(bar, runlog)
                return True
            images, labels, skipped = batch
            p.sums["skipped"] += len(skipped)
            warn_skipped(trainer, skipped)
            p.epoch_step += 1
            p.step += 1
            if images is not None:
                images, labels = to_device(images, labels, args)
                window.add(p.step, train_step(trainer.model, images, labels, trainer.optimizer, trainer.scaler,
                                              args.precision), len(labels))
            bar.update()
            if args.distributed:  # the ranks agree on stopping, at the same steps
                if p.epoch_step % args.log_every == 0:
                    window.flush(bar, runlog)
                    if _agree(args, stop.requested)[0]:
                        return False
            elif len(window.losses) >= args.log_every:
                window.flush(bar, runlog)
    finally:
        bar.close()


class Window:
    """The steps since the last progress update: their numbers, losses (still on the device) and
    images."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.steps, self.losses, self.images, self.start = [], [], 0, time.perf_counter()

    def add(self, step: int, loss: torch.Tensor, images: int) -> None:
        self.steps.append(step)
        self.losses.append(loss)
        self.images += images

    def flush(self, bar, runlog: RunLog) -> None:
        """Reads the losses (one GPU sync), logs them, updates the bar's loss and images/s;
        NonFiniteLoss if one is NaN or infinite (on any rank)."""
        trainer = self.trainer
        args, p = trainer.args, trainer.position
        losses = torch.stack(self.losses).float().cpu().tolist() if self.losses else []
        seconds = time.perf_counter() - self.start
        bad = [i for i, x in enumerate(losses) if not math.isfinite(x)]
        if _agree(args, bool(bad))[0]:
            where = f"{losses[bad[0]]} at step {self.steps[bad[0]]}" if bad else "not finite on another rank"
            raise NonFiniteLoss(f"the loss is {where} (epoch {p.epoch + 1})")
        p.sums["loss"] += sum(losses)
        p.sums["steps"] += len(losses)
        p.sums["images"] += self.images
        p.sums["seconds"] += seconds
        runlog.steps([(step, p.epoch + 1, x, trainer.lr) for step, x in zip(self.steps, losses)])
        if losses:
            rate = self.images * args.world_size / max(seconds, 1e-9)
            bar.set_postfix_str(f"loss {losses[-1]:.3f}, {rate:.0f} img/s")
        self.steps, self.losses, self.images, self.start = [], [], 0, time.perf_counter()


def warn_skipped(trainer: Trainer, skipped) -> None:
    """One warning per unreadable file (rank 0), however many epochs meet it."""
    for s in skipped:
        if s.path not in trainer.warned:
            trainer.warned.add(s.path)
            log(trainer.args, f"warning: skipped unreadable image {s.path} ({s.reason})", problem=True)


@torch.no_grad()
def evaluate(trainer: Trainer, loader) -> dict:
    """Held-out loss and top-1 / top-5 error over every rank's share: centre crop, or (ten-crop
    batches [B, 10, 3, S, S]) the mean of the ten crops' softmax."""
    args = trainer.args
    model = trainer.module
    model.eval()
    sums = torch.zeros(5, dtype=torch.float64)  # loss, top-1 errors, top-5 errors, images, skipped
    for images, labels, skipped in loader:
        warn_skipped(trainer, skipped)
        sums[4] += len(skipped)
        if images is None:
            continue
        crops = images.shape[1] if images.dim() == 5 else 1
        images, labels = to_device(images.flatten(0, 1) if crops > 1 else images, labels, args)
        with autocast(args.precision, images.device.type):
            logits = model(images).float()
        if crops > 1:
            scores = logits.softmax(1).view(len(labels), crops, -1).mean(1)
            loss = F.nll_loss(scores.clamp_min(1e-12).log(), labels, reduction="sum")
        else:
            scores, loss = logits, F.cross_entropy(logits, labels, reduction="sum")
        top1, top5 = topk_errors(scores, labels)
        sums += torch.tensor([loss.item(), top1, top5, len(labels), 0], dtype=torch.float64)
    if args.distributed:
        sums = sums.to(args.devices[0])
        dist.all_reduce(sums)
        sums = sums.cpu()
    loss, top1, top5, n, skipped = sums.tolist()
    n = max(n, 1)
    return dict(val_loss=loss / n, top1_err=top1 / n, top5_err=top5 / n, skipped_val=int(skipped))


def finish_epoch(trainer: Trainer, val_loader, runlog: RunLog) -> dict:
    """Evaluates, steps the scheduler, logs the epoch's row and prints its line."""
    args, p = trainer.args, trainer.position
    t0 = time.perf_counter()
    metrics = evaluate(trainer, val_loader)
    s = p.sums
    row = dict(epoch=p.epoch + 1, step=p.step, train_loss=s["loss"] / max(s["steps"], 1), lr=trainer.lr,
               images_per_s=s["images"] * args.world_size / max(s["seconds"], 1e-9), data_wait_s=s["wait"],
               epoch_s=s["seconds"] + time.perf_counter() - t0, skipped_train=s["skipped"], **metrics)
    trainer.scheduler.step(metrics["top1_err"])
    trainer.best_top1 = min(trainer.best_top1, metrics["top1_err"])
    runlog.epoch(row)
    log(args, epoch_line(row, args))
    return row


def epoch_line(row: dict, args) -> str:
    chance1, chance5 = chance_errors(args.num_classes)
    wait_share = row["data_wait_s"] / max(row["epoch_s"], 1e-9)
    line = (f"epoch {row['epoch']}/{args.epochs}: train loss {row['train_loss']:.3f}, "
            f"held-out loss {row['val_loss']:.3f}, "
            f"top-1 error {100 * row['top1_err']:.1f}% (chance {100 * chance1:.0f}%), "
            f"top-5 error {100 * row['top5_err']:.1f}% (chance {100 * chance5:.0f}%), "
            f"{row['images_per_s']:.0f} img/s, data wait {row['data_wait_s']:.1f} s ({100 * wait_share:.0f}%), "
            f"lr {row['lr']:g}")
    if row["skipped_train"] or row["skipped_val"]:
        line += f", skipped {row['skipped_train']} training / {row['skipped_val']} held-out unreadable images"
    if wait_share > 0.1:
        line += (f"\n  the steps waited for data {100 * wait_share:.0f}% of the epoch: "
                 f"raise --workers (now {args.workers})")
    return line


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def init_distributed(args) -> None:
    """torchrun: one process group, nccl on GPUs, gloo on the CPU; each process on cuda:LOCAL_RANK."""
    if not args.distributed:
        return
    if args.devices[0].type == "cuda":
        torch.cuda.set_device(args.devices[0])
    dist.init_process_group("nccl" if args.devices[0].type == "cuda" else "gloo")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def describe(args, classes) -> str:
    where = ", ".join(str(d) for d in args.devices)
    if args.devices[0].type == "cuda":
        where += f" ({torch.cuda.get_device_name(args.devices[0])})"
    else:
        where += f" ({torch.get_num_threads()} threads)"
    if args.distributed:
        where += f", {args.world_size} processes (data parallel)"
    if args.data:
        source = f"{args.data}: {len(classes)} classes"
    else:
        source = (f"generated shapes (no --data): {len(classes)} classes, {args.train_images} training / "
                  f"{args.val_images} held-out images")
    removed = f" without {', '.join(args.remove)}" if args.remove else ""
    finetune = ""
    if args.finetune_source:
        frozen = [layer for layer in LAYERS[: LAYERS.index(args.freeze_below or "conv1")] if layer not in args.remove]
        frozen = f"; frozen: {', '.join(frozen)}" if frozen else ""
        finetune = f"fine-tuning {args.finetune_source} with a new fc8 of {len(classes)} classes{frozen}\n"
    return (f"AlexNet {args.variant} variant{removed} at {args.image_size}x{args.image_size}, backend "
            f"{args.backend}{' (torch.compile)' if args.compile else ''}, {args.precision}"
            f"{', channels_last' if args.channels_last else ''}, on {where}\n"
            f"{finetune}"
            f"data: {source}\n"
            f"recipe ({args.recipe}): {args.epochs} epochs, batch {args.batch_size}, SGD lr {args.lr:g} "
            f"momentum {args.momentum:g} weight decay {args.weight_decay:g}; run directory {args.out}")


def make_trainer(args) -> Trainer:
    model = build_model(args)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.distributed:
        cuda = args.devices[0].type == "cuda"
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[args.devices[0]] if cuda else None)
    # Frozen parameters stay out of the optimizer, so weight decay and momentum leave them alone.
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=args.lr_factor,
                                                           patience=args.lr_patience)
    return Trainer(args, model, optimizer, scheduler, grad_scaler(args.precision, args.devices[0].type), Position())


def train(args) -> int:
    """The training run; returns the exit status."""
    seed_everything(args.seed + args.rank)
    set_float32_arithmetic(args.precision)
    train_set, val_set, classes = build_datasets(args)
    args.num_classes = len(classes)
    train_loader, val_loader = build_loaders(args, train_set, val_set)
    log(args, describe(args, classes))
    trainer = make_trainer(args)
    ckpt = os.path.join(args.out, "checkpoint.pt")
    if args.resume:
        restore(trainer, args.resume)
        p = trainer.position
        log(args, f"resumed from {args.resume}: epoch {p.epoch + 1}, {p.epoch_step} of its steps done, step {p.step}")
    runlog = RunLog(args.out, args.rank == 0)
    stop = StopRequest()
    status = 0
    try:
        with stop.installed():
            while trainer.position.epoch < args.epochs:
                if not train_epoch(trainer, train_loader, runlog, stop):
                    save_checkpoint(trainer, ckpt)
                    log(args, f"stopped by Ctrl-C at step {trainer.position.step}: saved {ckpt}; "
                              f"continue with --resume {ckpt}", problem=True)
                    status = 130
                    break
                finish_epoch(trainer, val_loader, runlog)
                trainer.position.next_epoch()
                save_checkpoint(trainer, ckpt)
    except NonFiniteLoss as e:
        last = f"the last good checkpoint is {ckpt}" if os.path.exists(ckpt) else "no checkpoint was saved yet"
        log(args, f"{PROG}: stopping: {e}; {last} (try a lower --lr)", problem=True)
        status = 3
    finally:
        runlog.close()
    if args.rank == 0 and os.path.exists(os.path.join(args.out, "metrics.csv")):
        log(args, f"curves: {plot_curves(args.out, chance_errors(args.num_classes))}")
    return status


def compare_cpu(args) -> int:
    """--compare-cpu: training images/s of the same model and batch, fp32, on the GPU with our
    kernels and on the CPU with torch's ops (its fastest path), then the ratio. With --compile
    both models are compiled."""
    if not torch.cuda.is_available():
        print(f"{PROG}: --compare-cpu: there is no CUDA GPU on this machine, so nothing to compare the CPU with "
              f"(the CPU alone: bench/bench_train.py)", file=sys.stderr)
        return 2
    args.num_classes = 1000  # the ImageNet model
    rates = {}
    gpu = args.devices[0] if args.devices[0].type == "cuda" else torch.device("cuda:0")
    for name, backend, device in (("GPU", "custom", gpu), ("CPU", "torch", torch.device("cpu"))):
        seed_everything(args.seed)
        model = build_model(argparse.Namespace(**{**vars(args), "backend": backend, "devices": [device]}))
        step = fixed_batch_step(model, args.batch_size, args.image_size, args.num_classes, device, "fp32")
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
        compiled = " (torch.compile)" if args.compile else ""
        print(f"{name} ({label}), backend {backend}{compiled}: {args.compare_steps} steps of {args.batch_size} ...",
              flush=True)
        rates[name] = images_per_second(step, args.batch_size, args.compare_steps, warmup=3)
        print(f"  {rates[name]:.1f} images/s", flush=True)
        del model, step
    print(f"AlexNet {args.variant} at {args.image_size}x{args.image_size}, batch {args.batch_size}, fp32, training: "
          f"GPU {rates['GPU']:.0f} img/s, CPU {rates['CPU']:.1f} img/s: the GPU is "
          f"{rates['GPU'] / rates['CPU']:.0f}x faster (the paper: about {PAPER_SPEEDUP}x)")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.compare_cpu:
        return compare_cpu(args)
    init_distributed(args)
    try:
        return train(args)
    except (UsageError, data.DataError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    finally:
        if args.distributed:
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
