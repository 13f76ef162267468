"""What a training run reports: the console (the header, one line per epoch, warnings),
metrics.csv (one row per epoch), steps.csv (one per step), TensorBoard events when tensorboard is
installed, and curves.png at the end."""
import csv
import os
import sys

import torch
from tqdm import tqdm

from train.config import LAYERS, RECIPES


def log(args, message: str, problem: bool = False) -> None:
    """A line on rank 0's console, clear of the progress bar: progress on stdout, problems
    (warnings, stops) on stderr."""
    if args.rank == 0:
        tqdm.write(message, file=sys.stderr if problem else sys.stdout)


def plural(n: int, word: str, words: str = None) -> str:
    """"1 epoch", "2 epochs"."""
    return f"{n:,} {word if n == 1 else words or word + 's'}"


def chance_errors(num_classes: int) -> tuple:
    """Top-1 and top-5 error of guessing: 1 - 1/C and 1 - min(5, C)/C."""
    return 1 - 1 / num_classes, 1 - min(5, num_classes) / num_classes


def has_top5(num_classes: int) -> bool:
    """Whether top-5 error means anything: with 5 classes or fewer it is always 0."""
    return num_classes > 5


# --------------------------------------------------------------------------------------------
# the console
# --------------------------------------------------------------------------------------------


def describe(args, classes) -> str:
    """The run's header: the network and where it runs, the data, the recipe and the directory."""
    devices = [str(d) for d in args.devices]
    if args.variant == "paper":
        where = f"towers on {devices[0]} and {devices[-1]}" if len(devices) == 2 else f"both towers on {devices[0]}"
    else:
        where = f"on {devices[0]}"
    if args.devices[0].type == "cuda":
        names = sorted({torch.cuda.get_device_name(d) for d in args.devices if d.type == "cuda"})
        where += f" ({', '.join(names)})"
    else:
        where += f" ({plural(torch.get_num_threads(), 'thread')})"
    if args.distributed:
        where += f", {args.world_size} processes (data parallel)"
    if args.data:
        source = f"{args.data}: {plural(len(classes), 'class', 'classes')}"
    else:
        source = (f"generated shapes (no --data): {len(classes)} classes, {args.train_images:,} training / "
                  f"{args.val_images:,} held-out images")
    removed = f" without {', '.join(args.remove)}" if args.remove else ""
    init = f", {args.init} init" if args.variant == "paper" else ""
    finetune = ""
    if args.finetune_source:
        frozen = [layer for layer in LAYERS[: LAYERS.index(args.freeze_below or "conv1")] if layer not in args.remove]
        frozen = f"; frozen: {', '.join(frozen)}" if frozen else ""
        finetune = f"fine-tuning {args.finetune_source} with a new fc8 of {len(classes)} classes{frozen}\n"
    return (f"AlexNet {args.variant} variant{removed} at {args.image_size}x{args.image_size}{init}, backend "
            f"{args.backend}{' (torch.compile)' if args.compile else ''}, {args.precision}"
            f"{', channels_last' if args.channels_last else ''}, {where}\n"
            f"{finetune}"
            f"data: {source}\n"
            f"recipe (defaults: {RECIPES[args.recipe]['label']}): {plural(args.epochs, 'epoch')}, batch "
            f"{args.batch_size}, SGD lr {args.lr:g} momentum {args.momentum:g} weight decay {args.weight_decay:g}"
            f", lr x{args.lr_factor:g} after {plural(args.lr_patience, 'epoch')} without improvement"
            f"{f', gradient norm clipped to {args.clip_grad:g}' if args.clip_grad else ''}\n"
            f"run directory {args.out}")


def epoch_line(row: dict, args, saved=None) -> str:
    """The console line of an epoch (its metrics.csv row), and where its checkpoint went."""
    chance1, chance5 = chance_errors(args.num_classes)
    wait_share = row["data_wait_s"] / max(row["epoch_s"], 1e-9)
    top5 = (f"top-5 error {100 * row['top5_err']:.1f}% (chance {100 * chance5:.0f}%), "
            if has_top5(args.num_classes) else "")
    line = (f"epoch {row['epoch']}/{args.epochs}: train loss {row['train_loss']:.3f}, "
            f"held-out loss {row['val_loss']:.3f}, "
            f"top-1 error {100 * row['top1_err']:.1f}% (chance {100 * chance1:.0f}%), {top5}"
            f"{row['images_per_s']:.0f} img/s, data wait {row['data_wait_s']:.1f} s ({100 * wait_share:.0f}%), "
            f"lr {row['lr']:g}")
    if row["skipped_train"] or row["skipped_val"]:
        line += f", skipped {row['skipped_train']} training / {row['skipped_val']} held-out unreadable images"
    if saved:
        line += f"; checkpoint {saved}"
    if wait_share > 0.1:
        line += (f"\n  the steps waited for data {100 * wait_share:.0f}% of the epoch: "
                 f"raise --workers (now {args.workers})")
    return line


