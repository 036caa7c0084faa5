// reduce.cu - deterministic sums: per-channel sums of NCHW batches (the bias gradient, global
// average pooling, and through batchnorm.cu the batch statistics), plus the warp/block sum
// helpers that batchnorm.cu and softmax.cu include.
//
// Maths: out[c] = (sum over n, s of x[n, c, s]) / divisor, for x viewed as (N, C, S).
//
// Why two passes and no atomics: a GPU run must give the same bits every time, and float
// atomics add in whatever order threads arrive. So each channel's N*S values are cut into P
// slices (P fixed by the shapes alone, chosen by the launcher to fill the GPU); pass 1
// (channel_slice_sum, grid (C, P), 256 threads) reduces one slice per block: each thread
// adds a strided run of values, then a shuffle tree inside each warp and a tree over the 8
// warps. Pass 2 adds the P partials of a channel in order (sum_partials, one thread per
// channel, for callers with their own pass 1: augment.cu; or the last block, below).
// Every sum happens in a fixed order, so the bits are reproducible.
//
// Thread layout in pass 1: consecutive threads read consecutive s, so loads are coalesced when
// S is large (conv maps); for S = 1 (linear layers) the stride is C, still correct.
//
// One launch instead of two (channel_reduce, used by channel_sums and batchnorm.cu): each
// pass-1 block stores its partial, then counts itself in with an integer atomicAdd on
// arrivals[c]; the block that arrives last adds channel c's P partials in order (pass 2) and
// resets the counter. Which block comes last varies, but it always adds the same P numbers in
// the same order, so the result is as reproducible as with two launches. arrivals: C zeros
// owned by the launcher (kept zero between launches by this reset).
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

// Which slice p of which channel c (of P slices each) a block sums, for which of Z reductions
// z. A grid (C, P, Z) gives each block its own (block_slice); a cooperative kernel's blocks
// loop over them instead (bn_one_launch.cu): the same slices, so the same sums bit for bit.
struct ChannelSlice {
    int c, p, P, z;
};
__device__ inline ChannelSlice block_slice() {
    return {int(blockIdx.x), int(blockIdx.y), int(gridDim.y), int(blockIdx.z)};
}

// Pass 1 for any per-element term: partial[c * P + p] = sum of term(i, c) over slice p of
// channel c, i running over the flat indices (n * C + c) * S + s of an (N, C, S) array.
// Launch: grid (C, P), block (REDUCE_THREADS,). warp_totals: as for block_sum.
//
// Version 2 (this one; version 1 divided a 64-bit index by S for every element and kept one
// load in flight per thread):
//   * 32-bit indices (the launcher refuses arrays of 2^31 elements or more), and one division
//     per thread: (n, s) then move by a fixed (REDUCE_THREADS / S, REDUCE_THREADS % S) step.
//   * REDUCE_ACCUMULATORS independent sums per thread, so that many loads are in flight: with
//     the launcher's ~2 blocks per SM this keeps as many loads outstanding as a fully
//     occupied SM with one accumulator. Run t of a thread goes to sum t % REDUCE_ACCUMULATORS
//     and they are added in a fixed order, so the result is still reproducible bit for bit.
// No vector loads: a slice starts at any (n, s), so 16-byte alignment is not guaranteed.
constexpr int REDUCE_ACCUMULATORS = 4;

