"""train/run.py's configuration: the command line, the recipes that fill the defaults, and the
configuration a --resume restores from its checkpoint. Importing this module costs no torch:
--help and argument errors are answered before anything heavy loads; the checks that need torch
(devices, checkpoints) import it when they run, last."""
import argparse
import os
import sys
import textwrap
import time

from train.cli import Parser, RawDescriptionHelpFormatter, UsageError, given_dests, parse_devices

PROG = "train/run.py"
PAPER_SIZE = 227  # the paper variant's input
TORCHVISION_SIZE = 224
PAPER_SPEEDUP = 50  # the paper's estimate of GPU over CPU training speed

# alexnet_kernels.models.LAYERS and REMOVABLE, spelled out: importing the package imports torch
# (about 1.5 s), which --help and argument errors should not wait for.
# (tests/test_ablation_finetune.py checks that they agree.)
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
REMOVABLE = ("conv3", "conv4", "fc6", "fc7")

# The generated-set runs clip the gradient's norm: at lr 0.01 the default CPU run's gradient norm
# is 0.2-5 for 110 steps, then one step's reaches 37, the next loss is 15.8, and the run loses most
# of what it learned (docs/training.md). The paper's recipe (--data) does not clip.
GENERATED_CLIP = 10.0

# The defaults each kind of run starts from; a flag given overrides its entry. The optimizer is
# the paper's in all of them (SGD, batch 128, lr 0.01, momentum 0.9, weight decay 5e-4, lr x0.1
# after 4 epochs without improvement). Why these, and how they were sized: docs/training.md.
RECIPES = {
    "data": dict(label="--data DIR", variant="paper", init="paper", epochs=90),
    # The paper's net diverges on the generated set from the paper's initialization: Caffe's
    # trains it. On a GPU sized to train in under a minute.
    "generated paper cuda": dict(label="generated set on a GPU", variant="paper", init="caffe", epochs=3,
                                 train_images=12_800, val_images=1_280, clip_grad=GENERATED_CLIP),
    "generated paper cpu": dict(label="generated set, paper's net on a CPU", variant="paper", init="caffe",
                                batch_size=32, epochs=1, train_images=1_024, val_images=256,
                                clip_grad=GENERATED_CLIP),
    # A CPU without --variant or two --devices: torchvision's net at 64x64 (the paper's takes only
    # 227x227, at a few images/s on a small CPU).
    "generated torchvision cpu": dict(label="generated set on a CPU", variant="torchvision", image_size=64,
                                      epochs=6, train_images=2_560, val_images=512, clip_grad=GENERATED_CLIP),
    "generated torchvision cuda": dict(label="generated set, torchvision's net on a GPU", variant="torchvision",
                                       image_size=TORCHVISION_SIZE, epochs=4, train_images=7_680,
                                       val_images=1_280, clip_grad=GENERATED_CLIP),
}

# What a --resume restores from its checkpoint, in the order conflicts are reported: the
# network, how it computes, the data, the recipe. Anything else may be given anew.
RUN_KEYS = ("variant", "remove", "freeze_below", "init", "backend", "precision", "channels_last", "compile",
            "data", "val_fraction", "classes", "train_images", "val_images", "image_size", "resize", "ten_crop",
            "lighting", "batch_size", "lr", "momentum", "weight_decay", "lr_factor", "lr_patience", "clip_grad",
            "seed")
