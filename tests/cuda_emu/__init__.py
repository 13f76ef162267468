"""The CUDA emulator: CUDA kernels of the extension compiled for the CPU and run there, for tests,
checked as compute-sanitizer would (memcheck, initcheck, racecheck, synccheck) and counted as a
profiler would (bytes, sectors, bank conflicts, mma instructions).

cuda_emu.h (with emu_core.h, emu_memory.h, emu_warp.h) stands in for the CUDA runtime and device
built-ins; emu_runtime.cpp is the scheduler, the sanitizers and the counters; each <op>_emu.cpp
beside them includes an op's kernels and host-side launch planning from csrc/ and exposes them to
Python. build.load(name) compiles a harness, build.runtime(module) reaches its emulator
(runtime.py). emu_selftest.cpp holds the emulator's own test kernels. docs/emulator.md describes
it all.
"""
