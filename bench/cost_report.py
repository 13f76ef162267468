"""Static cost of the CUDA and Triton kernels from their sm_90 machine code, and a predicted time
per kernel at its benchmark shape, on the H200 the project targets. No GPU needed.

    python bench/cost_report.py               # the report (markdown tables)
    python bench/cost_report.py --json F      # also every figure as JSON
    python bench/cost_report.py --record      # re-record bench/cost_figures.json after a rewrite
    python bench/cost_report.py --no-counts   # without the CUDA emulator's counts

What it reads: the built extension (alexnet_kernels/_C*.so: its sm_90 code, so the build must have
had CUDA and sm_90 in TORCH_CUDA_ARCH_LIST; otherwise the CUDA part is skipped, saying so), the
Triton kernels compiled ahead of time for sm_90 (as tests/triton_aot.py does), bench/cost_kernels.toml
(which kernels, their hot loops, the work per pass, the benchmark shapes) and, where a kernel
names a counts runner, the CUDA emulator's counts at a small shape. Tools: cuobjdump from the
Triton wheel (triton/backends/nvidia/bin) or the CUDA toolkit; c++filt.

Per kernel:
  - resources (cuobjdump -res-usage): registers, stack frame, shared memory, local memory; the
    LDL/STL instructions in its SASS (spills or a stack array);
  - occupancy on an H200 (cuda_occupancy.h's arithmetic for sm_90: 64K registers in 4
    sub-partitions allocated per warp in units of 256, 228 KB of shared memory per SM in units of
    128 bytes plus 1 KB reserved per block, at most 64 warps and 32 blocks per SM);
  - the hot loop (cost_kernels.toml's `loop`, `path`, `path_has`): one pass along the longest
    path through it, or the cheapest path that still does the pass's work (no slow case
    branching in), inner loops counted once or `inner_trips` times, with the opcode histogram
    along that path: instructions per element (path length / per_iteration), the FFMA and HMMA
    shares, global and shared loads and stores by width, cp.async, ldmatrix, MUFU
    (special-function) instructions, and LDL/STL;
  - where the entry names a counts runner (COUNT_RUNNERS), the CUDA emulator's counts of the same
    kernel and host planning at a small shape: coalescing efficiency and sectors per request of
    the global loads and stores, unique sectors (the least DRAM traffic) against the op's floor
    at that shape, shared-memory bank-conflict ways, mma and ldmatrix counts;
  - the prediction, from these and the machine's rates below:
        issue  = path instructions x thread_iterations / 32 / (132 SMs x 4 schedulers x clock)
        memory = DRAM bytes / bandwidth, DRAM bytes = floor_bytes (times the emulator's unique
                 bytes over the floor at its shape, where that ratio carries over: elementwise ops)
        tensor = HMMA on the path x thread_iterations / 32 / (132 SMs x HMMA_PER_CLK x clock)
        sfu    = MUFU on the path x thread_iterations / (132 SMs x 16 lanes x clock)
        predicted = max(issue, memory, tensor, sfu)
        floor     = max(floor_bytes / bandwidth, floor_flops / peak of the dtype)
    Everything a kernel does outside its hot loop is left out, as are latency, occupancy effects
    and caches: a prediction to be set beside the measurement, not a measurement.
"""
import argparse
import ast
import glob
import json
import operator
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONFIG = os.path.join(HERE, "cost_kernels.toml")
FIGURES = os.path.join(HERE, "cost_figures.json")
TOLERANCE = 0.10  # instructions per element may rise this much above the recorded figure

# ---- the machine ----------------------------------------------------------------------------------
# H200 (sm_90). Rates marked "measured" were measured on the project's lent H200 / H100 machines;
# the others are architectural and are assumptions until a GPU run checks them.
SMS = 132
CLOCK_HZ = 1.98e9               # SM clock under load (read with nvidia-smi on the H200)
SCHEDULERS = 4                  # warp instructions issued per clock per SM
BANDWIDTH = 4.3e12              # bytes/s, device-to-device copy, read + write (measured, H200)
PEAK_FLOPS = {"fp32": 51e12,    # cuBLAS fp32 8192^3, TF32 off (measured, H100: same SMs and clock)
              "bf16": 788e12}   # cuBLAS bf16 8192^3 on random data (measured, H200)
HMMA_PER_CLK = 0.5              # mma.sync m16n8k16 (2048 MACs) per clock per SM: 1024 MACs/clk,
                                # half of wgmma's dense rate (assumption)
SFU_LANES = 16                  # MUFU results per clock per SM
REGS_PER_SM, REG_UNIT, SUBPARTITIONS = 65536, 256, 4
SMEM_PER_SM, SMEM_UNIT, SMEM_RESERVED = 228 * 1024, 128, 1024
MAX_WARPS, MAX_BLOCKS = 64, 32
ARCH = "sm_90"


# ---- tools ----------------------------------------------------------------------------------------
def tool(name):
    """A CUDA binary utility: the Triton wheel's, else the toolkit's, else PATH's."""
    try:
        import triton

        p = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
        if os.access(p, os.X_OK):
            return p
    except ImportError:
        pass
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home and os.access(os.path.join(home, "bin", name), os.X_OK):
            return os.path.join(home, "bin", name)
    return shutil.which(name)


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def demangle(names):
    if not names or shutil.which("c++filt") is None:
        return dict(zip(names, names))
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True)
    out = out.stdout.split("\n")
    return dict(zip(names, out))


# ---- expressions in the config --------------------------------------------------------------------
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}


def evaluate(expr):
    """Arithmetic on numbers (+ - * / // ** and parentheses): the config's expressions."""
    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)):
            return n.value
        if isinstance(n, ast.BinOp) and type(n.op) in _OPS:
            return _OPS[type(n.op)](ev(n.left), ev(n.right))
        raise ValueError(f"cost_kernels.toml: not plain arithmetic: {expr!r}")
    return ev(ast.parse(str(expr), mode="eval"))


# ---- SASS -----------------------------------------------------------------------------------------
_INSTR = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")
_FUNC = re.compile(r"^\s*Function : (\S+)")


