"""The static cost of the hot kernels, from this build's sm_90 machine code (bench/cost_report.py):
none may spill or use local memory (unless bench/cost_kernels.toml says why, and then strictly:
once the spill is gone the entry must go too), none may issue more than 10% more instructions
per element than bench/cost_figures.json records, and none may do worse under the CUDA emulator's
counts (DRAM bytes over the floor, coalescing, bank conflicts, mma) than recorded. After a
deliberate change, re-record the figures (docs/emulator.md says how)."""
import json
import os
import subprocess
import sys

import pytest
import tomllib

import alexnet_kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
sys.path.insert(0, BENCH)
import cost_report  # noqa: E402 - bench/ is not a package

with open(cost_report.CONFIG, "rb") as f:
    SPECS = {s["name"]: s for s in tomllib.load(f)["kernel"]}
with open(cost_report.FIGURES) as f:
    RECORDED = json.load(f)["kernels"]
HOT = [name for name, s in SPECS.items() if s.get("hot")]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    info = alexnet_kernels.build_info()
    if not info.get("cuda_kernels_built"):
        pytest.skip(f"the extension was built without CUDA kernels ({info.get('cpu_only_reason')}): "
                    "no sm_90 machine code to read")
    if cost_report.tool("cuobjdump") is None:
        pytest.skip("no cuobjdump (it ships in the Triton wheel and the CUDA toolkit)")
    out = tmp_path_factory.mktemp("cost") / "cost.json"
    # In a fresh process without TRITON_INTERPRET: the Triton kernels must be decorated for the GPU
    # to be compiled for sm_90. With the emulator's counts (a few seconds once the harnesses are
    # built; the emulated tests build the same ones).
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "cost_report.py"), "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    if not out.exists():
        pytest.fail(f"cost_report.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    data = json.loads(out.read_text())
    if not data["kernels"]:
        pytest.skip("; ".join(data["notes"]) or "the report found no kernels")
    return data


def figures_of(report, name):
    if name not in report["kernels"]:
        err = report["details"].get(name, {}).get("error")
        if err:
            pytest.fail(f"{name}: {err} (update bench/cost_kernels.toml)")
        pytest.skip(f"{name} is not in this report: " + "; ".join(report["notes"]))
    return report["kernels"][name]


def test_every_kernel_is_found(report):
    errors = {n: d["error"] for n, d in report["details"].items() if d["error"]}
    assert not errors, f"bench/cost_kernels.toml is out of date: {errors}"


@pytest.mark.parametrize("name", HOT)
def test_hot_kernel_does_not_spill(report, name, request):
    k = figures_of(report, name)
    spill = {"LDL/STL instructions": k["ldl_stl"], "local bytes": k["local"], "stack bytes": k["stack"]}
    known = SPECS[name].get("known_spill")
    if known:
        # Expected, and strictly: this must start failing as an XPASS once the spill is gone.
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"known spill: {known}"))
    assert not any(spill.values()), f"{name} ({k['kernel']}) spills: {spill}"


@pytest.mark.parametrize("name", HOT)
def test_hot_kernel_instructions_per_element(report, name):
    k = figures_of(report, name)
    assert name in RECORDED, f"{name} has no recorded figure: run python bench/cost_report.py --record"
    was = RECORDED[name]["instructions_per_element"]
    now = k["instructions_per_element"]
    assert now <= was * (1 + cost_report.TOLERANCE), (
        f"{name} ({k['kernel']}) issues {now:.3f} instructions per element, more than 10% above the recorded "
        f"{was:.3f}; if that is intended, re-record bench/cost_figures.json")


COUNTED = [name for name in HOT if SPECS[name].get("counts")]
# Counts are deterministic (the same kernels, planning and inputs each run): a small tolerance
# only, for a harmless change of the shape's last partial tile or the like.
COUNT_SLACK = 0.02


