// Correct kernels for the emulator's tests (tests/test_emu_kernels.py checks them against
// NumPy): one thread per element, a block reduction in static shared memory, warp shuffles,
// a histogram with atomics in dynamic shared memory, and tiled transpose/matmul with edges.
#include "common.cuh"

constexpr int TILE = 16;
constexpr unsigned FULL_MASK = 0xffffffffu;

// y = a * x + y; the bounds check matters for the last block.
template <typename T>
__global__ void axpy(T a, const T* __restrict__ x, T* __restrict__ y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}

// out[block] = sum of the block's 256 elements of x, as a tree in shared memory.
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

// *out += sum of x: each warp reduces with __shfl_down_sync, lane 0 adds atomically.
template <typename T>
__global__ void warp_sum(const T* x, T* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    T v = i < n ? x[i] : T(0);
    for (int offset = warpSize / 2; offset > 0; offset /= 2) v += __shfl_down_sync(FULL_MASK, v, offset);
    if (threadIdx.x % warpSize == 0) atomicAdd(out, v);
}

// y = inclusive prefix sum of x within each warp (__shfl_up_sync), and
// warp_max[i] = max of x over i's warp (__shfl_xor_sync butterfly, then __shfl_sync from lane 0).
__global__ void warp_scan_max(const float* x, float* y, float* warp_max, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int lane = threadIdx.x % warpSize;
    float v = i < n ? x[i] : 0.0f;
    float scan = v;
    for (int d = 1; d < warpSize; d *= 2) {
        float up = __shfl_up_sync(FULL_MASK, scan, d);
        if (lane >= d) scan += up;
    }
    float m = i < n ? v : -INFINITY;
    for (int d = warpSize / 2; d > 0; d /= 2) m = fmaxf(m, __shfl_xor_sync(FULL_MASK, m, d));
    m = __shfl_sync(FULL_MASK, m, 0);
    if (i < n) {
        y[i] = scan;
        warp_max[i] = m;
    }
}

// *count += number of positive x, one __ballot_sync per warp.
__global__ void count_positive(const float* x, unsigned* count, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned votes = __ballot_sync(FULL_MASK, i < n && x[i] > 0.0f);
    if (threadIdx.x % warpSize == 0) atomicAdd(count, unsigned(__popc(votes)));
}

// counts[v] += occurrences of v in values; per-block counts in dynamic shared memory
// (shared_mem = bins * 4 bytes), grid-stride loop over the input.
__global__ void histogram(const int* values, unsigned* counts, int n, int bins) {
    DYNAMIC_SHARED(unsigned, local);
    for (int b = threadIdx.x; b < bins; b += blockDim.x) local[b] = 0;
    __syncthreads();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        atomicAdd(&local[values[i]], 1u);
    __syncthreads();
    for (int b = threadIdx.x; b < bins; b += blockDim.x) atomicAdd(&counts[b], local[b]);
}

// out (cols, rows) = in (rows, cols) transposed through a shared tile; block (TILE, TILE).
template <typename T>
__global__ void transpose(const T* in, T* out, int rows, int cols) {
    __shared__ T tile[TILE][TILE + 1];  // +1 column: a warp's column reads hit distinct banks
    int col = blockIdx.x * TILE + threadIdx.x, row = blockIdx.y * TILE + threadIdx.y;
    if (row < rows && col < cols) tile[threadIdx.y][threadIdx.x] = in[row * cols + col];
    __syncthreads();
    int out_col = blockIdx.y * TILE + threadIdx.x, out_row = blockIdx.x * TILE + threadIdx.y;
    if (out_row < cols && out_col < rows) out[out_row * rows + out_col] = tile[threadIdx.x][threadIdx.y];
}

// c (m, n) = a (m, k) @ b (k, n) with TILE x TILE shared tiles, zero-padded at the edges.
template <typename T>
__global__ void matmul(const T* a, const T* b, T* c, int m, int k, int n) {
    __shared__ T a_tile[TILE][TILE];
    __shared__ T b_tile[TILE][TILE];
    int tx = threadIdx.x, ty = threadIdx.y;
    int row = blockIdx.y * TILE + ty, col = blockIdx.x * TILE + tx;
    T acc = 0;
    for (int t = 0; t < k; t += TILE) {
        a_tile[ty][tx] = row < m && t + tx < k ? a[row * k + t + tx] : T(0);
        b_tile[ty][tx] = t + ty < k && col < n ? b[(t + ty) * n + col] : T(0);
        __syncthreads();
#pragma unroll
        for (int i = 0; i < TILE; ++i) acc += a_tile[ty][i] * b_tile[i][tx];
        __syncthreads();  // before the next iteration overwrites the tiles
    }
    if (row < m && col < n) c[row * n + col] = acc;
}
