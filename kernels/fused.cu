// fused.cu - passes that do the work of neighbouring layers (nn/fusion.py picks them).
//
// Batch norm + ReLU + pooling (vgg8_bn's conv -> BN -> ReLU -> pool), training: the
// statistics as batchnorm.cu computes them (bn_mean, bn_variance), then one thread per pooled
// output reads relu(bn(x)) for its window's cells (bn_output, batchnorm.cu's own arithmetic),
// so the full-resolution map is never stored. The backward recomputes where it is needed
// g(i) = relu(bn(x_i)) > 0 ? (the pooling's gather of dy at cell i) : 0, the gradient that
// reaches the normalization: in the dbeta / dgamma sums and in dx. Same bits as the three
// layers' kernels; 3 + 2 launches instead of 5 + 5, and no full-resolution map written.
//
// Pooling + dropout (vgg_like's pool -> dropout): y = pool(x) * mask, mask computed from
// (seed, step) exactly as dropout_forward computes it, so the pair gives the same bits as the
// two kernels, while the pooled map is written once and the mask is never stored: the
// backward recomputes it (dx = pool_backward(dy * mask)).
//   mask[o] = (u >= rate) / (1 - rate) in double, rounded to T; u from word o % 4 of
//   Philox(counter o / 4, step; seed) (elementwise.cu, numpy_ref.dropout_forward)
// Also dropout alone with a recomputed mask: dropout_apply(x) = x * mask is both the forward
// (of x) and the backward (of dy), so nothing but (seed, step) is kept between them.
//
// The dropout step comes from device memory, not from a kernel argument, so that a captured
// CUDA graph replays later steps with their own masks: step = *step_counter + advance, and
// when advance is 1 the last block of the launch to finish (counted with an integer atomic in
// arrivals[0], as in reduce.cu's channel_reduce) stores the new step. Every block reads the
// counter before it counts itself in, so all of them use the same step. The launcher
// (cuda_fused.py) keeps one counter per dropout seed and passes advance = 1 for a layer's next
// step (the forward), 0 for the same step again (the backward).
//
// Thread layout: pool + dropout as pool.cu (one thread per output forward, one per input cell
// gathering backward); dropout_apply one thread per 4 elements (one Philox call).
#include "batchnorm.cu"
#include "elementwise.cu"
#include "pool.cu"

// The mask value a random word gives: u = (top 24 bits) * 2^-24 kept when u >= rate.
template <typename T>
__device__ inline T mask_of_word(unsigned word, double rate) {
    const double u = (double)(word >> 8) * (1.0 / 16777216.0);
    return T((u >= rate ? 1.0 : 0.0) / (1.0 - rate));
}

// The mask value of element i (one Philox call: a quarter of it is used).
template <typename T>
__device__ inline T dropout_scale(int i, double rate, unsigned long long seed,
                                  unsigned long long step) {
    return mask_of_word<T>(philox4x32_10((unsigned long long)(i / 4), step, seed).w[i % 4], rate);
}

// Called by every thread of a block once it has used `step`: the last block of the launch
// stores it in *step_counter when advance (see the header).
__device__ inline void finish_step(unsigned long long* step_counter, unsigned* arrivals,
                                   int advance, unsigned long long step) {
    if (!advance) return;
    __syncthreads();  // every thread of this block has read the counter
    if (threadIdx.x != 0) return;
    __threadfence();
    const unsigned blocks = gridDim.x * gridDim.y * gridDim.z;
    if (atomicAdd(arrivals, 1u) == blocks - 1) {
        *step_counter = step;
        *arrivals = 0;
    }
}

// y = x * mask (the forward of x, or the backward of dy: the same map). One thread per counter.
template <typename T>
__global__ void dropout_apply(T* y, const T* x, int n, double rate, unsigned long long seed,
                              unsigned long long* step_counter, int advance, unsigned* arrivals) {
    const unsigned long long step = *step_counter + advance;
    const int q = blockIdx.x * blockDim.x + threadIdx.x;
    if (q < (n + 3) / 4) {
        const Philox4 bits = philox4x32_10((unsigned long long)q, step, seed);
        for (int word = 0; word < 4 && 4 * q + word < n; ++word)
            y[4 * q + word] = x[4 * q + word] * mask_of_word<T>(bits.w[word], rate);
    }
    finish_step(step_counter, arrivals, advance, step);
}

