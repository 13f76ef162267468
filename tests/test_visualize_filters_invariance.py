"""train/visualize.py filters and train/invariance.py on the CPU, with checkpoints made here
(untrained: the pictures and tables are about plumbing, not about what a trained net learned)
and a 3-class x 3-image PNG tree generated from SyntheticShapes.

The paper-variant checkpoint is only drawn, never run: its forward pass is slow on a CPU.
"""
import csv
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from alexnet_kernels.models import alexnet
from train import invariance, visualize
from train.checkpoint import load_model
from train.config import default_resize
from train.data import eval_transform, normalization

TV_SIZE = 64
# A filter the paper checkpoint carries at a known place: a ramp from -1 to 1, far outside the
# N(0, 0.01) of the other weights, so it alone sets the layer's min-max range.
PATTERN_TOWER, PATTERN_INDEX = 1, 5
PATTERN = torch.linspace(-1, 1, 3 * 11 * 11).view(3, 11, 11)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("vis")


@pytest.fixture(scope="module")
def tv_ckpt(work, run_checkpoint):
    torch.manual_seed(0)
    return run_checkpoint(work / "tv.pt", alexnet("torchvision", num_classes=3, backend="torch"), "torchvision",
                          TV_SIZE)


@pytest.fixture(scope="module")
def paper_ckpt(work, run_checkpoint):
    torch.manual_seed(0)
    model = alexnet("paper", num_classes=3, backend="torch")
    with torch.no_grad():
        model.towers[PATTERN_TOWER].conv1.weight[PATTERN_INDEX] = PATTERN
        model.towers[0].conv1.weight[47] = -PATTERN  # the last cell of the first block
    return run_checkpoint(work / "paper.pt", model, "paper", 227)


@pytest.fixture(scope="module")
def image_dir(work, image_folder):
    return image_folder(work / "images", 9, seed=3)


