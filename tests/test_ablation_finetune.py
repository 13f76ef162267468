"""train/run.py --remove (ablations) and --finetune / --freeze-below on the CPU: the options reach
the model and the checkpoint, checkpoint.load_model rebuilds what was trained, frozen layers stay
bit-identical, a fine-tuning run resumes exactly, and the one-line errors.

Tiny runs as in test_train.py: the torchvision variant at 64x64, batches of 4, a few images.
"""
import os

import pytest
import torch
import torchvision

from alexnet_kernels import models
from train import checkpoint, config, run


@pytest.fixture(scope="module")
def source(trained_checkpoint):
    """A checkpoint trained for two steps on 3 generated classes: what the fine-tuning starts from."""
    return trained_checkpoint


def weights(path):
    return checkpoint.load(path)["model"]


def test_run_layers_are_the_models():
    assert config.LAYERS == models.LAYERS and config.REMOVABLE == models.REMOVABLE


# --------------------------------------------------------------------------------------------
# --remove
# --------------------------------------------------------------------------------------------


def test_remove_reaches_the_checkpoint_and_load_model(tmp_path, capsys, tiny, run_error):
    out = str(tmp_path / "ablated")
    assert run.main(tiny("--remove", "fc7,conv3", "--train-images", "8", "--out", out)) == 0
    assert "AlexNet torchvision variant without conv3, fc7 at 64x64" in capsys.readouterr().out
    path = os.path.join(out, "checkpoint.pt")
    state = checkpoint.load(path)
    assert state["config"]["remove"] == ("conv3", "fc7")  # in the network's order
    assert not any(k.startswith(("features.6.", "classifier.4.")) for k in state["model"])  # conv3, fc7
    model, config = checkpoint.load_model(path, backend="torch")
    assert model.removed == ("conv3", "fc7") and config["remove"] == ("conv3", "fc7")
    assert model.features[8].in_channels == 192  # conv4 reads conv2's output
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 10)
    # a resumed run takes the removed layers from its checkpoint; a flag that says otherwise is an error
    run_error(tiny("--remove", "conv3", "--resume", path, epochs=2),
              f"--remove conv3: the --resume checkpoint {path} was made with --remove conv3,fc7")
    run_error(tiny("--finetune", path, "--freeze-below", "conv3", "--out", str(tmp_path / "ft")),
              "--freeze-below conv3: the network has no conv3 (removed: conv3, fc7)")
    run_error(tiny("--finetune", path, "--remove", "fc6", "--out", str(tmp_path / "ft")),
              f"--remove fc6: the --finetune checkpoint {path} was made with --remove conv3,fc7")


def test_remove_bad_names(tiny, run_error):
    run_error(tiny("--remove", "conv3,pool5,fc8"),
              "--remove: pool5, fc8 cannot be removed (the removable layers: conv3, conv4, fc6, fc7)")


# --------------------------------------------------------------------------------------------
# --finetune
# --------------------------------------------------------------------------------------------


def test_finetune_freezes_below_and_resumes_exactly(source, tmp_path, capsys, tiny, run_error, step_losses):
    """3 classes -> 5, conv1..conv5 frozen: fc8 has 5 outputs, the frozen weights are the
    source's bit for bit, fc6 and fc7 moved; one epoch then --resume repeats two straight epochs."""
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    finetune = ["--classes", "5", "--train-images", "8", "--finetune", source, "--freeze-below", "fc6"]
    assert run.main(tiny(*finetune, "--out", straight, epochs=2)) == 0
    assert ("fine-tuning " + source + " with a new fc8 of 5 classes; frozen: conv1, conv2, conv3, conv4, conv5"
            in capsys.readouterr().out)
    before, after = weights(source), weights(os.path.join(straight, "checkpoint.pt"))
    assert set(before) == set(after)
    for key in before:
        if key.startswith("features."):
            assert torch.equal(after[key], before[key]), key  # frozen
        elif key.startswith("classifier.6."):
            assert after[key].shape[0] == 5 and before[key].shape[0] == 3, key  # the new fc8
        else:
            assert not torch.equal(after[key], before[key]), key  # fc6, fc7: trained
    config = checkpoint.load(os.path.join(straight, "checkpoint.pt"))["config"]
    assert (config["num_classes"], config["freeze_below"], config["finetune"]) == (5, "fc6", source)
    model, _ = checkpoint.load_model(os.path.join(straight, "checkpoint.pt"), backend="torch")
    assert model.classifier[6].out_features == 5
    run_error(tiny("--classes", "5", "--freeze-below", "fc7", "--resume", os.path.join(straight, "checkpoint.pt"),
                   epochs=3),
              "--freeze-below fc7: the --resume checkpoint " + os.path.join(straight, "checkpoint.pt")
              + " was made with --freeze-below fc6")

    assert run.main(tiny(*finetune, "--out", split)) == 0
    # --resume alone: the checkpoint says which layers are frozen and where the run started from
    assert run.main(tiny("--classes", "5", "--train-images", "8", "--resume", os.path.join(split, "checkpoint.pt"),
                         epochs=2)) == 0
    assert step_losses(split) == step_losses(straight)  # bit for bit
    resumed = weights(os.path.join(split, "checkpoint.pt"))
    assert all(torch.equal(resumed[k], after[k]) for k in after)
    assert checkpoint.load(os.path.join(split, "checkpoint.pt"))["config"]["finetune"] == source