@dataclass
class Instr:
    addr: int
    pred: bool
    op: str
    args: str
    guard: str = ""  # the predicate, as written ("@!P0 "), or ""

    @property
    def base(self):
        return self.op.split(".")[0]


def parse_sass(text):
    funcs, cur = {}, None
    for line in text.splitlines():
        m = _FUNC.match(line)
        if m:
            cur = funcs.setdefault(m.group(1), [])
            continue
        m = _INSTR.match(line)
        if m and cur is not None:
            cur.append(Instr(int(m.group(1), 16), bool(m.group(2)), m.group(3), m.group(4), m.group(2) or ""))
    return funcs


def parse_res_usage(text):
    res, cur = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            cur = m.group(1)
            continue
        if cur and "REG:" in line:
            vals = dict(re.findall(r"(\w+(?:\[\d+\])?):(\d+)", line))
            res[cur] = {k: int(vals.get(k.upper(), 0)) for k in ("reg", "stack", "shared", "local")}
            cur = None
    return res


def _target(i):
    m = re.search(r"0x([0-9a-f]+)", i.args)
    return int(m.group(1), 16) if m else None


def loops(instrs):
    """(head, latch address) of every loop: a branch to an earlier address closes one."""
    out = {}
    for i in instrs:
        if i.base in ("BRA", "JMP"):
            t = _target(i)
            if t is not None and t < i.addr:
                out[t] = max(out.get(t, 0), i.addr)
    return sorted(out.items())


def _blocks(instrs, start, end):
    """The basic blocks of [start, end]: a branch, EXIT or RET ends one, a branch target inside
    the range starts one."""
    body = [i for i in instrs if start <= i.addr <= end]
    if not body:
        return []
    leaders = {body[0].addr}
    for k, i in enumerate(body):
        if i.base in ("BRA", "JMP", "EXIT", "RET", "BRX"):
            t = _target(i)
            if t is not None and start <= t <= end:
                leaders.add(t)
            if k + 1 < len(body):
                leaders.add(body[k + 1].addr)
    blocks, cur = [], []
    for i in body:
        if i.addr in leaders and cur:
            blocks.append(cur)
            cur = []
        cur.append(i)
    blocks.append(cur)
    return blocks


def _matches(i, key):
    """Whether instruction i is of class `key`: an opcode ("STS": every STS) or an opcode with
    its leading modifiers ("STS.128", "LDGSTS.E.BYPASS.128.ZFILL"). Never-executed instructions
    (ptxas pads cp.async with "@!PT LDS RZ, [RZ]") do no work: they match nothing."""
    return not i.guard.startswith("@!PT") and (i.op == key or i.op.startswith(key + "."))


def region_path(instrs, start, end, loop, shortest=False, has=None):
    """The instructions on the longest (or shortest) path from `start` through [start, end] that
    holds at least has[key] instructions of each class in `has`: to the branch back to `start`
    (a loop) or to an EXIT (the whole kernel). Branches leaving the range end a path that does not
    count; branches back inside the range (inner loops) are not followed, so an inner loop's body
    counts once. None where no such path closes the region.

    The shortest path that holds a pass's work (its FFMA, HMMA, stores, cp.async...) is the pass
    a kernel makes when none of its slow cases (edges, padding, misaligned rows) branches in."""
    blocks = _blocks(instrs, start, end)
    if not blocks:
        return []
    keys = sorted(has or {})
    need = tuple(int(has[k]) for k in keys)
    gains = [tuple(sum(1 for i in b if _matches(i, k)) for k in keys) for b in blocks]
    better = (lambda a, b: a < b) if shortest else (lambda a, b: a > b)
    index = {b[0].addr: n for n, b in enumerate(blocks)}
    # Per block, per count of each class so far (capped at the need): (length, predecessor state).
    best = [dict() for _ in blocks]
    best[0][tuple(0 for _ in keys)] = (0, None)
    done = None  # (length, block, counts)
    for n, b in enumerate(blocks):
        if not best[n]:
            continue
        last = b[-1]
        succs = []
        terminal = False
        if last.base in ("BRA", "JMP"):
            t = _target(last)
            if loop and t == start and last.addr == end:
                terminal = True
            elif t is not None and t > last.addr and t in index:
                succs.append(index[t])
            if last.pred and n + 1 < len(blocks):
                succs.append(n + 1)
        elif last.base == "EXIT":
            terminal = not loop
            if last.pred and n + 1 < len(blocks):
                succs.append(n + 1)
        elif n + 1 < len(blocks):
            succs.append(n + 1)
        for counts, (length, _) in best[n].items():
            length += len(b)
            after = tuple(min(c + g, m) for c, g, m in zip(counts, gains[n], need))
            if terminal and after == need and (done is None or better(length, done[0])):
                done = (length, n, counts)
            for s in succs:
                old = best[s].get(after)
                if old is None or better(length, old[0]):
                    best[s][after] = (length, (n, counts))
    if done is None:
        return None
    path, at = [], (done[1], done[2])
    while at is not None:
        n, counts = at
        path[:0] = blocks[n]
        at = best[n][counts][1]
    return path


def hot_loop(instrs, spec):
    """(head, latch) of the loop `spec` names (see cost_kernels.toml: loop, loop_has)."""
    kind = spec.get("loop", "innermost")
    found = [(h, e) for h, e in loops(instrs) if e > h]
    want = spec.get("loop_has")
    def holding(h, e):
        return sum(1 for i in instrs if h <= i.addr <= e and i.base == want)
    if kind == "outermost":
        found.sort(key=lambda x: x[0] - x[1])
    elif kind == "busiest":  # the most `loop_has` instructions; of equals, the inner
        found = [x for x in found if holding(*x)]
        found.sort(key=lambda x: (-holding(*x), x[1] - x[0]))
    else:
        found = [x for x in found if holding(*x)]
        found.sort(key=lambda x: x[1] - x[0])
    if not found:
        raise LookupError(f"{spec['name']}: no {kind} loop" + (f" holding {want}" if kind != "outermost" else ""))
    return found[0]


