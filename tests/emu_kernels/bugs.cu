// Kernels with one seeded bug each; tests/test_emu_checks.py asserts the emulator reports it.
// They are valid CUDA (tests/test_emu_nvcc.py compiles them): the bugs are in behaviour.
#include "common.cuh"

constexpr unsigned FULL_MASK = 0xffffffffu;

// Off by one: `<=` writes y[n], one element past the end.
__global__ void fill_past_end(float* y, float value, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) y[i] = value;
}

// y[i] = x[i + 1] reads x[n] for the last element.
__global__ void shift_left(const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i + 1];
}

// Reverses each block's slice through shared memory but forgets __syncthreads() between the
// writes and the reads: thread t reads the slot thread (blockDim.x - 1 - t) writes.
__global__ void reverse_missing_sync(const float* x, float* y, int n) {
    __shared__ float slots[64];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    slots[threadIdx.x] = i < n ? x[i] : 0.0f;
    int j = blockIdx.x * blockDim.x + (blockDim.x - 1 - threadIdx.x);
    if (j < n) y[j] = slots[threadIdx.x] + slots[blockDim.x - 1 - threadIdx.x];
}

// Tiled matmul without the second __syncthreads(): the next tile is loaded while other
// threads still read the current one (needs k > 16 to show).
__global__ void matmul_missing_sync(const float* a, const float* b, float* c, int m, int k, int n) {
    __shared__ float a_tile[16][16];
    __shared__ float b_tile[16][16];
    int tx = threadIdx.x, ty = threadIdx.y;
    int row = blockIdx.y * 16 + ty, col = blockIdx.x * 16 + tx;
    float acc = 0.0f;
    for (int t = 0; t < k; t += 16) {
        a_tile[ty][tx] = row < m && t + tx < k ? a[row * k + t + tx] : 0.0f;
        b_tile[ty][tx] = t + ty < k && col < n ? b[(t + ty) * n + col] : 0.0f;
        __syncthreads();
        for (int i = 0; i < 16; ++i) acc += a_tile[ty][i] * b_tile[i][tx];
    }
    if (row < m && col < n) c[row * n + col] = acc;
}

// Only the first half of the block loads the tile, but every thread reads it.
__global__ void read_unloaded_shared(const float* x, float* y) {
    __shared__ float tile[64];
    if (threadIdx.x < blockDim.x / 2) tile[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    y[threadIdx.x] = tile[threadIdx.x];
}

// Half the block returns early, the other half waits at a barrier forever.
__global__ void early_exit_barrier(float* y) {
    if (threadIdx.x >= blockDim.x / 2) return;
    y[threadIdx.x] = 1.0f;
    __syncthreads();
}

// A full-mask shuffle inside a branch that only half of the warp takes.
__global__ void shuffle_in_branch(float* y) {
    float v = float(threadIdx.x);
    if (threadIdx.x % warpSize < 16) v = __shfl_down_sync(FULL_MASK, v, 1);
    y[threadIdx.x] = v;
}

// Dynamic shared memory sized by the caller: needs shared_mem >= blockDim.x * 4 bytes.
__global__ void stage_in_dynamic_shared(const float* x, float* y) {
    DYNAMIC_SHARED(float, staged);
    staged[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    y[threadIdx.x] = staged[(threadIdx.x + 1) % blockDim.x];
}

// Every thread writes the same global word: the result depends on the order threads run.
__global__ void last_writer(int* winner) { *winner = int(threadIdx.x); }
