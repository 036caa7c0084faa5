// Kernels with a known memory behaviour; tests/test_emu_counters.py asserts the emulator's
// counters give exactly the counts worked out in each comment (one warp = 32 lanes).
#include "common.cuh"
#include "warp_mma.cuh"  // cp_async

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

// cp.async from two call sites, each counted at its own line (not inside the emulator's twin).
// The first copies x[o * 32 + lane] for o = 0, 1 (copies = 2, a runtime count: one program
// point), lane 0 zero-filling at o = 0: per o one request of 4 sectors (lane 0 idle at o = 0,
// so 63 lanes in all). The second reads every other float of x[64..127]: 8 sectors where 4
// would do. The landing stores are conflict-free.
__global__ void cp_async_two_sites(const float* x, float* y, int copies) {
    __shared__ __align__(16) float staged[96];
    const int lane = threadIdx.x;
    for (int o = 0; o < copies; ++o)
        cp_async<4>(&staged[o * 32 + lane], x + o * 32 + lane, o > 0 || lane > 0);
    cp_async<4>(&staged[64 + lane], x + 64 + 2 * lane, true);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    for (int i = 0; i < 3; ++i) y[i * 32 + lane] = staged[i * 32 + lane];
}
