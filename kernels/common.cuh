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
// T = float instead of silently computing in double.
__device__ __forceinline__ float dev_exp(float x) { return expf(x); }
__device__ __forceinline__ double dev_exp(double x) { return exp(x); }
__device__ __forceinline__ float dev_log(float x) { return logf(x); }
__device__ __forceinline__ double dev_log(double x) { return log(x); }
__device__ __forceinline__ float dev_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double dev_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float dev_rsqrt(float x) { return rsqrtf(x); }
__device__ __forceinline__ double dev_rsqrt(double x) { return rsqrt(x); }
__device__ __forceinline__ float dev_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double dev_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float dev_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double dev_abs(double x) { return fabs(x); }
__device__ __forceinline__ float dev_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double dev_max(double a, double b) { return fmax(a, b); }
__device__ __forceinline__ float dev_min(float a, float b) { return fminf(a, b); }
__device__ __forceinline__ double dev_min(double a, double b) { return fmin(a, b); }