@pytest.mark.parametrize("name", COUNTED)
def test_hot_kernel_counts(report, name):
    figures_of(report, name)
    now = report["details"][name]["counts"]
    if not now:
        pytest.skip(f"{name}: no emulator counts in this run: " + "; ".join(report["notes"]))
    was = RECORDED.get(name, {}).get("counts")
    assert was, f"{name} has no recorded counts: run python bench/cost_report.py --record"
    worse = []
    for key in ("dram_vs_floor", "gld_sectors_per_request", "gst_sectors_per_request", "lds_bank_ways",
                "sts_bank_ways", "mma"):  # lower is better
        if key in was and now.get(key, 0) > was[key] * (1 + COUNT_SLACK):
            worse.append(f"{key} {now.get(key)} (recorded {was[key]})")
    for key in ("gld_efficiency", "gst_efficiency", "mma_useful"):  # higher is better
        if key in was and now.get(key, 0) < was[key] * (1 - COUNT_SLACK):
            worse.append(f"{key} {now.get(key)} (recorded {was[key]})")
    if was.get("uniform") and not now.get("uniform"):
        worse.append("warps no longer reach each access site alike (uniform: recorded True)")
    assert not worse, (f"{name}: the emulator's counts at {now['shape']} got worse: {'; '.join(worse)}; if that "
                       "is intended, re-record bench/cost_figures.json")


# ---- the report's own arithmetic -----------------------------------------------------------------

def test_occupancy_arithmetic():
    # 128 registers, 23,680 bytes of shared memory, 256 threads: registers allow 2 blocks
    # (128 x 32 = 4096 per warp, 16 warps per SM), shared memory 9 (24,704 with the reserve).
    o = cost_report.occupancy(128, 23680, 256)
    assert (o["blocks_per_sm"], o["warps_per_sm"], o["limited_by"]) == (2, 16, "registers")
    # 32 registers, no shared memory: the 64 warp slots allow 8 blocks of 8 warps.
    o = cost_report.occupancy(32, 0, 256)
    assert (o["blocks_per_sm"], o["warps_per_sm"], o["limited_by"]) == (8, 64, "warps")
    # 40 KB of shared memory per 128-thread block: 5 blocks (41,984 bytes allocated each).
    assert cost_report.occupancy(32, 40 * 1024, 128)["blocks_per_sm"] == 5
    # Register allocation per warp rounds up to 256: 33 registers take 40 x 32 per warp.
    assert cost_report.occupancy(33, 0, 256)["blocks_per_sm"] == 6


SASS = """
        Function : k
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0020*/               @P0 BRA 0x50 ;
        /*0030*/                   FFMA R5, R5, R5, R5 ;
        /*0040*/                   FFMA R6, R6, R6, R6 ;
        /*0050*/                   STG.E desc[UR4][R2.64], R5 ;
        /*0060*/               @P1 BRA 0x10 ;
        /*0070*/                   EXIT ;
        /*0080*/                   BRA 0x80 ;
"""


def test_hot_loop_is_the_longest_path():
    instrs = cost_report.parse_sass(SASS)["k"]
    assert cost_report.loops(instrs) == [(0x10, 0x60)]  # the trailing self-branch is no loop
    path = cost_report.hot_path(instrs, {"name": "k", "loop": "innermost", "loop_has": "FFMA"})
    # the branch over the FFMAs is not taken on the longest path: LDG, BRA, FFMA, FFMA, STG, BRA
    assert [i.addr for i in path] == [0x10, 0x20, 0x30, 0x40, 0x50, 0x60]
    stats = cost_report.path_stats(path, {"per_iteration": 2})
    assert stats["instructions_per_element"] == 3.0 and stats["ldg"] == {16: 1} and stats["stg"] == {4: 1}
    whole = cost_report.hot_path(instrs, {"name": "k", "loop": "kernel"})
    assert [i.addr for i in whole][-1] == 0x70


