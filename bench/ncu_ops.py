"""One launch of each hot kernel of the package at its benchmark shape, for Nsight Compute.

    ncu --clock-control none --kernel-name-base demangled --kernel-name regex:'alexnet_kernels|relu' \
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
        --section Occupancy --section LaunchStats -o ops python bench/ncu_ops.py
    python bench/ncu_ops.py --read ops.ncu-rep     # the report's table, on any machine (pip install ncu-report)

bench/gpu_check.sh runs the first on the GPU (its phase ncu). Inputs are made before the first
kernel of ours runs, so the profiled launches are only the package's; each op runs forward and
backward once. Without a GPU (or with --device cpu) the same ops run on the CPU at small sizes,
which only checks this script.
"""
import argparse
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import alexnet_kernels as ak  # noqa: E402

LRN_ARGS = (5, 1e-4, 0.75, 2.0)


def cases(device: str, small: bool):
    """(label, fn) pairs; fn runs one op forward and backward. The benchmark shapes are bench/'s."""
    n = 2 if small else 128
    out = []

    def fwd_bwd(label, make, op):
        x = make().requires_grad_()
        y = op(x)
        g = torch.randn_like(y)
        out.append((label, lambda: torch.autograd.grad(op(x), x, g)))

    for shape in ((n, 96, 55, 55), (n, 256, 27, 27)):
        tag = "x".join(map(str, shape))
        fwd_bwd(f"lrn {tag}", lambda s=shape: torch.randn(s, device=device), lambda x: ak.lrn(x, *LRN_ARGS))
        fwd_bwd(f"max_pool2d 3x3/2 {tag}", lambda s=shape: torch.randn(s, device=device),
                lambda x: ak.max_pool2d(x, 3, 2))
        if hasattr(ak, "lrn_max_pool2d"):
            fwd_bwd(f"lrn_max_pool2d {tag}", lambda s=shape: torch.randn(s, device=device),
                    lambda x: ak.lrn_max_pool2d(x, *LRN_ARGS, kernel_size=3, stride=2))
    fwd_bwd(f"relu_dropout {n}x290400", lambda: torch.randn(n, 290400 // (64 if small else 1), device=device),
            lambda x: ak.relu_dropout(x, 0.5))
    for dtype in (torch.float32, torch.bfloat16):
        for name, shape, k, pad in (("paper", (n, 3, 227, 227), 96, 0), ("torchvision", (n, 3, 224, 224), 64, 2)):
            x = torch.randn(shape, device=device, dtype=dtype)
            w = (torch.randn(k, 3, 11, 11, device=device, dtype=dtype) * 0.05).requires_grad_()
            b = torch.randn(k, device=device, dtype=dtype)
            y = ak.conv2d(x, w, b, 4, pad, relu=True)
            g = torch.randn_like(y)
            label = f"conv2d {name} {str(dtype).replace('torch.', '')}"
            out.append((label, lambda x=x, w=w, b=b, pad=pad, g=g: torch.autograd.grad(
                ak.conv2d(x, w, b, 4, pad, relu=True), w, g)))
    return out


def run(device: str, small: bool) -> None:
    todo = cases(device, small)
    if device == "cuda":
        torch.cuda.synchronize()
    for label, fn in todo:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        print(f"ran {label}", flush=True)


def read(path: str) -> None:
    """Per kernel: duration, DRAM and SM throughput (% of peak), achieved occupancy."""
    import ncu_report  # pip install ncu-report

    metrics = {"us": "gpu__time_duration.sum", "DRAM %": "gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed",
               "SM %": "sm__throughput.avg.pct_of_peak_sustained_elapsed",
               "occupancy %": "sm__warps_active.avg.pct_of_peak_sustained_active"}
    ctx = ncu_report.load_report(path)
    print("| kernel | " + " | ".join(metrics) + " |\n|---|" + "---|" * len(metrics))
    for r in range(ctx.num_ranges()):
        rng = ctx.range_by_idx(r)
        for a in range(rng.num_actions()):
            act = rng.action_by_idx(a)
            vals = []
            for m in metrics.values():
                metric = act.metric_by_name(m)
                v = None if metric is None else metric.as_double()
                vals.append("" if v is None else f"{v / 1e3:.1f}" if m.startswith("gpu__time") else f"{v:.1f}")
            name = act.name(ncu_report.IAction.NameBase_FUNCTION)
            print(f"| {name} | " + " | ".join(vals) + " |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--small", action="store_true", help="batch 2 (the default on the CPU)")
    p.add_argument("--read", metavar="REPORT", help="print the table of an .ncu-rep file instead")
    args = p.parse_args(argv)
    if args.read:
        read(args.read)
        return 0
    run(args.device, args.small or args.device == "cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
