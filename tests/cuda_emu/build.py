"""Building an emulated-kernel extension (tests/cuda_emu/<name>.cpp) with torch's JIT loader."""
import os
import shutil

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# -fno-strict-aliasing: the kernels reinterpret bytes (vector loads, packed halves) as CUDA does.
CFLAGS = ["-O2", "-std=c++20", "-pthread", "-fno-strict-aliasing"]


def load(name: str):
    """Compile and import tests/cuda_emu/<name>.cpp (cached by torch until a source changes);
    skips the calling test where the machine cannot build it."""
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
        [os.path.join(HERE, f"{name}.cpp")],
        build_directory=build_dir,
        extra_cflags=CFLAGS,
        extra_include_paths=[HERE, os.path.join(ROOT, "csrc")],
        extra_ldflags=["-pthread"],
    )
