"""Checkpoints: written so that they survive a kill, read back as models (of train/run.py or
torchvision state_dicts), and the training state, RNG states included, that makes a resumed
run repeat an uninterrupted one exactly."""
import os
import random

import numpy as np
import torch

from train.cli import UsageError


def save_atomic(obj, path: str) -> None:
    """torch.save(obj) to ``path`` so that ``path`` always holds a whole checkpoint: the bytes go
    to a temporary file in the same directory, are flushed to disk, and only then replace
    ``path`` (os.replace is atomic on POSIX and Windows). A crash or kill during the save leaves
    the previous file untouched; an exception removes the temporary file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    # os.open with 0o666 leaves the mode to the umask, as for the run's other files (mkstemp's
    # would be 0600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load(path: str) -> dict:
    """A checkpoint written by save_atomic, on the CPU. It holds RNG states and the optimizer's
    plain Python values besides tensors, so it is unpickled with weights_only=False: load only
    checkpoints you trust."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--resume {path}: no such file")
    return torch.load(path, map_location="cpu", weights_only=False)


def rng_state() -> dict:
    """Every global RNG the training draws from: Python's, NumPy's, torch's CPU generator and
    each CUDA device's."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    """Restores what rng_state() returned; CUDA states only for the devices visible now (a run
    resumed on other hardware continues, but its dropout masks differ from the original's)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
        torch.cuda.set_rng_state(cuda_state, index)


class CheckpointError(UsageError, ValueError):
    """A checkpoint that cannot be used: missing, unreadable, or of another model."""


def read(path: str, mmap: bool = False) -> tuple:
    """(weights, config) of ``path``: a checkpoint of train/run.py, or a plain state_dict of
    ``torchvision.models.alexnet()`` (a .pth a user already has), whose config is that of the
    torchvision variant at 224x224 with its number of classes. ``config`` holds at least variant,
    num_classes, image_size, remove (a tuple; () for checkpoints made before ablations) and
    format ("train/run.py" or "torchvision"). mmap=True leaves the tensors in the file until they
    are used (torch.save's zip format; other files are read whole): reading a config then costs
    little. CheckpointError if the file is missing or neither kind."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    state = None
    if mmap:
        try:
            state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        except Exception:  # not the zip format, or not a checkpoint at all: the plain load says which
            pass
    if state is None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # pickle, zip or torch errors: the file is not a checkpoint
            raise CheckpointError(f"{path}: not a checkpoint torch.load can read ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and "model" in state and "config" in state:  # train/run.py
        weights, config = state["model"], dict(state["config"], format="train/run.py")
    elif isinstance(state, dict) and "classifier.6.weight" in state:  # torchvision's AlexNet
        weights = state
        config = dict(variant="torchvision", num_classes=state["classifier.6.weight"].shape[0], image_size=224,
                      format="torchvision")
    else:
        raise CheckpointError(f"{path}: neither a checkpoint of train/run.py nor a state_dict of "
                              f"torchvision.models.alexnet")
    config["remove"] = tuple(config.get("remove") or ())
    return weights, config


def load_model(path: str, variant=None, backend: str = "custom", device="cpu"):
    """(model in eval mode on ``device``, config) from ``path``: a checkpoint of train/run.py, or
    a plain state_dict of ``torchvision.models.alexnet()`` (a .pth a user already has), which
    loads into the torchvision variant. ``variant``, when given, is the variant the caller needs:
    a checkpoint of the other one is a CheckpointError naming both. ``device`` may also be a
    sequence of devices, one per tower (alexnet's devices). ``config``: see read(); the model is
    built without the layers config["remove"] names, as the checkpoint's was."""
    from alexnet_kernels.models import alexnet

    weights, config = read(path)
    if variant is not None and config["variant"] != variant:
        raise CheckpointError(f"{path}: a checkpoint of the {config['variant']} variant, not of the {variant} one")
    devices = list(device) if isinstance(device, (list, tuple)) else [device]
    model = alexnet(config["variant"], num_classes=config["num_classes"], backend=backend, devices=devices,
                    remove=config["remove"])
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        without = f" without {', '.join(config['remove'])}" if config["remove"] else ""
        net = f"the {config['variant']} variant{without}"
        raise CheckpointError(f"{path}: its weights do not fit {net}: {e}") from None
    return model.eval(), config


# --------------------------------------------------------------------------------------------
# the training state of train/run.py
# --------------------------------------------------------------------------------------------


def gather_rng_states(args) -> list:
    """Every rank's RNG states (rng_state()), in rank order."""
    import torch.distributed as dist

    state = rng_state()
    if not args.distributed:
        return [state]
    states = [None] * args.world_size
    dist.all_gather_object(states, state)
    return states


def save_trainer(trainer, path: str, run: dict) -> None:
    """Model, optimizer, scheduler, scaler, position, every rank's RNG state and the run's
    configuration (``run``: config.run_config): written by rank 0, atomically."""
    rng = gather_rng_states(trainer.args)
    if trainer.args.rank != 0:
        return
    p, args = trainer.position, trainer.args
    save_atomic({
        "model": trainer.module.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "position": dict(epoch=p.epoch, epoch_step=p.epoch_step, step=p.step, first_loss=p.first_loss, sums=p.sums),
        "best_top1": trainer.best_top1,
        "rng": rng,
        "config": {**{k: getattr(args, k) for k in ("variant", "num_classes", "image_size", "seed", "batch_size",
                                                    "world_size", "remove", "freeze_below")},
                   "finetune": args.finetune_source, "run": run},
    }, path)


def restore_trainer(trainer, path: str) -> None:
    """Loads a checkpoint of save_trainer into the trainer, RNG states last: the run then
    continues exactly. The configuration was restored before the trainer was made
    (config.restore_run); the network's class count is checked against this run's data."""
    try:
        state = load(path)
        config = state["config"]
    except Exception as e:  # not a file torch.load reads, or not one of our checkpoints
        raise UsageError(f"--resume {path}: not a checkpoint of train/run.py ({type(e).__name__}: {e})") from None
    args = trainer.args
    if config["num_classes"] != args.num_classes:
        raise UsageError(f"--resume {path}: the checkpoint's network has {config['num_classes']} classes, the data "
                         f"now {args.num_classes}")
    trainer.module.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.scaler.load_state_dict(state["scaler"])
    trainer.position = type(trainer.position)(**state["position"])
    trainer.best_top1 = state["best_top1"]
    if len(state["rng"]) == args.world_size:
        set_rng_state(state["rng"][args.rank])
