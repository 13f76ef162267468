"""train/features.py: fc6/fc7 features of an ImageFolder set into an .npz, linear classifiers on
them and on raw pixels, the report, and the one-line errors. A generated ImageFolder (3 classes
x 8 PNG images of 72x72, plus one unreadable file) and tiny torchvision checkpoints at 64x64.
"""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_kernels.models import alexnet
from train import checkpoint, data, features
from train.config import default_resize

PREFIX = "train/features.py: error:"


@pytest.fixture(scope="module")
def folder(tmp_path_factory, image_folder):
    """3 classes x 8 PNG images of 72x72, and one unreadable file."""
    root = image_folder(tmp_path_factory.mktemp("images"), 24, classes=3, seed=9)
    with open(os.path.join(root, "red_disk", "broken.png"), "wb") as f:
        f.write(b"not an image")
    return root


@pytest.fixture(scope="module")
def trained(trained_checkpoint):
    return trained_checkpoint


@pytest.fixture
def error_line(cli_error):
    return lambda argv, expected: cli_error(features.main, argv, PREFIX, expected)


def test_features_file_and_report(trained, folder, tmp_path, capsys):
    out = str(tmp_path / "feats" / "fc7.npz")
    argv = [trained, "--data", folder, "--layer", "fc7", "--out", out, "--splits", "3", "--pixels-size", "16",
            "--batch-size", "5", "--workers", "0"]
    assert features.main(argv) == 0
    text, err = capsys.readouterr()
    assert err.count("warning: skipped unreadable image") == 1 and "broken.png" in err

    saved = np.load(out)
    assert saved["features"].shape == (24, 4096) and saved["features"].dtype == np.float32
    assert (saved["features"] >= 0).all()  # after fc7's ReLU
    assert np.bincount(saved["labels"]).tolist() == [8, 8, 8]
    assert saved["classes"].tolist() == sorted(os.listdir(folder))
    assert saved["pixels"].shape == (24, 3 * 16 * 16) and saved["pixels"].dtype == np.uint8
    paths = saved["paths"].tolist()
    assert len(paths) == 24 and all(os.path.isfile(p) for p in paths) and not any("broken" in p for p in paths)
    assert [saved["classes"][i] for i in saved["labels"]] == [os.path.basename(os.path.dirname(p)) for p in paths]
    assert str(saved["layer"]) == "fc7"
    # row 0 is fc7 of its file, through the checkpoint's evaluation crop and normalization
    model, _ = checkpoint.load_model(trained)
    transform = data.eval_transform(64, default_resize(64), data.normalization("torchvision"))
    with torch.no_grad():
        expected = model.features_at(transform(Image.open(paths[0]).convert("RGB"))[None], "fc7")[0]
    torch.testing.assert_close(torch.from_numpy(saved["features"][0]), expected, rtol=1e-4, atol=1e-5)

    for name in ("logistic regression", "linear SVM", "pixels 16x16"):
        assert name in text
    with open(str(tmp_path / "feats" / "fc7.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["input"], r["classifier"]) for r in rows] == [
        ("fc7", "logistic regression"), ("fc7", "linear SVM"),
        ("pixels 16x16", "logistic regression"), ("pixels 16x16", "linear SVM")]
    assert [r["dims"] for r in rows] == ["4096", "4096", "768", "768"]
    with open(str(tmp_path / "feats" / "fc7.json")) as f:
        report = json.load(f)
    assert report["images"] == 24 and report["layer"] == "fc7" and len(report["skipped"]) == 1
    for row, csv_row in zip(report["results"], rows):
        assert len(row["accuracies"]) == 3 and all(0 <= a <= 1 for a in row["accuracies"])
        assert row["accuracy_mean"] == pytest.approx(np.mean(row["accuracies"]))
        assert float(csv_row["accuracy_mean"]) == pytest.approx(row["accuracy_mean"], abs=1e-6)


def test_classifiers_separate_separable_data():
    """Three classes, each far out along its own axis: every split of both classifiers is right."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 10)
    x = rng.normal(0, 0.1, (30, 5))
    x[np.arange(30), y] += 10
    accuracies = features.evaluate_classifiers(x, y, splits=4, test_size=0.3, seed=1)
    assert accuracies == {"logistic regression": [1.0] * 4, "linear SVM": [1.0] * 4}
    # ... and labels that carry nothing about x: about chance, not 1
    shuffled = features.evaluate_classifiers(rng.normal(size=(30, 5)), y, splits=4, test_size=0.3, seed=1)
    assert all(np.mean(a) < 0.8 for a in shuffled.values())


def test_check_split_sizes():
    features.check_split_sizes([2, 2, 2], 0.5)
    with pytest.raises(features.UsageError, match="a class has 1 image"):
        features.check_split_sizes([8, 1, 8], 0.3)
    with pytest.raises(features.UsageError, match="too few for --test-size 0.1: a split would test on 1"):
        features.check_split_sizes([3, 3, 3], 0.1)
    with pytest.raises(features.UsageError, match="1 class"):
        features.check_split_sizes([5], 0.3)


def test_errors(trained, folder, tmp_path, error_line, image_folder, run_checkpoint):
    out = ["--out", str(tmp_path / "f.npz")]
    missing = str(tmp_path / "missing.pt")
    error_line([missing, "--data", folder, "--layer", "fc6", *out], f"{missing}: no such checkpoint file")
    error_line([trained, "--data", folder, "--layer", "conv5", *out], "argument --layer: invalid choice")
    error_line([trained, "--data", str(tmp_path / "nodata"), "--layer", "fc6", *out], "no such directory")
    error_line([trained, "--data", folder, "--layer", "fc6", "--test-size", "1.5", *out],
               "--test-size must be in (0, 1)")
    # a network trained without fc7
    ablated = run_checkpoint(tmp_path / "ablated.pt", alexnet("torchvision", num_classes=3, backend="torch",
                                                              remove=("fc7",)), "torchvision", 64, remove=("fc7",))
    error_line([ablated, "--data", folder, "--layer", "fc7", *out],
               "--layer fc7: the checkpoint's network has no fc7 (it was trained without fc7)")
    # too few images in a class for the splits: checked before any image goes through the network
    few = image_folder(tmp_path / "few", 6, classes=3, seed=9)
    os.remove(os.path.join(few, "green_square", os.listdir(os.path.join(few, "green_square"))[0]))
    error_line([trained, "--data", few, "--layer", "fc6", *out], "a class has 1 image(s)")
    # the ImageNet layout: its val/ is read, and must hold images like train/
    os.makedirs(tmp_path / "split" / "train" / "a")
    os.makedirs(tmp_path / "split" / "val" / "a")
    Image.new("RGB", (8, 8)).save(tmp_path / "split" / "train" / "a" / "0.png")
    error_line([trained, "--data", str(tmp_path / "split"), "--layer", "fc6", *out],
               f"--data {tmp_path / 'split' / 'val'}: no images")
    assert not os.path.exists(tmp_path / "f.npz")
    # an existing --out is replaced only with --overwrite
    (tmp_path / "f.npz").write_bytes(b"earlier results")
    error_line([trained, "--data", folder, "--layer", "fc6", *out], "exists; give --overwrite to replace it")
    assert (tmp_path / "f.npz").read_bytes() == b"earlier results"


def test_imagenet_layout_reads_val(trained, folder, tmp_path, capsys):
    """--data DIR in the README's layout, DIR/train and DIR/val: the features are val/'s images."""
    root = tmp_path / "layout"
    root.mkdir()
    os.symlink(folder, root / "train")
    os.symlink(folder, root / "val")
    out = str(tmp_path / "fc6.npz")
    assert features.main([trained, "--data", str(root), "--layer", "fc6", "--out", out, "--splits", "2",
                          "--workers", "0"]) == 0
    paths = np.load(out)["paths"].tolist()
    assert len(paths) == 24 and all(p.startswith(str(root / "val") + os.sep) for p in paths)


def test_cli_error_is_one_line(tmp_path, repo):
    """The real command line: `python train/features.py MISSING ...` prints one line, exits 2."""
    missing = str(tmp_path / "missing.pt")
    proc = subprocess.run([sys.executable, os.path.join(repo, "train", "features.py"), missing, "--data",
                           str(tmp_path), "--layer", "fc6"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"train/features.py: error: {missing}: no such checkpoint file"]
