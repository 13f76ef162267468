"""bench/: side-by-side speed tables.

    pytest bench/ --benchmark   on a GPU: AlexNet sizes (batch 128) on the GPU;
                                without one: the CPU tables, AlexNet sizes at batch 32
    pytest bench/               small shapes as a smoke check (CI runs that)

Each benchmark takes its device from the `device` fixture and whether to run full sizes from
`full`; a full CPU run uses the batch of `cpu_batch`.

Rows collected through the `report` fixture are printed as one table per benchmark at the end
of the run, and written as markdown to $ALEXNET_BENCH_OUT when that is set: after each row,
after what the file held before the run, so that a run killed part-way keeps its rows.
"""
import os
from collections import defaultdict

import pytest
import torch

_TABLES = defaultdict(list)
_BEFORE = {}  # $ALEXNET_BENCH_OUT's text before this run (earlier runs' tables)


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CPU_BATCH = 32  # full CPU tables: AlexNet's shapes at this batch


@pytest.fixture
def full(request):
    """True for the full-size run (--benchmark): on the GPU at batch 128, on the CPU at CPU_BATCH."""
    return request.config.getoption("--benchmark")


@pytest.fixture
def device():
    """Where the benchmarks run: the GPU where there is one, else the CPU."""
    return DEVICE


@pytest.fixture
def cpu_batch():
    return CPU_BATCH


@pytest.fixture
def report():
    def add(table: str, row: dict):
        _TABLES[table].append(row)
        _write_out()

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


def _render() -> str:
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    else:
        device = f"the CPU ({torch.get_num_threads()} threads, wall clock)"
    header = f"alexnet_kernels benchmarks on {device}, torch {torch.__version__}"
    return "\n".join([f"## {header}", ""] + [_markdown(t, rows) for t, rows in _TABLES.items()])


def _write_out() -> None:
    out = os.environ.get("ALEXNET_BENCH_OUT")
    if not out:
        return
    if "text" not in _BEFORE:
        _BEFORE["text"] = open(out).read() if os.path.exists(out) else ""
    with open(out, "w") as f:
        f.write(_BEFORE["text"] + _render() + "\n")


def pytest_terminal_summary(terminalreporter, config):
    if DEVICE == "cpu":
        mode = "CPU tables at batch %d" % CPU_BATCH if config.getoption("--benchmark") else "smoke sizes"
        terminalreporter.write_line(
            f"no CUDA device: the GPU rows are skipped (bash bench/gpu_check.sh runs them on a GPU); "
            f"this run measured the CPU rows ({mode})")
    if not _TABLES:
        return
    terminalreporter.write_sep("=", "benchmark tables")
    terminalreporter.write_line(_render())
