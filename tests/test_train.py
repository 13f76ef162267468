"""train/run.py on the CPU: learning, exact resume, checkpoints that survive a kill, ImageFolder
data with unreadable files, top-k error, and the one-line errors for bad arguments and data.

Runs use the torchvision variant on 64x64 images (the smallest size near its minimum of 63) and
a few images, so that the file runs in about two minutes on 2 cores.
"""
import csv
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from PIL import Image

from train import checkpoint, data, measure, run
from train.synthetic import SyntheticShapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A small run: 4 steps of 4 images per epoch, 8 held-out images.
TINY = ["--variant", "torchvision", "--image-size", "64", "--batch-size", "4", "--train-images", "16",
        "--val-images", "8", "--log-every", "1", "--devices", "cpu"]


NORMALIZE = data.normalization("torchvision")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def step_losses(out):
    return [float(r["loss"]) for r in read_csv(os.path.join(out, "steps.csv"))]


def one_line_error(capsys, argv, expected):
    """main(argv) exits with status 2 and one stderr line naming the problem."""
    try:
        status = run.main(argv)
    except SystemExit as e:
        status = e.code
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("train/run.py: error:") and expected in lines[0], lines[0]


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


def test_topk_errors_on_hand_made_logits():
    logits = torch.tensor([
        [9.0, 1, 2, 3, 4, 5, 6],  # label 0: top-1 right
        [1.0, 9, 8, 7, 6, 5, 4],  # label 2: 2nd -> top-1 wrong, top-5 right
        [7.0, 6, 5, 4, 3, 2, 1],  # label 6: last -> both wrong
        [1.0, 2, 3, 4, 5, 6, 7],  # label 2: 5th -> top-5 right
        [1.0, 2, 3, 4, 5, 6, 7],  # label 1: 6th -> top-5 wrong
    ])
    labels = torch.tensor([0, 2, 6, 2, 1])
    assert run.topk_errors(logits, labels) == [4, 2]
    assert run.topk_errors(logits, labels, ks=(1, 2, 7)) == [4, 3, 0]
    # fewer classes than k: top-5 of 3 classes is never wrong
    assert run.topk_errors(torch.tensor([[0.0, 1, 2]]), torch.tensor([0])) == [1, 0]


def test_chance_errors():
    assert run.chance_errors(10) == pytest.approx((0.9, 0.5))
    assert run.chance_errors(1000) == pytest.approx((0.999, 0.995))
    assert run.chance_errors(3) == pytest.approx((2 / 3, 0.0))


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def test_synthetic_set_is_deterministic_and_balanced():
    a, b = SyntheticShapes(20, 32, 10, seed=3), SyntheticShapes(20, 32, 10, seed=3)
    x, y = a[7]
    assert x.shape == (3, 32, 32) and 0 <= x.min() and x.max() <= 1 and y == 7
    assert torch.equal(x, b[7][0])
    assert not torch.equal(x, SyntheticShapes(20, 32, 10, seed=4)[7][0])
    assert [a[i][1] for i in range(20)] == [i % 10 for i in range(20)]
    with pytest.raises(IndexError):
        a[20]


def test_lighting_adds_the_pca_colour_shift():
    img = torch.rand(3, 5, 5)
    torch.manual_seed(0)
    out = data.Lighting(0.1)(img)
    torch.manual_seed(0)
    alpha = torch.randn(3) * 0.1
    shift = torch.tensor(data.PCA_EIGVEC) @ (alpha * torch.tensor(data.PCA_EIGVAL))
    torch.testing.assert_close(out - img, shift.view(3, 1, 1).expand(3, 5, 5))
    assert data.Lighting(0.0)(img) is img


def test_seeded_samples_do_not_depend_on_global_rng():
    base = SyntheticShapes(4, 16, 2)

    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(3) + i

    seeded = data.SeededSamples(Noisy(), seed=1)
    torch.manual_seed(0)
    first = seeded[2]
    state = torch.get_rng_state()
    torch.manual_seed(123)
    assert torch.equal(first, seeded[2])  # same sample, same draw, whatever came before
    torch.manual_seed(0)
    seeded[2]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    seeded.epoch = 1
    assert not torch.equal(first, seeded[2])  # another epoch, another augmentation
    assert len(data.SeededSamples(base, 0)) == 4