def png_pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def cell(grid, index, k=11, zoom=visualize.FILTER_ZOOM, gap=visualize.FILTER_GAP, columns=visualize.FILTER_COLUMNS):
    """Cell ``index`` of a filter grid, as the filter_grid docstring lays it out."""
    y = gap + (index // columns) * (k * zoom + gap)
    x = gap + (index % columns) * (k * zoom + gap)
    return grid[y:y + k * zoom, x:x + k * zoom]


def zoomed(w, zoom=visualize.FILTER_ZOOM):
    """[3, k, k] -> [k * zoom, k * zoom, 3], nearest neighbour."""
    return np.kron(w.permute(1, 2, 0).numpy(), np.ones((zoom, zoom, 1), np.float32))


# ----------------------------------------------------------------------------------------------
# filters
# ----------------------------------------------------------------------------------------------


def test_paper_filters_two_towers_of_48_each_cell_its_filter(paper_ckpt, work, capsys):
    model, config = load_model(paper_ckpt, backend="torch")
    grids = visualize.filter_grids(model, config["variant"])
    assert [t for t, _ in grids] == ["tower 0 (48)", "tower 1 (48)"]
    cell_side = 11 * visualize.FILTER_ZOOM + visualize.FILTER_GAP
    for _, grid in grids:  # 48 filters, 16 a row: 3 rows
        assert grid.shape == (visualize.FILTER_GAP + 3 * cell_side, visualize.FILTER_GAP + 16 * cell_side, 3)
    weights = [t.conv1.weight.detach() for t in model.towers]
    lo, hi = min(w.min() for w in weights), max(w.max() for w in weights)
    assert (lo, hi) == (-1, 1)  # the planted ramps set the layer's range
    for (_, grid), w in zip(grids, weights):
        for i in range(48):
            np.testing.assert_allclose(cell(grid, i), zoomed((w[i] - lo) / (hi - lo)), atol=1e-6)
    ramp = zoomed((PATTERN + 1) / 2)
    np.testing.assert_allclose(cell(grids[PATTERN_TOWER][1], PATTERN_INDEX), ramp, atol=1e-6)
    np.testing.assert_allclose(cell(grids[0][1], 47), 1 - ramp, atol=1e-6)
    assert sum(np.allclose(cell(g, i), ramp, atol=1e-6) for _, g in grids for i in range(48)) == 1

    out = str(work / "paper_filters.png")
    assert visualize.main(["filters", paper_ckpt, "--out", out]) == 0
    pixels = png_pixels(out)
    width, height = visualize.filters_png_size(grids)
    assert pixels.shape == (height, width, 3) == (2 * (visualize.FILTER_TITLE_HEIGHT + grids[0][1].shape[0]),
                                                  grids[0][1].shape[1], 3)
    # The PNG holds the grids under their title strips: find the planted ramp in tower 1's block.
    top = 2 * visualize.FILTER_TITLE_HEIGHT + grids[0][1].shape[0]
    np.testing.assert_array_equal(cell(pixels[top:], PATTERN_INDEX), np.rint(ramp * 255).astype(np.uint8))
    assert pixels.std() > 20
    assert "tower 0 (48) + tower 1 (48)" in capsys.readouterr().out


def test_torchvision_filters_64_in_one_block(tv_ckpt, work):
    out = str(work / "sub" / "tv_filters.png")  # a missing directory is made
    assert visualize.main(["filters", tv_ckpt, "--out", out]) == 0
    model, config = load_model(tv_ckpt, backend="torch")
    grids = visualize.filter_grids(model, "torchvision")
    assert [t for t, _ in grids] == ["conv1 (64)"]
    assert grids[0][1].shape[:2] == (2 + 4 * 46, 2 + 16 * 46)
    pixels = png_pixels(out)
    assert pixels.shape[:2] == visualize.filters_png_size(grids)[::-1] == (22 + 2 + 4 * 46, 2 + 16 * 46)
    assert pixels.std() > 20

    w = model.features[0].weight.detach()
    per_filter = visualize.filter_grids(model, "torchvision", scale="filter")[0][1]
    for i in (0, 37, 63):
        expected = (w[i] - w[i].min()) / (w[i].max() - w[i].min())
        np.testing.assert_allclose(cell(per_filter, i), zoomed(expected), atol=1e-6)


def test_filters_of_a_plain_torchvision_state_dict(work):
    path = str(work / "alexnet_tv.pth")
    torch.save(torchvision.models.alexnet(num_classes=3).state_dict(), path)
    out = str(work / "plain.png")
    assert visualize.main(["filters", path, "--out", out]) == 0
    assert png_pixels(out).shape == (22 + 2 + 4 * 46, 2 + 16 * 46, 3)


def test_filters_default_out_beside_the_checkpoint(tv_ckpt):
    out = os.path.join(os.path.dirname(tv_ckpt), "conv1_filters.png")
    assert visualize.main(["filters", tv_ckpt]) == 0
    assert os.path.getsize(out) > 0


def test_filters_errors(tv_ckpt, work, cli_error):
    prefix = "train/visualize.py filters: error:"

    def error(argv, expected):
        cli_error(visualize.main, ["filters", *argv], prefix, expected)

    error([str(work / "nope.pt"), "--out", str(work / "x.png")], "no such checkpoint file")
    junk = work / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    error([str(junk), "--out", str(work / "x.png")], "not a checkpoint")
    # a PNG given as the checkpoint: one line, whatever torch.load's message holds
    Image.new("RGB", (8, 8)).save(work / "some.png")
    error([str(work / "some.png"), "--out", str(work / "x.png")], "some.png: not a checkpoint torch.load can read")
    error([tv_ckpt, "--out", str(work)], "is a directory")
    error([tv_ckpt, "--out", str(work / "x.jpg")], "must name a .png file")
    error([tv_ckpt, "--out", str(junk / "x.png")], "cannot make its directory")
    error([tv_ckpt, "--zoom", "0"], "--zoom")
    assert not (work / "x.png").exists()
    (work / "x.png").write_bytes(b"an earlier picture")  # replaced only with --overwrite
    error([tv_ckpt, "--out", str(work / "x.png")], f"--out {work / 'x.png'}: exists; give --overwrite to replace it")
    assert visualize.main(["filters", tv_ckpt, "--out", str(work / "x.png"), "--overwrite"]) == 0
    assert png_pixels(work / "x.png").shape[2] == 3


def test_both_run_as_scripts(work, repo):
    """`python train/visualize.py` and `python train/invariance.py` find train.* from any
    directory and fail in one line. Both in one interpreter (runpy runs each file as
    __main__, as `python FILE` does), to import torch once."""
    script = textwrap.dedent(f"""
        import runpy, sys
        for argv in ({[os.path.join(repo, "train", "visualize.py"), "filters", str(work / "nope.pt")]!r},
                     {[os.path.join(repo, "train", "invariance.py"), str(work / "nope.pt"), "--data",
                       str(work / "no_such_dir")]!r}):
            sys.argv = argv
            try:
                runpy.run_path(argv[0], run_name="__main__")
            except SystemExit as e:
                print("status", e.code)
        """)
    r = subprocess.run([sys.executable, "-c", script], cwd=str(work), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["status", "2", "status", "2"]
    assert r.stderr.strip().splitlines() == [
        f"train/visualize.py filters: error: {work / 'nope.pt'}: no such checkpoint file",
        f"train/invariance.py: error: --data {work / 'no_such_dir'}: no such directory"]


# ----------------------------------------------------------------------------------------------
# invariance
# ----------------------------------------------------------------------------------------------


def test_transforms_move_the_content_as_stated():
    torch.manual_seed(1)
    image = torch.rand(3, 20, 20)
    crop = 20
    assert torch.equal(invariance.transform_image(image, "translation", 0, crop), image)
    down = invariance.transform_image(image, "translation", 3, crop)
    torch.testing.assert_close(down[:, 3:], image[:, :-3], atol=1e-5, rtol=0)
    assert down[:, :3].abs().max() < 1e-6  # filled with the mean pixel
    ccw = invariance.transform_image(image, "rotation", 90, crop)
    torch.testing.assert_close(ccw, torch.rot90(image, 1, (1, 2)), atol=1e-5, rtol=0)
    torch.testing.assert_close(invariance.transform_image(image, "rotation", -90, crop),
                               torch.rot90(image, -1, (1, 2)), atol=1e-5, rtol=0)
    half = invariance.transform_image(image, "scale", 0.5, crop)
    assert half[:, :4].abs().max() < 1e-6 and half[:, 16:].abs().max() < 1e-6  # shrunk into the centre
    assert half[:, 6:14, 6:14].abs().min() > 0
    # On a larger image the crop is the centre one, and a shift brings in what lay beyond it.
    big = torch.rand(3, 30, 26)
    torch.testing.assert_close(invariance.transform_image(big, "translation", -2, 20), big[:, 7:27, 3:23],
                               atol=1e-5, rtol=0)


def test_identity_equals_the_evaluation_transform(image_dir):
    path = os.path.join(image_dir, sorted(os.listdir(image_dir))[0])
    path = os.path.join(path, sorted(os.listdir(path))[0])
    with Image.open(path) as im:
        pil = im.convert("RGB")
    resize, norm = default_resize(TV_SIZE), normalization("torchvision")
    expected = eval_transform(TV_SIZE, resize, norm)(pil)
    [loaded] = invariance.load_images(os.path.dirname(os.path.dirname(path)), resize, "torchvision", 1)
    assert torch.equal(invariance.transform_image(loaded, "rotation", 0, TV_SIZE), expected)


def test_invariance_table_csv_and_plot(tv_ckpt, image_dir, work, capsys):
    out = str(work / "inv")
    assert invariance.main([tv_ckpt, "--data", image_dir, "--images", "9", "--out", out, "--backend", "torch"]) == 0
    printed = capsys.readouterr().out
    assert "fc7 distance" in printed and "top class kept" in printed
    with open(os.path.join(out, "invariance.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(invariance.CSV_COLUMNS)
    by_kind = {k: [r for r in rows if r["transform"] == k] for k in ("translation", "scale", "rotation")}
    assert sum(map(len, by_kind.values())) == len(rows)
    assert [int(r["magnitude"]) for r in by_kind["translation"]] == [-13, -10, -6, -3, 0, 3, 6, 10, 13]
    assert [float(r["magnitude"]) for r in by_kind["scale"]] == pytest.approx([0.6 + 0.1 * i for i in range(9)])
    assert [int(r["magnitude"]) for r in by_kind["rotation"]] == list(range(-90, 91, 15))
    assert all(r["images"] == "9" for r in rows)

    identity = {"translation": 0, "scale": 1, "rotation": 0}
    for kind, rs in by_kind.items():
        at = {float(r["magnitude"]): r for r in rs}
        assert float(at[identity[kind]]["feature_distance"]) == 0
        assert float(at[identity[kind]]["top_class_kept"]) == 1
        moved = [float(r["feature_distance"]) for r in rs if float(r["magnitude"]) != identity[kind]]
        assert min(moved) > 0, (kind, moved)  # every transform changes the input, so the feature
        # Farther from the identity, farther from the original feature: the two extreme
        # magnitudes against the two nearest the identity, in mean (all rows ordered by value).
        ms = sorted(at, key=lambda m: abs(m - identity[kind]))[1:]
        near = np.mean([float(at[m]["feature_distance"]) for m in ms[:2]])
        far = np.mean([float(at[m]["feature_distance"]) for m in ms[-2:]])
        assert far > 1.2 * near, (kind, near, far)

    # The identity row's probability is the mean top-class probability of the model's own
    # forward pass on the evaluation transform's images: fc8(fc7) is the classifier.
    model, _ = load_model(tv_ckpt, backend="torch")
    folder = torchvision.datasets.ImageFolder(
        image_dir, eval_transform(TV_SIZE, default_resize(TV_SIZE), normalization("torchvision")))
    x = torch.stack([folder[i][0] for i in range(len(folder))])
    with torch.no_grad():
        p = torch.softmax(model(x), 1).max(1).values.mean().item()
    assert float(by_kind["scale"][4]["p_original_class"]) == pytest.approx(p, abs=1e-5)

    pixels = png_pixels(os.path.join(out, "invariance.png"))
    assert pixels.shape[0] >= 400 and pixels.shape[1] >= 900
    assert pixels.std() > 10


def test_packing_magnitudes_into_passes_changes_nothing(tv_ckpt, image_dir):
    model, _ = load_model(tv_ckpt, backend="torch")
    images = invariance.load_images(image_dir, default_resize(TV_SIZE), "torchvision", 3)
    table = {"rotation": [0, 45], "scale": [0.8, 1.0], "translation": [-6]}
    one_per_pass = invariance.measure(model, "torchvision", images, TV_SIZE, batch_size=3, table=table)
    all_in_one = invariance.measure(model, "torchvision", images, TV_SIZE, batch_size=64, table=table)
    assert [(r["transform"], r["magnitude"]) for r in all_in_one] == [(k, m) for k, ms in table.items() for m in ms]
    for a, b in zip(one_per_pass, all_in_one):
        assert a["top_class_kept"] == b["top_class_kept"] and a["images"] == b["images"] == 3
        assert a["feature_distance"] == pytest.approx(b["feature_distance"], abs=1e-5)
        assert a["p_original_class"] == pytest.approx(b["p_original_class"], abs=1e-6)
    assert len({round(r["feature_distance"], 6) for r in all_in_one if r["feature_distance"] > 0}) == 3


def test_invariance_errors(tv_ckpt, image_dir, work, cli_error):
    out = str(work / "inv_err")

    def error(argv, expected):
        cli_error(invariance.main, [tv_ckpt, "--data", image_dir, *argv], "train/invariance.py: error:", expected)

    cli_error(invariance.main, [str(work / "nope.pt"), "--data", image_dir, "--out", out],
              "train/invariance.py: error:", "no such checkpoint file")
    error(["--data", str(work / "no_such_dir"), "--out", out], "no such directory")
    empty = work / "empty"
    empty.mkdir()
    error(["--data", str(empty), "--out", out], "empty")
    loose = work / "loose"
    loose.mkdir()
    Image.new("RGB", (72, 72)).save(loose / "a.png")
    error(["--data", str(loose), "--out", out], "one subdirectory per class")
    error(["--images", "0"], "--images")
    error(["--device", "nonsense"], "--device: 'nonsense' is not a device")
    error(["--out", tv_ckpt], "not a directory")
    error(["--out", out, "--resize", "50"], "--resize 50")
    assert not os.path.exists(out)
    # a second run into the same --out: refused, the first results kept, unless --overwrite
    done = work / "inv_done"
    done.mkdir()
    (done / "invariance.csv").write_text("earlier results")
    error(["--out", str(done)], f"--out {done / 'invariance.csv'}: exists; give --overwrite to replace it")
    assert (done / "invariance.csv").read_text() == "earlier results"

