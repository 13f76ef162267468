"""Fused ReLU + dropout (and plain ReLU) as Triton kernels with autograd.

Public API
----------
``relu_dropout(x, p=0.5, training=True, *, generator=None)``
    Training: ``relu(x) * mask / (1 - p)``, ``mask`` ~ Bernoulli(1 - p) drawn independently per
    element.  ``training=False`` or ``p == 0``: exactly ``relu(x)`` (no random number is drawn).
``relu(x)``
    The same ReLU without dropout (its own forward/backward kernels).

Semantics
---------
* ``p`` must satisfy ``0 <= p < 1``, otherwise ``ValueError`` (``p = 1`` is rejected on purpose: it
  would drop everything and scale by ``1/(1-p) = inf``; use ``torch.zeros_like`` instead).
  ``x`` must be a floating-point tensor, otherwise ``TypeError``.
* Kept element: ``y = round_to_dtype(float32(x) * float32(1 / (1 - p)))`` -- one fp32 multiply by the
  fp32-rounded scale, then one round-to-nearest-even into x's dtype (float64 inputs: the same in
  float64).  For p = 0.5 the scale is 2, so kept values are exactly ``2 * x``.  Relative to
  ``x / (1 - p)`` computed in x's dtype this is at most 1 ulp of that dtype away.
* Dropped elements and ``x < 0`` give exactly 0 (a dropped NaN gives 0, unlike ``F.dropout``
  which multiplies; a kept NaN stays NaN, like ``torch.relu``).
* Backward: ``dx = round_to_dtype(float32(g) * float32(1/(1-p)))`` where ``y > 0`` (more precisely
  where ``not (y <= 0)``, like ``torch.relu``'s ``threshold_backward``), 0 elsewhere.
* Layout: the output is always a *contiguous* (row-major) tensor of x's shape, dtype and device.
  Non-contiguous inputs (transposed, sliced, channels_last) are first copied with ``.contiguous()``.
  The mask is a function of the element's row-major index, so the same values in any input layout
  give the same output.

What autograd saves (memory)
----------------------------
Only the output ``y`` -- the very tensor ``torch.relu`` itself saves, and the tensor the next layer
(Linear / conv / pool) keeps alive anyway, so in a network it costs no extra memory at all.  No
mask, no copy of ``x``, no seed tensor.  This is enough because, with ``s = 1/(1-p) >= 1``::

    y > 0  <=>  x > 0 and the element was kept

(``x > 0`` implies ``fl(x * s) >= x > 0`` because rounding is monotone and ``x`` is representable;
overflow gives ``+inf``, still ``> 0``).  So the backward kernel reads ``g`` and ``y`` and never
regenerates the Philox mask: regenerating it would add the Philox work to backward and would need
``x`` (N elements) or a 1-bit ``x > 0`` mask saved *in addition* to what the next layer keeps,
i.e. strictly more memory than this design.  (The issue text asked for backward to recompute the
mask from the seed; saving ``y`` makes that recomputation redundant, so we don't do it.)

Random numbers: seed and counter scheme
---------------------------------------
Each training call draws two int64s ``[key, counter_base]`` in ``[0, 2**62)`` with
``torch.randint(..., generator=generator)`` into a *CPU* tensor, and the op hands them to the
kernel as two scalar arguments: the forward is one kernel launch, with no seed kernel before it
and no host<->device copy (a seed tensor drawn on the GPU would cost a second launch, which at
fc-layer sizes is as long as the kernel itself).

* ``generator=None``: the CPU default generator.  ``torch.manual_seed(s)`` (which seeds the CPU
  and every CUDA generator) reproduces a run, and each call advances the generator so
  consecutive calls use different masks.  ``torch.cuda.manual_seed`` alone does not reseed it.
  This is also the path torch.compile traces (``torch.randint`` on the CPU becomes a graph op).
* an explicit ``torch.Generator``: drawn on the generator's device; a CUDA generator's draw is
  then copied to the CPU (a device sync: prefer a CPU generator).  Dynamo cannot put a Generator
  object in a graph, so under ``torch.compile(fullgraph=True)`` use ``generator=None`` (with a
  generator, non-fullgraph compile graph-breaks there).
* The seed is read on the host when the op runs, so a CUDA graph captured around the op would
  replay one mask forever: the op does not support CUDA graph capture (torch.compile's CUDA
  graphs skip graphs with CPU tensors, this one among them).

The kernel runs Philox-4x32-10 (``tl.randint4x``) with key = ``key`` (64 bits split into two 32-bit
words by Triton) and 64-bit counter ``counter_base + i`` for the i-th *group of 4 consecutive
elements*; the four 32-bit outputs decide the four elements of the group (element ``4i + j`` uses
output ``j``).  Triton 3.8's ``randint4x`` puts the counter's low 32 bits in Philox word c0 and its
high 32 bits in c1 (checked in ``triton/language/random.py``), so the counter is a full 64-bit
counter: counters never repeat within a call for any tensor size (``counter_base + i < 2**63``), in
particular not beyond 2**32 elements or groups.  Because ``counter_base`` is random (~2**61), the
high word is non-zero in practice, so every call exercises the 64-bit path, and the tests check it
bit-for-bit against a pure-PyTorch Philox (``_philox4x32_10``).  An element is kept iff its 32-bit
random value ``r`` satisfies ``r >= round(p * 2**32)``, i.e. with probability ``1 - p`` up to
``2**-33``.  The mask does not depend on the tile size.

Kernels, tiling and memory floor
--------------------------------
* forward (``_relu_dropout_fwd_kernel``): 1-D grid, one program per ``BLOCK`` contiguous elements
  (BLOCK = 4096 with 8 warps on GPU: 16 elements per thread = 4 Philox calls per thread; under the
  interpreter BLOCK = next_pow2(N) capped at 65536, to cut Python overhead).  One
  ``randint4x`` call per 4-element group, its four outputs interleaved back into element order with
  ``tl.join``/``tl.reshape``; compiled for sm_90 this gives 128-bit loads/stores for fp32, fp16 and
  bf16 and no shared memory.  Offsets are int64 (``program_id.to(int64) * BLOCK``), so tensors
  beyond 2**31 elements work.  Reads N elements (x), writes N (y): memory floor
  ``2 * N * itemsize`` bytes.  Philox-4x32-10 costs ~25 integer ops per element, so on an H100 the
  16-bit forward may be closer to ALU-bound than to the copy bandwidth.
* backward (``_relu_bwd_kernel``, shared by ReLU with scale 1): same 1-D tiling, reads g and y,
  writes dx: ``3 * N * itemsize`` bytes.
* forward + backward: ``5 * N * itemsize`` bytes (fwd: read x, write y; bwd: read g and y, write dx).
  ``relu`` uses ``_relu_fwd_kernel`` (read x, write y) and the same backward kernel.

torch.library integration
-------------------------
Ops (namespace ``alexnet_kernels``): ``relu_fwd(x)``, ``relu_bwd(grad, y)``,
``relu_dropout_fwd(x, seed, p)``, ``relu_dropout_bwd(grad, y, p)``, with ``register_autograd`` on all
four (the ``*_bwd`` ops are linear in ``grad``, so double backward works too).  They are
``torch.library.custom_op`` + ``register_fake``: torch.compile keeps each as one opaque node
(``fullgraph=True`` works) whose implementation launches the Triton kernel.  (``triton_op`` would
let Inductor see the kernel itself, but it traces the implementation with FakeTensors, where the
seed's values, read on the host, do not exist; under the Triton interpreter it cannot run at all.)

Devices / fallbacks: CUDA tensors always run the Triton kernels.  CPU tensors run the Triton kernels
under the interpreter; without it (no GPU, ``TRITON_INTERPRET`` unset, or CPU tensors on a GPU
machine) they run ``_relu_dropout_reference`` -- plain PyTorch with the *identical* Philox mask and
rounding.  float64 (and other non fp32/fp16/bf16 floating dtypes) also use that PyTorch path, on
any device, computing in float64 for float64.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Optional

import torch
import triton
import triton.language as tl

__all__ = ["relu_dropout", "relu"]

# ----------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------


def _interpreter_on() -> bool:
    try:
        return bool(triton.knobs.runtime.interpret)
    except AttributeError:  # older triton
        return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# Decided once, when the kernels below are decorated (that is when Triton picks the interpreter).
_INTERPRET = _interpreter_on()

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# GPU tiling: 4096 elements / program, 8 warps -> 16 elements per thread.
_BLOCK_GPU = 4096
_WARPS_GPU = 8
# The interpreter runs programs one after another in Python/numpy: big tiles make it fast.
# (The mask does not depend on BLOCK.)
_BLOCK_INTERPRET = 1 << 16

_SEED_HIGH = 2**62  # key and counter base are drawn from [0, 2**62)
_TWO32 = 2**32


def _block(n: int) -> int:
    if _INTERPRET:  # no compile cost per BLOCK value there; don't pad tiny tensors to 64K
        return max(16, min(_BLOCK_INTERPRET, triton.next_power_of_2(n)))
    return _BLOCK_GPU


def _threshold(p: float) -> int:
    """Drop iff the 32-bit random value r < threshold: P(keep) = 1 - threshold / 2**32."""
    return min(int(round(p * _TWO32)), _TWO32 - 1)


def _scale(p: float) -> float:
    return 1.0 / (1.0 - p)


# ----------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _to_out(v, out_dtype: tl.constexpr, SOFT_BF16: tl.constexpr):
    """fp32 -> out_dtype with round-to-nearest-even.

    The Triton *interpreter* truncates fp32 -> bf16 (the GPU rounds to nearest even), so under the
    interpreter (SOFT_BF16) bf16 rounding is done with integer ops; on the GPU the native
    conversion is used.  Both give the same bits.
    """
    if SOFT_BF16 and out_dtype == tl.bfloat16:
        bits = v.to(tl.uint32, bitcast=True)
        rounded = bits + 0x7FFF + ((bits >> 16) & 1)
        rounded = tl.where(v != v, bits | 0x400000, rounded)  # keep NaN a (quiet) NaN
        return (rounded >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return v.to(out_dtype)


# key, base: never specialized (a seed divisible by 16 would compile a second kernel); threshold
# never a constexpr, so `.to(uint32)` below works.
@triton.jit(do_not_specialize=["key", "base", "threshold"])
def _relu_dropout_fwd_kernel(
    x_ptr,
    y_ptr,
    key,  # Philox key
    base,  # counter of this call's first 4-element group
    n_elements,
    threshold,  # drop iff r < threshold, r uniform in [0, 2**32)
    scale,  # fp32 1 / (1 - p)
    BLOCK: tl.constexpr,
    SOFT_BF16: tl.constexpr,
):
    GROUPS: tl.constexpr = BLOCK // 4
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)  # int64: > 2**31 elements work
    inb = offs < n_elements
    x = tl.load(x_ptr + offs, mask=inb, other=0.0)

    grp = pid * GROUPS + tl.arange(0, GROUPS).to(tl.int64)  # global 4-element group index
    r0, r1, r2, r3 = tl.randint4x(key, base + grp)  # 64-bit counter: lo -> c0, hi -> c1
    # element 4*i + j takes output j of group i.  join appends a *last* axis, so
    # join(join(r0, r2), join(r1, r3))[i, a, b] = r_(2a+b)[i]; flattened row-major: r0 r1 r2 r3.
    r = tl.reshape(tl.join(tl.join(r0, r2), tl.join(r1, r3)), [BLOCK])
    drop = (r < threshold.to(tl.uint32)) | (x < 0)  # threshold < 2**32 arrives as i32 or i64
    y = tl.where(drop, 0.0, x.to(tl.float32) * scale)
    tl.store(y_ptr + offs, _to_out(y, y_ptr.dtype.element_ty, SOFT_BF16), mask=inb)


@triton.jit
def _relu_fwd_kernel(x_ptr, y_ptr, n_elements, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    inb = offs < n_elements
    x = tl.load(x_ptr + offs, mask=inb, other=0.0)
    # torch.relu semantics: negatives -> 0, NaN and -0.0 pass through unchanged.
    y = tl.where(x < 0, tl.zeros_like(x), x)
    tl.store(y_ptr + offs, y, mask=inb)


@triton.jit
def _relu_bwd_kernel(
    g_ptr,
    y_ptr,
    dx_ptr,
    n_elements,
    scale,  # fp32: 1/(1-p) for relu_dropout, 1.0 for relu
    BLOCK: tl.constexpr,
    SOFT_BF16: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    inb = offs < n_elements
    g = tl.load(g_ptr + offs, mask=inb, other=0.0)
    y = tl.load(y_ptr + offs, mask=inb, other=0.0)
    # like aten threshold_backward(g, y, 0): zero where y <= 0 (y is 0 for dropped and x < 0)
    dx = tl.where(y <= 0, 0.0, g.to(tl.float32) * scale)
    tl.store(dx_ptr + offs, _to_out(dx, dx_ptr.dtype.element_ty, SOFT_BF16), mask=inb)


# ----------------------------------------------------------------------------------------------
# Pure-PyTorch reference: the same Philox stream, mask and rounding (CPU path without the
# interpreter, float64, and the tests' oracle).
# ----------------------------------------------------------------------------------------------

_M32 = 0xFFFFFFFF
_PHILOX_KEY_A = 0x9E3779B9
_PHILOX_KEY_B = 0xBB67AE85
_PHILOX_ROUND_A = 0xD2511F53
_PHILOX_ROUND_B = 0xCD9E8D57


def _mul32_hi_lo(const: int, c: torch.Tensor):
    """(hi, lo) 32-bit words of const * c, for uint32 const and c held in int64 (no overflow)."""
    a_hi, a_lo = const >> 16, const & 0xFFFF
    lo_prod = c * a_lo  # < 2**48
    hi_prod = c * a_hi  # < 2**48
    hi = ((hi_prod + (lo_prod >> 16)) >> 16) & _M32
    lo = (((hi_prod & 0xFFFF) << 16) + lo_prod) & _M32
    return hi, lo


def _philox4x32_10(key: torch.Tensor, counter: torch.Tensor):
    """Philox-4x32-10 exactly as ``tl.randint4x(key, counter)`` with an int64 ``counter``.

    ``key``: int64 scalar tensor; ``counter``: int64 tensor (non-negative).  Returns four int64
    tensors holding uint32 values.
    """
    k0 = key & _M32
    k1 = (key >> 32) & _M32
    c0 = counter & _M32
    c1 = (counter >> 32) & _M32
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    for _ in range(10):
        hi_b, lo_b = _mul32_hi_lo(_PHILOX_ROUND_B, c2)
        hi_a, lo_a = _mul32_hi_lo(_PHILOX_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + _PHILOX_KEY_A) & _M32
        k1 = (k1 + _PHILOX_KEY_B) & _M32
    return c0, c1, c2, c3


def _keep_mask_reference(
    seed: torch.Tensor, n: int, p: float, device, start: int = 0
) -> torch.Tensor:
    """Boolean keep mask of row-major elements ``start .. start + n - 1`` (``start % 4 == 0``),
    identical to the kernel's."""
    assert start % 4 == 0
    seed = seed.to(device=device, dtype=torch.int64)
    groups = (n + 3) // 4
    counter = seed[1] + (start // 4) + torch.arange(groups, dtype=torch.int64, device=device)
    r = torch.stack(_philox4x32_10(seed[0], counter), dim=1).reshape(-1)[:n]
    return r >= _threshold(p)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _relu_dropout_reference(x: torch.Tensor, seed: torch.Tensor, p: float) -> torch.Tensor:
    x = x.contiguous()
    keep = _keep_mask_reference(seed, x.numel(), p, x.device).view(x.shape)
    cd = _compute_dtype(x.dtype)
    scaled = (x.to(cd) * torch.tensor(_scale(p), dtype=cd, device=x.device)).to(x.dtype)
    return torch.where(keep & ~(x < 0), scaled, torch.zeros((), dtype=x.dtype, device=x.device))


def _relu_bwd_reference(grad: torch.Tensor, y: torch.Tensor, scale: float) -> torch.Tensor:
    grad = grad.contiguous()
    cd = _compute_dtype(grad.dtype)
    scaled = (grad.to(cd) * torch.tensor(scale, dtype=cd, device=grad.device)).to(grad.dtype)
    zero = torch.zeros((), dtype=grad.dtype, device=grad.device)
    return torch.where(y.contiguous() <= 0, zero, scaled)


def _relu_reference(x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    return torch.where(x < 0, torch.zeros((), dtype=x.dtype, device=x.device), x)


# ----------------------------------------------------------------------------------------------
# launchers (the bodies of the ops)
# ----------------------------------------------------------------------------------------------


def _use_triton(t: torch.Tensor) -> bool:
    if t.dtype not in _KERNEL_DTYPES:
        return False
    if t.device.type == "cuda":
        return True
    return t.device.type == "cpu" and _INTERPRET


def _launch_kwargs() -> dict:
    return {} if _INTERPRET else {"num_warps": _WARPS_GPU}


def _on_device(t: torch.Tensor):
    """Triton launches on the current CUDA device and its current stream, not on the tensor's:
    make t's device current (a tower on a second GPU, issued from the first one's context)."""
    return torch.cuda.device(t.device) if t.is_cuda else nullcontext()


def _check_op_args(x: torch.Tensor, seed: torch.Tensor, p: float) -> None:
    # the public relu_dropout validates for users; this guards direct calls of the op
    if not (0.0 <= p < 1.0):
        raise ValueError(f"relu_dropout_fwd: p must be in [0, 1), got p={p}")
    if seed.dtype != torch.int64 or seed.numel() != 2 or seed.device.type != "cpu":
        raise ValueError(
            "relu_dropout_fwd: seed must be a CPU int64 tensor of 2 elements [key, counter base], "
            f"got dtype={seed.dtype}, numel={seed.numel()}, device={seed.device}"
        )


def _relu_dropout_fwd_impl(x: torch.Tensor, seed: torch.Tensor, p: float) -> torch.Tensor:
    _check_op_args(x, seed, p)
    if not _use_triton(x):
        return _relu_dropout_reference(x, seed, p)
    x = x.contiguous()
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    n = x.numel()
    if n == 0:
        return y
    block = _block(n)
    key, base = seed.tolist()  # a CPU tensor: no device sync
    with _on_device(x):
        _relu_dropout_fwd_kernel[(triton.cdiv(n, block),)](
            x,
            y,
            key,
            base,
            n,
            _threshold(p),
            _scale(p),
            BLOCK=block,
            SOFT_BF16=_INTERPRET,
            **_launch_kwargs(),
        )
    return y


def _relu_fwd_impl(x: torch.Tensor) -> torch.Tensor:
    if not _use_triton(x):
        return _relu_reference(x)
    x = x.contiguous()
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    n = x.numel()
    if n == 0:
        return y
    block = _block(n)
    with _on_device(x):
        _relu_fwd_kernel[(triton.cdiv(n, block),)](x, y, n, BLOCK=block, **_launch_kwargs())
    return y


def _bwd_impl(grad: torch.Tensor, y: torch.Tensor, scale: float) -> torch.Tensor:
    if not _use_triton(grad):
        return _relu_bwd_reference(grad, y, scale)
    grad = grad.contiguous()
    y = y.contiguous()
    dx = torch.empty_like(grad, memory_format=torch.contiguous_format)
    n = grad.numel()
    if n == 0:
        return dx
    block = _block(n)
    with _on_device(grad):
        _relu_bwd_kernel[(triton.cdiv(n, block),)](
            grad, y, dx, n, scale, BLOCK=block, SOFT_BF16=_INTERPRET, **_launch_kwargs()
        )
    return dx


def _relu_dropout_bwd_impl(grad: torch.Tensor, y: torch.Tensor, p: float) -> torch.Tensor:
    return _bwd_impl(grad, y, _scale(p))


def _relu_bwd_impl(grad: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _bwd_impl(grad, y, 1.0)


# ----------------------------------------------------------------------------------------------
# torch.library ops
# ----------------------------------------------------------------------------------------------

_NS = "alexnet_kernels"


def _define(name: str, impl):
    op = torch.library.custom_op(f"{_NS}::{name}", impl, mutates_args=())

    def fake(*args):  # every op returns a contiguous tensor like its first argument
        ref = args[0]
        return torch.empty(ref.shape, dtype=ref.dtype, device=ref.device)

    op.register_fake(fake)
    return op


relu_dropout_fwd = _define("relu_dropout_fwd", _relu_dropout_fwd_impl)
relu_dropout_bwd = _define("relu_dropout_bwd", _relu_dropout_bwd_impl)
relu_fwd = _define("relu_fwd", _relu_fwd_impl)
relu_bwd = _define("relu_bwd", _relu_bwd_impl)


def _save_output(ctx, inputs, output):
    ctx.save_for_backward(output)
    ctx.p = inputs[2] if len(inputs) > 2 else None


def _relu_dropout_fwd_backward(ctx, grad):
    (y,) = ctx.saved_tensors
    return relu_dropout_bwd(grad, y, ctx.p), None, None


def _relu_fwd_backward(ctx, grad):
    (y,) = ctx.saved_tensors
    return relu_bwd(grad, y)


def _save_y_and_p(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])
    ctx.p = inputs[2] if len(inputs) > 2 else None


def _relu_dropout_bwd_backward(ctx, gg):
    # relu_dropout_bwd is linear in grad; its derivative w.r.t. y is 0 almost everywhere.
    (y,) = ctx.saved_tensors
    return relu_dropout_bwd(gg, y, ctx.p), None, None


def _relu_bwd_backward(ctx, gg):
    (y,) = ctx.saved_tensors
    return relu_bwd(gg, y), None


relu_dropout_fwd.register_autograd(_relu_dropout_fwd_backward, setup_context=_save_output)
relu_fwd.register_autograd(_relu_fwd_backward, setup_context=_save_output)
relu_dropout_bwd.register_autograd(_relu_dropout_bwd_backward, setup_context=_save_y_and_p)
relu_bwd.register_autograd(_relu_bwd_backward, setup_context=_save_y_and_p)


# ----------------------------------------------------------------------------------------------
# public functions
# ----------------------------------------------------------------------------------------------


def _check_x(x, fn: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{fn}: x must be a floating-point tensor (float32, float16 or bfloat16), "
            f"got x.dtype={x.dtype}"
        )


def _check_p(p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise ValueError(f"relu_dropout: p must be a float in [0, 1), got p={p!r}")
    p = float(p)
    if p == 1.0:
        raise ValueError(
            "relu_dropout: p=1 is not supported: it would drop every element and scale by "
            "1/(1-p)=inf; p must be in [0, 1) (use torch.zeros_like for an all-zero output)"
        )
    if not (0.0 <= p < 1.0):  # also rejects NaN
        raise ValueError(f"relu_dropout: p must be in [0, 1), got p={p}")
    return p


def _draw_seed(generator: Optional[torch.Generator]) -> torch.Tensor:
    """int64[2] = [Philox key, counter base] on the CPU, from ``generator`` (a CUDA generator's
    draw is copied over: one sync) or the CPU default generator."""
    if generator is None:
        return torch.randint(0, _SEED_HIGH, (2,), dtype=torch.int64)
    seed = torch.randint(
        0, _SEED_HIGH, (2,), dtype=torch.int64, device=generator.device, generator=generator
    )
    return seed.cpu()


def relu(x: torch.Tensor) -> torch.Tensor:
    """ReLU as a Triton kernel (forward and backward); output is contiguous, autograd saves only
    the output."""
    _check_x(x, "relu")
    return relu_fwd(x)


def relu_dropout(
    x: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """``dropout(relu(x), p, training)`` fused into one kernel; see the module docstring."""
    _check_x(x, "relu_dropout")
    p = _check_p(p)
    if not training or p == 0.0 or x.numel() == 0:
        return relu_fwd(x)
    seed = _draw_seed(generator)
    return relu_dropout_fwd(x, seed, p)