RESUME_MAY_CHANGE = "--epochs (more), --out, --devices, --workers, --log-every and --save"
# Measured on the project's 2-core CPU (docs/training.md): autocast to float16 trains the default
# CPU run's network about 20x slower than fp32 (bfloat16, with the CPU's AVX512-BF16, as fast).
CPU_FP16_SLOWDOWN = "about 20x slower than fp32 (1.8 against 39 img/s for the default CPU run's network)"
SAVE = ("epoch", "end", "none")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Train AlexNet on alexnet_kernels' kernels, as the paper did. Without "
               "--data: a generated set of shapes\n(no download); with --data: an ImageFolder tree, with the paper's "
               "recipe.", formatter_class=RawDescriptionHelpFormatter, epilog=recipes_help())
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
    d.add_argument("--classes", type=int, default=10, help="classes of the generated set")
    d.add_argument("--train-images", type=int, help="images per epoch of the generated set (default: the recipe's)")
    d.add_argument("--val-images", type=int, help="held-out images of the generated set (default: the recipe's)")

    m = p.add_argument_group("model")
    m.add_argument("--variant", choices=("paper", "torchvision"),
                   help="the paper's two-tower network or torchvision's (default: the paper's with --data, with "
                        "two --devices or on a GPU; torchvision's on a CPU)")
    m.add_argument("--init", choices=("paper", "caffe"),
                   help="the paper variant's initialization: the paper's (weights N(0, 0.01), biases 1 in "
                        "conv2/4/5, fc6, fc7) or Caffe's bvlc_alexnet (fc6/fc7 weights N(0, 0.005), biases 0.1 "
                        "where the paper has 1); default: the paper's with --data, Caffe's on the generated set")
    m.add_argument("--backend", choices=("custom", "torch"), default="custom",
                   help="custom: alexnet_kernels' LRN, max pooling and ReLU/dropout; torch: torch.nn's")
    m.add_argument("--precision", choices=("fp32", "tf32", "bf16", "fp16"), default="fp32",
                   help="fp32 (TF32 off), tf32, or autocast to bf16 / fp16 (fp16 with loss scaling); "
                        "on a CPU only fp32 is fast")
    m.add_argument("--channels-last", action="store_true", help="NHWC memory format for the model and its input")
    m.add_argument("--compile", action="store_true",
                   help="torch.compile the model (Inductor; our kernels stay custom ops in the graph). The paper "
                        "variant then issues its towers on each device's current stream: switching CUDA streams "
                        "in Python would break the graph")
    m.add_argument("--remove", metavar="LAYERS", help="comma-separated layers to leave out of the network "
                   "(any of conv3, conv4, fc6, fc7: ablations); the next layer takes the removed one's input")
    m.add_argument("--finetune", metavar="CKPT", help="start from this checkpoint's weights (of train/run.py, or a "
                   "torchvision AlexNet state_dict), with a new fc8 for this run's classes; its variant, removed "
                   "layers and image size are this run's (a lower --lr than training from scratch, e.g. 0.001, "
                   "is the usual choice)")
    m.add_argument("--freeze-below", metavar="LAYER", choices=LAYERS,
                   help="with --finetune: train only LAYER and the layers after it (e.g. fc6: fc6, fc7 and fc8)")
    m.add_argument("--devices", nargs="+", metavar="DEV", help="where the model runs: one device (cpu, cuda:1), "
                   "or two for the paper variant's towers (cuda:0 cuda:1; two devices select the paper "
                   "variant); default: the paper variant's towers on the first two GPUs, or both on the only "
                   "one, else the CPU. Under torchrun each process uses cuda:LOCAL_RANK")

    r = p.add_argument_group("recipe (the paper's unless noted)")
    r.add_argument("--epochs", type=int, help="epochs (default: the recipe's; 90 with --data)")
    r.add_argument("--batch-size", type=int, help="images per step per process (default 128; 32 for the "
                   "paper's net on the generated set on a CPU)")
    r.add_argument("--lr", type=float, default=0.01, help="initial learning rate")
    r.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    r.add_argument("--weight-decay", type=float, default=5e-4, help="SGD weight decay")
    r.add_argument("--lr-factor", type=float, default=0.1,
                   help="learning rate multiplier when the validation top-1 error stops improving")
    r.add_argument("--lr-patience", type=int, default=4,
                   help="epochs without improvement before the learning rate drops (ReduceLROnPlateau)")
    r.add_argument("--clip-grad", type=float, metavar="NORM",
                   help="clip the gradient's total norm to NORM before each step (default: the recipe's: "
                        f"{GENERATED_CLIP:g} on the generated set, none with --data; 0: none)")
    r.add_argument("--seed", type=int, default=0, help="seed of initialization, data order, augmentation and dropout")

    o = p.add_argument_group("run")
    o.add_argument("--out", metavar="DIR",
                   help="run directory (default: runs/<timestamp>; with --resume, the checkpoint's)")
    o.add_argument("--resume", metavar="CKPT", help="continue the run of this checkpoint exactly as if never "
                   f"stopped, with its configuration: give no other flag but {RESUME_MAY_CHANGE}")
    o.add_argument("--save", choices=SAVE, default="epoch",
                   help="checkpoint.pt (the model, the optimizer and the run's state: about 460 MB with 10 "
                        "classes): after every epoch and on Ctrl-C (epoch), only when the run ends or stops (end), "
                        "or never (none)")
    o.add_argument("--log-every", type=int, default=10,
                   help="steps between progress updates (each syncs the GPU to read the losses)")
    o.add_argument("--compare-cpu", action="store_true",
                   help=f"measure training images/s on the GPU (custom kernels) and on the CPU (torch's ops, all "
                   f"cores), fp32 both, and print the ratio beside the paper's ~{PAPER_SPEEDUP}x; "
                   "exits with status 2 where there is no GPU")
    o.add_argument("--compare-steps", type=int, default=20, help="timed steps per device for --compare-cpu")
    return p


