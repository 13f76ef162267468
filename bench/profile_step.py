"""Where a training step's time goes: torch.profiler over a few steps of AlexNet, kernel time per
family, per backend and precision, so that the next speed work goes to the largest share.

    python bench/profile_step.py                      # paper variant, batch 128, on the GPU
    python bench/profile_step.py --batch 2 --steps 1  # a rehearsal anywhere (CPU: op self time)

The step is train.measure's (forward, cross-entropy, backward, SGD with momentum and weight
decay), the one bench_train.py and train/run.py --compare-cpu time. Each of the model's layers
runs inside a profiler range (forward hooks), and the backward ops are tied to their layer by
autograd's sequence numbers, so every kernel lands in one family:

    ours: <kernel>        each kernel of this package (CUDA or Triton), wherever it runs
    <layer> fwd / bwd     the layer's other kernels: cuDNN for the convolutions, GEMMs for the fc
                          layers, torch's ops for LRN, pooling, ReLU and dropout in the torch backend
    copies and casts      copy_, to, autocast's casts, memcpy and memset
    optimizer             SGD's step (torch's fused kernel)
    loss                  cross-entropy and its gradient
    other                 anything left (its kernels are named in the markdown's footnote)

Times are the sum of kernel durations per step (kernels of concurrent streams both count), beside
the step's wall time. On a machine without a GPU the same attribution runs over the CPU ops'
self time, which only rehearses the script.
"""
import argparse
import os
import re
import sys
import time
from collections import defaultdict

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from alexnet_kernels.models import alexnet  # noqa: E402
from train.measure import fixed_batch_step, synchronize  # noqa: E402

LAYER = "layer:"
# Kernels of this package: CUDA kernels live in the alexnet_kernels namespace; Triton kernels
# are named after their Python functions.
OURS = re.compile(r"alexnet_kernels|relu_dropout|_relu_(fwd|bwd)|dropout_(fwd|bwd)")
COPY = re.compile(r"copy|Memcpy|Memset|cast|_to_copy|convert", re.IGNORECASE)
LAYER_KIND = re.compile(r"^(conv|fc|lrn|pool|relu|drop|flatten|avgpool|features|classifier)")


def short_kernel(name: str) -> str:
    """A kernel's name without template arguments and parameter lists."""
    name = re.sub(r"\(.*", "", name)
    depth, out = 0, []
    for ch in name:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    name = "".join(out).replace("void ", "").strip()
    return name.split("::")[-1] or name


def layer_name(module_name: str) -> str:
    """towers.0.conv2 -> conv2 (both towers in one family); features.3 stays features.3."""
    parts = module_name.split(".")
    return parts[-1] if parts[0] == "towers" else module_name


def install_layer_ranges(model: torch.nn.Module) -> list:
    """Every leaf module's forward inside a profiler range named layer:<name>."""
    handles, stack = [], []
    for name, module in model.named_modules():
        if any(True for _ in module.children()):
            continue
        label = LAYER + layer_name(name)

        def enter(m, args, label=label):
            r = record_function(label)
            r.__enter__()
            stack.append(r)

        def leave(m, args, out):
            stack.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    return handles


def ancestors(evt):
    while evt is not None:
        yield evt
        evt = evt.cpu_parent


def in_backward(evt) -> bool:
    return any(a.scope == 1 for a in ancestors(evt))  # scope 1: a backward function


def forward_ops(events) -> dict:
    """(sequence_nr, thread) of each forward op that recorded an autograd node -> (its layer or
    None, the names of its enclosing ops)."""
    ops = {}
    for e in events:
        if e.device_type != DeviceType.CPU or e.sequence_nr < 0 or in_backward(e):
            continue
        chain = [a.name for a in ancestors(e)]
        layer = next((n[len(LAYER):] for n in chain if n.startswith(LAYER)), None)
        ops.setdefault((e.sequence_nr, e.thread), (layer, chain))
    return ops