def hot_path(instrs, spec):
    """The instructions of one pass of the hot loop along the path `spec` names (cost_kernels.toml:
    loop, loop_has, path, path_has, inner_has, inner_trips)."""
    kind = spec.get("loop", "innermost")
    shortest, has = spec.get("path", "longest") == "shortest", spec.get("path_has")
    if kind == "kernel":
        start, end, loop = instrs[0].addr, instrs[-1].addr, False
    else:
        (start, end), loop = hot_loop(instrs, spec), True
    path = region_path(instrs, start, end, loop, shortest, has)
    if path is None:
        if shortest or has:
            raise LookupError(f"{spec['name']}: no path through the hot loop"
                              + (f" holds {dict(has)}" if has else "") + ": update loop, path_has or inner_trips")
        return [i for i in instrs if start <= i.addr <= end]  # no path closes the region: count it all
    trips = int(spec.get("inner_trips", 1))
    if trips > 1:
        on_path = {i.addr for i in path}
        inner = [(h, e) for h, e in loops(instrs) if start <= h < e <= end and (h, e) != (start, end)
                 and h in on_path and e in on_path
                 and any(h <= i.addr <= e and i.base == spec["inner_has"] for i in instrs)]
        if not inner:
            raise LookupError(f"{spec['name']}: no inner loop holding {spec['inner_has']} on the hot path")
        for h, e in inner:
            body = region_path(instrs, h, e, True, shortest)
            if body is None:
                raise LookupError(f"{spec['name']}: no path through the inner loop at {h:#x}")
            path = path + body * (trips - 1)
    return path


def mem_width(i):
    """Bytes moved per lane by a load or store opcode (LDG.E.128 -> 16; LDG.E -> 4)."""
    for w, b in ((".128", 16), (".64", 8), (".U16", 2), (".S16", 2), (".U8", 1), (".S8", 1)):
        if w in i.op:
            return b
    return 4


def path_stats(path, spec):
    hist = Counter(i.base for i in path)  # (a NOP on the path issues like any instruction)
    n = sum(hist.values())
    per = float(spec["per_iteration"])
    def loads(prefix):  # (ptxas pads cp.async with never-executed "@!PT LDS RZ, [RZ]": not loads)
        c = Counter(mem_width(i) for i in path if i.base == prefix and not i.guard.startswith("@!PT"))
        return {w: c.get(w, 0) for w in (16, 8, 4, 2, 1) if c.get(w)}
    return {
        "path_instructions": n,
        "instructions_per_element": n / per,
        "ffma_share": hist.get("FFMA", 0) / n if n else 0.0,
        "hmma_share": hist.get("HMMA", 0) / n if n else 0.0,
        "hmma": hist.get("HMMA", 0),
        "mufu": hist.get("MUFU", 0),
        "ldg": loads("LDG"), "stg": loads("STG"), "lds": loads("LDS"), "sts": loads("STS"),
        "ldsm": hist.get("LDSM", 0),
        "ldgsts": hist.get("LDGSTS", 0),
        "local": hist.get("LDL", 0) + hist.get("STL", 0),
        "histogram": dict(hist.most_common()),
    }


def blend_stats(a, b, share):
    """Stats of a pass that `share` of the warps make as b and the rest as a (path_mix)."""
    def mix(x, y):
        if isinstance(x, dict) or isinstance(y, dict):
            x, y = x or {}, y or {}
            return {k: mix(x.get(k, 0), y.get(k, 0)) for k in dict.fromkeys([*x, *y])}
        return (1 - share) * x + share * y
    out = {k: mix(a[k], b[k]) for k in a}
    out["histogram"] = dict(sorted(out["histogram"].items(), key=lambda kv: -kv[1]))
    n = out["path_instructions"]
    out["ffma_share"] = out["histogram"].get("FFMA", 0) / n if n else 0.0
    out["hmma_share"] = out["histogram"].get("HMMA", 0) / n if n else 0.0
    return out