def recipes_help() -> str:
    """The recipes and the exit status, as --help ends."""
    def para(text, indent=""):
        return textwrap.fill(text, 92, initial_indent=indent, subsequent_indent=indent)

    lines = [para("recipes: the defaults a run starts from (a flag given overrides its entry). All train with the "
                  "paper's SGD: batch 128, lr 0.01, momentum 0.9, weight decay 5e-4, lr x0.1 after 4 epochs without "
                  "improvement.")]
    for recipe in RECIPES.values():
        size = PAPER_SIZE if recipe["variant"] == "paper" else recipe.get("image_size", TORCHVISION_SIZE)
        parts = [f"{'the paper' if recipe['variant'] == 'paper' else 'torchvision'}'s net at {size}x{size}"]
        parts += [f"--{k.replace('_', '-')} {v:g}" if isinstance(v, float) else f"--{k.replace('_', '-')} {v}"
                  for k, v in recipe.items() if k in ("init", "batch_size", "clip_grad")]
        parts.append(plural_epochs(recipe["epochs"]) + (f" of {recipe['train_images']:,} images, "
                                                        f"{recipe['val_images']:,} held out"
                                                        if "train_images" in recipe else ""))
        lines += [f"  {recipe['label']}:", para(", ".join(parts), " " * 6)]
    return "\n".join(lines + [
        para("Without --variant the paper's net trains on a GPU (its towers on two GPUs when two are visible) and "
             "on two --devices, torchvision's on a CPU. From the paper's initialization the paper's net diverges "
             "on the generated set (its fc7 starts almost all bias): Caffe's trains it. See docs/training.md."),
        "",
        para("exit status: 0 done, 2 bad arguments or data, 3 a loss that is not finite (the last good checkpoint "
             "is kept), 130 stopped by Ctrl-C (after saving a checkpoint to resume from)")])


def plural_epochs(n: int) -> str:
    return f"{n} epoch{'' if n == 1 else 's'}"


