"""The emulator inside a harness module: its sanitizer switches and the counts of its launches.

    from cuda_emu import build
    m = build.load("conv_emu")
    emu = build.runtime(m)
    emu.configure(multiprocessors=132)          # plan as on an H200
    with emu.record() as launches:
        m.forward(x, w, b, s, p, True)
    for launch in launches:
        print(launch.summary())
        launch.global_load.efficiency           # requested / (sectors x 32)
        launch.dram_bytes                       # unique sectors x 32: a lower bound on DRAM traffic

A sanitizer failure raises RuntimeError from the harness call that launched the kernel, its
message starting "cuda_emu <check>: " (memcheck, initcheck, racecheck, synccheck) and naming the
kernel, block, thread and address. docs/emulator.md describes every field.
"""
from __future__ import annotations

import ctypes
import json
from contextlib import contextmanager
from dataclasses import dataclass, field

CHECKS = ("memcheck", "initcheck", "racecheck", "synccheck")


@dataclass
class Access:
    """One kind of access (global or shared, load or store) summed over a launch.

    instructions: lane accesses; requests: warp-wide accesses (lanes grouped by their n-th access
    at the same site); bytes: requested. Global: sectors, the 32-byte sectors each request touched,
    summed; unique_sectors, those touched at least once over the launch. Shared: wavefronts, the
    bank-conflict passes each request took, summed, against ideal_wavefronts (one per phase)."""

    instructions: int = 0
    requests: int = 0
    bytes: int = 0
    sectors: int = 0
    unique_sectors: int = 0
    wavefronts: int = 0
    ideal_wavefronts: int = 0
    requests_by_width: dict = field(default_factory=dict)

    @property
    def efficiency(self) -> float:
        """Coalescing efficiency: bytes requested / (sectors x 32); 1.0 is perfect."""
        return self.bytes / (32 * self.sectors) if self.sectors else float("nan")

    @property
    def sectors_per_request(self) -> float:
        return self.sectors / self.requests if self.requests else float("nan")

    @property
    def bank_ways(self) -> float:
        """Bank-conflict ways per request phase: wavefronts / ideal; 1.0 is conflict-free."""
        return self.wavefronts / self.ideal_wavefronts if self.ideal_wavefronts else float("nan")


@dataclass
class Launch:
    """One kernel launch as the emulator ran it."""

    kernel: str
    grid: tuple
    threads: int
    blocks: int
    shared_bytes: int  # AK_SHARED bytes per block (raw __shared__ arrays are not seen)
    counted: bool
    global_load: Access
    global_store: Access
    shared_load: Access
    shared_store: Access
    mma: int
    ldmatrix: int
    shuffles: int
    votes: int
    syncwarps: int
    barriers: int  # block-wide barriers released, summed over blocks
    nonuniform_requests: int
    nonuniform_examples: list
    error: str | None

    @classmethod
    def from_json(cls, d: dict) -> Launch:
        def acc(k, unique=None):
            a = Access(**d[k])
            if unique is not None:
                a.unique_sectors = d[unique]
            return a

        return cls(
            kernel=d["kernel"], grid=tuple(d["grid"]), threads=d["threads"], blocks=d["blocks"],
            shared_bytes=d["shared_bytes"], counted=d["counted"],
            global_load=acc("global_load", "global_load_unique_sectors"),
            global_store=acc("global_store", "global_store_unique_sectors"),
            shared_load=acc("shared_load"), shared_store=acc("shared_store"),
            mma=d["mma"], ldmatrix=d["ldmatrix"], shuffles=d["shuffles"], votes=d["votes"],
            syncwarps=d["syncwarps"], barriers=d["barriers"], nonuniform_requests=d["nonuniform_requests"],
            nonuniform_examples=d["nonuniform_examples"], error=d["error"])

    @property
    def dram_bytes(self) -> int:
        """32 x the unique sectors loaded plus those stored: the least DRAM traffic the launch
        can cause (each sector read once, written once)."""
        return 32 * (self.global_load.unique_sectors + self.global_store.unique_sectors)

    @property
    def uniform(self) -> bool:
        """Whether every warp's lanes reached each access site equally often between
        synchronisations, so that the grouping into requests is the GPU's."""
        return self.nonuniform_requests == 0

    def mma_per_output(self, outputs: int) -> float:
        return self.mma / outputs

    def summary(self) -> str:
        g, s = self.global_load, self.global_store
        parts = [f"{self.kernel} grid {self.grid} x {self.threads}"]
        for name, a in (("gld", g), ("gst", s)):
            if a.requests:
                parts.append(f"{name} {a.bytes} B in {a.requests} req, {a.sectors_per_request:.2f} sect/req, "
                             f"eff {a.efficiency:.2f}, unique {a.unique_sectors} sect")
        for name, a in (("lds", self.shared_load), ("sts", self.shared_store)):
            if a.requests:
                parts.append(f"{name} {a.requests} req, {a.bank_ways:.2f} ways")
        if self.mma:
            parts.append(f"mma {self.mma}")
        if not self.uniform:
            parts.append(f"NON-UNIFORM ({self.nonuniform_requests} requests)")
        return "; ".join(parts)


