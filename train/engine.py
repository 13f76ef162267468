"""The training run's state and loop: the model as the run builds it, the trainer (model,
optimizer, scheduler, where training stands), one epoch of training, and evaluation."""
import math
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from train import data
from train.measure import sgd, train_step
from train.precision import autocast, grad_scaler
from train.report import log

LOSS_GROWTH = 10  # a training loss this many times its first step's is reported as divergence


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite."""


# --------------------------------------------------------------------------------------------
# the model and the trainer
# --------------------------------------------------------------------------------------------


def build_model(args) -> torch.nn.Module:
    """The model of this run: the single place it is made. Fine-tuning: the --finetune
    checkpoint's network with a fresh fc8 for args.num_classes. With args.freeze_below, the
    layers before it are frozen; with args.compile, its forward is compiled."""
    from alexnet_kernels.models import PaperAlexNet, alexnet
    from train import checkpoint
    from train.cli import UsageError

    init = dict(init=args.init) if args.variant == "paper" and getattr(args, "init", None) else {}
    if getattr(args, "finetune", None):
        try:
            model, _ = checkpoint.load_model(args.finetune, args.variant, args.backend, args.devices)
        except checkpoint.CheckpointError as e:
            raise UsageError(f"--finetune {e}") from None
        model.replace_fc8(args.num_classes)
    else:
        model = alexnet(args.variant, num_classes=args.num_classes, backend=args.backend, devices=args.devices,
                        remove=getattr(args, "remove", ()), **init)
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


@dataclass
class Position:
    """Where training stands: ``epoch`` (0-based) is in progress with ``epoch_step`` of its batches
    done; ``step`` counts every batch so far; ``first_loss`` is step 1's. ``sums`` accumulates the
    epoch's statistics."""
    epoch: int = 0
    epoch_step: int = 0
    step: int = 0
    first_loss: float = None
    sums: dict = field(default_factory=lambda: dict(loss=0.0, steps=0, images=0, seconds=0.0, wait=0.0, skipped=0))

    def next_epoch(self) -> None:
        self.epoch, self.epoch_step = self.epoch + 1, 0
        self.sums = Position().sums


@dataclass
class Trainer:
    args: object
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    scaler: torch.amp.GradScaler
    position: Position
    best_top1: float = math.inf
    warned: set = field(default_factory=set)  # what was already reported (unreadable files, divergence)

    @property
    def module(self) -> torch.nn.Module:
        """The model without its DistributedDataParallel wrapper."""
        return getattr(self.model, "module", self.model)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


def make_trainer(args) -> Trainer:
    model = build_model(args)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.distributed:
        cuda = args.devices[0].type == "cuda"
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[args.devices[0]] if cuda else None)
    # Frozen parameters stay out of the optimizer, so weight decay and momentum leave them alone.
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = sgd(trainable, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=args.lr_factor,
                                                           patience=args.lr_patience)
    return Trainer(args, model, optimizer, scheduler, grad_scaler(args.precision, args.devices[0].type), Position())


# --------------------------------------------------------------------------------------------
# training
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


def agree(args, *flags: bool) -> list:
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


def train_epoch(trainer: Trainer, loader, runlog, stop: StopRequest) -> bool:
    """Trains the epoch in progress from where trainer.position stands; True if it ran to its end,
    False if a stop was requested (after the step in progress). Raises NonFiniteLoss."""
    args, p = trainer.args, trainer.position
    trainer.model.train()
    batches = data.epoch_batches(loader, p.epoch, p.epoch_step, args.seed)
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
                loss = train_step(trainer.model, images, labels, trainer.optimizer, trainer.scaler, args.precision,
                                  args.clip_grad)
                window.add(p.step, loss, trainer.lr, len(labels))
            bar.update()
            if args.distributed:  # the ranks agree on stopping, at the same steps
                if p.epoch_step % args.log_every == 0:
                    window.flush(bar, runlog)
                    if agree(args, stop.requested)[0]:
                        return False
            elif len(window.losses) >= args.log_every:
                window.flush(bar, runlog)
    finally:
        bar.close()


