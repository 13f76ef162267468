"""The GPU-run tooling, rehearsed on any machine so that no device minute goes to a script bug:
bench/gpu_check.sh (its rehearsal mode), bench/profile_step.py (the kernel-family attribution),
bench/ncu_ops.py (the ops Nsight Compute profiles), and bench/median_runs.py (the median of runs)."""
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")


def test_gpu_check_script_parses():
    subprocess.run(["bash", "-n", os.path.join(BENCH, "gpu_check.sh")], check=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the rehearsal is for machines without a GPU")
def test_gpu_check_rehearsal(tmp_path):
    """The phases that need no training or timing, end to end: the summary names each, the GPU-only
    ones say they were skipped, and the call exits 0."""
    env = dict(os.environ, GPU_CHECK_DRY="1", GPU_CHECK_SKIP_BUILD="1", OUT=str(tmp_path),
               PYTHON=sys.executable)
    r = subprocess.run(["bash", os.path.join(BENCH, "gpu_check.sh"), "env,build,ceilings,sanitize,compare"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = (tmp_path / "summary.txt").read_text()
    assert "kept the installed build" in summary
    assert "ceilings   skipped in the rehearsal" in summary and "sanitize   skipped in the rehearsal" in summary
    assert "compare    ok" in summary
    assert "torch " + torch.__version__ in (tmp_path / "env.txt").read_text()
    assert (tmp_path / "build_info.txt").stat().st_size > 0


def test_gpu_check_budget_cuts_a_phase(tmp_path):
    """A call whose budget is spent skips the remaining phases and says so, rather than overrunning."""
    env = dict(os.environ, GPU_CHECK_DRY="1", GPU_CHECK_SKIP_BUILD="1", OUT=str(tmp_path),
               PYTHON=sys.executable, CALL_BUDGET="5")
    r = subprocess.run(["bash", os.path.join(BENCH, "gpu_check.sh"), "profile"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert "profile    skipped: budget spent" in (tmp_path / "summary.txt").read_text(), r.stdout


def test_profile_step_attributes_every_layer(tmp_path, capsys):
    """Each layer's forward and backward get their own family, as do the optimizer and the loss,
    and the families add up to the step's total."""
    sys.path.insert(0, BENCH)
    try:
        import profile_step
    finally:
        sys.path.remove(BENCH)
    out = tmp_path / "profile.md"
    assert profile_step.main(["--variant", "torchvision", "--batch", "1", "--steps", "1",
                              "--backends", "torch", "--precisions", "fp32", "--out", str(out)]) == 0
    table = out.read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    for family in ("features.0 fwd", "features.0 bwd", "classifier.1 fwd", "classifier.1 bwd", "optimizer", "loss"):
        assert family in rows, (family, sorted(rows))
    cells = [r.split(" | ") for name, r in rows.items() if name not in ("family", "**kernel time per step**",
                                                                         "step wall time")]
    total = float(rows["**kernel time per step**"].split(" | ")[1])
    assert total > 0 and abs(sum(float(c[1]) for c in cells) - total) < 0.01 * total + 0.01


def test_ncu_ops_run_on_the_cpu():
    r = subprocess.run([sys.executable, os.path.join(BENCH, "ncu_ops.py"), "--device", "cpu"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ran lrn 2x96x55x55" in r.stdout and "ran conv2d paper bfloat16" in r.stdout


def test_median_runs(tmp_path):
    """Rows are matched across runs by their text cells, each number is its median over the runs
    (a row missing from a run takes the median of the others), and the title counts the runs."""
    sys.path.insert(0, BENCH)
    try:
        import median_runs
    finally:
        sys.path.remove(BENCH)
    head = "## header\n\n### lrn (CPU)\n\n| shape | pass | ours ms | speedup |\n|---|---|---|---|\n"
    runs = [("| 32x96 | fwd | 60 | 3.0 |\n| 32x96 | fwd+bwd | 100 | 2.0 |\n"),
            ("| 32x96 | fwd | 80 | 2.5 |\n| 32x96 | fwd+bwd | 120 | 2.6 |\n"),
            ("| 32x96 | fwd | 70 | 2.9 |\n")]
    paths = []
    for i, rows in enumerate(runs):
        paths.append(tmp_path / f"run{i}.md")
        paths[-1].write_text(head + rows + "\n### other\n\n| a | b |\n|---|---|\n| x | 1 |\n")
    out = median_runs.main([str(p) for p in paths])
    assert "### lrn (CPU) (median of 3 runs)" in out
    assert "| 32x96 | fwd | 70 | 2.9 |" in out
    assert "| 32x96 | fwd+bwd | 110 | 2.3 |" in out
    assert "### other (median of 3 runs)" in out and "| x | 1 |" in out