class Emulator:
    """The emulator linked into one harness module (each module has its own state)."""

    def __init__(self, module):
        self._lib = lib = ctypes.CDLL(module.__file__)
        lib.ak_emu_launches_json.restype = ctypes.c_char_p
        lib.ak_emu_config_json.restype = ctypes.c_char_p
        lib.ak_emu_dropped.restype = ctypes.c_ulonglong
        lib.ak_emu_configure.argtypes = [ctypes.c_int] * 6
        lib.ak_emu_track.argtypes = [ctypes.c_void_p, ctypes.c_ulonglong]
        lib.ak_emu_untrack.argtypes = [ctypes.c_void_p]
        lib.ak_emu_is_tracked.argtypes = [ctypes.c_void_p, ctypes.c_ulonglong]

    def configure(self, *, memcheck=None, initcheck=None, racecheck=None, synccheck=None, count=None,
                  multiprocessors=None) -> None:
        """Switch checks and counting on or off (None: unchanged); multiprocessors is what
        Launcher::multiprocessors() tells the kernels' host planning (default 2)."""
        def flag(v) -> int:
            return -1 if v is None else int(bool(v))

        self._lib.ak_emu_configure(flag(memcheck), flag(initcheck), flag(racecheck), flag(synccheck), flag(count),
                                   0 if multiprocessors is None else int(multiprocessors))

    def config(self) -> dict:
        return json.loads(self._lib.ak_emu_config_json())

    @contextmanager
    def configured(self, **flags):
        """configure() for the duration of a with block."""
        before = self.config()
        self.configure(**flags)
        try:
            yield self
        finally:
            self.configure(**before)

    def clear(self) -> None:
        self._lib.ak_emu_clear()

    def launches(self) -> list[Launch]:
        """The launches since the last clear() (at most the last 4096), oldest first."""
        return [Launch.from_json(d) for d in json.loads(self._lib.ak_emu_launches_json())]

    @contextmanager
    def record(self):
        """Collects the launches made inside the with block into the list it yields."""
        self.clear()
        out: list[Launch] = []
        try:
            yield out
        finally:
            out.extend(self.launches())

    def track(self, tensor) -> None:
        """Registers a tensor's storage as device memory (for memory the emulator's tracking
        allocator did not hand out: tensors made before the harness was loaded, from_blob ones)."""
        st = tensor.untyped_storage()
        self._lib.ak_emu_track(st.data_ptr(), st.nbytes())

    def untrack(self, tensor) -> None:
        self._lib.ak_emu_untrack(tensor.untyped_storage().data_ptr())

    def is_tracked(self, tensor) -> bool:
        st = tensor.untyped_storage()
        return bool(self._lib.ak_emu_is_tracked(st.data_ptr(), max(1, st.nbytes())))