def parse_args(argv=None) -> argparse.Namespace:
    """The arguments, defaults resolved (recipe, image size, devices, workers, out dir); a bad
    combination exits with one line and status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.given = given_dests(build_parser(), argv)
    try:
        resolve(args)
    except UsageError as e:
        parser.error(str(e))
    return args


def resolve(args: argparse.Namespace) -> None:
    """Fills the defaults that depend on other arguments, the checkpoint and the machine;
    UsageError if they clash. The checks that need no torch come first."""
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ  # started by torchrun
    args.distributed = distributed
    args.world_size = int(os.environ["WORLD_SIZE"]) if distributed else 1
    args.rank = int(os.environ["RANK"]) if distributed else 0
    args.local_rank = int(os.environ.get("LOCAL_RANK", "0")) if distributed else 0
    _check_flags(args)
    args.remove = _parse_remove(args.remove)
    args.finetune_source = args.finetune
    if args.resume:
        restore_run(args)
    elif args.finetune:
        network_from_checkpoint(args)
    elif args.freeze_below:
        raise UsageError("--freeze-below needs --finetune: the layers of a new network would stay random")
    args.remove = args.remove or ()
    _resolve_devices(args)
    kind = "data" if args.data or args.compare_cpu else \
        f"generated {args.variant} {'cuda' if args.devices[0].type == 'cuda' else 'cpu'}"
    args.recipe = kind
    for name, value in RECIPES[kind].items():
        if name != "label" and getattr(args, name, None) is None:
            setattr(args, name, value)
    if args.batch_size is None:
        args.batch_size = 128
    if args.image_size is None:
        args.image_size = PAPER_SIZE if args.variant == "paper" else TORCHVISION_SIZE
    if args.resize is None:
        args.resize = default_resize(args.image_size)
    if args.workers is None:
        cores = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        args.workers = min(8, cores) if args.devices[0].type == "cuda" else 1
    _check_values(args)
    args.warnings = []
    if args.precision == "fp16" and args.devices[0].type == "cpu":
        args.warnings.append(f"--precision fp16 on the CPU trains {CPU_FP16_SLOWDOWN}: use fp32 or bf16 there")
    if args.out is None:
        args.out = (os.path.dirname(os.path.abspath(args.resume)) if args.resume
                    else os.path.join("runs", time.strftime("%Y%m%d-%H%M%S")))


def default_resize(image_size: int) -> int:
    """256 (the paper's) for crops of 224..256, image_size * 8/7 below, image_size above."""
    return max(image_size, round(256 * min(image_size, TORCHVISION_SIZE) / TORCHVISION_SIZE))


def _check_flags(args: argparse.Namespace) -> None:
    """The checks of the command line alone (no torch, no files read)."""
    if args.finetune and args.resume:
        raise UsageError("--finetune and --resume cannot be combined: a fine-tuning run's checkpoint resumes with "
                         "--resume alone")
    if args.compare_cpu and (args.resume or args.finetune):
        raise UsageError("--compare-cpu measures a fresh network: it takes no --resume or --finetune")
    if args.devices is not None and args.distributed:
        raise UsageError("--devices cannot be combined with torchrun: each process uses cuda:LOCAL_RANK (or the CPU)")
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
    negative = [flag for flag, value in (("--momentum", args.momentum), ("--weight-decay", args.weight_decay),
                                         ("--clip-grad", args.clip_grad),
                                         ("--lighting", args.lighting), ("--lr-patience", args.lr_patience),
                                         ("--workers", args.workers))
                if value is not None and value < 0]
    if negative:
        raise UsageError(f"{', '.join(negative)} must not be negative")
    if not 0 < args.val_fraction < 1:
        raise UsageError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    for flag, path in (("--resume", args.resume), ("--finetune", args.finetune)):
        if path and not os.path.isfile(path):
            raise UsageError(f"{flag} {path}: no such file")


def _parse_remove(text):
    """--remove's comma-separated names as a tuple in the network's order; None if not given."""
    if text is None or isinstance(text, tuple):
        return text
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in REMOVABLE]
    if unknown:
        raise UsageError(f"--remove: {', '.join(unknown)} cannot be removed (the removable layers: "
                         f"{', '.join(REMOVABLE)})")
    return tuple(layer for layer in REMOVABLE if layer in names)


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _shown(key: str, value) -> str:
    """``value`` of ``key`` as it would be given on the command line."""
    if value is None or value is False or value == ():
        return f"no {_flag(key)}"
    if value is True:
        return _flag(key)
    return f"{_flag(key)} {','.join(value) if isinstance(value, tuple) else value}"


def _read_config(flag: str, path: str) -> dict:
    from train import checkpoint  # torch: only now

    try:
        _, config = checkpoint.read(path, mmap=True)
    except checkpoint.CheckpointError as e:
        if flag == "--resume":
            raise UsageError(f"--resume {path}: not a checkpoint of train/run.py ({e})") from None
        raise UsageError(f"--finetune {e}") from None
    if flag == "--resume" and config["format"] != "train/run.py":
        raise UsageError(f"--resume {path}: not a checkpoint of train/run.py (a torchvision state_dict: "
                         f"fine-tune from it with --finetune)")
    return config


def _take(args, key: str, value, flag: str, path: str, note: str = "") -> None:
    """Sets args.<key> to the checkpoint's ``value``; a different value given on the command line
    is a UsageError naming the flag."""
    given = getattr(args, key)
    if key == "data" and given is not None:
        given = os.path.abspath(given)
    if key in args.given and given != value:
        raise UsageError(f"{_shown(key, given)}: the {flag} checkpoint {path} was made with {_shown(key, value)}"
                         f"{note}")
    setattr(args, key, value)


def restore_run(args: argparse.Namespace) -> None:
    """--resume: the run's configuration from its checkpoint. A flag given with another value
    than the checkpoint's is a UsageError, but for those RESUME_MAY_CHANGE names. Checkpoints of
    earlier versions of this script record only the network, seed and batch size: the rest then
    comes from the command line, as it did."""
    path = args.resume
    config = _read_config("--resume", path)
    run = config.get("run")
    if run is None:
        run = {k: config[k] for k in ("variant", "image_size", "seed", "batch_size", "remove", "freeze_below")
               if k in config}
    note = f" (a resumed run keeps its configuration: only {RESUME_MAY_CHANGE} may change)"
    for key in RUN_KEYS:
        if key in run:
            value = tuple(run[key]) if key == "remove" else run[key]
            _take(args, key, value, "--resume", path, note)
    args.finetune_source = config.get("finetune")
    if config.get("world_size", 1) != args.world_size:
        raise UsageError(f"--resume {path}: the run was made by {config.get('world_size', 1)} process(es) and this "
                         f"is {args.world_size}: the batches would differ; resume it with as many")
    if "epochs" not in args.given and "epochs" in run:
        args.epochs = run["epochs"]
    if args.devices is None and run.get("devices") and not args.distributed:
        args.devices = run["devices"]  # where it ran, if this machine has those devices (else the default)
        args.devices_from_checkpoint = True