// pool2d_forward, then each output times its dropout mask. Arguments as pool2d_forward's.
template <typename T>
__global__ void pool2d_dropout_forward(T* y, int* index, const T* x, int mode, int NC, int H,
                                       int W, int kh, int kw, int sh, int sw, int pt, int pl,
                                       int Ho, int Wo, double rate, unsigned long long seed,
                                       unsigned long long* step_counter, int advance,
                                       unsigned* arrivals) {
    const unsigned long long step = *step_counter + advance;
    const int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o < NC * Ho * Wo) {
        int best = 0;
        const T pooled = pool_output<T>(o, &best, [=](int c) { return x[c]; }, mode, H, W, kh, kw,
                                        sh, sw, pt, pl, Ho, Wo);
        y[o] = pooled * dropout_scale<T>(o, rate, seed, step);
        if (mode != POOL_AVG) index[o] = best;
    }
    finish_step(step_counter, arrivals, advance, step);
}

// pool2d_backward of dy * mask, the mask recomputed. Arguments as pool2d_backward's.
template <typename T>
__global__ void pool2d_dropout_backward(T* dx, const T* dy, const int* index, int mode, int NC,
                                        int H, int W, int kh, int kw, int sh, int sw, int pt,
                                        int pl, int Ho, int Wo, double rate,
                                        unsigned long long seed, unsigned long long* step_counter,
                                        int advance, unsigned* arrivals) {
    const unsigned long long step = *step_counter + advance;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < NC * H * W)
        dx[i] = pool_gather<T>(
            i, [=](int o) { return dy[o] * dropout_scale<T>(o, rate, seed, step); }, index, mode, H,
            W, kh, kw, sh, sw, pt, pl, Ho, Wo);
    finish_step(step_counter, arrivals, advance, step);
}

// ---- Batch norm + ReLU + pooling. x: (N, C, H, W) = (NC, H, W) planes; mean, rstd, gamma,
// beta: (C,); the pool geometry (mode, NC, ..., Wo) as pool2d_forward's.

template <typename T>
struct BnReluPool {
    const T *x, *mean, *rstd, *gamma, *beta;
    int C, mode, NC, H, W, kh, kw, sh, sw, pt, pl, Ho, Wo;

    __device__ T value(int i) const {  // relu(bn(x_i))
        return bn_output<T, true>(x[i], i / (H * W) % C, mean, rstd, gamma, beta);
    }
    // The gradient reaching the normalization at cell i: the gathered dy where the ReLU passed.
    __device__ T grad(int i, const T* dy, const int* index) const {
        if (!(value(i) > T(0))) return T(0);
        return pool_gather<T>(i, [=](int o) { return dy[o]; }, index, mode, H, W, kh, kw, sh, sw,
                              pt, pl, Ho, Wo);
    }
    // dx at cell i of channel c, from grad and the channel sums (count = N * S values).
    __device__ T input_grad(int i, int c, const T* dy, const int* index, const T* dbeta,
                            const T* dgamma, int count) const {
        return bn_input_grad(grad(i, dy, index), x[i], c, gamma, mean, rstd, dbeta, dgamma, count);
    }
    // Element i's term of dbeta (grad) or, for_gamma, of dgamma (grad * xhat).
    __device__ T backward_term(int i, int c, bool for_gamma, const T* dy, const int* index) const {
        const T g = grad(i, dy, index);
        return for_gamma ? g * ((x[i] - mean[c]) * rstd[c]) : g;
    }
    // y[o] = pool(relu(bn(x))) at pooled output o, and its index.
    __device__ void write_output(int o, T* y, int* index) const {
        int best = 0;
        y[o] = pool_output<T>(o, &best, [=](int i) { return value(i); }, mode, H, W, kh, kw, sh,
                              sw, pt, pl, Ho, Wo);
        if (mode != POOL_AVG) index[o] = best;
    }
};

// The kernels' shared parameters, gathered into a BnReluPool named `layer`.
// (N, C, S = H * W) as reduce.cu's channel sums see x, then the pool geometry.
#define BN_RELU_POOL_PARAMETERS                                                                \
    const T *x, const T *mean, const T *rstd, const T *gamma, const T *beta, int N, int C, int S, \
        int mode, int NC, int H, int W, int kh, int kw, int sh, int sw, int pt, int pl, int Ho,   \
        int Wo
#define BN_RELU_POOL_LAYER                                                                 \
    const BnReluPool<T> layer{x,  mean, rstd, gamma, beta, C,  mode, NC, H,                 \
                              W,  kh,   kw,   sh,    sw,   pt, pl,   Ho, Wo}

// y: (NC, Ho, Wo) = pool(relu(bn(x))), index as pool2d_forward's. One thread per output.
template <typename T>
__global__ void bn_relu_pool_forward(T* y, int* index, BN_RELU_POOL_PARAMETERS) {
    BN_RELU_POOL_LAYER;
    const int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= NC * Ho * Wo) return;
    layer.write_output(o, y, index);
}

