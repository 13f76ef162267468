"""AlexNet's conv1 (11x11, stride 4): alexnet_kernels.conv2d beside torch's convolution.

    pytest bench/bench_conv.py --benchmark   # GPU: batch 128, both conv1 shapes, beside cuDNN
                                             # CPU: batch 32 (cpu_batch), beside oneDNN
    pytest bench/bench_conv.py               # smoke: small shapes

GPU rows (test_conv1): forward (fwd), weight + bias gradient (wgrad: conv1's input never needs a
gradient) and the two together (fwd+wgrad), in fp32 (TF32 off: IEEE fp32 on the FP32 pipes, for
cuDNN too) and bf16. cuDNN is timed in NCHW and channels_last and the faster is the reference
("cudnn ms", with its layout); ours runs in NCHW. FLOPs: 2 * N * K * OH * OW * C * R * S per
pass. "% of peak" is over an 8192^3 cuBLAS matmul of the same dtype measured in the same run
(timing.py). Floors at batch 128: 27.0 GFLOP (paper) and 18.0 GFLOP (torchvision) per pass; in
fp32 compute-bound, in bf16 bound by the ~88 MB of x and y (docs/conv.md). A call slower than
SLOW_MS (a reference kernel, were a shape to fall back to one) is timed once.

CPU rows (test_conv1_cpu): fp32 with the fused ReLU, forward and forward + weight and bias
gradient, ours (im2col GEMMs) beside torch's (oneDNN) relu(conv2d) and its backward, NCHW, at
the conv1 shapes and at 64x64 at batch cpu_batch, and at the default training run's CPU shape
(64x64, batch 128); the two
interleaved in one process, best of REPS after a warm-up, threads stated.
"""
import time

import pytest
import torch
import torch.nn.functional as F
from timing import matmul_peak_tflops, median_ms

import alexnet_kernels as ak

# (name, input shape, out channels, kernel, stride, padding)
FULL = [("paper", (128, 3, 227, 227), 96, 11, 4, 0), ("torchvision", (128, 3, 224, 224), 64, 11, 4, 2)]
SMOKE = [("paper-smoke", (2, 3, 35, 35), 8, 11, 4, 0), ("torchvision-smoke", (2, 3, 32, 32), 8, 11, 4, 2)]
SLOW_MS = 100.0  # a call slower than this is timed once (the reference kernels)
# CPU: (name, batch (None: cpu_batch), image size, out channels, padding), kernel 11, stride 4.
CPU_FULL = [("paper", None, 227, 96, 0), ("torchvision", None, 224, 64, 2), ("64x64", None, 64, 64, 2),
            ("default run (64x64)", 128, 64, 64, 2)]
CPU_SMOKE = [("paper-smoke", 2, 35, 8, 0), ("torchvision-smoke", 2, 32, 8, 2)]
REPS = 5


def cudnn_fwd(x, w, b, s, p):
    return F.conv2d(x, w, b, s, p)


def cudnn_wgrad(g, x, w, s, p):
    return torch.ops.aten.convolution_backward(g, x, w, [w.shape[0]], [s, s], [p, p], [1, 1], False, [0, 0], 1,
                                               [False, True, True])


def ours_fwd(x, w, b, s, p):
    return ak.conv2d(x, w, b, s, p)


def ours_wgrad(g, x, w, s, p):
    return torch.ops.alexnet_kernels.conv2d_backward(g, x, w, None, [s, s], [p, p], False, [False, True, True])


def run_pass(kind, which, x, w, b, g, s, p):
    fwd, wgrad = (ours_fwd, ours_wgrad) if which == "ours" else (cudnn_fwd, cudnn_wgrad)
    with torch.no_grad():
        if kind == "fwd":
            return fwd(x, w, b, s, p)
        if kind == "wgrad":
            return wgrad(g, x, w, s, p)
        return fwd(x, w, b, s, p), wgrad(g, x, w, s, p)


def timed(fn, full):
    if not full:
        return median_ms(fn, warmup=1, iters=3)
    first = median_ms(fn, warmup=0, iters=1)
    return first if first > SLOW_MS else median_ms(fn)


