"""The median of several benchmark runs, cell by cell.

    for i in 1 2 3 4 5; do ALEXNET_BENCH_OUT=run$i.md pytest bench/ --benchmark; done
    python bench/median_runs.py run?.md

Each file is what $ALEXNET_BENCH_OUT held after a run (conftest.py): markdown tables under
"### title" headings. Tables are matched by title and rows by their non-numeric cells (shape,
dtype, pass, ...); every numeric cell is replaced by its median over the runs, and the title says
over how many. On a machine whose speed drifts, a single run's ratios move by 10-30%; the median
of five is what bench/RESULTS.md records.
"""
import statistics
import sys
from collections import defaultdict


def number(cell: str):
    try:
        return float(cell)
    except ValueError:
        return None


def tables(path: str) -> dict:
    """{title: (columns, [row cells])} of one run's file; a later table of the same title wins."""
    out, title, cols, rows = {}, None, None, []
    for line in open(path).read().splitlines() + [""]:
        if line.startswith("### "):
            title, cols, rows = line[4:].strip(), None, []
        elif line.startswith("|") and title is not None:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cols is None:
                cols = cells
            elif not all(set(c) <= {"-"} for c in cells):
                rows.append(cells)
        elif title is not None and cols is not None and not line.strip():
            out[title] = (cols, rows)
            title = None
    return out


def fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def main(paths: list) -> str:
    runs = [tables(p) for p in paths]
    lines = []
    for title in dict.fromkeys(t for r in runs for t in r):
        cols = next(r[title][0] for r in runs if title in r)
        cells = defaultdict(list)  # row key -> each run's cells
        for r in runs:
            for row in r.get(title, (None, []))[1]:
                key = tuple(c if number(c) is None else None for c in row)
                cells[key].append(row)
        n = max(len(v) for v in cells.values())
        lines += [f"### {title} (median of {n} runs)", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for key, rs in cells.items():
            row = [k if k is not None else fmt(statistics.median(number(r[i]) for r in rs)) for i, k in enumerate(key)]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(main(sys.argv[1:]))
