"""One training step, and how many images per second a network trains at: the measurement of
``train/run.py --compare-cpu`` and of bench/bench_train.py."""
import time

import torch
import torch.nn.functional as F

from .precision import autocast, grad_scaler, set_float32_arithmetic


def train_step(model, images, labels, optimizer, scaler, precision: str, clip_grad: float | None = None
               ) -> torch.Tensor:
    """Forward, cross-entropy loss, backward and optimizer step; returns the loss (not synced).
    ``labels`` must be on the device of the model's output. With ``clip_grad``, the gradient's
    total norm (over all parameters, on every device) is clipped to it before the step."""
    with autocast(precision, images.device.type):
        loss = F.cross_entropy(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip_grad:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


FUSED_SGD_DEVICES = ("cpu", "cuda")  # where torch has a fused SGD kernel


def sgd(params, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4) -> torch.optim.SGD:
    """The paper's optimizer: SGD with momentum 0.9 and weight decay 5e-4, fused where every
    parameter is on a device with torch's fused kernel. Unfused, the weight decay allocates
    grad + decay * param for each parameter every step (151 MB for fc6 of torchvision's net),
    then reads it again for the momentum; fused, decay, momentum and update are one pass, in place."""
    params = list(params)
    fused = bool(params) and all(p.device.type in FUSED_SGD_DEVICES for p in params)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused or None)


def fixed_batch_step(model, batch_size: int, image_size: int, num_classes: int, device,
                     precision: str = "fp32", channels_last: bool = False):
    """A closure running one full training step of ``model`` (already on ``device``; for the
    paper variant on two devices, ``device`` is the first) on one random batch, with SGD as in
    the paper. Sets the process's float32 arithmetic for ``precision`` (precision.py)."""
    device = torch.device(device)
    set_float32_arithmetic(precision)
    images = torch.randn(batch_size, 3, image_size, image_size, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, num_classes, (batch_size,), device=device)
    optimizer, scaler = sgd(model.parameters()), grad_scaler(precision, device.type)
    return lambda: train_step(model, images, labels, optimizer, scaler, precision)


def synchronize() -> None:
    """Waits for every visible CUDA device (a no-op without CUDA)."""
    for index in range(torch.cuda.device_count()):
        torch.cuda.synchronize(index)


def images_per_second(step, batch_size: int, steps: int, warmup: int = 3) -> float:
    """Runs ``step`` warmup times, then times ``steps`` calls (wall clock, all devices synced
    before and after): batch_size * steps / seconds."""
    for _ in range(warmup):
        step()
    synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    return batch_size * steps / (time.perf_counter() - start)


def network(variant: str, backend: str, device, num_classes: int = 1000, compile: bool = False):
    """A fresh network as train/run.py builds it for one device: with ``compile``, compiled in
    place, the paper variant's towers on the current stream (a stream switch breaks the graph)."""
    from alexnet_kernels.models import alexnet

    model = alexnet(variant, num_classes, backend, devices=(device,), **({"streams": False} if compile and
                                                                          variant == "paper" else {}))
    if compile:
        model.compile()
    return model


def gpu_vs_cpu(variant: str = "paper", batch: int = 128, image_size: int = 227, gpu="cuda", gpu_steps: int = 20,
               cpu_steps: int = 20, warmup: int = 3, compile: bool = False, seed: int = 0, announce=None) -> dict:
    """Training images/s of one network, fp32, 1000 classes: on ``gpu`` with this package's
    kernels (backend custom) and on the CPU, every thread, with torch's ops (its fastest path).
    Returns {"GPU": img/s, "CPU": img/s}. ``announce(side, backend, device, steps)`` is called
    before each side is timed. (``gpu`` may be the CPU, for a smoke run of the measurement.)"""
    rates = {}
    for side, backend, device, steps in (("GPU", "custom", torch.device(gpu), gpu_steps),
                                         ("CPU", "torch", torch.device("cpu"), cpu_steps)):
        torch.manual_seed(seed)
        step = fixed_batch_step(network(variant, backend, device, compile=compile), batch, image_size, 1000, device,
                                "fp32")
        if announce:
            announce(side, backend, device, steps)
        rates[side] = images_per_second(step, batch, steps, warmup)
        del step
    return rates