// dbeta = sum of g, dgamma = sum of g * xhat per channel. Grid (C, P, 2) as bn_backward_sums.
template <typename T>
__global__ void __launch_bounds__(REDUCE_THREADS)
bn_relu_pool_backward_sums(T* dbeta, T* dgamma, T* partial, unsigned* arrivals, const T* dy,
                           const int* index, BN_RELU_POOL_PARAMETERS) {
    BN_RELU_POOL_LAYER;
    __shared__ T warp_totals[REDUCE_THREADS / 32];
    const bool for_gamma = blockIdx.z == 1;
    channel_reduce(partial, arrivals, N, C, S, warp_totals, [=](unsigned i, int c) {
        return layer.backward_term(int(i), c, for_gamma, dy, index);
    }, [=](int c, T total) { (for_gamma ? dgamma : dbeta)[c] = total; });
}

// dx from g and the channel sums, as bn_backward_dx. One thread per input element.
template <typename T>
__global__ void bn_relu_pool_backward_dx(T* dx, const T* dy, const int* index, const T* dbeta,
                                         const T* dgamma, BN_RELU_POOL_PARAMETERS) {
    BN_RELU_POOL_LAYER;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= NC * H * W) return;
    dx[i] = layer.input_grad(i, i / S % C, dy, index, dbeta, dgamma, N * S);
}

// bn_relu_pool_backward_dx that also sums dx per channel (dx_sums: the bias gradient of the
// conv before the batch norm), reduce.cu's write_and_channel_sum. Grid (C, P).
template <typename T>
__global__ void __launch_bounds__(REDUCE_THREADS)
bn_relu_pool_backward_dx_sums(T* dx, T* dx_sums, T* partial, unsigned* arrivals, const T* dy,
                              const int* index, const T* dbeta, const T* dgamma,
                              BN_RELU_POOL_PARAMETERS) {
    BN_RELU_POOL_LAYER;
    __shared__ T warp_totals[REDUCE_THREADS / 32];
    write_and_channel_sum(dx, dx_sums, partial, arrivals, N, C, S, warp_totals, [=](unsigned i, int c) {
        return layer.input_grad(int(i), c, dy, index, dbeta, dgamma, N * S);
    });
}

// ---------------------------------------------------------------------------- ReLU backward + bias gradient
// Below a conv -> ReLU pair (or any layer with a bias before a ReLU): dx = (y > 0) ? dy : 0, as
// relu_backward computes it, and db[c] = the channel sum of dx, the bias gradient of the layer
// before, as channel_sums computes it (the same slices in the same order: the same bits).
// One pass over dy instead of two launches (reduce.cu's write_and_channel_sum). Grid (C, P).
template <typename T>
__global__ void __launch_bounds__(REDUCE_THREADS)
relu_backward_channel_sums(T* dx, T* db, T* partial, unsigned* arrivals, const T* dy, const T* y,
                           int N, int C, int S) {
    __shared__ T warp_totals[REDUCE_THREADS / 32];
    write_and_channel_sum(dx, db, partial, arrivals, N, C, S, warp_totals,
                          [=](unsigned i, int) { return y[i] > T(0) ? dy[i] : T(0); });
}

// ---------------------------------------------------------------------------- ReLU + batch norm + pooling + dropout
// vgg_like's ReLU -> BN -> pool -> dropout, training: the statistics of relu(x) as batchnorm.cu
// computes them (PRE_RELU), then one thread per pooled output reads bn(relu(x)) for its
// window's cells and multiplies the result by its dropout mask (pool2d_dropout_forward's), so
// neither the normalized map nor its pooling is stored apart. The backward recomputes the mask:
// g(i) = the pooling's gather of dy * mask at cell i, the gradient reaching the normalization,
// in the dbeta / dgamma sums and in dx (zero where x <= 0), and dx's channel sums come with it
// (the bias gradient of the conv before). The same bits as ReLUBatchNorm's kernels followed by
// pool2d_dropout_*; 2 + 2 launches instead of 3 + 3.
template <typename T>
struct ReluBnPoolDropout {
    BnReluPool<T> layer;  // x, the statistics and the pool geometry
    double rate;
    unsigned long long seed, step;