class Window:
    """The steps since the last progress update: their numbers, losses (still on the device),
    learning rates and images."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self._reset()

    def _reset(self) -> None:
        self.steps, self.losses, self.lrs, self.images, self.start = [], [], [], 0, time.perf_counter()

    def add(self, step: int, loss: torch.Tensor, lr: float, images: int) -> None:
        self.steps.append(step)
        self.losses.append(loss)
        self.lrs.append(lr)
        self.images += images

    def flush(self, bar, runlog) -> None:
        """Reads the losses (one GPU sync), logs them, updates the bar's loss and images/s;
        NonFiniteLoss if one is NaN or infinite (on any rank); a warning (once) when one has
        grown LOSS_GROWTH times past the first."""
        trainer = self.trainer
        args, p = trainer.args, trainer.position
        losses = torch.stack(self.losses).float().cpu().tolist() if self.losses else []
        seconds = time.perf_counter() - self.start
        bad = [i for i, x in enumerate(losses) if not math.isfinite(x)]
        if agree(args, bool(bad))[0]:
            where = f"{losses[bad[0]]} at step {self.steps[bad[0]]}" if bad else "not finite on another rank"
            raise NonFiniteLoss(f"the loss is {where} (epoch {p.epoch + 1})")
        if losses and p.first_loss is None:
            p.first_loss = losses[0]
        grown = [i for i, x in enumerate(losses) if x > LOSS_GROWTH * p.first_loss] if losses else []
        if grown and "divergence" not in trainer.warned:
            trainer.warned.add("divergence")
            i = grown[0]
            hint = " or --init caffe" if args.variant == "paper" and getattr(args, "init", None) == "paper" else ""
            log(args, f"warning: the training loss grew from {p.first_loss:.4g} at step 1 to {losses[i]:.4g} at step "
                      f"{self.steps[i]}: the run is diverging (try a lower --lr{hint})", problem=True)
        p.sums["loss"] += sum(losses)
        p.sums["steps"] += len(losses)
        p.sums["images"] += self.images
        p.sums["seconds"] += seconds
        runlog.steps([(step, p.epoch + 1, x, lr) for step, x, lr in zip(self.steps, losses, self.lrs)])
        if losses:
            rate = self.images * args.world_size / max(seconds, 1e-9)
            bar.set_postfix_str(f"loss {losses[-1]:.3f}, {rate:.0f} img/s")
        self._reset()


def warn_skipped(trainer: Trainer, skipped) -> None:
    """One warning per unreadable file (rank 0), however many epochs meet it."""
    for s in skipped:
        if s.path not in trainer.warned:
            trainer.warned.add(s.path)
            log(trainer.args, f"warning: skipped unreadable image {s.path} ({s.reason})", problem=True)


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------


def topk_errors(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> list:
    """How many rows of ``scores`` [N, C] do not have their label among their k highest scores,
    for each k (k > C counts as C: never an error) -- the ILSVRC top-k error, as counts."""
    top = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    hit = top == labels.view(-1, 1)
    return [int((~hit[:, :k].any(dim=1)).sum()) for k in ks]


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


def finish_epoch(trainer: Trainer, val_loader) -> dict:
    """Evaluates and steps the scheduler; returns the epoch's row (report.RunLog.METRICS)."""
    args, p = trainer.args, trainer.position
    t0 = time.perf_counter()
    metrics = evaluate(trainer, val_loader)
    s = p.sums
    row = dict(epoch=p.epoch + 1, step=p.step, train_loss=s["loss"] / max(s["steps"], 1), lr=trainer.lr,
               images_per_s=s["images"] * args.world_size / max(s["seconds"], 1e-9), data_wait_s=s["wait"],
               epoch_s=s["seconds"] + time.perf_counter() - t0, skipped_train=s["skipped"], **metrics)
    trainer.scheduler.step(metrics["top1_err"])
    trainer.best_top1 = min(trainer.best_top1, metrics["top1_err"])
    return row
