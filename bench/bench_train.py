"""Training throughput: a full AlexNet training step (forward, cross-entropy, backward, SGD with
momentum and weight decay) in images/s, alexnet_kernels' kernels beside PyTorch's.

    pytest bench/bench_train.py --benchmark     # GPU: batch 128, as in the paper; CPU: fp32 at batch cpu_batch
    pytest bench/bench_train.py                 # smoke: batch 2 (CPU: wall clock, no compile)

For each variant (paper at 227x227, torchvision at 224x224; smoke: torchvision at 64x64) and
precision (fp32 with TF32 off, bf16 autocast), 1000 classes, the same network as

* custom:   alexnet(variant, backend="custom"): our kernels (conv1+ReLU on CUDA, LRN, max
            pooling, ReLU and ReLU+dropout)
* custom+compile: the same under torch.compile (train/run.py --compile), our kernels custom ops
            in the graph (GPU full run, paper variant)
* torch:    alexnet(variant, backend="torch"): torch.nn's modules, eager
* compile:  torch.compile of the torch backend (GPU full run, paper variant).
The compiled models have streams=False: per-tower CUDA streams are Python-side stream switches
that would break the graph.

test_tower_streams times the paper variant's towers on one GPU with a CUDA stream each and both
on the current one; test_gpu_vs_cpu is ``train/run.py --compare-cpu`` as a benchmark (the same
function, train.measure.gpu_vs_cpu): GPU with our kernels over the CPU with torch's, beside the
paper's "about 50x". On a machine without a GPU the full run gives the CPU table of
test_train_step (fp32, at the cpu_batch fixture's batch) and test_default_run_step_cpu (the
default CPU run's step, the backends timed in turns), and skips the GPU-only ones.
Each time is bench/timing.py's median_ms (CUDA events on a GPU, without the L2 flush: a step
moves far more than L2 holds).
"""
import pytest
import torch
from timing import interleaved_ms, median_ms

from alexnet_kernels.models import alexnet
from train.malloc import keep_freed_memory
from train.measure import fixed_batch_step, gpu_vs_cpu, network

NUM_CLASSES = 1000
SIZES = {"paper": 227, "torchvision": 224}
GPU = dict(batch=128, warmup=5, iters=20)
CPU = dict(warmup=0, iters=3)  # batch: cpu_batch; the loss check warms up; a paper step takes seconds on 2 cores
SMOKE = dict(batch=2, sizes={"paper": 227, "torchvision": 64}, warmup=0, iters=1)  # the loss check warms up


@pytest.fixture(autouse=True, scope="module")
def malloc_as_train_run():
    """The CPU steps with glibc's malloc set as train/run.py sets it (train/malloc.py): without it
    a step spends about a fifth of its CPU time faulting its large buffers back in. For the rest of
    the process: glibc cannot be put back as it was."""
    keep_freed_memory()


def step_rate(model, batch: int, size: int, device: str, precision: str, warmup: int, iters: int) -> float:
    """Images/s of model's training step (median_ms), after checking that its loss is finite."""
    step = fixed_batch_step(model, batch, size, NUM_CLASSES, device, precision)
    loss = step()
    assert torch.isfinite(loss), f"loss {loss.item()}"
    return batch / (median_ms(step, warmup=warmup, iters=iters, flush_l2=False) * 1e-3)


def where(device: str) -> str:
    return "GPU" if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"


def step_table(device: str, full: bool) -> str:
    """The title of the training-step table, which test_train_step and the default run's row share."""
    return f"AlexNet training step, images/s ({where(device)}{'' if full else ', smoke'})"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("variant", ["paper", "torchvision"])
def test_train_step(full, device, cpu_batch, report, variant, precision):
    if full and device == "cpu" and precision != "fp32":
        pytest.skip("the CPU table is fp32 only, to take minutes (bf16 trains about as fast there, with AVX512-BF16)")
    if not full:
        cfg = dict(SMOKE, size=SMOKE["sizes"][variant])
    else:
        cfg = dict(GPU if device == "cuda" else dict(CPU, batch=cpu_batch), size=SIZES[variant])
    impls = ["custom", "torch"] + (["custom+compile", "compile"] if full and device == "cuda" and variant == "paper"
                                   else [])
    if device == "cpu" and precision == "bf16" and variant == "paper":
        impls.remove("torch")  # torch's CPU local_response_norm has no bfloat16 kernel (avg_pool3d)
    row = {"variant": variant, "size": cfg["size"], "batch": cfg["batch"], "precision": precision}
    for impl in impls:
        torch.manual_seed(0)
        model = network(variant, "torch" if impl in ("torch", "compile") else "custom", device,
                        compile=impl.endswith("compile"))
        row[f"{impl} img/s"] = step_rate(model, cfg["batch"], cfg["size"], device, precision, cfg["warmup"],
                                         cfg["iters"])
        del model
    for ours, other in (("custom", "torch"), ("custom", "compile"), ("custom+compile", "compile")):
        if f"{ours} img/s" in row and f"{other} img/s" in row:
            row[f"{ours} vs {other}"] = row[f"{ours} img/s"] / row[f"{other} img/s"]
    report(step_table(device, full), row)


