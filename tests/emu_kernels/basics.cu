// Correct kernels exercising the emulator: one thread per element, block and warp reductions,
// atomics and dynamic shared memory. tests/test_emu_kernels.py checks them against NumPy.
#include "common.cuh"

// y = a * x + y, one thread per element; the bounds check matters for the last block.
template <typename T>
__global__ void axpy(T a, const T* __restrict__ x, T* __restrict__ y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}

// out[blockIdx.x] = sum of the block's slice of x: a tree in static shared memory.
// Needs blockDim.x == 256 (a power of two).
template <typename T>
__global__ void block_sum(const T* x, T* out, int n) {
    __shared__ T partial[256];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    partial[threadIdx.x] = i < n ? x[i] : T(0);
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}
