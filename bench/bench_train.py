"""Training throughput: a full AlexNet training step (forward, cross-entropy, backward, SGD with
momentum and weight decay) in images/s, alexnet_kernels' kernels beside PyTorch's.

    pytest bench/bench_train.py --benchmark     # batch 128 on the GPU, as in the paper
    pytest bench/bench_train.py                 # smoke: batch 2 (CPU: wall clock, no compile)

test_tower_streams also times the paper variant with both towers on one device, each on its own
CUDA stream (streams=True, the default) and both on the current one: whether the concurrency pays.

For each variant (paper at 227x227, torchvision at 224x224; smoke: torchvision at 64x64) and
precision (fp32 with TF32 off, bf16 autocast), 1000 classes, three implementations of the same
network:

* custom:   alexnet(variant, backend="custom"): conv1+ReLU (CUDA), LRN, max pooling, ReLU and
            ReLU+dropout on our kernels
* custom+compile: the same under torch.compile (train/run.py --compile): Inductor compiles the
            model's forward and backward around our kernels, which stay custom ops in the graph;
            the loss and the optimizer step stay eager, as for compile (full run only)
* torch:    alexnet(variant, backend="torch"): torch.nn's modules, eager
* compile:  torch.compile of the torch backend (default Inductor mode; full run only).
The compiled rows are the paper variant's (the one with a target to beat torch.compile; each
compile of a whole training graph takes a minute of the device's time). Both compiled models
have streams=False: the per-tower CUDA streams are Python-side stream switches that would break
the graph.

test_gpu_vs_cpu is ``train/run.py --compare-cpu`` as a benchmark: the paper variant, fp32, batch
128, on the GPU with our kernels and on the CPU (all its threads) with torch's own ops, and the
ratio beside the paper's "about 50x" (smoke: both sides on the CPU, batch 2).

The step is train.measure.fixed_batch_step, the one ``train/run.py --compare-cpu`` times; each
time is bench/timing.py's median_ms (CUDA events on a GPU, without the L2 flush: a step moves far
more than L2 holds). The rows report images/s and the speedups of custom over the other two.
"""
import pytest
import torch

from alexnet_kernels.models import alexnet
from timing import median_ms
from train.measure import fixed_batch_step, images_per_second

HAS_CUDA = torch.cuda.is_available()
NUM_CLASSES = 1000
FULL = dict(batch=128, sizes={"paper": 227, "torchvision": 224}, warmup=5, iters=20)
SMOKE = dict(batch=2, sizes={"paper": 227, "torchvision": 64}, warmup=0, iters=1)  # the loss check warms up


def model_for(variant: str, impl: str, device: str):
    backend = "torch" if impl in ("torch", "compile") else "custom"
    if impl in ("custom", "torch"):
        return alexnet(variant, NUM_CLASSES, backend, devices=(device,))
    streams = dict(streams=False) if variant == "paper" else {}
    model = alexnet(variant, NUM_CLASSES, backend, devices=(device,), **streams)
    model.compile()  # as train/run.py --compile does
    return model


def step_rate(model, cfg: dict, size: int, device: str, precision: str) -> float:
    """Images/s of model's training step (median_ms), after checking that its loss is finite."""
    step = fixed_batch_step(model, cfg["batch"], size, NUM_CLASSES, device, precision)
    loss = step()
    assert torch.isfinite(loss), f"loss {loss.item()}"
    return cfg["batch"] / (median_ms(step, warmup=cfg["warmup"], iters=cfg["iters"], flush_l2=False) * 1e-3)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("variant", ["paper", "torchvision"])
def test_train_step(full, report, variant, precision):
    cfg = FULL if full else SMOKE
    device = "cuda" if HAS_CUDA else "cpu"
    size, batch = cfg["sizes"][variant], cfg["batch"]
    impls = ["custom", "torch"] + (["custom+compile", "compile"] if full and variant == "paper" else [])
    if device == "cpu" and precision == "bf16" and variant == "paper":
        impls.remove("torch")  # torch's CPU local_response_norm has no bfloat16 kernel (avg_pool3d)
    row = {"variant": variant, "size": size, "batch": batch, "precision": precision}
    for impl in impls:
        torch.manual_seed(0)
        row[f"{impl} img/s"] = step_rate(model_for(variant, impl, device), cfg, size, device, precision)
    for ours, other in (("custom", "torch"), ("custom", "compile"), ("custom+compile", "compile")):
        if f"{ours} img/s" in row and f"{other} img/s" in row:
            row[f"{ours} vs {other}"] = row[f"{ours} img/s"] / row[f"{other} img/s"]
    report(f"AlexNet training step, images/s ({'GPU' if HAS_CUDA else 'CPU smoke'})", row)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_tower_streams(full, report, precision):
    """Issue 5: both towers of the paper variant on one GPU, each on its own CUDA stream or both
    on the current one: does the concurrency pay? A full training step, custom backend."""
    cfg = FULL if full else SMOKE
    device = "cuda" if HAS_CUDA else "cpu"
    if device == "cpu" and precision == "bf16":
        pytest.skip("smoke run on the CPU: fp32 only (streams are a CUDA matter)")
    row = {"variant": "paper", "batch": cfg["batch"], "precision": precision}
    for streams in (True, False):
        torch.manual_seed(0)
        model = alexnet("paper", NUM_CLASSES, "custom", devices=(device,), streams=streams)
        row[f"{'two streams' if streams else 'one stream'} img/s"] = step_rate(
            model, cfg, cfg["sizes"]["paper"], device, precision)
        del model
    row["streams speedup"] = row["two streams img/s"] / row["one stream img/s"]
    report(f"Paper AlexNet, both towers on one device ({'GPU' if HAS_CUDA else 'CPU smoke'})", row)


def test_gpu_vs_cpu(full, report):
    """Issue 6: training images/s of the paper's network, fp32, GPU (custom backend) over CPU
    (torch backend, every thread): the paper's ~50x, measured as train/run.py --compare-cpu does
    (wall clock over whole steps, devices synced)."""
    batch = FULL["batch"] if full else SMOKE["batch"]
    gpu = "cuda" if HAS_CUDA else "cpu"
    row = {"variant": "paper", "batch": batch, "precision": "fp32", "CPU threads": torch.get_num_threads()}
    rates = []
    for side, backend, device, steps in (("GPU", "custom", gpu, 20 if full else 1),
                                         ("CPU", "torch", "cpu", 3 if full else 1)):
        torch.manual_seed(0)
        step = fixed_batch_step(alexnet("paper", NUM_CLASSES, backend, devices=(device,)), batch, 227,
                                NUM_CLASSES, device, "fp32")
        rates.append(images_per_second(step, batch, steps, warmup=1 if full else 0))
        row[f"{side} ({device}, {backend}) img/s"] = rates[-1]
        del step
    row["GPU / CPU"] = rates[0] / rates[1]
    row["paper"] = "about 50x"
    report(f"GPU versus CPU, a training step ({'GPU' if HAS_CUDA else 'CPU smoke: both sides on the CPU'})", row)