@pytest.mark.parametrize("kind", ["fwd", "wgrad", "fwd+wgrad"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape_i", [0, 1])
def test_conv1(full, device, report, shape_i, dtype, kind):
    if device != "cuda":
        pytest.skip("the GPU rows need a GPU (test_conv1_cpu is the CPU table)")
    name, shape, k, ks, s, p = (FULL if full else SMOKE)[shape_i]
    saved = torch.backends.cudnn.conv.fp32_precision
    torch.backends.cudnn.conv.fp32_precision = "ieee"  # fp32 means fp32 for cuDNN too
    try:
        gen = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(shape, device=device, dtype=dtype, generator=gen)
        w = torch.randn(k, shape[1], ks, ks, device=device, dtype=dtype, generator=gen) * 0.05
        b = torch.randn(k, device=device, dtype=dtype, generator=gen)
        y = cudnn_fwd(x, w, b, s, p)
        g = torch.randn(y.shape, device=device, dtype=dtype, generator=gen)
        # Correctness of what is timed (the tests hold the tight tolerances).
        tol = {"rtol": 2e-2, "atol": 2e-2} if dtype != torch.float32 else {"rtol": 1e-3, "atol": 1e-3}
        if kind != "wgrad":
            torch.testing.assert_close(ours_fwd(x, w, b, s, p), y, **tol)
        flops = 2 * y.numel() * shape[1] * ks * ks * (2 if kind == "fwd+wgrad" else 1)
        t_ours = timed(lambda: run_pass(kind, "ours", x, w, b, g, s, p), full)
        cudnn = {}
        for layout, fmt in (("NCHW", torch.contiguous_format), ("NHWC", torch.channels_last)):
            xl, gl = x.contiguous(memory_format=fmt), g.contiguous(memory_format=fmt)
            wl = w.contiguous(memory_format=fmt)
            cudnn[layout] = timed(lambda xl=xl, wl=wl, gl=gl: run_pass(kind, "cudnn", xl, wl, b, gl, s, p), full)
        best = min(cudnn, key=cudnn.get)
        row = {"shape": name, "batch": shape[0], "dtype": str(dtype).replace("torch.", ""), "pass": kind,
               "ours ms": t_ours, "cudnn ms": cudnn[best], "cudnn layout": best, "speedup": cudnn[best] / t_ours,
               "ours TFLOP/s": flops / (t_ours * 1e-3) / 1e12}
        if full:
            row["% of peak"] = 100 * row["ours TFLOP/s"] / matmul_peak_tflops(dtype)
            row["cudnn TFLOP/s"] = flops / (cudnn[best] * 1e-3) / 1e12
        report("conv1 11x11/4", row)
    finally:
        torch.backends.cudnn.conv.fp32_precision = saved


def interleaved_best_ms(fns, reps):
    """Best wall time of each fn in ms, the fns called in turn (ours, torch, ours, ...) after one
    warm-up call each, so that both see the same load on a shared machine."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], (time.perf_counter() - t0) * 1e3)
    return best


@pytest.mark.parametrize("kind", ["fwd", "fwd+wgrad"])
@pytest.mark.parametrize("shape_i", range(len(CPU_FULL)))
def test_conv1_cpu(full, device, cpu_batch, report, shape_i, kind):
    if device != "cpu":
        pytest.skip("the CPU table is measured on a machine without a GPU")
    cases = CPU_FULL if full else CPU_SMOKE
    if shape_i >= len(cases):
        pytest.skip("smoke run: two shapes")
    name, batch, size, k, p = cases[shape_i]
    batch = batch or cpu_batch
    s = 4
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen)
    w = torch.randn(k, 3, 11, 11, generator=gen) * 0.05
    b = torch.randn(k, generator=gen)
    y = torch.relu(F.conv2d(x, w, b, s, p))
    g = torch.randn(y.shape, generator=gen)

    def ours():
        yo = ak.conv2d(x, w, b, s, p, relu=True)
        if kind == "fwd+wgrad":
            return yo, torch.ops.alexnet_kernels.conv2d_backward(g, x, w, yo, [s, s], [p, p], True, [False, True, True])
        return yo

    def theirs():
        yt = torch.relu(F.conv2d(x, w, b, s, p))
        if kind == "fwd+wgrad":
            gt = torch.ops.aten.threshold_backward(g, yt, 0)
            return yt, torch.ops.aten.convolution_backward(gt, x, w, [k], [s, s], [p, p], [1, 1], False, [0, 0], 1,
                                                           [False, True, True])
        return yt

    with torch.no_grad():
        # Correctness of what is timed (the tests hold the tight tolerances).
        torch.testing.assert_close(ak.conv2d(x, w, b, s, p, relu=True), y, rtol=1e-4, atol=1e-4)
        t_ours, t_torch = interleaved_best_ms([ours, theirs], REPS if full else 1)
    flops = 2 * y.numel() * 3 * 11 * 11 * (2 if kind == "fwd+wgrad" else 1)
    report("conv1 11x11/4 on the CPU, fp32, ReLU fused", {
        "shape": name, "batch": batch, "threads": torch.get_num_threads(), "pass": kind,
        "ours ms": t_ours, "torch ms": t_torch, "torch / ours": t_torch / t_ours,
        "ours GFLOP/s": flops / (t_ours * 1e-3) / 1e9})