def family(kernel: str, evt, fwd: dict) -> str:
    """The family of one kernel launched (or CPU time spent) inside the op evt."""
    if kernel.startswith(("autograd::engine::evaluate_function", "GeneratedBackwardFor")):
        return "autograd (CPU bookkeeping)"  # only seen where CPU op time stands in for kernels
    if OURS.search(kernel):
        return "ours: " + short_kernel(kernel)
    chain = list(ancestors(evt))
    names = [a.name for a in chain]
    if COPY.search(kernel) or any(n in ("aten::copy_", "aten::_to_copy", "aten::to") for n in names):
        return "copies and casts"
    if any(n.startswith("Optimizer.") for n in names):  # torch.optim's record_function ranges
        return "optimizer"
    for a in chain:
        if a.name.startswith(LAYER):
            return a.name[len(LAYER):] + " fwd"
        if a.scope == 1:
            layer, fwd_names = fwd.get((a.sequence_nr, a.fwd_thread), (None, []))
            if layer:
                return layer + " bwd"
            names = fwd_names + names
            break
    if any("cross_entropy" in n or "nll_loss" in n or "log_softmax" in n for n in names):
        return "loss"
    return "other"


def attribute(events, use_cpu: bool) -> dict:
    """Microseconds per family over all profiled steps: kernel durations on a GPU, the ops'
    self time on the CPU."""
    fwd = forward_ops(events)
    totals = defaultdict(float)
    for e in events:
        if e.device_type != DeviceType.CPU:
            continue
        if use_cpu:
            if e.name.startswith((LAYER, "ProfilerStep", "Optimizer.")) or e.self_cpu_time_total <= 0:
                continue
            items = [(e.name, e.self_cpu_time_total)]
        else:
            items = [(k.name, k.duration) for k in e.kernels]
        for kname, us in items:
            totals[family(kname, e, fwd)] += us
    return totals


def profile_config(variant: str, backend: str, precision: str, batch: int, steps: int, device: str) -> dict:
    size = 227 if variant == "paper" else 224
    model = alexnet(variant, 1000, backend, devices=(device,))
    step = fixed_batch_step(model, batch, size, 1000, device, precision)
    for _ in range(3):  # warm-up: cuDNN's algorithm search, Triton compiles, the allocator
        step()
    synchronize()
    handles = install_layer_ranges(model)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize()
        wall_ms = (time.perf_counter() - start) * 1e3 / steps
    for h in handles:
        h.remove()
    totals = attribute(prof.events(), use_cpu=not device.startswith("cuda"))
    return {"wall_ms": wall_ms, "ms": {k: v / 1e3 / steps for k, v in totals.items()}}


def markdown(results: dict, title: str) -> str:
    configs = list(results)
    families = sorted({f for r in results.values() for f in r["ms"]},
                      key=lambda f: -max(r["ms"].get(f, 0.0) for r in results.values()))
    head = "| family | " + " | ".join(f"{c} ms | {c} %" for c in configs) + " |"
    lines = [f"### {title}", "", head, "|---|" + "---|---|" * len(configs)]
    for f in families:
        cells = []
        for c in configs:
            ms = results[c]["ms"].get(f)
            total = sum(results[c]["ms"].values())
            cells += ["", ""] if ms is None else [f"{ms:.3f}", f"{100 * ms / total:.1f}"]
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    totals = [f"{sum(r['ms'].values()):.3f} | 100" for r in results.values()]
    walls = [f"{r['wall_ms']:.3f} | " for r in results.values()]
    lines.append("| **kernel time per step** | " + " | ".join(totals) + " |")
    lines.append("| step wall time | " + " | ".join(walls) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="paper", choices=("paper", "torchvision"))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=3, help="profiled steps (after 3 warm-up steps)")
    p.add_argument("--backends", default="custom,torch")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--out", help="append the markdown table to this file")
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        where = torch.cuda.get_device_name()
    else:
        where = f"CPU ({torch.get_num_threads()} threads, op self time)"
    results = {}
    for precision in args.precisions.split(","):
        for backend in args.backends.split(","):
            key = f"{backend} {precision}"
            results[key] = profile_config(args.variant, backend, precision, args.batch, args.steps, device)
            print(f"{key}: step {results[key]['wall_ms']:.2f} ms wall, "
                  f"{sum(results[key]['ms'].values()):.2f} ms of kernels", flush=True)
    title = (f"Where a training step's time goes: {args.variant} variant, batch {args.batch}, "
             f"{args.steps} profiled steps, on {where}, torch {torch.__version__}")
    table = markdown(results, title)
    print(table)
    if args.out:
        with open(args.out, "a") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