def test_default_run_step_cpu(full, device, report):
    """The step of the default CPU run (train/run.py without a GPU: torchvision's net at 64x64,
    batch 128, 10 classes, fp32), custom and torch timed in turns in one process: a whole run
    takes minutes, over which this machine's speed drifts more than the two backends differ."""
    if device != "cpu":
        pytest.skip("the default run on a GPU is another network (bench/gpu_check.sh times it)")
    batch, rounds = (128, 20) if full else (2, 1)
    steps = []
    for backend in ("custom", "torch"):
        torch.manual_seed(0)
        step = fixed_batch_step(network("torchvision", backend, "cpu", num_classes=10), batch, 64, 10, "cpu", "fp32")
        assert torch.isfinite(step())
        steps.append(step)
    ms = interleaved_ms(steps, warmup=1, rounds=rounds)
    report(step_table(device, full), {
        "variant": "torchvision (default run)", "size": 64, "batch": batch, "precision": "fp32",
        "custom img/s": batch / (ms[0] * 1e-3), "torch img/s": batch / (ms[1] * 1e-3),
        "custom vs torch": ms[1] / ms[0]})


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_tower_streams(full, device, report, precision):
    """Both towers of the paper variant on one GPU, each on its own CUDA stream or both on the
    current one: does the concurrency pay? A full training step, custom backend."""
    if device == "cpu" and (full or precision == "bf16"):
        pytest.skip("streams are a CUDA matter (the CPU runs the towers one after the other): a GPU row")
    cfg = dict(GPU, size=SIZES["paper"]) if full else dict(SMOKE, size=SMOKE["sizes"]["paper"])
    row = {"variant": "paper", "batch": cfg["batch"], "precision": precision}
    for streams in (True, False):
        torch.manual_seed(0)
        model = alexnet("paper", NUM_CLASSES, "custom", devices=(device,), streams=streams)
        row[f"{'two streams' if streams else 'one stream'} img/s"] = step_rate(
            model, cfg["batch"], cfg["size"], device, precision, cfg["warmup"], cfg["iters"])
        del model
    row["streams speedup"] = row["two streams img/s"] / row["one stream img/s"]
    report(f"Paper AlexNet, both towers on one device ({where(device)}{'' if full else ', smoke'})", row)


def test_gpu_vs_cpu(full, device, report):
    """Training images/s of the paper's network, fp32: GPU (custom backend) over CPU (torch
    backend, every thread), the paper's ~50x, measured as train/run.py --compare-cpu does (wall
    clock over whole steps, devices synced). Smoke: both sides on this machine's device."""
    if full and device == "cpu":
        pytest.skip("needs a GPU: the CPU side alone is test_train_step's torch row")
    batch = GPU["batch"] if full else SMOKE["batch"]
    rates = gpu_vs_cpu("paper", batch, SIZES["paper"], device, gpu_steps=20 if full else 1,
                       cpu_steps=3 if full else 1, warmup=1 if full else 0)
    row = {"variant": "paper", "batch": batch, "precision": "fp32", "CPU threads": torch.get_num_threads()}
    if device == "cuda":
        row.update({"GPU (cuda, custom) img/s": rates["GPU"], "CPU (cpu, torch) img/s": rates["CPU"],
                    "GPU / CPU": rates["GPU"] / rates["CPU"], "paper": "about 50x"})
    else:  # no GPU: the measurement's two sides both on the CPU
        row.update({"custom on the CPU img/s": rates["GPU"], "torch on the CPU img/s": rates["CPU"],
                    "custom / torch": rates["GPU"] / rates["CPU"]})
    report(f"GPU versus CPU, a training step ({'GPU' if device == 'cuda' else 'CPU smoke: both sides on the CPU'})",
           row)
