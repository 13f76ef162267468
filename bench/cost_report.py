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
  - the hot loop (cost_kernels.toml's `loop`): the longest path through it (its inner loops, if
    any, counted once), with the opcode histogram along that path: instructions per element
    (path length / per_iteration), the FFMA and HMMA shares, 128-, 64- and 32-bit global and
    shared loads, MUFU (special-function) instructions, and LDL/STL;
  - the prediction, from these and the machine's rates below:
        issue  = path instructions x thread_iterations / 32 / (132 SMs x 4 schedulers x clock)
        memory = DRAM bytes / bandwidth, DRAM bytes = floor_bytes (or, where the emulator counted
                 the kernel's global traffic, its unique sectors x 32 scaled to the shape)
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
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout.split("\n")
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
            cur.append(Instr(int(m.group(1), 16), bool(m.group(2)), m.group(3), m.group(4)))
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


def longest_path(instrs, start, end, loop):
    """The instructions on the longest path from `start` through [start, end]: to the branch back
    to `start` (a loop) or to an EXIT (the whole kernel). Branches leaving the range end a path
    that does not count; branches back inside the range (inner loops) are not followed, so an
    inner loop's body counts once."""
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
    index = {b[0].addr: n for n, b in enumerate(blocks)}
    best = [None] * len(blocks)  # (length, predecessor) of the longest path reaching each block
    best[0] = (0, None)
    done_len, done_at = -1, None
    for n, b in enumerate(blocks):
        if best[n] is None:
            continue
        length = best[n][0] + len(b)
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
        if terminal and length > done_len:
            done_len, done_at = length, n
        for s in succs:
            if best[s] is None or best[s][0] < length:
                best[s] = (length, n)
    if done_at is None:
        return body  # no path closes the region: count it all
    path, n = [], done_at
    while n is not None:
        path[:0] = blocks[n]
        n = best[n][1]
    return path


def hot_path(instrs, spec):
    kind = spec.get("loop", "innermost")
    if kind == "kernel":
        return longest_path(instrs, instrs[0].addr, instrs[-1].addr, loop=False)
    found = [(h, e) for h, e in loops(instrs) if e > h]
    if kind == "outermost":
        found.sort(key=lambda x: x[0] - x[1])
    else:
        want = spec.get("loop_has")
        found = [(h, e) for h, e in found if any(h <= i.addr <= e and i.base == want for i in instrs)]
        found.sort(key=lambda x: x[1] - x[0])
    if not found:
        raise LookupError(f"{spec['name']}: no {kind} loop" + (f" holding {spec.get('loop_has')}" if kind != "outermost" else ""))
    return longest_path(instrs, found[0][0], found[0][1], loop=True)


def mem_width(i):
    """Bytes moved per lane by a load or store opcode (LDG.E.128 -> 16; LDG.E -> 4)."""
    for w, b in ((".128", 16), (".64", 8), (".U16", 2), (".S16", 2), (".U8", 1), (".S8", 1)):
        if w in i.op:
            return b
    return 4


def path_stats(path, spec):
    hist = Counter(i.base for i in path if i.base != "NOP")
    n = sum(hist.values())
    per = float(spec["per_iteration"])
    def loads(prefix):
        c = Counter(mem_width(i) for i in path if i.base == prefix)
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
        "local": hist.get("LDL", 0) + hist.get("STL", 0),
        "histogram": dict(hist.most_common()),
    }


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
def _conv_counts(direction, dtype_name, k):
    """Runs conv1's kernels under the CUDA emulator at a small shape (2 images of 39 x 39: 128 output
    pixels, one whole tile; per-element counts do not depend on the batch) and returns what it
    counted, per element (a MAC)."""
    import torch

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from cuda_emu import build

    m = build.load("conv_emu")
    emu = build.runtime(m)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 39, 39, generator=g).to(dtype)
    w = (torch.randn(k, 3, 11, 11, generator=g) * 0.1).to(dtype)
    b = torch.randn(k, generator=g).to(dtype)
    with emu.configured(multiprocessors=SMS), emu.record() as launches:
        if direction == "fwd":
            y = m.forward(x, w, b, [4, 4], [0, 0], True)
        else:
            y = torch.relu(torch.nn.functional.conv2d(x.float(), w.float(), b.float(), 4)).to(dtype)
            m.weight_grad(torch.randn(y.shape, generator=g).to(dtype), x, w, y, [4, 4], [0, 0], True)
    main = launches[0]
    macs = y.numel() * 3 * 11 * 11
    out = {"kernel": main.kernel, "mma": main.mma, "mma_useful": macs / (2048 * main.mma) if main.mma else 0.0,
           "counted_global": main.global_load.requests + main.global_store.requests > 0, "uniform": main.uniform}
    if out["counted_global"]:
        out["dram_bytes_per_element"] = main.dram_bytes / macs
        out["gld_efficiency"] = main.global_load.efficiency
        out["gst_efficiency"] = main.global_store.efficiency
    if main.shared_load.requests:
        out["lds_bank_ways"] = main.shared_load.bank_ways
        out["sts_bank_ways"] = main.shared_store.bank_ways
    return out