def test_epoch_sampler_resumes_part_way():
    ds = list(range(10))
    sampler = data.EpochSampler(ds, seed=5)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start=4)
    assert list(sampler) == full[4:] and len(sampler) == 6
    sampler.set_epoch(3)
    assert sorted(sampler) == ds and list(sampler) != full
    shards = [list(data.EpochSampler(ds, num_replicas=2, rank=r, seed=5)) for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == ds


def make_tree(root, layout="imagenet", corrupt=True):
    """A tiny ImageFolder tree of 40x48 JPEG and PNG images in 2 classes (layout "imagenet":
    root/train and root/val; "flat": root/<class>), with one corrupt and one truncated file in
    the training images."""
    splits = {"train": 6, "val": 2} if layout == "imagenet" else {".": 8}
    for split, n in splits.items():
        for c, colour in (("cat", (200, 30, 30)), ("dog", (30, 30, 200))):
            d = os.path.join(root, split, c)
            os.makedirs(d, exist_ok=True)
            for i in range(n):
                img = Image.new("RGB", (48, 40), tuple(min(255, v + 10 * i) for v in colour))
                img.save(os.path.join(d, f"{i}.JPEG" if i % 2 else f"{i}.png"))
    if corrupt:
        d = os.path.join(root, "train" if layout == "imagenet" else ".", "cat")
        with open(os.path.join(d, "broken.JPEG"), "wb") as f:
            f.write(b"this is not an image")
        with open(os.path.join(d, "1.JPEG"), "rb") as f:
            whole = f.read()
        with open(os.path.join(d, "truncated.JPEG"), "wb") as f:
            f.write(whole[: len(whole) // 2])
    return root


def test_image_folder_skips_unreadable_files(tmp_path):
    root = make_tree(str(tmp_path / "imgs"))
    train_set, val_set, classes = data.image_folder_splits(root, 32, 36, NORMALIZE, False, 0.1, 0.1, 0)
    assert classes == ["cat", "dog"] and len(train_set) == 14 and len(val_set) == 4
    loader = torch.utils.data.DataLoader(train_set, batch_size=14, collate_fn=data.collate_skipping)
    images, labels, skipped = next(iter(loader))
    assert images.shape == (12, 3, 32, 32) and labels.tolist().count(0) == 6
    assert sorted(os.path.basename(s.path) for s in skipped) == ["broken.JPEG", "truncated.JPEG"]
    assert all("Error" in s.reason for s in skipped)
    ten = data.image_folder_splits(root, 32, 36, NORMALIZE, True, 0.1, 0.1, 0)[1]
    assert ten[0][0].shape == (10, 3, 32, 32)
    # a single ImageFolder tree: a seeded share is held out
    flat = make_tree(str(tmp_path / "flat"), layout="flat", corrupt=False)
    train_set, val_set, classes = data.image_folder_splits(flat, 32, 36, NORMALIZE, False, 0.1, 0.25, 0)
    assert (len(train_set), len(val_set), classes) == (12, 4, ["cat", "dog"])


def test_run_on_image_folder_counts_and_warns(tmp_path, capsys):
    root = make_tree(str(tmp_path / "imgs"))
    out = str(tmp_path / "run")
    argv = ["--data", root, "--out", out, "--epochs", "1", "--ten-crop", "--resize", "72", "--workers", "1"]
    argv += [a for a in TINY if a not in ("--train-images", "16", "--val-images", "8")]
    assert run.main(argv) == 0
    out_text, err = capsys.readouterr()
    assert err.count("warning: skipped unreadable image") == 2 and "broken.JPEG" in err and "truncated.JPEG" in err
    (row,) = read_csv(os.path.join(out, "metrics.csv"))
    assert int(row["skipped_train"]) == 2 and int(row["skipped_val"]) == 0
    assert "skipped 2 training / 0 held-out unreadable images" in out_text


# --------------------------------------------------------------------------------------------
# bad arguments and bad data: one line, status 2
# --------------------------------------------------------------------------------------------


def test_bad_data_directories(tmp_path, capsys):
    one_line_error(capsys, ["--data", str(tmp_path / "missing")] + TINY, "no such directory")
    (tmp_path / "empty").mkdir()
    one_line_error(capsys, ["--data", str(tmp_path / "empty")] + TINY, "empty")
    loose = tmp_path / "loose" / "train"
    loose.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(loose / "a.png")
    one_line_error(capsys, ["--data", str(tmp_path / "loose")] + TINY, "images lie directly in it")
    no_val = make_tree(str(tmp_path / "noval"), corrupt=False)
    os.rename(os.path.join(no_val, "val"), os.path.join(no_val, "validation"))
    one_line_error(capsys, ["--data", no_val] + TINY, "no val/")
    no_images = tmp_path / "noimages" / "train" / "cat"
    no_images.mkdir(parents=True)
    (no_images / "notes.txt").write_text("hello")
    one_line_error(capsys, ["--data", str(tmp_path / "noimages")] + TINY, "no images")


def test_bad_arguments(tmp_path, capsys):
    one_line_error(capsys, ["--variant", "paper", "--image-size", "64"], "takes 227x227")
    one_line_error(capsys, TINY + ["--batch-size", "0"], "--batch-size must be at least 1")
    one_line_error(capsys, TINY + ["--lr", "-1"], "--lr must be positive")
    one_line_error(capsys, TINY + ["--resume", str(tmp_path / "nope.pt")], "no such file")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    one_line_error(capsys, TINY + ["--resume", str(tmp_path / "junk.pt")], "not a checkpoint of train/run.py")
    one_line_error(capsys, TINY + ["--ten-crop"], "--ten-crop needs --data")
    one_line_error(capsys, ["--variant", "torchvision", "--devices", "cpu", "cpu"], "takes one device")
    one_line_error(capsys, ["--precision", "fp8"], "invalid choice")
    one_line_error(capsys, ["--devices", "tpu"], "--devices")


def test_cli_error_is_one_line(tmp_path):
    """The real command line: `python train/run.py --data MISSING` prints one line, exits 2."""
    proc = subprocess.run([sys.executable, os.path.join(REPO, "train", "run.py"), "--data", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"train/run.py: error: --data {tmp_path / 'x'}: no such directory"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_compare_cpu_without_gpu_says_so(capsys):
    assert run.main(["--compare-cpu"]) == 2
    assert "no CUDA GPU on this machine" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------


def test_atomic_save_keeps_the_previous_checkpoint_on_error(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt.pt")
    checkpoint.save_atomic({"epoch": 1, "w": torch.ones(3)}, path)

    def failing_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_atomic({"epoch": 2}, path)
    monkeypatch.undo()
    assert checkpoint.load(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary file left behind


def test_atomic_save_survives_a_kill(tmp_path):
    """SIGKILL a process in the middle of writing a checkpoint: the previous one still loads."""
    path = str(tmp_path / "ckpt.pt")
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {REPO!r})
        from train import checkpoint

        class Slow:  # pickling it stalls the save half way
            def __reduce__(self):
                print("writing", flush=True)
                time.sleep(60)
                return (Slow, ())

        checkpoint.save_atomic({{"epoch": 1}}, {path!r})
        checkpoint.save_atomic({{"epoch": 2, "big": bytes(1 << 20), "slow": Slow()}}, {path!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert checkpoint.load(path)["epoch"] == 1


def test_rng_state_round_trip():
    state = checkpoint.rng_state()
    a = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    checkpoint.set_rng_state(state)
    b = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


# --------------------------------------------------------------------------------------------
# whole runs
# --------------------------------------------------------------------------------------------


def test_resume_after_an_epoch_repeats_the_uninterrupted_run(tmp_path):
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    assert run.main(TINY + ["--epochs", "2", "--out", straight]) == 0
    assert run.main(TINY + ["--epochs", "1", "--out", split]) == 0
    assert run.main(TINY + ["--epochs", "2", "--resume", os.path.join(split, "checkpoint.pt")]) == 0
    expected = step_losses(straight)
    assert len(expected) == 8
    assert step_losses(split) == expected  # bit for bit: data order, dropout masks, optimizer state
    rows_a, rows_b = read_csv(os.path.join(straight, "metrics.csv")), read_csv(os.path.join(split, "metrics.csv"))
    assert [r["top1_err"] for r in rows_a] == [r["top1_err"] for r in rows_b]
    assert os.path.exists(os.path.join(split, "curves.png"))


def test_ctrl_c_saves_a_checkpoint_and_resume_repeats_the_run(tmp_path, monkeypatch, capsys):
    straight, stopped = str(tmp_path / "straight"), str(tmp_path / "stopped")
    assert run.main(TINY + ["--epochs", "2", "--out", straight]) == 0
    calls = []
    step = run.train_step

    def step_then_ctrl_c(*args):
        calls.append(1)
        loss = step(*args)
        if len(calls) == 6:  # in the middle of the second epoch
            signal.raise_signal(signal.SIGINT)
        return loss

    monkeypatch.setattr(run, "train_step", step_then_ctrl_c)
    assert run.main(TINY + ["--epochs", "2", "--out", stopped]) == 130
    assert "stopped by Ctrl-C at step 6" in capsys.readouterr().err
    state = checkpoint.load(os.path.join(stopped, "checkpoint.pt"))
    assert state["position"]["epoch"] == 1 and state["position"]["epoch_step"] == 2
    monkeypatch.undo()
    assert run.main(TINY + ["--epochs", "2", "--resume", os.path.join(stopped, "checkpoint.pt")]) == 0
    assert step_losses(stopped) == step_losses(straight)
    assert read_csv(os.path.join(stopped, "metrics.csv"))[-1]["train_loss"] == \
        read_csv(os.path.join(straight, "metrics.csv"))[-1]["train_loss"]


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "run")
    calls = []
    step = run.train_step

    def nan_in_second_epoch(*args):
        calls.append(1)
        loss = step(*args)
        return loss * float("nan") if len(calls) == 6 else loss

    monkeypatch.setattr(run, "train_step", nan_in_second_epoch)
    assert run.main(TINY + ["--epochs", "3", "--out", out]) == 3
    err = capsys.readouterr().err
    assert "the loss is nan at step 6 (epoch 2)" in err and "last good checkpoint" in err
    assert checkpoint.load(os.path.join(out, "checkpoint.pt"))["position"]["epoch"] == 1


def test_measure_images_per_second():
    model = run.build_model(type("A", (), dict(variant="torchvision", num_classes=10, backend="torch", devices=None)))
    step = measure.fixed_batch_step(model, 2, 64, 10, "cpu")
    loss = step()
    assert loss.shape == () and torch.isfinite(loss)
    assert measure.images_per_second(step, 2, steps=1, warmup=0) > 0


def test_default_style_run_learns(tmp_path, capsys):
    """The default run (generated shapes, torchvision variant at 64x64, SGD batch/lr/momentum as the
    paper's but batch 32), shrunk to 2 classes and 40 steps: the loss falls and the held-out error
    ends far below chance."""
    out = str(tmp_path / "run")
    assert run.main(["--devices", "cpu", "--classes", "2", "--batch-size", "32", "--train-images", "640",
                     "--val-images", "64", "--epochs", "2", "--out", out]) == 0
    text = capsys.readouterr().out
    assert "epoch 2/2: train loss" in text and "top-5 error" in text
    losses = step_losses(out)
    assert len(losses) == 40 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2
    rows = read_csv(os.path.join(out, "metrics.csv"))
    assert float(rows[-1]["top1_err"]) < 0.2  # chance: 0.5
    assert os.path.exists(os.path.join(out, "curves.png"))


def test_compile_trains_like_eager_and_keeps_checkpoint_names(tmp_path, monkeypatch, capsys):
    """--compile: the same losses as the eager run (Inductor told to draw eager's random numbers,
    for torch's own dropout), whole-graph (a graph break would fail), and checkpoints whose keys are
    the model's own (no _orig_mod. prefix), so they resume and load without --compile."""
    import torch._dynamo
    import torch._inductor.config

    eager, compiled = str(tmp_path / "eager"), str(tmp_path / "compiled")
    assert run.main(TINY + ["--epochs", "1", "--out", eager]) == 0
    torch._dynamo.reset()
    compile_ = torch.compile

    def fullgraph(*args, **kwargs):
        return compile_(*args, **{**kwargs, "fullgraph": True})

    monkeypatch.setattr(torch, "compile", fullgraph)  # nn.Module.compile calls torch.compile
    # (config.patch, not monkeypatch: undoing a config attribute with monkeypatch deletes it)
    with torch._inductor.config.patch(fallback_random=True):
        assert run.main(TINY + ["--epochs", "1", "--compile", "--out", compiled]) == 0
    assert "backend custom (torch.compile)" in capsys.readouterr().out
    torch.testing.assert_close(step_losses(compiled), step_losses(eager), rtol=1e-4, atol=1e-5)
    keys = checkpoint.load(os.path.join(compiled, "checkpoint.pt"))["model"].keys()
    assert keys == checkpoint.load(os.path.join(eager, "checkpoint.pt"))["model"].keys()
    model, _ = checkpoint.load_model(os.path.join(compiled, "checkpoint.pt"))
    assert isinstance(model, torch.nn.Module)
