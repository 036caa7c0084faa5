// Kernels with a grid-wide barrier (kernels/grid_sync.cuh), for tests/test_emu_grid_sync.py:
// one correct, the others with one misuse each that would hang or corrupt a GPU.
#include "grid_sync.cuh"

// Each block parks its index in shared memory and its partial in global memory; after the
// barrier every block adds all partials and reads its parked index back: total[b] = the sum of
// every block's value, mine[b] = b. Right only if blocks wait for each other and each keeps
// its own shared memory.
__global__ void sum_across_the_barrier(const float* values, float* partial, float* total,
                                       int* mine) {
    __shared__ int parked;
    if (threadIdx.x == 0) {
        parked = blockIdx.x;
        partial[blockIdx.x] = values[blockIdx.x];
    }
    grid_sync();
    if (threadIdx.x != 0) return;
    float sum = 0;
    for (unsigned b = 0; b < gridDim.x; ++b) sum += partial[b];
    total[blockIdx.x] = sum;
    mine[blockIdx.x] = parked;
}

// Block `quitter` returns before the barrier the other blocks wait at.
__global__ void block_exits_before_the_barrier(int quitter) {
    if (int(blockIdx.x) == quitter) return;
    grid_sync();
}

// Threads past the first warp return before the barrier their block's first warp waits at.
__global__ void threads_exit_before_the_barrier() {
    if (threadIdx.x >= 32) return;
    grid_sync();
}

// Thread 0 waits at the grid barrier while the rest of its block waits at __syncthreads().
__global__ void grid_and_block_barriers_mixed() {
    if (threadIdx.x == 0) grid_sync();
    else __syncthreads();
}
