"""The CUDA emulator: CUDA kernels of the extension compiled for the CPU and run there, for tests.

cuda_emu.h stands in for the CUDA runtime and device built-ins; each <op>_emu.cpp beside it
includes an op's kernels and host-side launch planning from csrc/ and exposes them to Python.
"""
