// reduce.cu - deterministic sums: per-channel sums of NCHW batches (the bias gradient, global
// average pooling, and through batchnorm.cu the batch statistics), plus the warp/block sum
// helpers that batchnorm.cu and softmax.cu include.
//
// Maths: out[c] = (sum over n, s of x[n, c, s]) / divisor, for x viewed as (N, C, S).
//
// Why two passes and no atomics: a GPU run must give the same bits every time, and float
// atomics add in whatever order threads arrive. So each channel's N*S values are cut into P
// slices (P fixed by the shapes alone, chosen by the launcher to fill the GPU); pass 1
// (channel_partial_sums, grid (C, P), 256 threads) reduces one slice per block: each thread
// adds a strided run of values, then a shuffle tree inside each warp and a tree over the 8
// warps. Pass 2 (sum_partials, one thread per channel) adds the P partials in order.
// Every sum happens in a fixed order, so the bits are reproducible.
//
// Thread layout in pass 1: consecutive threads read consecutive s, so loads are coalesced when
// S is large (conv maps); for S = 1 (linear layers) the stride is C, still correct.
#include "common.cuh"

constexpr int REDUCE_THREADS = 256;
constexpr unsigned FULL_WARP = 0xffffffffu;

// Sum over the 32 lanes of a warp; every lane gets the total (butterfly with xor shuffles).
template <typename T>
__device__ T warp_sum(T value) {
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(FULL_WARP, value, offset);
    return value;
}

template <typename T>
__device__ T warp_max(T value) {
    for (int offset = 16; offset > 0; offset /= 2) {
        const T other = __shfl_xor_sync(FULL_WARP, value, offset);
        value = other > value ? other : value;
    }
    return value;
}

// Sum over a block of REDUCE_THREADS threads; the result is valid in thread 0.
// warp_totals: the kernel's __shared__ array of REDUCE_THREADS / 32 elements.
template <typename T>
__device__ T block_sum(T value, T* warp_totals) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    value = warp_sum(value);
    if (lane == 0) warp_totals[warp] = value;
    __syncthreads();
    T total = 0;
    if (threadIdx.x == 0)
        for (int i = 0; i < REDUCE_THREADS / 32; ++i) total += warp_totals[i];
    return total;
}

// Pass 1 for any per-element term: partial[c * P + p] = sum of term(i, c) over slice p of
// channel c, i running over the flat indices (n * C + c) * S + s of an (N, C, S) array.
// Launch: grid (C, P), block (REDUCE_THREADS,). warp_totals: as for block_sum.
template <typename T, typename Term>
__device__ void channel_slice_sum(T* partial, int N, int C, int S, T* warp_totals, Term term) {
    const int c = blockIdx.x, p = blockIdx.y, P = gridDim.y;
    const long long count = (long long)N * S, chunk = (count + P - 1) / P;
    const long long begin = p * chunk, end = begin + chunk < count ? begin + chunk : count;
    T sum = 0;
    for (long long j = begin + threadIdx.x; j < end; j += REDUCE_THREADS) {
        const long long n = j / S, s = j % S;
        sum += term((n * C + c) * S + s, c);
    }
    sum = block_sum(sum, warp_totals);
    if (threadIdx.x == 0) partial[c * P + p] = sum;
}

// Pass 1 of a plain channel sum. x: (N, C, S) -> partial: (C, P).
template <typename T>
__global__ void __launch_bounds__(REDUCE_THREADS)
channel_partial_sums(T* partial, const T* x, int N, int C, int S) {
    __shared__ T warp_totals[REDUCE_THREADS / 32];
    channel_slice_sum(partial, N, C, S, warp_totals, [=](long long i, int) { return x[i]; });
}

// Pass 2: out[c] = (partial[c, 0] + ... + partial[c, P - 1]) / divisor. One thread per channel.
template <typename T>
__global__ void sum_partials(T* out, const T* partial, int C, int P, T divisor) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    T sum = 0;
    for (int p = 0; p < P; ++p) sum += partial[c * P + p];
    out[c] = sum / divisor;
}
