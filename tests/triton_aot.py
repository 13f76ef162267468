"""Compiles the Triton kernels of alexnet_kernels/_relu_dropout_triton.py for sm_90 without a GPU (Triton
ships its own ptxas) and prints, as JSON, what each compiled kernel does with memory: the global
load and store instructions of its PTX and its shared memory. Run by tests/test_relu_dropout.py
in a subprocess, since the kernels must be decorated with the interpreter off.

    python tests/triton_aot.py

The signatures are the ones the launches specialize to on the GPU for AlexNet's tensors: every
pointer and the element count divisible by 16 (Triton's tt.divisibility), BLOCK 4096, 8 warps.
"""
import importlib
import json
import os
import re
import sys

os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

rd = importlib.import_module("alexnet_kernels._relu_dropout_triton")
cfg = importlib.import_module("alexnet_kernels._relu_dropout_config")


def kernels(ty: str):
    ptr = "*" + ty
    consts = {"BLOCK": cfg.BLOCK_GPU, "SOFT_BF16": False}
    yield rd._relu_dropout_fwd_kernel, dict(x_ptr=ptr, y_ptr=ptr, key="i64", base="i64", n_elements="i64",
                                            threshold="i64", scale="fp32", BLOCK="constexpr",
                                            SOFT_BF16="constexpr"), consts
    yield rd._relu_fwd_kernel, dict(x_ptr=ptr, y_ptr=ptr, n_elements="i64", BLOCK="constexpr"), \
        {"BLOCK": cfg.BLOCK_GPU}
    yield rd._relu_bwd_kernel, dict(g_ptr=ptr, y_ptr=ptr, dx_ptr=ptr, n_elements="i64", scale="fp32",
                                    BLOCK="constexpr", SOFT_BF16="constexpr"), consts


def main() -> None:
    report = []
    for ty in ("fp32", "fp16", "bf16"):
        for fn, sig, consts in kernels(ty):
            names = list(sig)
            attrs = {(names.index(a),): [["tt.divisibility", 16]]
                     for a, t in sig.items() if t.startswith("*") or a == "n_elements"}
            src = ASTSource(fn=fn, signature=sig, attrs=attrs,
                            constexprs={(names.index(k),): v for k, v in consts.items()})
            k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": cfg.WARPS_GPU})
            ptx = k.asm["ptx"]
            report.append(dict(kernel=fn.fn.__name__, dtype=ty, shared=k.metadata.shared,
                               loads=sorted(set(re.findall(r"ld\.global[.\w]*", ptx))),
                               stores=sorted(set(re.findall(r"st\.global[.\w]*", ptx)))))
    print(json.dumps(dict(triton=triton.__version__, kernels=report)))


if __name__ == "__main__":
    main()
