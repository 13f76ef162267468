"""Train AlexNet with alexnet_kernels' kernels, as the paper did.

    python train/run.py                        # the generated default set, no download
    python train/run.py --data /imagenet       # DIR/train/<class>/*, DIR/val/<class>/*: the paper's recipe
    python train/run.py --devices cuda:0 cuda:1          # the paper's two towers on two GPUs
    torchrun --nproc-per-node=8 train/run.py --data ...  # data parallel, one GPU per process
    python train/run.py --resume runs/<run>/checkpoint.pt   # continues the run exactly
    python train/run.py --remove conv3,conv4   # an ablation: the net without those layers
    python train/run.py --finetune runs/<run>/checkpoint.pt --data DIR --freeze-below fc6
    python train/run.py --compare-cpu          # images/s on the GPU (our kernels) vs the CPU

Every flag is described by --help (config.py); docs/training.md says why the recipes are what
they are. This file is the run itself: config.py resolves the arguments, engine.py trains and
evaluates, report.py writes what the run reports, checkpoint.py saves and restores it.
"""
import os
import sys

if __package__ in (None, ""):  # run as `python train/run.py`: import train.* from the repository
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from train import config  # no torch yet: --help and argument errors are answered first
from train.cli import UsageError, one_line


def main(argv=None, own_process: bool = False) -> int:
    """train/run.py with ``argv`` (default: the command line). ``own_process``: the process is
    this run's alone, so on the CPU glibc's malloc may keep freed memory for it (train/malloc.py);
    a caller sharing its process (a test, a notebook) keeps its malloc as it is."""
    args = config.parse_args(argv)
    if own_process and (args.compare_cpu or args.devices[0].type == "cpu"):
        from train.malloc import keep_freed_memory

        keep_freed_memory()  # every step's large buffers stay mapped
    if args.compare_cpu:
        return compare_cpu(args)
    import torch.distributed as dist

    if args.distributed:  # one process group: nccl on GPUs, gloo on the CPU
        if args.devices[0].type == "cuda":
            import torch

            torch.cuda.set_device(args.devices[0])
        dist.init_process_group("nccl" if args.devices[0].type == "cuda" else "gloo")
    try:
        return train(args)
    except UsageError as e:  # bad data, a checkpoint that does not fit
        print(f"{config.PROG}: error: {one_line(e)}", file=sys.stderr)
        return 2
    finally:
        if args.distributed:
            dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(args) -> int:
    """The training run; returns the exit status."""
    from train import checkpoint, data, engine, report
    from train.precision import set_float32_arithmetic

    seed_everything(args.seed + args.rank)
    set_float32_arithmetic(args.precision)
    train_set, val_set, classes = data.build_datasets(args)
    args.num_classes = len(classes)
    train_loader, val_loader = data.build_loaders(args, train_set, val_set)
    report.log(args, report.describe(args, classes))
    for warning in args.warnings:
        report.log(args, f"warning: {warning}", problem=True)
    trainer = engine.make_trainer(args)
    ckpt = os.path.join(args.out, "checkpoint.pt")
    if args.resume:
        checkpoint.restore_trainer(trainer, args.resume)
        p = trainer.position
        if p.epoch >= args.epochs:
            report.log(args, f"the run has done its {report.plural(p.epoch, 'epoch')}: give --epochs N (more) to "
                             f"train on", problem=True)
            return 0
        report.log(args, f"resumed from {args.resume}: epoch {p.epoch + 1}, {p.epoch_step} of its steps done, "
                         f"step {p.step}")
    runlog = report.RunLog(args.out, args.rank == 0, args.num_classes)
    if args.resume:
        runlog.resume(os.path.dirname(os.path.abspath(args.resume)), trainer.position.step, trainer.position.epoch)

    def save(when: str):
        """The checkpoint, if --save says so now ("epoch", "end" or "stop"); its path or None."""
        if args.save == "none" or (args.save == "end" and when == "epoch"):
            return None
        checkpoint.save_trainer(trainer, ckpt, config.run_config(args))
        return ckpt

    stop = engine.StopRequest()
    status = 0
    try:
        with stop.installed():
            while trainer.position.epoch < args.epochs:
                if not engine.train_epoch(trainer, train_loader, runlog, stop):
                    saved = save("stop")
                    where = f"saved {saved}; continue with --resume {saved}" if saved else \
                        "no checkpoint (--save none): the run cannot be resumed"
                    report.log(args, f"stopped by Ctrl-C at step {trainer.position.step}: {where}", problem=True)
                    status = 130
                    break
                row = engine.finish_epoch(trainer, val_loader)
                runlog.epoch(row)
                trainer.position.next_epoch()
                last = trainer.position.epoch == args.epochs
                report.log(args, report.epoch_line(row, args, save("end" if last else "epoch")))
    except engine.NonFiniteLoss as e:
        last = f"the last good checkpoint is {ckpt}" if os.path.exists(ckpt) else "no checkpoint was saved yet"
        report.log(args, f"{config.PROG}: stopping: {e}; {last} (try a lower --lr)", problem=True)
        status = 3
    finally:
        runlog.close()
    if args.rank == 0 and os.path.exists(os.path.join(args.out, "metrics.csv")):
        report.log(args, f"curves: {report.plot_curves(args.out, args.num_classes)}")
    return status


def compare_cpu(args) -> int:
    """--compare-cpu: training images/s of the same network and batch, fp32, on the GPU with our
    kernels and on the CPU with torch's ops (train.measure.gpu_vs_cpu), then the ratio."""
    import torch

    from train.measure import gpu_vs_cpu

    if not torch.cuda.is_available():
        print(f"{config.PROG}: --compare-cpu: there is no CUDA GPU on this machine, so nothing to compare the CPU "
              f"with (the CPU alone: pytest bench/bench_train.py --benchmark)", file=sys.stderr)
        return 2
    gpu = args.devices[0] if args.devices[0].type == "cuda" else torch.device("cuda:0")

    def announce(side, backend, device, steps):
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
        compiled = " (torch.compile)" if args.compile else ""
        print(f"{side} ({label}), backend {backend}{compiled}: {steps} steps of {args.batch_size} ...", flush=True)

    rates = gpu_vs_cpu(args.variant, args.batch_size, args.image_size, gpu, args.compare_steps, args.compare_steps,
                       compile=args.compile, seed=args.seed, announce=announce)
    print(f"AlexNet {args.variant} at {args.image_size}x{args.image_size}, batch {args.batch_size}, fp32, training: "
          f"GPU {rates['GPU']:.0f} img/s, CPU {rates['CPU']:.1f} img/s: the GPU is "
          f"{rates['GPU'] / rates['CPU']:.0f}x faster (the paper: about {config.PAPER_SPEEDUP}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main(own_process=True))
