"""The CUDA emulator's own tests (tests/cuda_emu, kernels in emu_selftest.cpp).

Each sanitizer check has a kernel with a planted bug that it must catch, with the kernel, block,
thread and address in the message, and a correct kernel that it must pass. The counters are
checked on kernels whose counts follow from their access patterns (coalesced, strided and vector
loads, bank conflicts, mma instructions), and the warp built-ins against their definitions.
"""
import re

import numpy as np
import pytest
import torch
from cuda_emu import build


@pytest.fixture(scope="module")
def m():
    return build.load("emu_selftest")


@pytest.fixture(scope="module")
def emu(m):
    return build.runtime(m)


@pytest.fixture(autouse=True)
def all_checks_on(emu):
    emu.configure(memcheck=True, initcheck=True, racecheck=True, synccheck=True, count=True, multiprocessors=2)
    yield


def rand(n, seed=0):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


def nan(n):
    return torch.full((n,), float("nan"))


# ---- memcheck ---------------------------------------------------------------------------------------

def test_memcheck_passes_a_guarded_copy(m):
    x, y = rand(1000), nan(1000)
    m.copy_shifted(x, y, 1000, 0, True, 4)
    assert torch.equal(x, y)


def test_memcheck_catches_a_missing_bounds_test(m):
    # 4 blocks of 256 threads over 1000 elements: thread 232 of block 3 reads x[1000].
    x, y = rand(1000), nan(1000)
    with pytest.raises(RuntimeError, match=r"cuda_emu memcheck: .*copy_shifted.*block \(3,0,0\), thread 232: "
                                           r"global load of 4 bytes at 0x[0-9a-f]+ is out of bounds of the "
                                           r"4000-byte tensor .*4 bytes past its end"):
        m.copy_shifted(x, y, 1000, 0, False, 4)


@pytest.mark.parametrize("shift, where", [(1, "4 bytes past its end"), (-1, "4 bytes before its start")])
def test_memcheck_catches_off_by_one(m, shift, where):
    x, y = rand(1000), nan(1000)
    with pytest.raises(RuntimeError, match=re.escape(where)):
        m.copy_shifted(x, y, 1000, shift, True, 4)


def test_memcheck_store_out_of_bounds(m):
    # y is one element short: the store of element 999 falls outside it.
    x, y = rand(1000), nan(999)
    with pytest.raises(RuntimeError, match=r"memcheck: .*block \(3,0,0\), thread 231: global store of 4 bytes "
                                           r".* 3996-byte tensor"):
        m.copy_shifted(x, y, 1000, 0, True, 4)


def test_memcheck_catches_a_misaligned_vector_load(m):
    x, y = rand(1024), nan(32)
    m.load_vec(x, y, 0)
    assert torch.allclose(y, x[:128].view(32, 4).sum(1))
    with pytest.raises(RuntimeError, match=r"memcheck: .*thread 0: misaligned global load of 16 bytes"):
        m.load_vec(x, y, 1)


def test_memcheck_knows_only_tracked_memory(m, emu):
    y = nan(64)
    with pytest.raises(RuntimeError, match=r"memcheck: .*thread 0: global load of 4 bytes at 0x[0-9a-f]+, which is "
                                           r"in no tensor the emulator knows"):
        m.read_untracked(y)
    m.read_tracked(y)  # the same kernel, the memory registered with emu::track
    assert torch.equal(y[:32], torch.ones(32))
    with pytest.raises(RuntimeError, match=r"memcheck: .*through a null pointer"):
        m.null_read(y)


def test_tracking_allocator_and_explicit_tracking(m, emu):
    t = torch.empty(100)  # made after the harness loaded: its allocator tracked it
    assert emu.is_tracked(t)
    a = np.ones(4096, dtype=np.float32)
    x = torch.from_numpy(a)  # numpy's memory: unknown to the emulator
    assert not emu.is_tracked(x)
    y = nan(1000)
    with pytest.raises(RuntimeError, match="in no tensor the emulator knows"):
        m.copy_shifted(x, y, 1000, 0, True, 4)
    emu.track(x)
    try:
        m.copy_shifted(x, y, 1000, 0, True, 4)
    finally:
        emu.untrack(x)
    assert torch.equal(y, torch.ones(1000))
    # Bounds are the tensor's storage: reading past x's 4096 elements still fails once tracked.
    emu.track(x)
    try:
        with pytest.raises(RuntimeError, match="past its end"):
            m.copy_shifted(x, nan(4096), 4096, 1, True, 16)
    finally:
        emu.untrack(x)


