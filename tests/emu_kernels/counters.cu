// Kernels with a known memory behaviour; tests/test_emu_counters.py asserts the emulator's
// counters give exactly the counts worked out in each comment (one warp = 32 lanes).
#include "common.cuh"

// Perfectly coalesced: a warp's 32 floats are 128 consecutive bytes, 4 sectors per request.
__global__ void copy_coalesced(const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i];
}

// Stride 2: the reads span 256 bytes (8 sectors) for 128 useful bytes (ideal 4).
__global__ void copy_stride2(const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[2 * i];
}

// 8-byte lanes: 256 bytes per warp, so 8 sectors is also the ideal (efficiency 1).
__global__ void copy_double(const double* x, double* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i];
}

// Block (32, 32) on a 32 x 32 matrix: a warp (one threadIdx.y) reads a column, 32 rows 128
// bytes apart: 32 sectors per request where 4 would do. The writes are coalesced.
__global__ void read_transposed(const float* x, float* y) {
    int tx = threadIdx.x, ty = threadIdx.y;
    y[ty * 32 + tx] = x[tx * 32 + ty];
}

// Lanes 0..7 of each warp only: 8 active lanes, 32 bytes, 1 sector (ideal 1).
__global__ void quarter_warp(const float* x, float* y) {
    if (threadIdx.x % 32 < 8) y[threadIdx.x] = x[threadIdx.x];
}

// Every lane stores to word 32 * lane: all in bank 0, 32 wavefronts per request (ideal 1).
__global__ void bank_conflict_32way(const float* x, float* y) {
    __shared__ float tile[32 * 32];
    int t = threadIdx.x;
    tile[t * 32] = x[t];
    __syncthreads();
    y[t] = tile[t * 32];
}

// Word 2 * lane: lanes l and l + 16 share a bank, 2 wavefronts per request (ideal 1).
__global__ void bank_conflict_2way(const float* x, float* y) {
    __shared__ float tile[64];
    int t = threadIdx.x;
    tile[2 * t] = x[t];
    __syncthreads();
    y[t] = tile[2 * t];
}

// Transpose through a 32 x (32 + PAD) tile. PAD = 1: the padding column shifts each row by one
// bank, so both the row-wise store and the column-wise read are conflict-free (1 wavefront
// each). PAD = 0: the column-wise read hits one bank 32 times.
template <int PAD>
__global__ void transpose_tile(const float* x, float* y) {
    __shared__ float tile[32][32 + PAD];
    int tx = threadIdx.x, ty = threadIdx.y;
    tile[ty][tx] = x[ty * 32 + tx];
    __syncthreads();
    y[ty * 32 + tx] = tile[tx][ty];
}

// Every lane reads the same word: one broadcast wavefront, no conflict. Two barriers.
__global__ void broadcast_two_barriers(const float* x, float* y) {
    __shared__ float value;
    if (threadIdx.x == 0) value = x[0];
    __syncthreads();
    y[threadIdx.x] = value;
    __syncthreads();
}
