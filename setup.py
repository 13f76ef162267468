"""Build of alexnet_kernels._C: the C++ op registry, the CPU kernels and (where nvcc and a CUDA
build of torch are present) the CUDA kernels.

Knobs (environment variables), all optional:
  CUDA_HOME              CUDA toolkit root. If unset, /usr/local/cuda is preferred over the
                         directory of the first `nvcc` on PATH (which may be a wrapper script).
  TORCH_CUDA_ARCH_LIST   GPU architectures, e.g. "9.0" or "8.0;9.0". Default: the visible GPUs'
                         when there are any, else "8.0;9.0" (A100 and H100). Each extra
                         architecture adds to nvcc's time.
  MAX_JOBS               parallel compile jobs (ninja).
  ALEXNET_KERNELS_CPU_ONLY=1  skip the CUDA sources even when they could be built.
"""
import glob
import os
import shutil
import subprocess
import sys


def _pick_cuda_home():
    """torch guesses CUDA_HOME from `which nvcc`; where nvcc is a wrapper in /usr/local/bin that
    gives /usr/local and linking fails (-lcudart not found). Prefer a real toolkit root."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    candidates = ["/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates += sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for root in candidates:
        if os.path.exists(os.path.join(root, "bin", "nvcc")) and glob.glob(
            os.path.join(root, "lib*", "libcudart*")
        ) + glob.glob(os.path.join(root, "targets", "*", "lib", "libcudart*")):
            os.environ["CUDA_HOME"] = root
            return


_pick_cuda_home()

import torch  # noqa: E402  (CUDA_HOME must be settled before cpp_extension reads it)
from setuptools import setup  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def _cuda_build_reason():
    """None if the CUDA sources can be built, else why not."""
    if os.environ.get("ALEXNET_KERNELS_CPU_ONLY", "0") not in ("", "0"):
        return "ALEXNET_KERNELS_CPU_ONLY is set"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if cpp_extension.CUDA_HOME is None or not os.path.exists(
        os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc")
    ):
        return "no CUDA toolkit (nvcc) found; set CUDA_HOME"
    return None


def _arch_list():
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if not archs:
        if torch.cuda.is_available():
            caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
            archs = ";".join(f"{a}.{b}" for a, b in sorted(caps))
        else:
            # torch's own detection crashes with no GPU visible; name the targets instead.
            archs = "8.0;9.0"
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    return archs


def _nvcc_version():
    try:
        out = subprocess.run(
            [os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc"), "--version"],
            capture_output=True, text=True, check=True,
        ).stdout
        return out.strip().splitlines()[-1]
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"


def _write_build_config(with_cuda, reason, archs):
    """Recorded so that import can refuse an extension built against another torch (which would
    otherwise fail with undefined symbols or worse) and build_info() can report the build."""
    path = os.path.join(HERE, "alexnet_kernels", "_build_config.py")
    with open(path, "w") as f:
        f.write("# Written by setup.py at build time. Do not edit.\n")
        f.write(f"TORCH_VERSION = {torch.__version__!r}\n")
        f.write(f"TORCH_CUDA_VERSION = {torch.version.cuda!r}\n")
        f.write(f"WITH_CUDA = {with_cuda!r}\n")
        f.write(f"CPU_ONLY_REASON = {reason!r}\n")
        f.write(f"CUDA_ARCH_LIST = {archs!r}\n")
        f.write(f"NVCC = {(_nvcc_version() if with_cuda else None)!r}\n")
        f.write(f"PYTHON = {sys.version.split()[0]!r}\n")


def _extensions():
    reason = _cuda_build_reason()
    with_cuda = reason is None
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    sources += sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cxx_flags = ["-O3", "-fopenmp"]
    define_macros = []
    if with_cuda:
        archs = _arch_list()
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        define_macros.append(("WITH_CUDA", None))
        nvcc_flags = ["-O3", "-lineinfo", "--expt-relaxed-constexpr"]
        ext = cpp_extension.CUDAExtension(
            "alexnet_kernels._C",
            sources,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            extra_link_args=["-fopenmp"],
        )
        print(f"alexnet_kernels: building CPU and CUDA kernels for TORCH_CUDA_ARCH_LIST={archs} "
              f"with CUDA_HOME={cpp_extension.CUDA_HOME}")
    else:
        archs = None
        ext = cpp_extension.CppExtension(
            "alexnet_kernels._C",
            sources,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"],
        )
        print(f"alexnet_kernels: building the CPU kernels only ({reason})")
    _write_build_config(with_cuda, reason, archs)
    return [ext]


setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": cpp_extension.BuildExtension},
)