# ---- initcheck --------------------------------------------------------------------------------------

def test_initcheck_passes_a_fully_written_tile(m):
    x, y = rand(512), nan(512)
    m.init_partial(x, y, 256)
    assert torch.equal(y.view(2, 256), x.view(2, 256).roll(-1, 1))


def test_initcheck_catches_an_unwritten_word(m):
    # Threads 0..254 write; thread 254 reads element 255.
    x, y = rand(512), nan(512)
    with pytest.raises(RuntimeError, match=r"cuda_emu initcheck: .*init_partial.*block \(0,0,0\), thread 254: "
                                           r"reads 4 bytes of shared memory at s \+ 1020 bytes, which no thread"):
        m.init_partial(x, y, 255)


def test_initcheck_shared_memory_is_poisoned_before_each_block(m, emu):
    # Block 0 fills the tile, block 1 reads it without writing: stale data on a CPU that keeps its
    # statics, garbage on a GPU.
    x, y = rand(256), nan(512)
    with pytest.raises(RuntimeError, match=r"initcheck: .*block \(1,0,0\), thread 0: reads 4 bytes of shared "
                                           r"memory at s \+ 0 bytes"):
        m.init_stale(x, y)
    with emu.configured(initcheck=False):
        m.init_stale(x, y)
    assert torch.equal(y[:256], x)
    assert y[256:].isnan().all()  # the poison (0xff bytes) that block 1 read


# ---- racecheck ---------------------------------------------------------------------------------------

RACE = {"synced": 0, "no_barrier": 1, "war": 2, "same_word": 3, "warp_synced": 4, "warp_across": 5, "shuffle": 6}


@pytest.mark.parametrize("mode, message", [
    ("no_barrier", (r"thread 1: reads s \+ 0 bytes, written by thread 0 with no barrier between them "
                    r"\(read-after-write hazard\)")),
    ("war", r"thread 1: writes s \+ 4 bytes, read by thread 0 with no barrier between them \(write-after-read"),
    ("same_word", r"thread 1: writes s \+ 0 bytes, written by thread 0 .*\(write-after-write hazard\)"),
    # __syncwarp orders the lanes of one warp, not the next warp's
    ("warp_across", r"thread 63: writes s \+ 252 bytes, read by thread 31 .*write-after-read"),
])
def test_racecheck_catches(m, emu, mode, message):
    x, y = rand(256), nan(256)
    with pytest.raises(RuntimeError, match=r"cuda_emu racecheck: .*race.*block \(0,0,0\), " + message):
        m.race(x, y, RACE[mode])
    with emu.configured(racecheck=False):  # the check, not something else, caught it
        m.race(x, y, RACE[mode])


def test_racecheck_passes_ordered_exchanges(m):
    x = rand(256)
    y = nan(256)
    m.race(x, y, RACE["synced"])
    assert torch.equal(y, x.roll(-1))
    within_warp = x.view(8, 32).roll(-1, 1).flatten()
    m.race(x, y, RACE["warp_synced"])
    assert torch.equal(y, within_warp)
    m.race(x, y, RACE["shuffle"])
    xor1 = x.view(-1, 2).flip(1).flatten()
    assert torch.allclose(y, x + xor1 + within_warp)


# ---- synccheck ---------------------------------------------------------------------------------------

SYNC = {"uniform": 0, "half": 1, "early_exit": 2, "two_barriers": 3, "shuffle_exited": 4, "mixed": 5}


def test_synccheck_passes_uniform_barriers(m):
    y = nan(256)
    m.barrier_modes(y, SYNC["uniform"])
    assert torch.equal(y, torch.arange(256.0))