    __device__ T value(int i) const {  // bn(relu(x_i))
        const BnReluPool<T>& l = layer;
        return bn_output<T, false>(bn_input<T, true>(l.x, i), i / (l.H * l.W) % l.C, l.mean, l.rstd,
                                   l.gamma, l.beta);
    }
    __device__ T grad(int i, const T* dy, const int* index) const {
        const BnReluPool<T>& l = layer;
        const double r = rate;
        const unsigned long long s = seed, t = step;
        return pool_gather<T>(i, [=](int o) { return dy[o] * dropout_scale<T>(o, r, s, t); }, index,
                              l.mode, l.H, l.W, l.kh, l.kw, l.sh, l.sw, l.pt, l.pl, l.Ho, l.Wo);
    }
    __device__ T input_grad(int i, int c, const T* dy, const int* index, const T* dbeta,
                            const T* dgamma, int count) const {
        const BnReluPool<T>& l = layer;
        if (!(l.x[i] > T(0))) return T(0);  // the ReLU's backward
        return bn_input_grad(grad(i, dy, index), l.x[i], c, l.gamma, l.mean, l.rstd, dbeta, dgamma,
                             count);
    }
    __device__ T backward_term(int i, int c, bool for_gamma, const T* dy, const int* index) const {
        const BnReluPool<T>& l = layer;
        const T g = grad(i, dy, index);
        return for_gamma ? g * ((bn_input<T, true>(l.x, i) - l.mean[c]) * l.rstd[c]) : g;
    }
    // y[o] = dropout(pool(bn(relu(x)))) at pooled output o, and its index.
    __device__ void write_output(int o, T* y, int* index) const {
        const BnReluPool<T>& l = layer;
        int best = 0;
        const T pooled = pool_output<T>(o, &best, [=](int i) { return value(i); }, l.mode, l.H, l.W,
                                        l.kh, l.kw, l.sh, l.sw, l.pt, l.pl, l.Ho, l.Wo);
        y[o] = pooled * dropout_scale<T>(o, rate, seed, step);
        if (l.mode != POOL_AVG) index[o] = best;
    }
};
#define RELU_BN_POOL_DROPOUT_LAYER \
    BN_RELU_POOL_LAYER;            \
    const ReluBnPoolDropout<T> fused{layer, rate, seed, step}

// y: (NC, Ho, Wo) = dropout(pool(bn(relu(x)))), index as pool2d_forward's. One thread per
// output; the dropout step as pool2d_dropout_forward's (advance: see the header).
template <typename T>
__global__ void relu_bn_pool_dropout_forward(T* y, int* index, BN_RELU_POOL_PARAMETERS,
                                             double rate, unsigned long long seed,
                                             unsigned long long* step_counter, int advance,
                                             unsigned* arrivals) {
    const unsigned long long step = *step_counter + advance;
    RELU_BN_POOL_DROPOUT_LAYER;
    const int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o < NC * Ho * Wo) fused.write_output(o, y, index);
    finish_step(step_counter, arrivals, advance, step);
}

// dbeta = sum of g, dgamma = sum of g * xhat of relu(x). Grid (C, P, 2) as bn_backward_sums.
// The step is read, never advanced: the forward stored it (cuda_fused.py's StepCounter.hold).
template <typename T>
__global__ void __launch_bounds__(REDUCE_THREADS)
relu_bn_pool_dropout_backward_sums(T* dbeta, T* dgamma, T* partial, unsigned* arrivals,
                                   const T* dy, const int* index, BN_RELU_POOL_PARAMETERS,
                                   double rate, unsigned long long seed,
                                   const unsigned long long* step_counter) {
    const unsigned long long step = *step_counter;
    RELU_BN_POOL_DROPOUT_LAYER;
    __shared__ T warp_totals[REDUCE_THREADS / 32];
    const bool for_gamma = blockIdx.z == 1;
    channel_reduce(partial, arrivals, N, C, S, warp_totals, [=](unsigned i, int c) {
        return fused.backward_term(int(i), c, for_gamma, dy, index);
    }, [=](int c, T total) { (for_gamma ? dgamma : dbeta)[c] = total; });
}

// dx and its channel sums (reduce.cu's write_and_channel_sum). Grid (C, P).
template <typename T>
__global__ void __launch_bounds__(REDUCE_THREADS)
relu_bn_pool_dropout_backward_dx_sums(T* dx, T* dx_sums, T* partial, unsigned* arrivals,
                                      const T* dy, const int* index, const T* dbeta,
                                      const T* dgamma, BN_RELU_POOL_PARAMETERS, double rate,
                                      unsigned long long seed,
                                      const unsigned long long* step_counter) {
    const unsigned long long step = *step_counter;
    RELU_BN_POOL_DROPOUT_LAYER;
    __shared__ T warp_totals[REDUCE_THREADS / 32];
    write_and_channel_sum(dx, dx_sums, partial, arrivals, N, C, S, warp_totals, [=](unsigned i, int c) {
        return fused.input_grad(int(i), c, dy, index, dbeta, dgamma, N * S);
    });
}
