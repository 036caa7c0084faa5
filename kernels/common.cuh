// common.cuh - the one header every kernel in kernels/ includes first.
//
// The same .cu files are compiled two ways:
//   * for the GPU by CuPy (NVRTC) or `nvcc -ptx -arch=sm_90 -I kernels`, and
//   * for the CPU by the minicnn emulator (minicnn/emu), with g++ -DMINICNN_EMULATOR and
//     `-include minicnn/emu/cuda_emu.h`, which supplies threadIdx, __syncthreads() and friends.
// This header hides the few places where the two differ, so kernels stay plain CUDA.
//
// Conventions for kernel sources:
//   * Start with `#include "common.cuh"`.
//   * Kernels are `template <typename T> __global__ void name(...)` (or plain, non-template).
//     No `extern "C"`: launchers name them by expression, e.g. "relu_forward<float>".
//   * Parameters: pointers to float/double/int/unsigned arrays and scalars of exactly the
//     types the launcher passes (np.float32 <-> float, np.int32 <-> int, np.uint32 <-> unsigned,
//     np.int64 <-> long long, np.uint64 <-> unsigned long long, np.float64 <-> double).
//     The emulator rejects any mismatch, which on a GPU would be silent garbage.
//   * Static shared memory: `__shared__ T tile[A][B];` declared inside the kernel.
//     Dynamic shared memory: `DYNAMIC_SHARED(T, name);` then index `name[i]`; the size comes
//     from the launch's shared_mem argument.
//   * Allowed CUDA: threadIdx/blockIdx/blockDim/gridDim, dim3, warpSize, __syncthreads(),
//     atomicAdd/atomicMax/atomicMin/atomicCAS/atomicExch, __shfl_sync/_up_/_down_/_xor_sync,
//     __ballot_sync/__any_sync/__all_sync, the usual float/double math (expf, exp, logf, ...,
//     fmaxf, min/max, __expf, __logf, __fdividef), INFINITY, __float_as_uint & co.,
//     #pragma unroll, __restrict__, __launch_bounds__, __forceinline__.
//     For anything else check minicnn/emu/cuda_emu.h first: the emulator must provide it too.
//   * For code templated on T, use the dev_* helpers below (dev_exp(x) picks expf or exp).
//     min/max/fmax/fmin are overloaded for float and double already.
#pragma once

#ifndef MINICNN_EMULATOR
// Dynamic shared memory is one untyped extern array shared by all kernels; each kernel
// views it as its own element type.
#define DYNAMIC_SHARED(T, name)                                          \
    extern __shared__ __align__(16) unsigned char minicnn_dynamic_smem[]; \
    T* name = reinterpret_cast<T*>(minicnn_dynamic_smem)

// NVRTC has no <math.h>, so INFINITY may be missing there.
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
#endif  // MINICNN_EMULATOR (cuda_emu.h defines DYNAMIC_SHARED for the CPU)

// Math overloaded on float and double, so templates get the fast float functions for
// T = float instead of silently computing in double: dev_exp(x) is expf(x) or exp(x).
// (min, max, fmax and fmin already have float and double overloads in CUDA.)
#define MINICNN_FLOAT_AND_DOUBLE(name, float_function, double_function)               \
    __device__ __forceinline__ float name(float x) { return float_function(x); }      \
    __device__ __forceinline__ double name(double x) { return double_function(x); }
MINICNN_FLOAT_AND_DOUBLE(dev_exp, expf, exp)
MINICNN_FLOAT_AND_DOUBLE(dev_log, logf, log)
MINICNN_FLOAT_AND_DOUBLE(dev_sqrt, sqrtf, sqrt)
MINICNN_FLOAT_AND_DOUBLE(dev_abs, fabsf, fabs)
#undef MINICNN_FLOAT_AND_DOUBLE