# --------------------------------------------------------------------------------------------
# the files
# --------------------------------------------------------------------------------------------


class RunLog:
    """metrics.csv (one row per epoch), steps.csv (one per step) and TensorBoard, in the run
    directory; rank 0 only. A resumed run continues them from where its checkpoint stands."""

    METRICS = ("epoch", "step", "train_loss", "val_loss", "top1_err", "top5_err", "lr", "images_per_s",
               "data_wait_s", "epoch_s", "skipped_train", "skipped_val")
    STEPS = ("step", "epoch", "loss", "lr")

    def __init__(self, out: str, enabled: bool, num_classes: int):
        self.out, self.enabled, self.tb, self.top5 = out, enabled, None, has_top5(num_classes)
        if not enabled:
            return
        os.makedirs(out, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            pass
        else:
            self.tb = SummaryWriter(out)

    def resume(self, source: str, step: int, epochs: int) -> None:
        """Continue the logs of the run in directory ``source`` at ``step`` with ``epochs`` done:
        the rows after them (a run that went on after its last checkpoint) are dropped, and
        those before are copied when this run writes elsewhere."""
        if not self.enabled:
            return
        for name, key, last in (("steps.csv", "step", step), ("metrics.csv", "epoch", epochs)):
            path = os.path.join(source, name)
            if not os.path.exists(path):
                continue
            with open(path, newline="") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                rows = [r for r in reader if header and int(r[header.index(key)]) <= last]
            target = os.path.join(self.out, name)
            with open(target + ".tmp", "w", newline="") as f:
                csv.writer(f).writerows([header, *rows] if header else [])
            os.replace(target + ".tmp", target)

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
            self._append("steps.csv", self.STEPS, rows)
            if self.tb:
                for step, _, loss, _ in rows:
                    self.tb.add_scalar("train/loss", loss, step)
                self.tb.add_scalar("train/lr", rows[-1][3], rows[-1][0])

    def epoch(self, row: dict) -> None:
        """An epoch's row; its top-5 error is left empty where there are 5 classes or fewer."""
        if self.enabled:
            row = dict(row, top5_err=row["top5_err"] if self.top5 else "")
            self._append("metrics.csv", self.METRICS, [[row[c] for c in self.METRICS]])
            if self.tb:
                for c in self.METRICS[2:]:
                    if row[c] != "":
                        self.tb.add_scalar(f"epoch/{c}", row[c], row["epoch"])

    def close(self) -> None:
        if self.tb:
            self.tb.close()


def plot_curves(out: str, num_classes: int) -> str:
    """curves.png in ``out`` (curves_figure); returns its path."""
    import matplotlib.pyplot as plt

    fig = curves_figure(out, num_classes)
    path = os.path.join(out, "curves.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def curves_figure(out: str, num_classes: int):
    """From ``out``'s steps.csv and metrics.csv: training loss per step with the epochs'
    held-out loss, and the top-1 (and top-5, with more than 5 classes) error per epoch beside
    chance, epochs ticked as whole numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    def read(name):
        path = os.path.join(out, name)
        if not os.path.exists(path):
            return []
        with open(path, newline="") as f:
            return list(csv.DictReader(f))

    steps, epochs = read("steps.csv"), read("metrics.csv")
    chance = chance_errors(num_classes)
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot([int(r["step"]) for r in steps], [float(r["loss"]) for r in steps], lw=0.8,
                 label="training (per step)")
    ax_loss.plot([int(r["step"]) for r in epochs], [float(r["val_loss"]) for r in epochs], "o-", label="held-out")
    ax_loss.set(xlabel="step", ylabel="cross-entropy loss", title="loss")
    ax_loss.legend()
    errors = (("top1_err", "top-1", chance[0]),) + ((("top5_err", "top-5", chance[1]),) if has_top5(num_classes)
                                                     else ())
    for key, name, level in errors:
        line, = ax_err.plot([int(r["epoch"]) for r in epochs], [100 * float(r[key]) for r in epochs], "o-",
                            label=f"{name} error")
        ax_err.axhline(100 * level, ls=":", color=line.get_color(), label=f"{name} chance")
    ax_err.set(xlabel="epoch", ylabel="held-out error (%)", title="error", ylim=(0, 100))
    ax_err.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    ax_err.legend()
    fig.tight_layout()
    return fig