# ---- occupancy ------------------------------------------------------------------------------------
def occupancy(regs, smem, threads):
    """Blocks and warps per SM on sm_90, and what limits them (cuda_occupancy.h's arithmetic)."""
    warps = -(-threads // 32)
    by_warps = MAX_WARPS // warps
    per_warp = -(-max(regs, 1) * 32 // REG_UNIT) * REG_UNIT
    by_regs = (REGS_PER_SM // SUBPARTITIONS // per_warp) * SUBPARTITIONS // warps
    alloc = -(-(smem + SMEM_RESERVED) // SMEM_UNIT) * SMEM_UNIT
    by_smem = SMEM_PER_SM // alloc
    limits = {"warps": by_warps, "registers": by_regs, "shared memory": by_smem, "blocks": MAX_BLOCKS}
    blocks = min(limits.values())
    limiter = min(limits, key=lambda k: (limits[k], k != "warps"))
    return {"blocks_per_sm": blocks, "warps_per_sm": blocks * warps, "occupancy": blocks * warps / MAX_WARPS,
            "limited_by": limiter}


# ---- the emulator's counts ------------------------------------------------------------------------
# Each runner runs one op through its harness (tests/cuda_emu/<op>_emu.cpp: the very kernels and
# host planning the extension launches) at a small AlexNet-like shape, planned for 132 SMs, and
# returns the counts of the launch of the entry's kernel. One run serves every kernel it launches.
_HARNESSES = {}
_RUNS = {}


def _emulator(name):
    """(harness module, its emulator), built once (cached in the checkout's build/cuda_emu/)."""
    if name not in _HARNESSES:
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from cuda_emu import build

        m = build.load(name)
        _HARNESSES[name] = (m, build.runtime(m))
    return _HARNESSES[name]


def _launches(harness, key, call, sms=SMS):
    """The launches of call(module) under the emulator with every check and counter on, the host
    planning told there are `sms` multiprocessors."""
    if (harness, key) not in _RUNS:
        m, emu = _emulator(harness)
        with emu.configured(multiprocessors=sms), emu.record() as launches:
            call(m)
        _RUNS[harness, key] = launches
    return _RUNS[harness, key]


def _counts(launches, match, shape, floor_bytes, scales, macs=None):
    """The figures of the one launch whose kernel name holds `match`. floor_bytes: the op's floor
    at the count's shape; scales: whether DRAM bytes over the floor carry over to the benchmark
    shape (elementwise ops: yes; conv, whose weights and partials do not grow with the batch: no)."""
    hits = [launch for launch in launches if match in launch.kernel]
    if len(hits) != 1:
        raise LookupError(f"{len(hits)} launches match {match!r}: {[launch.kernel[:80] for launch in launches]}")
    (launch,) = hits
    out = {"kernel": launch.kernel, "shape": shape, "uniform": launch.uniform, "dram_bytes": launch.dram_bytes,
           "floor_bytes": floor_bytes, "dram_vs_floor": launch.dram_bytes / floor_bytes, "dram_scales": scales}
    for name, a in (("gld", launch.global_load), ("gst", launch.global_store)):
        if a.requests:
            out[f"{name}_efficiency"] = a.efficiency
            out[f"{name}_sectors_per_request"] = a.sectors_per_request
            out[f"{name}_bytes_per_request"] = a.bytes / a.requests
    for name, a in (("lds", launch.shared_load), ("sts", launch.shared_store)):
        if a.requests:
            out[f"{name}_bank_ways"] = a.bank_ways
    if launch.mma:
        out["mma"] = launch.mma
        out["mma_useful"] = macs / (2048 * launch.mma)
    if launch.ldmatrix:
        out["ldmatrix"] = launch.ldmatrix
    return out


def _tensor(shape, dtype, seed, channels_last=False):
    import torch

    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g).to(dtype)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def _dtype(name):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


LRN_SHAPE = (1, 96, 55, 55)  # conv1's LRN, one image


def _lrn_counts(direction, dtype, exact=False, channels_last=False):
    """LRN at LRN_SHAPE with the paper's constants (size 5, alpha 1e-4, beta 0.75, k 2), or
    beta = 1 for the exact-power variant; the column kernels with the benchmark's segments
    (forward 2, backward 1), so that a segment's re-read is as at [128, 96, 55, 55]."""
    beta = 1.0 if exact else 0.75
    dt = _dtype(dtype)
    key = (direction, dtype, exact, channels_last)

    def call(m):
        x = _tensor(LRN_SHAPE, dt, 0, channels_last)
        if direction == "fwd":
            m.forward(x, 5, 1e-4, beta, 2.0, False, 2)
        else:
            m.backward(_tensor(LRN_SHAPE, dt, 1, channels_last), x, 5, 1e-4, beta, 2.0, False, 1)

    n = 1
    for d in LRN_SHAPE:
        n *= d
    types = f"{'float' if dtype == 'fp32' else 'c10::BFloat16'}, float, int>"  # 32-bit index
    if channels_last:
        kernel = "lrn_elements<" + ("-1, " if direction == "fwd" else "5, ") + types
    else:
        kernel = f"lrn_{'forward' if direction == 'fwd' else 'backward'}_columns<5, {str(not exact).lower()}, {types}"
    size = 4 if dtype == "fp32" else 2
    shape = "x".join(map(str, LRN_SHAPE)) + (" channels_last" if channels_last else "")
    return _counts(_launches("lrn_emu", key, call), kernel, shape, (2 if direction == "fwd" else 3) * size * n,
                   scales=True)


POOL_SHAPE = (1, 96, 55, 55)  # conv1's pool, one image: 27 x 27 out


def _pool_counts(direction, dtype, channels_last=False, with_index=True):
    """Max pool 3x3/2 at POOL_SHAPE; the forward with the benchmark's 2 row segments, the
    backward from the forward's index."""
    dt = _dtype(dtype)
    win = ([3, 3], [2, 2], [0, 0], [1, 1], False)

    def forward(m):
        return m.forward(_tensor(POOL_SHAPE, dt, 0, channels_last), *win, with_index, False, 2)

    if direction == "fwd":
        launches = _launches("max_pool_emu", ("fwd", dtype, channels_last, with_index), forward)
    else:
        def backward(m):
            y, index = forward(m)
            m.backward(_tensor(tuple(y.shape), dt, 1, channels_last), index, None, list(POOL_SHAPE), *win,
                       channels_last, False)

        launches = _launches("max_pool_emu", ("bwd", dtype, channels_last), backward)
    size = 4 if dtype == "fp32" else 2
    N, C, H, W = POOL_SHAPE
    nin, nout = N * C * H * W, N * C * 27 * 27
    floor = size * (nin + nout) + (nout if (with_index or direction == "bwd") else 0)
    layout = f"(alexnet_kernels::PoolLayout){1 if channels_last else 0}"
    types = f"{'float' if dtype == 'fp32' else 'c10::BFloat16'}, float, int>"  # 32-bit index
    kernel = (f"max_pool3x3s2_forward<{layout}, {str(with_index).lower()}, {types}" if direction == "fwd"
              else f"max_pool3x3s2_backward<{layout}, {types}")
    shape = "x".join(map(str, POOL_SHAPE)) + " -> 27x27" + (" channels_last" if channels_last else "")
    return _counts(launches, kernel, shape, floor, scales=True)


LRN_POOL_SHAPE = (1, 96, 55, 55)  # conv1's LRN + pool, one image: 27 x 27 out


def _lrn_pool_counts(direction, dtype, channels_last=False):
    """LRN + max pool 3x3/2 fused at LRN_POOL_SHAPE with the paper's constants; the NCHW kernels
    with the benchmark's channel segments (forward 3, backward 1, as planned for [128, 96, 55,
    55] on 132 SMs), so that a segment's re-read halo is as there; the backward from the
    forward's index."""
    dt = _dtype(dtype)
    params = (5, 1e-4, 0.75, 2.0)
    segments = 0 if channels_last else (3 if direction == "fwd" else 1)

    def forward(m):
        return m.forward(_tensor(LRN_POOL_SHAPE, dt, 0, channels_last), *params, True, False, segments)

    if direction == "fwd":
        launches = _launches("lrn_max_pool_emu", ("fwd", dtype, channels_last), forward)
    else:
        def backward(m):
            y, index = forward(m)
            m.backward(_tensor(tuple(y.shape), dt, 1, channels_last), index,
                       _tensor(LRN_POOL_SHAPE, dt, 0, channels_last), *params, False, segments)

        launches = _launches("lrn_max_pool_emu", ("bwd", dtype, channels_last), backward)
    size = 4 if dtype == "fp32" else 2
    N, C, H, W = LRN_POOL_SHAPE
    nin, nout = N * C * H * W, N * C * 27 * 27
    # forward: read x, write y and the index; backward: read x, the gradient and the index, write dx.
    floor = size * (nin + nout) + nout if direction == "fwd" else 2 * size * nin + (size + 1) * nout
    types = f"{'float' if dtype == 'fp32' else 'c10::BFloat16'}, float, int>"  # 32-bit index
    if channels_last:
        kernel = "lrn_max_pool_forward_nhwc<true, " + types if direction == "fwd" else \
            "lrn_max_pool_backward_nhwc<" + types
    else:
        kernel = "lrn_max_pool_forward_nchw<true, true, " + types if direction == "fwd" else \
            "lrn_max_pool_backward_nchw<true, " + types
    shape = "x".join(map(str, LRN_POOL_SHAPE)) + " -> 27x27" + (" channels_last" if channels_last else "")
    return _counts(launches, kernel, shape, floor, scales=True)


# conv1 at 9 output rows of one image (495 pixels: 4 tiles of 128, the last 111 full): paper
# [1, 3, 43, 227], 96 filters; torchvision [1, 3, 39, 224], 64 filters, padding 2.
CONV_SHAPES = {96: ((1, 3, 43, 227), 0), 64: ((1, 3, 39, 224), 2)}


def _conv_counts(direction, dtype, k, reduce=False):
    """conv1's row-staged forward or its weight gradient (and the chunks' reduction) at a
    CONV_SHAPES shape, with the fused ReLU. The weight gradient is planned for one SM, so that the
    495 pixels make one chunk (at batch 128 on 132 SMs a chunk is 1467 pixels; planned for 132
    SMs, 495 pixels would make 83 chunks of 6). DRAM bytes against the op's floor at that shape
    (x and the weights read, y written; for the gradient x, the gradient and y read): the
    weights and the gradient's partials do not grow with the batch, so the ratio is not carried
    over to the benchmark shape."""
    import torch
    import torch.nn.functional as F

    _emulator("conv_emu")  # first: the tensors below must be allocations the emulator tracks
    shape, pad = CONV_SHAPES[k]
    dt = _dtype(dtype)
    x = _tensor(shape, dt, 0)
    w = (_tensor((k, 3, 11, 11), dt, 1).float() * 0.1).to(dt)
    b = _tensor((k,), dt, 2)
    y = torch.relu(F.conv2d(x.float(), w.float(), b.float(), 4, pad)).to(dt)
    macs = y.numel() * 363
    size = x.element_size()
    if direction == "fwd":
        def call(m):
            m.forward(x, w, b, [4, 4], [pad, pad], True, "rows")

        launches = _launches("conv_emu", ("fwd", dtype, k), call)
        floor = size * (x.numel() + w.numel() + b.numel() + y.numel())
        match = f"conv_fwd_rows_f32<{k // 32}>" if dtype == "fp32" else f"conv_fwd_rows_mma<c10::BFloat16, {k // 32}>"
    else:
        def call(m):
            m.weight_grad(_tensor(tuple(y.shape), dt, 3), x, w, y, [4, 4], [pad, pad], True)

        launches = _launches("conv_emu", ("wgrad", dtype, k), call, sms=1)
        floor = size * (x.numel() + 2 * y.numel())
        if reduce:
            match = f"conv_wgrad_reduce<{'float' if dtype == 'fp32' else 'c10::BFloat16'}>"
            floor = (4 + size) * (k * 363 + k)  # one chunk's partials read, dW and db written
        elif dtype == "fp32":
            match = f"conv_wgrad_igemm<{k // 32}>"
        else:
            match = f"conv_wgrad_igemm_mma<c10::BFloat16, {k // 32}>"
    return _counts(launches, match, "x".join(map(str, shape)) + f" * {k}x3x11x11", floor, scales=False,
                   macs=None if reduce else macs)


COUNT_RUNNERS = {
    "lrn_fwd_column_fp32": lambda: _lrn_counts("fwd", "fp32"),
    "lrn_fwd_column_exact_fp32": lambda: _lrn_counts("fwd", "fp32", exact=True),
    "lrn_fwd_column_bf16": lambda: _lrn_counts("fwd", "bf16"),
    "lrn_bwd_column_fp32": lambda: _lrn_counts("bwd", "fp32"),
    "lrn_bwd_column_exact_fp32": lambda: _lrn_counts("bwd", "fp32", exact=True),
    "lrn_bwd_column_bf16": lambda: _lrn_counts("bwd", "bf16"),
    "lrn_fwd_element_fp32": lambda: _lrn_counts("fwd", "fp32", channels_last=True),
    "lrn_bwd_element_fp32": lambda: _lrn_counts("bwd", "fp32", channels_last=True),
    "max_pool_fwd_3x3s2_fp32": lambda: _pool_counts("fwd", "fp32"),
    "max_pool_fwd_3x3s2_noindex_fp32": lambda: _pool_counts("fwd", "fp32", with_index=False),
    "max_pool_fwd_3x3s2_cl_fp32": lambda: _pool_counts("fwd", "fp32", channels_last=True),
    "max_pool_fwd_3x3s2_bf16": lambda: _pool_counts("fwd", "bf16"),
    "max_pool_bwd_3x3s2_fp32": lambda: _pool_counts("bwd", "fp32"),
    "max_pool_bwd_3x3s2_cl_fp32": lambda: _pool_counts("bwd", "fp32", channels_last=True),
    "max_pool_bwd_3x3s2_bf16": lambda: _pool_counts("bwd", "bf16"),
    "lrn_max_pool_fwd_nchw_fp32": lambda: _lrn_pool_counts("fwd", "fp32"),
    "lrn_max_pool_fwd_nchw_bf16": lambda: _lrn_pool_counts("fwd", "bf16"),
    "lrn_max_pool_bwd_nchw_fp32": lambda: _lrn_pool_counts("bwd", "fp32"),
    "lrn_max_pool_bwd_nchw_bf16": lambda: _lrn_pool_counts("bwd", "bf16"),
    "conv_fwd_rows_f32_torchvision": lambda: _conv_counts("fwd", "fp32", 64),
    "conv_fwd_rows_f32_paper": lambda: _conv_counts("fwd", "fp32", 96),
    "conv_fwd_rows_bf16_torchvision": lambda: _conv_counts("fwd", "bf16", 64),
    "conv_fwd_rows_bf16_paper": lambda: _conv_counts("fwd", "bf16", 96),
    "conv_wgrad_f32_torchvision": lambda: _conv_counts("wgrad", "fp32", 64),
    "conv_wgrad_f32_paper": lambda: _conv_counts("wgrad", "fp32", 96),
    "conv_wgrad_bf16_torchvision": lambda: _conv_counts("wgrad", "bf16", 64),
    "conv_wgrad_bf16_paper": lambda: _conv_counts("wgrad", "bf16", 96),
    "conv_wgrad_reduce_f32": lambda: _conv_counts("wgrad", "fp32", 96, reduce=True),
}


# ---- gathering --------------------------------------------------------------------------------------
@dataclass
class Result:
    spec: dict
    name: str = ""
    kernel: str = ""
    resources: dict = field(default_factory=dict)
    local_instructions: int = 0
    occupancy: dict = field(default_factory=dict)
    loop: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    prediction: dict = field(default_factory=dict)
    error: str = ""


def extension_sass():
    """(sass by mangled name, resources by mangled name, None) or (None, None, why skipped)."""
    try:
        import alexnet_kernels
    except Exception as e:  # noqa: BLE001 - any import failure means no extension to read
        return None, None, f"alexnet_kernels does not import ({e})"
    info = alexnet_kernels.build_info()
    if not info.get("cuda_kernels_built"):
        return None, None, f"the extension was built without CUDA kernels ({info.get('cpu_only_reason')})"
    sos = glob.glob(os.path.join(os.path.dirname(alexnet_kernels.__file__), "_C*.so"))
    cuobjdump = tool("cuobjdump")
    if not sos or cuobjdump is None:
        return None, None, "no extension binary or no cuobjdump (install triton, or a CUDA toolkit)"
    so = sos[0]
    sass = run([cuobjdump, "-arch", ARCH, "-sass", so])
    if "Function :" not in sass:
        archs = info.get("cuda_archs")
        return None, None, f"{os.path.basename(so)} holds no {ARCH} code (TORCH_CUDA_ARCH_LIST={archs})"
    res = run([cuobjdump, "-arch", ARCH, "-res-usage", so])
    return parse_sass(sass), parse_res_usage(res), None


def triton_sass(specs):
    """Compiles the Triton kernels the specs name for sm_90; {spec name: (sass, resources)}."""
    want = {s["name"]: s["triton"] for s in specs if s["source"] == "triton"}
    if not want:
        return {}, None
    try:
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError as e:
        return {}, f"triton is not importable ({e})"
    if os.environ.get("TRITON_INTERPRET"):
        return {}, "TRITON_INTERPRET is set: the Triton kernels were decorated for the interpreter"
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import triton_aot

    cuobjdump = tool("cuobjdump")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, ref in want.items():
            fn_name, ty = ref.split(":")
            for fn, sig, consts in triton_aot.kernels(ty):
                if fn.fn.__name__ != fn_name:
                    continue
                names = list(sig)
                attrs = {(names.index(a),): [["tt.divisibility", 16]]
                         for a, t in sig.items() if t.startswith("*") or a == "n_elements"}
                src = ASTSource(fn=fn, signature=sig, attrs=attrs,
                                constexprs={(names.index(k),): v for k, v in consts.items()})
                k = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                                   options={"num_warps": triton_aot.cfg.WARPS_GPU})
                path = os.path.join(tmp, f"{name}.cubin")
                with open(path, "wb") as f:
                    f.write(k.asm["cubin"])
                sass = parse_sass(run([cuobjdump, "-sass", path]))
                res = parse_res_usage(run([cuobjdump, "-res-usage", path]))
                (mangled,) = sass
                out[name] = (mangled, sass[mangled], res.get(mangled, {}))
    return out, None


def analyse(spec, mangled, instrs, res, counts):
    r = Result(spec=spec, name=spec["name"], kernel=mangled, resources=res)
    r.local_instructions = sum(1 for i in instrs if i.base in ("LDL", "STL"))
    r.occupancy = occupancy(res.get("reg", 0), res.get("shared", 0), int(spec.get("threads", 256)))
    try:
        r.loop = path_stats(hot_path(instrs, spec), spec)
        if spec.get("path_mix"):
            mix = spec["path_mix"]
            other = path_stats(hot_path(instrs, {**spec, "path_has": mix["path_has"]}), spec)
            r.loop = blend_stats(r.loop, other, float(mix["share"]))
    except LookupError as e:
        r.error = str(e)
        return r
    r.counts = counts or {}
    elements = evaluate(spec["elements"])
    iters = evaluate(spec.get("thread_iterations", f"({spec['elements']}) / {spec['per_iteration']}"))
    warp_iters = iters / 32
    issue = r.loop["path_instructions"] * warp_iters / (SMS * SCHEDULERS * CLOCK_HZ)
    floor_bytes = evaluate(spec["floor_bytes"])
    dram, dram_from = floor_bytes, "floor"
    if r.counts.get("dram_scales"):  # the emulator's unique sectors over the floor, carried over
        dram, dram_from = floor_bytes * r.counts["dram_vs_floor"], "emulator"
    memory = dram / BANDWIDTH
    tensor = r.loop["hmma"] * warp_iters / (SMS * HMMA_PER_CLK * CLOCK_HZ)
    sfu = r.loop["mufu"] * iters / (SMS * SFU_LANES * CLOCK_HZ)
    terms = {"issue": issue, "memory": memory, "tensor": tensor, "sfu": sfu}
    bound = max(terms, key=terms.get)
    floor = floor_bytes / BANDWIDTH
    if spec.get("floor_flops"):
        floor = max(floor, evaluate(spec["floor_flops"]) / PEAK_FLOPS[spec.get("dtype", "fp32")])
    r.prediction = {"elements": elements, "thread_iterations": iters, "dram_bytes": dram, "dram_from": dram_from,
                    **{f"{k}_ms": v * 1e3 for k, v in terms.items()}, "predicted_ms": terms[bound] * 1e3,
                    "bound": bound, "floor_ms": floor * 1e3, "vs_floor": terms[bound] / floor}
    return r


def gather(with_counts=True):
    with open(CONFIG, "rb") as f:
        specs = tomllib.load(f)["kernel"]
    notes = []
    sass, res, why = extension_sass()
    if why:
        notes.append(f"CUDA kernels skipped: {why}.")
    names = demangle(list(sass)) if sass else {}
    tri, why_t = triton_sass(specs)
    if why_t:
        notes.append(f"Triton kernels skipped: {why_t}.")
    results = []
    uncounted = {}  # why -> the entries it left without counts
    counted, started = 0, time.monotonic()
    for spec in specs:
        counts = None
        if with_counts and spec.get("counts") and (sass or spec["source"] == "triton"):
            try:
                counts = COUNT_RUNNERS[spec["counts"]]()
                counted += 1
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:  # noqa: BLE001 - also pytest's skip (no compiler): go on without counts
                why = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
                uncounted.setdefault(why, []).append(spec["name"])
        if spec["source"] == "cuda":
            if not sass:
                continue
            hits = [m for m, d in names.items() if spec["match"] in d]
            if len(hits) != 1:
                r = Result(spec=spec, name=spec["name"],
                           error=f"`match` picks {len(hits)} kernels: {[names[h][:90] for h in hits][:4]}")
                results.append(r)
                continue
            mangled = hits[0]
            r = analyse(spec, mangled, sass[mangled], res.get(mangled, {}), counts)
            r.kernel = names[mangled]
            if counts and spec["match"] not in counts["kernel"] and not r.error:
                r.error = f"the counts runner {spec['counts']!r} counted another kernel: {counts['kernel'][:100]}"
        else:
            if spec["name"] not in tri:
                continue
            mangled, instrs, rres = tri[spec["name"]]
            r = analyse(spec, mangled, instrs, rres, counts)
        results.append(r)
    notes += [f"No emulator counts for {', '.join(names)} ({why})." for why, names in uncounted.items()]
    if counted:
        notes.append(f"Emulator counts: {counted} kernels in {time.monotonic() - started:.1f} s, harness builds "
                     "included (cached in build/cuda_emu/).")
    return results, notes


# ---- output ---------------------------------------------------------------------------------------
def _ld(d):
    return " ".join(f"{c:.3g}x{w * 8}" for w, c in d.items() if c) or "-"


def _n(x):
    """A count for the tables: whole where it is, else 3 significant digits (a path_mix blend)."""
    return "-" if not x else f"{x:.4g}"


def table(title, cols, rows):
    lines = [f"### {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render(results, notes, recorded):
    out = ["## Static cost report (sm_90 machine code, H200 model)", ""]
    out += [f"- {n}" for n in notes]
    ok = [r for r in results if not r.error]
    out.append("")
    out.append(table(
        "Resources and occupancy (256-thread blocks unless noted)",
        ["kernel", "op", "regs", "stack B", "smem B", "local B", "LDL/STL", "blocks/SM", "warps/SM", "limited by"],
        [[r.name, r.spec["op"], r.resources.get("reg", "?"), r.resources.get("stack", "?"),
          r.resources.get("shared", "?"), r.resources.get("local", "?"), r.local_instructions,
          r.occupancy["blocks_per_sm"], r.occupancy["warps_per_sm"], r.occupancy["limited_by"]] for r in ok]))
    rows = []
    for r in ok:
        L = r.loop
        rec = recorded.get(r.name, {}).get("instructions_per_element")
        kind = r.spec.get("loop", "innermost") + ("" if r.spec.get("path", "longest") == "longest" else ", shortest")
        if r.spec.get("inner_trips"):
            kind += f", inner x{r.spec['inner_trips']}"
        if r.spec.get("path_mix"):
            kind += f", mix {r.spec['path_mix']['share']:g}"
        rows.append([r.name, kind, _n(L["path_instructions"]), f"{r.spec['per_iteration']} {r.spec['element']}",
                     f"{L['instructions_per_element']:.3f}", f"{rec:.3f}" if rec else "-",
                     f"{100 * L['ffma_share']:.0f}%", f"{100 * L['hmma_share']:.1f}%", _n(L["mufu"]),
                     _ld(L["ldg"]), _ld(L["stg"]), _n(L["ldgsts"]), _ld(L["lds"]), _ld(L["sts"]), _n(L["ldsm"]),
                     _n(L["local"]) if L["local"] else 0])
    out.append(table(
        "Hot loop: one pass along the path cost_kernels.toml names (loads as count x bits)",
        ["kernel", "loop, path", "instr", "per pass", "instr/elem", "recorded", "FFMA", "HMMA", "MUFU", "LDG", "STG",
         "cp.async", "LDS", "STS", "LDSM", "LDL/STL"], rows))
    rows = []
    for r in ok:
        p = r.prediction
        rows.append([r.name, r.spec["shape"], f"{p['elements']:.3g}", f"{p['issue_ms']:.4f}", f"{p['memory_ms']:.4f}",
                     f"{p['tensor_ms']:.4f}" if p["tensor_ms"] else "-", f"{p['sfu_ms']:.4f}" if p["sfu_ms"] else "-",
                     f"{p['predicted_ms']:.4f}", p["bound"], f"{p['floor_ms']:.4f}", f"{p['vs_floor']:.2f}x",
                     p["dram_from"]])
    out.append(table(
        "Predicted time on an H200 at the benchmark shape (ms; a model, not a measurement)",
        ["kernel", "shape", "elements", "issue", "memory", "tensor", "sfu", "predicted", "bound", "floor",
         "pred/floor", "bytes from"], rows))
    counted = [r for r in ok if r.counts]
    if counted:
        def f(c, key, fmt="{:.2f}"):
            return fmt.format(c[key]) if key in c else "-"
        rows = [[r.name, c["shape"], f(c, "gld_efficiency"), f(c, "gld_sectors_per_request"),
                 f(c, "gst_efficiency"), f(c, "gst_sectors_per_request"), f"{c['dram_bytes']:,}",
                 f"{c['dram_vs_floor']:.3f}", f(c, "lds_bank_ways"), f(c, "sts_bank_ways"), c.get("mma", "-"),
                 f(c, "mma_useful", "{:.3f}"), c.get("ldmatrix", "-"), "yes" if c["uniform"] else "no"]
                for r in counted for c in [r.counts]]
        out.append(table(
            "CUDA emulator counts at a small shape (the same kernels and planning, run on the CPU)",
            ["kernel", "shape", "gld eff", "gld sect/req", "gst eff", "gst sect/req", "DRAM bytes", "DRAM/floor",
             "LDS ways", "STS ways", "mma", "mma useful", "ldmatrix", "warp-uniform"], rows))
        out.append("eff = bytes requested / (sectors x 32), above 1 where lanes load the same bytes; sect/req ="
                   " 32-byte sectors per warp request; DRAM"
                   " bytes = unique sectors x 32 (each sector read or written once: the least DRAM traffic), over"
                   " the op's floor at that shape; ways = bank-conflict wavefronts per request phase (1:"
                   " conflict-free; ldmatrix included in LDS); mma useful = MACs / (mma x 2048).\n")
    spills = [r for r in ok if r.spec.get("hot")
              and (r.local_instructions or r.resources.get("local") or r.resources.get("stack"))]
    if spills:
        out.append("### Hot kernels that spill or use local memory\n")
        out += [f"- {r.name}: {r.resources.get('stack')}-byte stack, {r.resources.get('local')} bytes local, "
                f"{r.local_instructions} LDL/STL ({r.loop['local']} in the hot loop)"
                + (f"; known: {r.spec['known_spill']}" if r.spec.get("known_spill") else "; NOT EXPECTED")
                for r in spills]
        out.append("")
    errors = [r for r in results if r.error]
    if errors:
        out.append("### Configuration errors\n")
        out += [f"- {r.name}: {r.error}" for r in errors]
    out.append("""Formulas: issue = path instructions x thread passes / 32 / (132 SMs x 4 x 1.98 GHz); memory = bytes /
4.3 TB/s; tensor = HMMA on the path x thread passes / 32 / (132 x 0.5 per clock x 1.98 GHz); sfu = MUFU
on the path x thread passes / (132 x 16 x 1.98 GHz); predicted = the largest; floor = max(floor bytes /
4.3 TB/s, useful FLOPs / 51 TFLOP/s fp32 or 788 TFLOP/s bf16). Only the hot loop is counted.
""")
    return "\n".join(out)


def figures(results):
    return {r.name: {"kernel": r.kernel, "instructions_per_element": round(r.loop["instructions_per_element"], 4),
                     "path_instructions": round(r.loop["path_instructions"], 3), "registers": r.resources.get("reg"),
                     "stack": r.resources.get("stack"), "local": r.resources.get("local"),
                     "ldl_stl": r.local_instructions, "hot": bool(r.spec.get("hot")),
                     "known_spill": r.spec.get("known_spill"),
                     "predicted_ms": round(r.prediction["predicted_ms"], 5),
                     **({"counts": {k: round(v, 4) if isinstance(v, float) else v for k, v in r.counts.items()
                                    if k not in ("kernel", "dram_scales")}} if r.counts else {})}
            for r in results if not r.error}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write every figure as JSON to this file")
    ap.add_argument("--record", action="store_true", help="write bench/cost_figures.json from this build")
    ap.add_argument("--no-counts", action="store_true", help="skip the CUDA emulator's counts")
    args = ap.parse_args(argv)
    recorded = {}
    if os.path.exists(FIGURES):
        with open(FIGURES) as f:
            recorded = json.load(f).get("kernels", {})
    results, notes = gather(with_counts=not args.no_counts)
    print(render(results, notes, recorded))
    figs = figures(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"notes": notes, "kernels": figs,
                       "details": {r.name: {"loop": r.loop, "occupancy": r.occupancy, "counts": r.counts,
                                            "prediction": r.prediction, "error": r.error} for r in results}},
                      f, indent=1)
    if args.record:
        if not any(r.spec["source"] == "cuda" for r in results):
            sys.exit("cost_report: nothing to record without the CUDA kernels' sm_90 code")
        with open(CONFIG, "rb") as f:
            listed = {s["name"] for s in tomllib.load(f)["kernel"]}
        # Kernels this run skipped (Triton without a GPU compiler, say) keep their figures, and
        # kernels counted before keep their counts when this run had none; entries no longer
        # listed go.
        keep = {k: v for k, v in recorded.items() if k in listed and k not in figs}
        for k, v in figs.items():
            if "counts" not in v and "counts" in recorded.get(k, {}):
                v["counts"] = recorded[k]["counts"]
        with open(FIGURES, "w") as f:
            json.dump({"note": "bench/cost_report.py --record; tests/test_cost_report.py compares against these",
                       "kernels": {**keep, **figs}}, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"recorded {len(figs)} kernels in {os.path.relpath(FIGURES, ROOT)}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