@pytest.mark.parametrize("mode, message", [
    ("half", (r"a barrier that not every thread of the block reaches \(128 of 256 at it\): thread 0 waits at "
              r"__syncthreads \(.*emu_selftest.cpp:\d+\); thread 128 has exited")),
    ("early_exit", r"128 of 256 at it.*thread 128 has exited"),
    ("two_barriers", (r"256 of 256 at it\): thread 0 waits at __syncthreads \(.*:(\d+)\); thread 128 waits at "
                      r"__syncthreads \(.*:(?!\1)\d+\)")),
    ("shuffle_exited", (r"a warp collective that not every lane of its mask reaches: thread 0 waits in a warp "
                        r"shuffle .*thread 31 has exited")),
    ("mixed", r"lanes of warp 0 meet in different warp collectives: __syncwarp .* and a warp shuffle"),
])
def test_synccheck_catches(m, mode, message):
    with pytest.raises(RuntimeError, match=r"cuda_emu synccheck: .*barrier_modes.*block \(0,0,0\).*" + message):
        m.barrier_modes(nan(256), SYNC[mode])


# ---- failures in general --------------------------------------------------------------------------

def test_exception_in_a_kernel_names_the_thread(m):
    with pytest.raises(RuntimeError, match=r"cuda_emu: .*throws.*block \(0,0,0\), thread 3 threw: thread 3 refuses"):
        m.throws(nan(32))


@pytest.mark.parametrize("grid, threads", [(0, 32), (1, 0), (1, 1025)])
def test_invalid_launch_configuration(m, grid, threads):
    with pytest.raises(RuntimeError, match="invalid configuration argument"):
        m.launch_config(grid, threads)


def test_schedule_is_deterministic(m):
    # Threads run in order, each up to its next barrier: a counter they bump unsynchronised (a
    # global race the emulator does not check) reads the same every run.
    for _ in range(2):
        y, c = torch.zeros(512, dtype=torch.int32), torch.zeros(1, dtype=torch.int32)
        m.order(y, c)
        assert torch.equal(y, torch.arange(512, dtype=torch.int32))


def test_raw_forms_run_unchecked(m, emu):
    x, y = rand(256), torch.zeros(256)
    with emu.record() as launches:
        m.raw_forms(x, y)
    assert torch.equal(y[:64], x[:64] + 1)
    (launch,) = launches
    assert launch.global_load.requests == 0 and launch.shared_load.requests == 0


def test_multiprocessors_is_configurable(m, emu):
    assert m.multiprocessors() == 2
    emu.configure(multiprocessors=132)
    assert m.multiprocessors() == 132


# ---- counting ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("width, stride, sectors_per_request, efficiency", [
    (4, 1, 4, 1.0),     # 32 lanes x 4 bytes, consecutive: 4 sectors
    (4, 2, 8, 0.5),     # every other float: twice the sectors
    (4, 32, 32, 0.125),  # one sector per lane
    (8, 1, 8, 1.0),     # 64-bit: 256 bytes per request
    (16, 1, 16, 1.0),   # 128-bit: 512 bytes per request
    (16, 2, 32, 0.5),
])
def test_counts_global_coalescing(m, emu, width, stride, sectors_per_request, efficiency):
    n = 1024 * 4 // width  # 4 KiB copied
    x, y = rand(4096 * stride), nan(4096)
    with emu.record() as launches:
        m.gather(x, y, n, stride, width)
    (launch,) = launches
    ld, st = launch.global_load, launch.global_store
    assert ld.requests == st.requests == n // 32
    assert ld.instructions == n and ld.bytes == st.bytes == 4096
    assert ld.requests_by_width[str(width)] == n // 32
    assert ld.sectors_per_request == sectors_per_request and ld.efficiency == efficiency
    assert st.efficiency == 1.0 and st.unique_sectors == 128
    assert ld.unique_sectors == ld.sectors  # no two requests share a sector here
    assert launch.dram_bytes == 32 * (ld.unique_sectors + st.unique_sectors)
    assert launch.uniform


