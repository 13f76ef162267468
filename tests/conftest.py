"""Fixtures the tests of train/ and of the models share: the tiny training run, a checkpoint
trained by it, checkpoints in train/run.py's format made without training, image folders
generated from SyntheticShapes, and the check of a command's one-line error."""
import csv
import os

import pytest
import torch
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A small run: the torchvision variant at 64x64 (near its minimum of 63), 4 steps of 4 images per
# epoch, 8 held-out images.
TINY = ["--variant", "torchvision", "--image-size", "64", "--batch-size", "4", "--train-images", "16",
        "--val-images", "8", "--log-every", "1", "--devices", "cpu"]


@pytest.fixture(scope="session")
def repo():
    """The repository's root."""
    return REPO


@pytest.fixture(scope="session")
def tiny():
    """tiny(*flags, epochs=1): train/run.py's arguments for the tiny run, with more flags."""
    def argv(*extra, epochs=1):
        return [*TINY, "--epochs", str(epochs), *extra]

    return argv


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, tiny):
    """A checkpoint of train/run.py after two steps on 3 generated classes."""
    from train import run

    out = str(tmp_path_factory.mktemp("trained"))
    assert run.main(tiny("--classes", "3", "--train-images", "8", "--out", out)) == 0
    return os.path.join(out, "checkpoint.pt")


@pytest.fixture(scope="session")
def run_checkpoint():
    """run_checkpoint(path, model, variant, image_size, **config): ``model``'s weights in
    train/run.py's checkpoint format, without the training state; returns the path."""
    def save(path, model, variant, image_size, **config):
        config = {"variant": variant, "num_classes": model.state_dict()[
            "fc8.weight" if variant == "paper" else "classifier.6.weight"].shape[0],
            "image_size": image_size, "seed": 0, "batch_size": 4, "world_size": 1, **config}
        torch.save({"model": model.state_dict(), "config": config}, path)
        return str(path)

    return save


@pytest.fixture(scope="session")
def image_folder():
    """image_folder(root, images, classes=3, size=72, seed=0): SyntheticShapes as PNG files
    root/<class name with underscores>/<index>.png; returns root."""
    from train.synthetic import SyntheticShapes

    def make(root, images, classes=3, size=72, seed=0):
        shapes = SyntheticShapes(images, size, classes, seed=seed)
        for i in range(len(shapes)):
            image, label = shapes[i]
            folder = os.path.join(str(root), shapes.classes[label].replace(" ", "_"))
            os.makedirs(folder, exist_ok=True)
            pixels = (image * 255).round().byte().permute(1, 2, 0).numpy()
            Image.fromarray(pixels).save(os.path.join(folder, f"{i}.png"))
        return str(root)

    return make


@pytest.fixture
def cli_error(capsys):
    """cli_error(main, argv, prefix, expected): main(argv) exits with status 2 and one stderr
    line that starts with ``prefix`` and names the problem (``expected``); returns the line."""
    def check(main, argv, prefix, expected):
        try:
            status = main(argv)
        except SystemExit as e:  # argparse's own errors
            status = e.code
        err = capsys.readouterr().err
        assert status == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith(prefix) and expected in lines[0], lines[0]
        return lines[0]

    return check


@pytest.fixture
def stop_at(monkeypatch):
    """stop_at(step, what="ctrl-c"): from now on train/run.py's step ``step`` (counted from now)
    is followed by Ctrl-C, or (what="nan") returns a NaN loss. monkeypatch.undo() ends it."""
    import signal

    from train import engine

    def patch(step, what="ctrl-c"):
        calls = []
        real = engine.train_step

        def patched(*args):
            calls.append(1)
            loss = real(*args)
            if len(calls) == step:
                if what == "nan":
                    return loss * float("nan")
                signal.raise_signal(signal.SIGINT)
            return loss

        monkeypatch.setattr(engine, "train_step", patched)

    return patch


@pytest.fixture
def run_error(cli_error):
    """run_error(argv, expected): train/run.py's one-line error (cli_error)."""
    from train import run

    return lambda argv, expected: cli_error(run.main, argv, "train/run.py: error:", expected)


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def read_csv():
    """read_csv(path): the rows of a CSV file as dicts."""
    return _read_csv


@pytest.fixture(scope="session")
def step_losses():
    """step_losses(run directory): the loss of every step, from its steps.csv."""
    return lambda out: [float(r["loss"]) for r in _read_csv(os.path.join(out, "steps.csv"))]
