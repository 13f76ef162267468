"""bench/: side-by-side speed tables. `pytest bench/ --benchmark` on a GPU runs AlexNet sizes;
plain `pytest bench/` runs small shapes as a smoke check (CI runs that).

Rows collected through the `report` fixture are printed as one table per benchmark at the end
of the session, and appended as markdown to $ALEXNET_BENCH_OUT when that is set.
"""
import os
from collections import defaultdict

import pytest
import torch

_TABLES = defaultdict(list)


@pytest.fixture
def full(request):
    """True for the full-size run (--benchmark on a GPU)."""
    if request.config.getoption("--benchmark") and not torch.cuda.is_available():
        pytest.skip("--benchmark times CUDA kernels: no CUDA device here (run bench/gpu_check.sh on the GPU machine)")
    return request.config.getoption("--benchmark")


@pytest.fixture
def report():
    def add(table: str, row: dict):
        _TABLES[table].append(row)

    return add


def _markdown(title, rows):
    cols = list(dict.fromkeys(c for r in rows for c in r))  # every row's columns, first seen first
    lines = [f"### {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[c]) if c in r else "" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def pytest_terminal_summary(terminalreporter):
    if not _TABLES:
        return
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (smoke sizes, wall clock)"
    header = f"alexnet_kernels benchmarks on {device}, torch {torch.__version__}"
    text = "\n".join([f"## {header}", ""] + [_markdown(t, rows) for t, rows in _TABLES.items()])
    terminalreporter.write_sep("=", "benchmark tables")
    terminalreporter.write_line(text)
    out = os.environ.get("ALEXNET_BENCH_OUT")
    if out:
        with open(out, "a") as f:
            f.write(text + "\n")
