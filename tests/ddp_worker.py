"""torchrun worker for tests/test_models.py: DDP gradients equal one process over the whole batch.

    torchrun --standalone --nproc-per-node=2 tests/ddp_worker.py REPORT.json

Every rank builds the same models (same seed) with dropout 0, so the forward is deterministic,
wraps each in DistributedDataParallel (gloo, device_ids=None: CPU modules, and for the paper
variant with devices=("cpu", "cpu") a module split over two devices, as a two-GPU pair would be)
and takes one step on its own images, one per rank. Rank 0 also runs an unwrapped copy over all
ranks' images and writes, per case, the largest relative norm error of a parameter's gradient.
"""
import copy
import json
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F
from helpers import rel_err  # tests/ is the script's directory, so it is on sys.path
from torch.nn.parallel import DistributedDataParallel

from alexnet_kernels.models import alexnet

# (variant, backend, devices, image size)
CASES = [
    ("torchvision", "torch", None, 63),
    ("paper", "custom", ("cpu", "cpu"), 227),
]
CLASSES = 10


def main(report_path: str) -> None:
    dist.init_process_group("gloo", timeout=timedelta(seconds=120))
    rank, world = dist.get_rank(), dist.get_world_size()
    report = {}
    for variant, backend, devices, size in CASES:
        torch.manual_seed(0)
        model = alexnet(variant, num_classes=CLASSES, backend=backend, devices=devices, dropout=0.0)
        reference = copy.deepcopy(model) if rank == 0 else None
        ddp = DistributedDataParallel(model)
        g = torch.Generator().manual_seed(1)  # the same batch on every rank
        x = torch.randn(world, 3, size, size, generator=g)
        y = torch.randint(0, CLASSES, (world,), generator=g)
        F.cross_entropy(ddp(x[rank:rank + 1]), y[rank:rank + 1]).backward()
        if rank == 0:
            F.cross_entropy(reference(x), y).backward()
            errs = [rel_err(p.grad, q.grad) for p, q in zip(model.parameters(), reference.parameters())]
            report[f"{variant}-{backend}-{devices}"] = max(errs)
        del ddp, model, reference
    if rank == 0:
        with open(report_path, "w") as f:
            json.dump(report, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
