"""Checkpoints that survive a kill, and the RNG state that makes a resumed run repeat an
uninterrupted one exactly."""
import os
import random
import tempfile

import numpy as np
import torch


def save_atomic(obj, path: str) -> None:
    """torch.save(obj) to ``path`` so that ``path`` always holds a whole checkpoint: the bytes go
    to a temporary file in the same directory, are flushed to disk, and only then replace
    ``path`` (os.replace is atomic on POSIX and Windows). A crash or kill during the save leaves
    the previous file untouched; an exception removes the temporary file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
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