def test_finetune_on_a_folder_resumes_alone(source, tmp_path, image_folder, stop_at, monkeypatch, step_losses):
    """The README's fine-tuning command on a small ImageFolder, stopped by Ctrl-C in its second
    epoch and resumed with --resume alone: the data, its 2-class head, the frozen layers and the
    recipe come from the checkpoint, and the losses are the uninterrupted run's."""
    root = image_folder(tmp_path / "images", 12, classes=2)  # 11 training images, 1 held out
    flags = ["--finetune", source, "--data", root, "--freeze-below", "fc6", "--lr", "0.001", "--batch-size", "4",
             "--backend", "torch", "--epochs", "2", "--log-every", "1", "--devices", "cpu"]
    straight, stopped = str(tmp_path / "straight"), str(tmp_path / "stopped")
    assert run.main([*flags, "--out", straight]) == 0
    stop_at(3)
    assert run.main([*flags, "--out", stopped]) == 130
    monkeypatch.undo()
    assert run.main(["--resume", os.path.join(stopped, "checkpoint.pt")]) == 0
    assert step_losses(stopped) == step_losses(straight) and len(step_losses(straight)) == 4


def test_finetune_from_a_torchvision_state_dict(tmp_path, tiny):
    """A torchvision AlexNet .pth a user has (here untrained) fine-tunes like our checkpoints;
    --freeze-below fc8 trains fc8 alone."""
    torch.manual_seed(0)
    pth = str(tmp_path / "alexnet.pth")
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), pth)
    out = str(tmp_path / "run")
    assert run.main(tiny("--classes", "2", "--train-images", "4", "--val-images", "4", "--finetune", pth,
                         "--freeze-below", "fc8", "--out", out)) == 0
    before, after = torch.load(pth), weights(os.path.join(out, "checkpoint.pt"))
    assert after["classifier.6.weight"].shape == (2, 4096)
    assert all(torch.equal(after[k], before[k]) for k in before if not k.startswith("classifier.6."))


def test_finetune_errors(source, tmp_path, tiny, run_error):
    out = ["--out", str(tmp_path / "run")]
    missing = str(tmp_path / "missing.pt")
    run_error(tiny("--finetune", missing, *out), f"--finetune {missing}: no such file")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    run_error(tiny("--finetune", str(tmp_path / "junk.pt"), *out), "junk.pt: not a checkpoint torch.load can read")
    run_error(tiny("--finetune", source, "--freeze-below", "fc9", *out),
              "argument --freeze-below: invalid choice: 'fc9'")
    run_error(tiny("--finetune", source, "--resume", source, *out), "--finetune and --resume cannot be combined")
    run_error(["--finetune", source, "--variant", "paper", "--devices", "cpu", *out],
              f"--variant paper: the --finetune checkpoint {source} was made with --variant torchvision")
    run_error(tiny("--freeze-below", "fc6", *out), "--freeze-below needs --finetune")
    run_error(tiny("--finetune", source, "--out", os.path.dirname(source)),
              "holds the --finetune checkpoint, which the run would overwrite")
    pth = tmp_path / "state_dict.pt"
    torch.save(torchvision.models.alexnet(weights=None, num_classes=2).state_dict(), pth)
    run_error(tiny("--resume", str(pth)), "not a checkpoint of train/run.py (a torchvision state_dict")
