// bn_one_launch.cu - batch norm in one launch forward and one launch backward (cooperative
// grids, grid_sync.cuh), beside the two-launch passes of batchnorm.cu and fused.cu, which stay
// the selectable reference (cuda_norm.py's bn_in_one_launch).
//
// The normalize (or dx) pass needs the channel sums of the whole batch, which is why the
// reference takes two launches: the end of the first is the only grid-wide wait it has. Here a
// grid barrier replaces that launch boundary:
//
//   forward   phase 1  the statistics: every block takes slices (z, c, p) of bn_moments' grid
//                      (z = sum of d or of d^2, channel c, slice p of P) in a grid-stride loop,
//                      and the last block to finish a channel computes its mean, rstd and
//                      running statistics (once), exactly as bn_moments does
//             grid_sync()
//             phase 2  the output pass of the fused pattern, grid-stride over its outputs:
//                      bn_normalize's, bn_relu_pool_forward's or relu_bn_pool_dropout_forward's
//   backward  phase 1  the dbeta / dgamma sums (the *_backward_sums slices), grid_sync(), then
//             phase 2  the dx pass, with the channel sums of dx (the bias gradient of the layer
//                      before: the *_backward_dx_sums slices) when with_sums, else elementwise
//
// Same slices, same order of every sum, same per-element arithmetic (the shared device
// functions of batchnorm.cu and fused.cu): the bits of the two-launch chain, whatever the grid.
// P (the slices per channel) is the reference's, chosen from the shapes by the launcher; the
// grid only decides which block takes which slice.
//
// Memory: phase 2 reads x again, as the reference's second launch does; on a GPU the second
// read hits the L2 only where the map fits in it (the small late layers).
//
// Buffers: partial (3, C, P): the two phase-1 reductions, then the backward's dx sums;
// arrivals: 3C zeroed counters (2C for phase 1, then C for bn_moments' pairing of the halves
// or for the dx sums), left zero.
#include "fused.cu"
#include "grid_sync.cuh"

constexpr int COOPERATIVE_THREADS = REDUCE_THREADS;

// The slices of `reductions` channel reductions over (C, P), handed out to blocks in a
// grid-stride loop: f(slice) for each, every thread of a block on the same slice.
template <typename F>
__device__ inline void for_each_slice(int reductions, int C, int P, F f) {
    for (int item = blockIdx.x; item < reductions * C * P; item += gridDim.x)
        f(ChannelSlice{item / P % C, item % P, P, item / (C * P)});
}

// Forward phase 1 then 2: the statistics of bn_input<PRE_RELU>(x) (mean, rstd, running
// statistics updated once), the barrier, then output(i) for i in [0, outputs).
template <typename T, bool PRE_RELU, typename Output>
__device__ void bn_forward_phases(T* mean, T* rstd, T* running_mean, T* running_var, T* partial,
                                  unsigned* arrivals, const T* x, int N, int C, int S, int P,
                                  T momentum, T keep, T eps, int unbiased, int outputs,
                                  Output output) {
    __shared__ T warp_totals[REDUCE_THREADS / 32];
    for_each_slice(2, C, P, [&](ChannelSlice at) {
        bn_moments_slice<T, PRE_RELU>(mean, rstd, running_mean, running_var, partial, arrivals, x,
                                      N, C, S, momentum, keep, eps, unbiased, warp_totals, at);
    });
    grid_sync();
    for_each_in_grid(outputs, output);
}

// Backward phase 1 then 2: dbeta, dgamma (term(i, c, for_gamma): an element's term), the
// barrier, then dx[i] = dx_value(i, c), with its channel sums in dx_sums when with_sums.
template <typename T, typename Term, typename DxValue>
__device__ void bn_backward_phases(T* dx, T* dx_sums, T* dbeta, T* dgamma, T* partial,
                                   unsigned* arrivals, int N, int C, int S, int P, int with_sums,
                                   Term term, DxValue dx_value) {
    __shared__ T warp_totals[REDUCE_THREADS / 32];
    for_each_slice(2, C, P, [&](ChannelSlice at) {
        const bool for_gamma = at.z == 1;
        channel_reduce(partial, arrivals, N, C, S, warp_totals,
                       [=](unsigned i, int c) { return term(int(i), c, for_gamma); },
                       [=](int c, T total) { (for_gamma ? dgamma : dbeta)[c] = total; }, at);
    });
    grid_sync();
    if (with_sums)
        for_each_slice(1, C, P, [&](ChannelSlice at) {
            write_and_channel_sum(dx, dx_sums, partial + 2 * C * P, arrivals + 2 * C, N, C, S,
                                  warp_totals, [=](unsigned i, int c) { return dx_value(int(i), c); },
                                  at);
        });
    else
        for_each_in_grid(N * C * S, [&](int i) { dx[i] = dx_value(i, i / S % C); });
}

// The statistics' arguments, then the pool geometry as pool2d_forward's.
#define BN_STATISTICS_PARAMETERS                                                                 \
    T *mean, T *rstd, T *running_mean, T *running_var, T *partial, unsigned *arrivals, const T *x, \
        const T *gamma, const T *beta, int N, int C, int S, int P, T momentum, T keep, T eps,      \
        int unbiased
#define BN_STATISTICS_ARGUMENTS                                                              \
    mean, rstd, running_mean, running_var, partial, arrivals, x, N, C, S, P, momentum, keep, \
        eps, unbiased
#define POOL_GEOMETRY_PARAMETERS                                                              \
    int mode, int NC, int H, int W, int kh, int kw, int sh, int sw, int pt, int pl, int Ho, int Wo
