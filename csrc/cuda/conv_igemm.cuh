// The implicit-GEMM convolution of alexnet_kernels::conv2d on CUDA: forward kernels
// (conv_igemm_fwd.cuh), weight-gradient kernels (conv_igemm_wgrad.cuh) and the host planning that
// picks and launches them through a Launcher (conv_igemm_plan.cuh). conv_cuda.cu launches them on
// the current CUDA stream; tests/cuda_emu/conv_emu.cpp runs the same kernels on the CPU.
//
// Everything the implicit GEMM does not take -- fp64, C*R*S > kIgMaxQ, inputs whose single image
// passes 2^31 elements, and the input gradient (conv1's input never needs one) -- runs the direct
// reference kernels of conv.h, one thread per element: correct for every shape, far from cuDNN's
// speed.
#pragma once

#include "conv_igemm_plan.cuh"
