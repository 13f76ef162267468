"""train/visualize.py patches on the CPU: an untrained torchvision-variant checkpoint at 64x64
(the pictures are about plumbing, not about what a trained net learned) and a 3-class x 4-image
PNG tree generated from SyntheticShapes at 72x72; plus the top-9 selection on hand-made
activations."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_kernels.models import alexnet
from alexnet_kernels.stats import receptive_field
from train import visualize

SIZE = 64
PREFIX = "train/visualize.py patches: error:"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("patches")


@pytest.fixture(scope="module")
def ckpt(work, run_checkpoint):
    torch.manual_seed(0)
    return run_checkpoint(work / "tv64.pt", alexnet("torchvision", num_classes=3, backend="torch"), "torchvision", SIZE)


@pytest.fixture(scope="module")
def data(work, image_folder):
    return image_folder(work / "images", 12)


def pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255


def test_patches_png_default_channels(ckpt, data, work, capsys):
    out = work / "conv2.png"
    assert visualize.main(["patches", ckpt, "--data", data, "--layer", "conv2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "12 image(s)" in printed
    image = pixels(out)
    # figure of (0.8 + 1.1 * 9) x (0.7 + 1.15 * 8) inches at 100 dpi: 8 default channels
    assert abs(image.shape[1] - 1070) <= 2 and abs(image.shape[0] - 990) <= 2
    assert image.std() > 0.1  # patches of coloured shapes on white, not a blank page
    # the synthetic images are tinted red, green and blue: all three show up as saturated pixels
    saturated = image.max(axis=2) - image.min(axis=2) > 0.5
    assert saturated.mean() > 0.05


def test_patches_chosen_channels_and_subset(ckpt, data, work, capsys):
    out = work / "conv5.png"
    argv = ["patches", ckpt, "--data", data, "--layer", "conv5", "--channels", "0,255", "--out", str(out),
            "--max-images", "5", "--batch-size", "2"]
    assert visualize.main(argv) == 0
    assert "channels 0,255 of conv5, 5 image(s)" in capsys.readouterr().out
    image = pixels(out)
    assert abs(image.shape[0] - (70 + 2 * 115)) <= 2 and abs(image.shape[1] - 1070) <= 2  # two rows
    # only 5 images: 5 patches a row, the last 4 cells empty (white)
    right = image[100:, int(1070 * 0.62):int(1070 * 0.98)]
    assert right.min() > 0.99
    assert image[100:, 100:500].std() > 0.05


def test_patches_top_selection_one_unit_per_image():
    acts = torch.zeros(4, 2, 3, 3)
    acts[0, 0, 1, 2] = 9.0
    acts[0, 0, 2, 0] = 8.0  # image 0's second-best unit: must lose to the other images' best
    acts[1, 0, 0, 1] = 7.0
    acts[2, 0, 2, 2] = 6.0
    acts[3, 0, 0, 0] = 5.0
    acts[:, 1] = torch.arange(36, dtype=torch.float32).view(4, 3, 3)  # channel 1: last unit of each image
    top = visualize.top_activations(acts, torch.tensor([10, 11, 12, 13]), k=3)
    assert top.values[0].tolist() == [9.0, 7.0, 6.0]
    assert top.images[0].tolist() == [10, 11, 12]
    assert list(zip(top.ys[0].tolist(), top.xs[0].tolist())) == [(1, 2), (0, 1), (2, 2)]
    assert top.images[1].tolist() == [13, 12, 11] and top.values[1].tolist() == [35.0, 26.0, 17.0]
    assert (top.ys[1] == 2).all() and (top.xs[1] == 2).all()
    # the same in two batches, with more places than images so far
    first = visualize.top_activations(acts[:2], torch.tensor([10, 11]), k=3)
    assert first.values.shape == (2, 2)
    merged = visualize.top_activations(acts[2:], torch.tensor([12, 13]), k=3, best=first)
    for a, b in zip(merged, top):
        assert torch.equal(a, b)
    assert visualize.default_channels(top, count=1) == [1]


def test_patches_crop_is_the_receptive_field_clipped():
    rf = receptive_field("torchvision", "conv1", SIZE)  # 11 pixels, jump 4, from -2
    image = torch.arange(SIZE, dtype=torch.float32).view(1, 1, SIZE).expand(3, SIZE, SIZE)
    corner = visualize.crop(image, rf.window(0, 0))  # [-2, 9) clipped to [0, 9)
    assert corner.shape == (3, 9, 9) and corner[0, 0].tolist() == list(range(9))
    middle = visualize.crop(image, rf.window(3, 5))  # rows [10, 21), columns [18, 29)
    assert middle.shape == (3, 11, 11) and middle[0, 0].tolist() == list(range(18, 29))
    last = visualize.crop(image, rf.window(14, 14))  # [54, 65) clipped to [54, 64)
    assert last.shape == (3, 10, 10)
    assert visualize.spread(12, 5) == [0, 2, 4, 7, 9] and visualize.spread(3, 5) == [0, 1, 2]


def test_patches_errors(ckpt, data, work, cli_error):
    out = str(work / "x.png")
    cases = [
        (["patches", str(work / "nope.pt"), "--data", data, "--layer", "conv1", "--out", out], "no such checkpoint"),
        (["patches", ckpt, "--data", data, "--layer", "fc6", "--out", out], "--layer fc6"),
        (["patches", ckpt, "--data", data, "--layer", "conv9", "--out", out], "--layer conv9"),
        (["patches", ckpt, "--data", data, "--layer", "conv1", "--channels", "1,x", "--out", out], "--channels"),
        (["patches", ckpt, "--data", data, "--layer", "conv1", "--channels", "3,64", "--out", out],
         "conv1 has channels 0..63, got 64"),
        (["patches", ckpt, "--data", str(work / "missing"), "--layer", "conv1", "--out", out], "no such directory"),
        (["patches", ckpt, "--data", str(work / "no_images"), "--layer", "conv1", "--out", out], "no images"),
        (["patches", ckpt, "--data", data, "--layer", "conv1", "--max-images", "0", "--out", out], "positive"),
        (["patches", ckpt, "--data", data, "--layer", "conv1", "--device", "tpu", "--out", out],
         "--device: 'tpu' is not a device"),
        (["patches", ckpt, "--data", data, "--layer", "conv1", "--out", str(work / "exists.png")],
         "exists; give --overwrite to replace it"),
    ]
    (work / "no_images" / "a class").mkdir(parents=True, exist_ok=True)
    (work / "exists.png").write_bytes(b"an earlier picture")
    for argv, expected in cases:
        # argparse's own messages (--max-images 0) have the subcommand's prog too
        cli_error(visualize.main, argv, "train/visualize.py patches: error:", expected)
    assert (work / "exists.png").read_bytes() == b"an earlier picture"


def test_patches_of_the_imagenet_layout_use_val(ckpt, data, tmp_path, capsys):
    """--data DIR with DIR/train and DIR/val (the README's layout): the patches come from val/."""
    root = tmp_path / "layout"
    os.makedirs(root / "train" / "a")
    Image.new("RGB", (72, 72)).save(root / "train" / "a" / "0.png")
    os.symlink(data, root / "val")
    out = str(tmp_path / "conv1.png")
    assert visualize.main(["patches", ckpt, "--data", str(root), "--layer", "conv1", "--channels", "0",
                           "--out", out]) == 0
    assert "12 image(s)" in capsys.readouterr().out  # val/'s 12, not train/'s one


def test_patches_and_invariance_refuse_an_ablated_network(work, data, cli_error, run_checkpoint):
    """An ablated checkpoint (run.py --remove) has other receptive fields, or no fc7: one line, status 2."""
    from train import invariance

    model = alexnet("torchvision", num_classes=3, backend="torch", remove=("conv3", "fc7"))
    path = run_checkpoint(work / "ablated.pt", model, "torchvision", SIZE, remove=("conv3", "fc7"))
    cli_error(visualize.main, ["patches", path, "--data", data, "--layer", "conv2", "--out", str(work / "ablated.png")],
              PREFIX, "without conv3, fc7")
    cli_error(invariance.main, [path, "--data", data, "--out", str(work / "ablated_inv")],
              "train/invariance.py: error:",
              "without fc7")