#define BN_POOL_LAYER \
    const BnReluPool<T> layer{x, mean, rstd, gamma, beta, C, mode, NC, H, W, kh, kw, sh, sw, pt, pl, Ho, Wo}

// ---- forward: y as bn_moments then bn_normalize (batchnorm.cu) compute it.
template <typename T, bool PRE_RELU, bool POST_RELU>
__global__ void __launch_bounds__(COOPERATIVE_THREADS, COOPERATIVE_BLOCKS_PER_SM)
bn_train_one_launch(T* y, BN_STATISTICS_PARAMETERS) {
    bn_forward_phases<T, PRE_RELU>(BN_STATISTICS_ARGUMENTS, N * C * S, [=](int i) {
        y[i] = bn_output<T, POST_RELU>(bn_input<T, PRE_RELU>(x, i), i / S % C, mean, rstd, gamma,
                                       beta);
    });
}

// y, index as bn_moments then bn_relu_pool_forward (fused.cu).
template <typename T>
__global__ void __launch_bounds__(COOPERATIVE_THREADS, COOPERATIVE_BLOCKS_PER_SM)
bn_relu_pool_forward_one_launch(T* y, int* index, BN_STATISTICS_PARAMETERS,
                                POOL_GEOMETRY_PARAMETERS) {
    BN_POOL_LAYER;
    bn_forward_phases<T, false>(BN_STATISTICS_ARGUMENTS, NC * Ho * Wo,
                                [=](int o) { layer.write_output(o, y, index); });
}

// y, index as bn_moments of relu(x) then relu_bn_pool_dropout_forward (fused.cu). The dropout
// step as there (advance: fused.cu's header); the counter moves after the barrier, once every
// thread has read it.
template <typename T>
__global__ void __launch_bounds__(COOPERATIVE_THREADS, COOPERATIVE_BLOCKS_PER_SM)
relu_bn_pool_dropout_forward_one_launch(T* y, int* index, BN_STATISTICS_PARAMETERS,
                                        POOL_GEOMETRY_PARAMETERS, double rate,
                                        unsigned long long seed,
                                        unsigned long long* step_counter, int advance) {
    const unsigned long long step = *step_counter + advance;
    BN_POOL_LAYER;
    const ReluBnPoolDropout<T> fused{layer, rate, seed, step};
    bn_forward_phases<T, true>(BN_STATISTICS_ARGUMENTS, NC * Ho * Wo,
                               [=](int o) { fused.write_output(o, y, index); });
    if (advance && blockIdx.x == 0 && threadIdx.x == 0) *step_counter = step;
}

// ---- backward: as bn_backward_sums then bn_backward_dx (with_sums: bn_backward_dx_sums).
// dx_sums: (C,) when with_sums, else any array (not written).
template <typename T, bool PRE_RELU, bool POST_RELU>
__global__ void __launch_bounds__(COOPERATIVE_THREADS, COOPERATIVE_BLOCKS_PER_SM)
bn_backward_one_launch(T* dx, T* dx_sums, T* dbeta, T* dgamma, T* partial, unsigned* arrivals,
                       const T* dy, const T* y, const T* x, const T* gamma, const T* mean,
                       const T* rstd, int N, int C, int S, int P, int with_sums) {
    bn_backward_phases(dx, dx_sums, dbeta, dgamma, partial, arrivals, N, C, S, P, with_sums,
        [=](int i, int c, bool for_gamma) {
            return bn_backward_term<T, PRE_RELU, POST_RELU>(i, c, for_gamma, dy, y, x, mean, rstd);
        },
        [=](int i, int c) {
            return bn_dx<T, PRE_RELU, POST_RELU>(i, c, dy, y, x, gamma, mean, rstd, dbeta, dgamma,
                                                 N * S);
        });
}

// As bn_relu_pool_backward_sums then bn_relu_pool_backward_dx (with_sums: _dx_sums).
#define BN_POOL_BACKWARD_PHASES(layer)                                                           \
    bn_backward_phases(dx, dx_sums, dbeta, dgamma, partial, arrivals, N, C, S, P, with_sums,   \
        [=](int i, int c, bool for_gamma) { return layer.backward_term(i, c, for_gamma, dy, index); }, \
        [=](int i, int c) { return layer.input_grad(i, c, dy, index, dbeta, dgamma, N * S); })

template <typename T>
__global__ void __launch_bounds__(COOPERATIVE_THREADS, COOPERATIVE_BLOCKS_PER_SM)
bn_relu_pool_backward_one_launch(T* dx, T* dx_sums, T* dbeta, T* dgamma, T* partial,
                                 unsigned* arrivals, const T* dy, const int* index,
                                 BN_RELU_POOL_PARAMETERS, int P, int with_sums) {
    BN_RELU_POOL_LAYER;
    BN_POOL_BACKWARD_PHASES(layer);
}

// As relu_bn_pool_dropout_backward_sums then _backward_dx_sums; the step read, never advanced.
template <typename T>
__global__ void __launch_bounds__(COOPERATIVE_THREADS, COOPERATIVE_BLOCKS_PER_SM)
relu_bn_pool_dropout_backward_one_launch(T* dx, T* dx_sums, T* dbeta, T* dgamma, T* partial,
                                         unsigned* arrivals, const T* dy, const int* index,
                                         BN_RELU_POOL_PARAMETERS, int P, double rate,
                                         unsigned long long seed,
                                         const unsigned long long* step_counter) {
    const unsigned long long step = *step_counter;
    const int with_sums = 1;
    RELU_BN_POOL_DROPOUT_LAYER;
    BN_POOL_BACKWARD_PHASES(fused);
}