template <typename T, typename Term>
__device__ void channel_slice_sum(T* partial, int N, int C, int S, T* warp_totals, Term term,
                                  ChannelSlice at = block_slice()) {
    const int c = at.c, p = at.p, P = at.P;
    const int count = N * S, chunk = (count + P - 1) / P;
    const int begin = min(p * chunk, count), end = min(begin + chunk, count);
    int j = begin + threadIdx.x;  // position in the channel's N * S values
    int s = j % S;
    // the flat index of value j; unsigned: past the end it may wrap, but it is never read there
    unsigned i = (unsigned(j / S) * C + c) * S + s;
    const int step_s = REDUCE_THREADS % S;
    const unsigned step_i = unsigned(REDUCE_THREADS / S) * C * S + step_s;
    const unsigned next_row = unsigned(C - 1) * S;
    auto advance = [&]() {
        j += REDUCE_THREADS;
        s += step_s;
        i += step_i;
        if (s >= S) s -= S, i += next_row;
    };
    T sums[REDUCE_ACCUMULATORS] = {};
    while (j + (REDUCE_ACCUMULATORS - 1) * REDUCE_THREADS < end) {
        T terms[REDUCE_ACCUMULATORS];
#pragma unroll
        for (int u = 0; u < REDUCE_ACCUMULATORS; ++u) terms[u] = term(i, c), advance();
#pragma unroll
        for (int u = 0; u < REDUCE_ACCUMULATORS; ++u) sums[u] += terms[u];
    }
#pragma unroll
    for (int u = 0; u < REDUCE_ACCUMULATORS; ++u)
        if (j < end) sums[u] += term(i, c), advance();
    static_assert(REDUCE_ACCUMULATORS == 4, "the sums are added as a pairwise tree of four");
    T sum = (sums[0] + sums[1]) + (sums[2] + sums[3]);
    sum = block_sum(sum, warp_totals);
    if (threadIdx.x == 0) partial[c * P + p] = sum;
}

// Passes 1 and 2 in one launch: channel_slice_sum, then the last block of channel c to
// arrive calls finish(c, total) from one thread, total the P partials of c added in order.
// Grid (C, P, Z): blockIdx.z picks one of Z independent reductions (partial: (Z, C, P),
// arrivals: (Z, C)), as batchnorm.cu's backward needs two sums of the same data.
// at: the slice, the block's own by default.
template <typename T, typename Term, typename Finish>
__device__ void channel_reduce(T* partial, unsigned* arrivals, int N, int C, int S,
                               T* warp_totals, Term term, Finish finish,
                               ChannelSlice at = block_slice()) {
    __shared__ int last;
    const int c = at.c, P = at.P, z = at.z;
    partial += z * C * P;
    arrivals += z * C;
    channel_slice_sum(partial, N, C, S, warp_totals, term, at);
    if (threadIdx.x == 0) {
        __threadfence();  // this block's partial is visible before it counts itself in
        last = atomicAdd(&arrivals[c], 1u) == unsigned(P - 1);
    }
    __syncthreads();
    if (!last || threadIdx.x != 0) return;
    __threadfence();
    const volatile T* slices = partial + c * P;  // volatile: written by other blocks, not in L1
    T total = 0;
    for (int q = 0; q < P; ++q) total += slices[q];
    arrivals[c] = 0;
    finish(c, total);
}

// out[c] = (sum over n, s of x[n, c, s]) / divisor in one launch. Grid (C, P).
template <typename T>
__global__ void __launch_bounds__(REDUCE_THREADS)
channel_sums(T* out, T* partial, unsigned* arrivals, const T* x, int N, int C, int S, T divisor) {
    __shared__ T warp_totals[REDUCE_THREADS / 32];
    channel_reduce(partial, arrivals, N, C, S, warp_totals, [=](unsigned i, int) { return x[i]; },
                   [=](int c, T total) { out[c] = total / divisor; });
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

// A pass that writes an array and sums it per channel, in one launch: out[i] = value(i, c) for
// every element, sums[c] = the channel sums of out, added as channel_sums adds them (the same
// slices, the same order: the same bits as writing out, then channel_sums of it). Backward
// passes use it to hand the layer before them its bias gradient (the channel sums of the
// gradient they produce) without a launch of its own. Grid (C, P), as channel_sums.
template <typename T, typename Value>
__device__ void write_and_channel_sum(T* out, T* sums, T* partial, unsigned* arrivals, int N,
                                      int C, int S, T* warp_totals, Value value,
                                      ChannelSlice at = block_slice()) {
    channel_reduce(partial, arrivals, N, C, S, warp_totals, [=](unsigned i, int c) {
        const T v = value(i, c);
        out[i] = v;
        return v;
    }, [=](int c, T total) { sums[c] = total; }, at);
}
