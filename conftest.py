"""Root pytest configuration, shared by tests/ and bench/.

Two things must happen here, before any test module imports the package:

* Triton kernels only run on a machine without a GPU under the Triton interpreter, and the
  interpreter is chosen when a kernel is decorated (at import).  So TRITON_INTERPRET=1 is set
  here when no CUDA device is visible, unless the caller already chose.
* ``--benchmark`` is this project's own flag (pytest-benchmark has none of that name): with it,
  bench/ runs the full AlexNet-sized shapes; without it, bench/ is a small-shape smoke check.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_addoption(parser):
    parser.addoption(
        "--benchmark",
        action="store_true",
        default=False,
        help="run bench/ at full AlexNet sizes and print the speed tables "
        "(without it bench/ runs small shapes as a smoke check)",
    )