def network_from_checkpoint(args: argparse.Namespace) -> None:
    """--finetune: the network is the checkpoint's (variant, removed layers, image size unless
    given); a flag that contradicts it is a UsageError."""
    path = args.finetune
    config = _read_config("--finetune", path)
    _take(args, "variant", config["variant"], "--finetune", path)
    _take(args, "remove", tuple(config["remove"]), "--finetune", path)
    if args.image_size is None:
        args.image_size = config["image_size"]
    if args.out and os.path.isdir(args.out) and os.path.samefile(args.out, os.path.dirname(os.path.abspath(path))):
        raise UsageError(f"--out {args.out} holds the --finetune checkpoint, which the run would overwrite: "
                         f"choose another run directory")


def _resolve_devices(args: argparse.Namespace) -> None:
    """args.devices as torch.devices, and the variant: two devices select the paper's two-tower
    net; with neither --devices nor --variant, the paper's on a GPU (its towers on the first two
    GPUs when there are two) and torchvision's on a CPU without --data."""
    import torch

    gpus = torch.cuda.device_count()
    if getattr(args, "devices_from_checkpoint", False):
        visible = all(not d.startswith("cuda") or int(d.partition(":")[2] or 0) < gpus for d in args.devices)
        if not visible:
            args.devices = None
    if args.devices is None:
        if args.distributed:
            args.devices = [f"cuda:{args.local_rank}" if gpus else "cpu"]
        elif gpus and args.variant != "torchvision":
            args.devices = ["cuda:0", "cuda:1"] if gpus >= 2 else ["cuda:0"]
        else:
            args.devices = ["cuda:0" if gpus else "cpu"]
    if args.variant is None:
        cpu_only = all(d.startswith("cpu") for d in args.devices)
        args.variant = "paper" if args.data or args.compare_cpu or len(args.devices) > 1 or not cpu_only \
            else "torchvision"
    if args.variant == "torchvision" and len(args.devices) > 1:
        raise UsageError(f"--devices: the torchvision variant takes one device, got {len(args.devices)} "
                         f"(two devices train the paper's two-tower net: leave out --variant torchvision)")
    args.devices = parse_devices(args.devices, "--devices", 2 if args.variant == "paper" else 1, args.variant)


def _check_values(args: argparse.Namespace) -> None:
    """The checks of the resolved configuration."""
    if args.variant == "paper" and args.image_size != PAPER_SIZE:
        raise UsageError(f"--image-size: the paper variant takes {PAPER_SIZE}x{PAPER_SIZE} images, "
                         f"got {args.image_size}")
    if args.image_size < 63:
        raise UsageError(f"--image-size: at least 63 (torchvision's AlexNet minimum), got {args.image_size}")
    if args.resize < args.image_size:
        raise UsageError(f"--resize {args.resize} is smaller than the crop --image-size {args.image_size}")
    if args.ten_crop and not args.data:
        raise UsageError("--ten-crop needs --data: the generated images are made at the crop size")
    if args.precision == "tf32" and args.devices[0].type != "cuda":
        raise UsageError("--precision tf32 needs a CUDA device (TF32 is a tensor-core format)")
    if args.freeze_below in args.remove:
        raise UsageError(f"--freeze-below {args.freeze_below}: the network has no {args.freeze_below} "
                         f"(removed: {', '.join(args.remove)})")
    if args.variant != "paper" and "init" in args.given:
        raise UsageError("--init: only the paper variant has a choice of initialization (torchvision's keeps "
                         "torchvision's)")


def run_config(args: argparse.Namespace) -> dict:
    """What a checkpoint records of the run, for --resume to restore: RUN_KEYS, the epochs, the
    devices and the recipe."""
    run = {key: getattr(args, key) for key in RUN_KEYS}
    run["data"] = os.path.abspath(args.data) if args.data else None
    run.update(epochs=args.epochs, devices=[str(d) for d in args.devices], recipe=args.recipe)
    return run
