"""Building an emulated-kernel extension (tests/cuda_emu/<name>.cpp) with torch's JIT loader, and
reaching the emulator inside it (runtime())."""
import hashlib
import os
import shutil

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# -fno-strict-aliasing: the kernels reinterpret bytes (vector loads, packed halves) as CUDA does.
CFLAGS = ["-O2", "-std=c++20", "-pthread", "-fno-strict-aliasing"]

# The emulator's own sources, linked into every harness.
RUNTIME = os.path.join(HERE, "emu_runtime.cpp")
HEADERS = ["cuda_emu.h", "emu_core.h", "emu_memory.h", "emu_warp.h"]


def _headers_digest() -> str:
    # torch's loader versions a module by its listed sources only; the headers' digest in the flags
    # makes an edit of the emulator rebuild (and re-version) every harness.
    h = hashlib.sha1()
    for name in HEADERS + [os.path.join("..", "..", "csrc", "mem.h")]:
        with open(os.path.join(HERE, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:12]


def load(name: str, extra_cflags=()):
    """Compile and import tests/cuda_emu/<name>.cpp with the emulator's runtime (cached by torch
    until a source changes); skips the calling test where the machine cannot build it."""
    from torch.utils.cpp_extension import is_ninja_available
    from torch.utils.cpp_extension import load as jit_load

    if shutil.which(os.environ.get("CXX", "c++")) is None or not is_ninja_available():
        pytest.skip("building the CUDA emulator needs a C++ compiler and ninja")
    # In this checkout's build/ (ignored by git), not torch's per-user cache: two checkouts must
    # not rebuild over each other's objects.
    build_dir = os.path.join(ROOT, "build", "cuda_emu", name)
    os.makedirs(build_dir, exist_ok=True)
    return jit_load(
        f"alexnet_kernels_{name}",
        [os.path.join(HERE, f"{name}.cpp"), RUNTIME],
        build_directory=build_dir,
        extra_cflags=CFLAGS + [f"-DAK_EMU_DIGEST={_headers_digest()}", *extra_cflags],
        extra_include_paths=[HERE, os.path.join(ROOT, "csrc")],
        extra_ldflags=["-pthread"],
    )


def runtime(module):
    """The emulator inside a module that load() built: sanitizer switches, launch counts."""
    from .runtime import Emulator

    return Emulator(module)