@pytest.mark.parametrize("mode, ways", [(0, 1), (1, 32), (2, 2), (3, 1), (4, 1), (5, 1), (6, 2)])
def test_counts_shared_bank_conflicts(m, emu, mode, ways):
    with emu.record() as launches:
        m.banks(nan(32), mode)
    (launch,) = launches
    assert launch.shared_load.requests == 1 and launch.shared_store.requests == 1
    assert launch.shared_load.bank_ways == ways
    if mode != 3:  # mode 3 stores from one lane, loads a broadcast
        assert launch.shared_store.bank_ways == ways
    phases = {4: 2, 5: 4, 6: 4}.get(mode, 1)  # 64-bit: half warps; 128-bit: quarter warps
    assert launch.shared_load.ideal_wavefronts == phases


def test_counts_report_non_uniform_warps(m, emu):
    with emu.record() as launches:
        m.divergent(rand(64), nan(64))
    (launch,) = launches
    assert not launch.uniform and launch.nonuniform_requests > 0
    assert re.search(r"global load of 4 bytes at .*divergent.*made 1 to 32 of them", launch.nonuniform_examples[0])


# ---- warp built-ins ----------------------------------------------------------------------------------

def test_shuffles_and_votes(m):
    x, y = torch.arange(64.0), nan(64 * 8)
    m.shuffles(x, y)
    y = y.view(64, 8)
    lane = torch.arange(64) % 32
    base = torch.arange(64) - lane
    down = torch.where(lane % 8 + 3 < 8, lane + 3, lane)
    up = torch.where(lane % 16 >= 2, lane - 2, lane)
    assert torch.equal(y[:, 0], (base + (lane ^ 1)).float())
    assert torch.equal(y[:, 1], (base + (lane ^ 16)).float())
    assert torch.equal(y[:, 2], (base + down).float())
    assert torch.equal(y[:, 3], (base + up).float())
    assert torch.equal(y[:, 4], (base + 5).float())
    assert torch.equal(y[:, 5:], torch.ones(64, 3))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("ldmatrix", [False, True], ids=["regs", "ldmatrix"])
def test_mma_m16n8k16(m, emu, dtype, ldmatrix):
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(16, 16, generator=g).to(dtype), torch.randn(16, 8, generator=g).to(dtype)
    c = nan(128)
    with emu.record() as launches:
        m.mma(a.view(torch.int16), b.view(torch.int16), c, dtype == torch.bfloat16, int(ldmatrix), 3)
    ref = 3 * (a.double() @ b.double())
    assert ((c.view(16, 8).double() - ref).norm() / ref.norm()).item() < 1e-6
    (launch,) = launches
    assert launch.mma == 3 and launch.mma_per_output(16 * 8) == 3 / 128
    if ldmatrix:
        # x4 over 32-byte rows: rows r and r + 4 share banks (2 ways, 4 phases); x2 over 16-byte rows:
        # conflict-free (2 phases).
        assert launch.ldmatrix == 2 and launch.shared_load.requests == 2
        assert launch.shared_load.wavefronts == 4 * 2 + 2 and launch.shared_load.ideal_wavefronts == 6


def test_tracking_allocator_keeps_torch_working(m):
    # oneDNN's CPU convolution allocates through raw_allocate / raw_deallocate, which need the
    # allocator's data pointers to stay simple; the tracking allocator must keep them so.
    g = torch.Generator().manual_seed(5)
    x, w = torch.randn(2, 3, 20, 20, generator=g), torch.randn(8, 3, 5, 5, generator=g)
    y = torch.nn.functional.conv2d(x, w, stride=2)
    ref = torch.nn.functional.conv2d(x.double(), w.double(), stride=2)
    assert ((y.double() - ref).norm() / ref.norm()).item() < 1e-6


def test_harnesses_share_one_registry(m, emu):
    # A tensor made once any harness has loaded is known to every harness, whichever loaded first.
    other = build.runtime(build.load("conv_emu"))
    t = torch.empty(10)
    assert emu.is_tracked(t) and other.is_tracked(t)