COUNT_RUNNERS = {
    "conv_fwd_paper_fp32": lambda: _conv_counts("fwd", "fp32", 96),
    "conv_fwd_paper_bf16": lambda: _conv_counts("fwd", "bf16", 96),
    "conv_wgrad_paper_fp32": lambda: _conv_counts("wgrad", "fp32", 96),
    "conv_wgrad_paper_bf16": lambda: _conv_counts("wgrad", "bf16", 96),
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
        return None, None, f"{os.path.basename(so)} holds no {ARCH} code (TORCH_CUDA_ARCH_LIST={info.get('cuda_archs')})"
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
    if r.counts.get("dram_bytes_per_element"):
        dram, dram_from = r.counts["dram_bytes_per_element"] * elements, "emulator"
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
    for spec in specs:
        counts = None
        if with_counts and spec.get("counts") and (sass or spec["source"] == "triton"):
            try:
                counts = COUNT_RUNNERS[spec["counts"]]()
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:  # noqa: BLE001 - also pytest's skip (no compiler): go on without counts
                notes.append(f"{spec['name']}: no emulator counts ({type(e).__name__}: {str(e).splitlines()[0][:200]}).")
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
        else:
            if spec["name"] not in tri:
                continue
            mangled, instrs, rres = tri[spec["name"]]
            r = analyse(spec, mangled, instrs, rres, counts)
        results.append(r)
    return results, notes


# ---- output ---------------------------------------------------------------------------------------
def _ld(d):
    return " ".join(f"{c}x{w * 8}" for w, c in d.items()) or "-"


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
        rows.append([r.name, r.spec.get("loop"), L["path_instructions"], f"{r.spec['per_iteration']} {r.spec['element']}",
                     f"{L['instructions_per_element']:.3f}", f"{rec:.3f}" if rec else "-",
                     f"{100 * L['ffma_share']:.0f}%", f"{100 * L['hmma_share']:.1f}%", L["mufu"],
                     _ld(L["ldg"]), _ld(L["stg"]), _ld(L["lds"]), _ld(L["sts"]), L["local"]])
    out.append(table(
        "Hot loop: the longest path through one pass (loads as count x bits)",
        ["kernel", "loop", "instr", "per pass", "instr/elem", "recorded", "FFMA", "HMMA", "MUFU", "LDG", "STG",
         "LDS", "STS", "LDL/STL"], rows))
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
        rows = [[r.name, r.counts.get("mma", 0), f"{r.counts['mma_useful']:.3f}" if r.counts.get("mma") else "-",
                 f"{r.counts['gld_efficiency']:.2f}" if "gld_efficiency" in r.counts else "not counted (raw)",
                 f"{r.counts['gst_efficiency']:.2f}" if "gst_efficiency" in r.counts else "-",
                 f"{r.counts['lds_bank_ways']:.2f}" if "lds_bank_ways" in r.counts else "-",
                 ("yes" if r.counts.get("uniform") else "no") if r.counts.get("counted_global") else "-"]
                for r in counted]
        out.append(table("CUDA emulator counts (input 2 x 3 x 39 x 39: 128 output pixels; planned for 132 SMs; "
                         "useful = MACs / (mma x 2048); efficiency = bytes / (sectors x 32))",
                         ["kernel", "mma", "useful", "gld efficiency", "gst efficiency", "LDS ways",
                          "warp-uniform"], rows))
    spills = [r for r in ok if r.spec.get("hot") and (r.local_instructions or r.resources.get("local") or r.resources.get("stack"))]
    if spills:
        out.append("### Hot kernels that spill or use local memory\n")
        out += [f"- {r.name}: {r.resources.get('stack')}-byte stack, {r.resources.get('local')} bytes local, "
                f"{r.local_instructions} LDL/STL ({r.loop['local']} in the hot loop)"
                + (f"; known: {r.spec['known_spill']}" if r.spec.get("known_spill") else "; NOT EXPECTED") for r in spills]
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
                     "path_instructions": r.loop["path_instructions"], "registers": r.resources.get("reg"),
                     "stack": r.resources.get("stack"), "local": r.resources.get("local"),
                     "ldl_stl": r.local_instructions, "hot": bool(r.spec.get("hot")),
                     "known_spill": r.spec.get("known_spill"),
                     "predicted_ms": round(r.prediction["predicted_ms"], 5)}
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
        keep = {k: v for k, v in recorded.items() if k not in figs}  # e.g. Triton figures when it was skipped
        with open(FIGURES, "w") as f:
            json.dump({"note": "bench/cost_report.py --record; tests/test_cost_report.py compares against these",
                       "kernels": {**keep, **figs}}, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"recorded {len(figs)} kernels in {os.path.relpath(FIGURES, ROOT)}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
