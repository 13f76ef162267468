"""relu_dropout's Triton kernels (the GPU path; on the CPU they run under TRITON_INTERPRET=1, which
the tests use as the oracle of the C++ kernels). Imported on first use: importing this module
imports triton and decorates the kernels, which is when Triton decides on the interpreter.

Each kernel: a 1-D grid, one program per BLOCK contiguous elements, int64 offsets (tensors past
2**31 elements work), no shared memory; compiled for sm_90 the loads and stores are 128 bits wide
for fp32, fp16 and bf16 (tests/triton_aot.py checks that). The element rules and the Philox
stream are those of csrc/relu_dropout.h, bit for bit; docs/relu_dropout.md gives the reasoning.
"""
import os

import triton
import triton.language as tl


def _interpreter_on() -> bool:
    try:
        return bool(triton.knobs.runtime.interpret)
    except AttributeError:  # older triton
        return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# Decided once, when the kernels below are decorated (that is when Triton picks the interpreter).
INTERPRET = _interpreter_on()


@triton.jit
def _to_out(v, out_dtype: tl.constexpr, SOFT_BF16: tl.constexpr):
    """fp32 -> out_dtype, rounding to nearest even. The interpreter truncates fp32 -> bf16, so
    there (SOFT_BF16) bf16 is rounded with integer ops; both give the GPU's bits."""
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
    offs = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
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
