// The CUDA emulator: runs kernels written for the GPU on the CPU, for tests, checking and counting
// their memory traffic as compute-sanitizer and a profiler would. Include this header FIRST in a
// harness (tests/cuda_emu/<op>_emu.cpp); build the harness with cuda_emu.build.load, which links
// emu_runtime.cpp beside it. docs/emulator.md describes the whole design; in short:
//
//   - the threads of a block are cooperative fibers on one OS thread, run in a fixed order, so a
//     run is deterministic; blocks run one after another;
//   - csrc/mem.h's names become checked types here (AK_EMU_CHECKED_MEMORY): gptr<T> is a fat
//     pointer carrying the bounds of the tensor it came from, AK_SHARED arrays live in a per-block
//     arena of checked elements that is poisoned before each block, sptr<T> points into it, and
//     ak_load / ak_store are accesses of sizeof(V) bytes;
//   - every checked access is bounds-checked (memcheck), shared reads of bytes the block never
//     wrote fail (initcheck), shared accesses by two threads with no barrier between them fail
//     (racecheck), a barrier that not every thread reaches fails (synccheck);
//   - and counted per launch: bytes, 32-byte sectors per warp request, unique sectors, shared
//     bank-conflict wavefronts, mma instructions (emu_runtime.cpp; Python: cuda_emu.runtime).
//
// Kernels written with raw forms (T*, __shared__, reinterpret_cast) still compile and run; their
// accesses go unchecked and uncounted.
//
// Under the emulator neither __CUDA_ARCH__ nor __CUDACC__ is defined: host-side math paths run.
#pragma once

#define AK_EMULATE_CUDA 1
#ifndef AK_EMU_UNCHECKED_MEMORY
#define AK_EMU_CHECKED_MEMORY 1
#endif

#include "emu_core.h"
#include "emu_memory.h"
#include "emu_warp.h"