# A main loop with a slow case branching in (0x30-0x50: an edge's checked load), an inner loop
# (0x60-0x80) and, after it, a remainder loop (0xc0-0xe0); ptxas's never-executed padding
# "@!PT LDS" at 0x90.
SASS2 = """
        Function : k2
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   LDG.E R4, desc[UR4][R2.64] ;
        /*0020*/               @P0 BRA 0x60 ;
        /*0030*/                   ISETP.GE.AND P1, PT, R4, RZ, PT ;
        /*0040*/               @P1 LDG.E R5, desc[UR4][R2.64+0x4] ;
        /*0050*/                   FSEL R5, R5, RZ, P1 ;
        /*0060*/                   FFMA R6, R4, R5, R6 ;
        /*0070*/                   FFMA R7, R4, R5, R7 ;
        /*0080*/               @P2 BRA 0x60 ;
        /*0090*/              @!PT LDS RZ, [RZ] ;
        /*00a0*/                   STG.E desc[UR4][R2.64], R6 ;
        /*00b0*/               @P3 BRA 0x10 ;
        /*00c0*/                   LDG.E R4, desc[UR4][R2.64] ;
        /*00d0*/                   STG.E desc[UR4][R2.64], R4 ;
        /*00e0*/               @P4 BRA 0xc0 ;
        /*00f0*/                   EXIT ;
"""


def test_hot_loop_choice_and_paths():
    instrs = cost_report.parse_sass(SASS2)["k2"]
    spec = {"name": "k2", "loop_has": "LDG"}
    # innermost: the smallest loop holding an LDG (the remainder); busiest: the most LDG (the main loop)
    assert cost_report.hot_loop(instrs, {**spec, "loop": "innermost"}) == (0xC0, 0xE0)
    assert cost_report.hot_loop(instrs, {**spec, "loop": "busiest"}) == (0x10, 0xB0)
    spec["loop"] = "busiest"
    longest = cost_report.hot_path(instrs, spec)
    assert [i.addr for i in longest] == list(range(0x10, 0xC0, 0x10))  # through the slow case
    fast = cost_report.hot_path(instrs, {**spec, "path": "shortest", "path_has": {"FFMA": 2, "STG": 1}})
    assert [i.addr for i in fast] == [0x10, 0x20, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0]
    # the never-executed padding issues (it is counted) but loads nothing
    stats = cost_report.path_stats(fast, {"per_iteration": 1})
    assert stats["path_instructions"] == 8 and stats["lds"] == {} and stats["ldg"] == {4: 1}
    # path_has is a floor on the path's work: the slow case's checked load is the only second LDG
    slow = cost_report.hot_path(instrs, {**spec, "path": "shortest", "path_has": {"LDG": 2}})
    assert [i.addr for i in slow] == [i.addr for i in longest]
    with pytest.raises(LookupError, match="no path"):
        cost_report.hot_path(instrs, {**spec, "path": "shortest", "path_has": {"STG": 2}})
    # a key with modifiers matches only those: no LDG.E.128 here
    with pytest.raises(LookupError, match="no path"):
        cost_report.hot_path(instrs, {**spec, "path_has": {"LDG.E.128": 1}})
    # the inner loop (2 FFMA, its branch) runs 3 times per pass: twice more than the path counts it
    three = cost_report.hot_path(instrs, {**spec, "path": "shortest", "path_has": {"STG": 1},
                                          "inner_has": "FFMA", "inner_trips": 3})
    assert len(three) == 8 + 2 * 3 and sum(i.base == "FFMA" for i in three) == 6
    # the never-executed padding does no work: it cannot stand for a load the pass must make
    with pytest.raises(LookupError, match="no path"):
        cost_report.hot_path(instrs, {**spec, "path_has": {"LDS": 1}})
    # path_mix: half the warps make the fast pass, half the slow one
    slow_stats = cost_report.path_stats(longest, {"per_iteration": 1})
    mixed = cost_report.blend_stats(slow_stats, stats, 0.5)
    assert mixed["path_instructions"] == (11 + 8) / 2 and mixed["ldg"] == {4: (2 + 1) / 2}
    assert mixed["histogram"]["FFMA"] == 2 and mixed["ffma_share"] == 2 / 9.5
