// batchnorm.cu - batch normalization over the channel axis of x viewed as (N, C, S)
// (S = H*W for conv maps, 1 for (N, C) features).
//
// Maths (m = N*S values per channel):
//   train   mean = sum(x) / m, var = sum((x - mean)^2) / m      (two passes: no cancellation)
//           rstd = 1 / sqrt(var + eps), y = (x - mean) * (rstd * gamma) + beta
//           running = (1 - momentum) * running + momentum * batch   (var scaled by m / (m - 1)
//           when unbiased)
//   eval    y = x * scale + (beta - running_mean * scale), scale = gamma / sqrt(running_var + eps)
//   backward xhat = (x - mean) * rstd, dbeta = sum(dy), dgamma = sum(dy * xhat),
//           dx = gamma * rstd / m * (m * dy - dbeta - xhat * dgamma)
//
// Activations folded in (the fused passes, cuda_norm.py): PRE_RELU normalizes relu(x) (a
// ReLU -> BN pair, as in vgg_like), POST_RELU returns relu(y) (BN -> ReLU, as in vgg8_bn).
// The ReLU is applied to each value as it is read or written, so the fused pair computes
// exactly the numbers of the two separate layers, without storing the intermediate map:
//   PRE_RELU   statistics and xhat of r = max(x, 0); dx = (x > 0) * dx_bn(r)
//   POST_RELU  y = max(bn(x), 0); the backward uses g = (y > 0) * dy in place of dy
//
// Launch sequence (cuda_norm.py), each channel sum one launch of reduce.cu's channel_reduce
// (per-block partials, the last block of a channel adds them in order: reproducible bits):
//   train:    bn_mean -> bn_variance (rstd and the running statistics, in place) -> bn_normalize
//             or, version 3: bn_moments (the same, one launch) -> bn_normalize
//   backward: bn_backward_sums (dbeta and dgamma: grid z = 2) -> bn_backward_dx
// Version 1 took 5 launches for training (separate partial-sum and finishing kernels) and 5
// for the backward; version 2 takes 3 and 2. Version 3 (the default; cuda_norm.py keeps
// version 2 selectable) computes the statistics in one launch, bn_moments, from shifted sums
// of d and d^2: 2 launches for training. All read x three times in training; a single-pass
// (Welford) statistics kernel would read it twice, at the cost of a less obvious kernel.
#include "reduce.cu"

template <typename T, bool PRE_RELU>
__device__ __forceinline__ T bn_input(const T* x, unsigned i) {
    const T value = x[i];
    return PRE_RELU && !(value > T(0)) ? T(0) : value;
}

// mean[c] = sum over channel c of bn_input(x) / count. Grid (C, P).
template <typename T, bool PRE_RELU>
__global__ void __launch_bounds__(REDUCE_THREADS)
bn_mean(T* mean, T* partial, unsigned* arrivals, const T* x, int N, int C, int S) {
    __shared__ T warp_totals[REDUCE_THREADS / 32];
    const T count = T(N * S);
    channel_reduce(partial, arrivals, N, C, S, warp_totals,
                   [=](unsigned i, int) { return bn_input<T, PRE_RELU>(x, i); },
                   [=](int c, T total) { mean[c] = total / count; });
}

// rstd[c] from the batch variance, and channel c's running statistics moved toward the
// batch's (keep = 1 - momentum; var scaled by m / (m - 1) when unbiased). count = m.
template <typename T>
__device__ __forceinline__ void bn_store_statistics(int c, T var, int count, T* rstd,
                                                    T* running_mean, T* running_var,
                                                    const T* mean, T momentum, T keep, T eps,
                                                    int unbiased) {
    rstd[c] = T(1) / dev_sqrt(var + eps);
    running_mean[c] = running_mean[c] * keep + momentum * mean[c];
    const T stored_var = unbiased ? var * T(count) / T(count > 1 ? count - 1 : 1) : var;
    running_var[c] = running_var[c] * keep + momentum * stored_var;
}

// The variance (sum of (x - mean)^2 / count), then rstd and the running statistics updated
// in place (keep = 1 - momentum; var scaled by m / (m - 1) when unbiased). Grid (C, P).
template <typename T, bool PRE_RELU>
__global__ void __launch_bounds__(REDUCE_THREADS)
bn_variance(T* rstd, T* running_mean, T* running_var, T* partial, unsigned* arrivals,
            const T* x, const T* mean, int N, int C, int S, T momentum, T keep, T eps,
            int unbiased) {
    __shared__ T warp_totals[REDUCE_THREADS / 32];
    const int count = N * S;
    channel_reduce(partial, arrivals, N, C, S, warp_totals, [=](unsigned i, int c) {
        const T d = bn_input<T, PRE_RELU>(x, i) - mean[c];
        return d * d;
    }, [=](int c, T sqdev) {
        bn_store_statistics(c, sqdev / T(count), count, rstd, running_mean, running_var, mean,
                            momentum, keep, eps, unbiased);
    });
}

// Version 3 of the statistics, one launch (bn_moments) instead of bn_mean then bn_variance.
// Grid (C, P, 2): the z = 0 half sums d = v - K over each channel, the z = 1 half sums d * d
// (v = bn_input(x), K = the channel's first value), each one channel_reduce (fixed slices and
// order: reproducible). The shift K keeps var = (sum d^2 - (sum d)^2 / m) / m from cancelling:
// K is a value of the channel, a few standard deviations from its mean at most, where the
// unshifted sum of squares would lose every digit of a small variance around a large mean.
// Whichever half finishes channel c second (an integer atomic on arrivals[2C + c]) computes
// mean, rstd and the running statistics as bn_variance does; the first parks its sum in mean
// or rstd. x is still read twice (once per half), but with one launch and no dependency.
// bn_moments_slice: one block's slice `at` of it (bn_one_launch.cu loops over them).
template <typename T, bool PRE_RELU>
__device__ void bn_moments_slice(T* mean, T* rstd, T* running_mean, T* running_var, T* partial,
                                 unsigned* arrivals, const T* x, int N, int C, int S, T momentum,
                                 T keep, T eps, int unbiased, T* warp_totals, ChannelSlice at) {
    const bool squares = at.z == 1;
    const int count = N * S;
    channel_reduce(partial, arrivals, N, C, S, warp_totals, [=](unsigned i, int c) {
        const T d = bn_input<T, PRE_RELU>(x, i) - bn_input<T, PRE_RELU>(x, unsigned(c) * S);
        return squares ? d * d : d;
    }, [=](int c, T total) {
        (squares ? rstd : mean)[c] = total;
        __threadfence();  // the parked sum is visible before this half counts itself in
        if (atomicAdd(&arrivals[2 * C + c], 1u) != 1u) return;
        arrivals[2 * C + c] = 0;
        __threadfence();
        const T sum = ((const volatile T*)mean)[c], sum_sq = ((const volatile T*)rstd)[c];
        const T m = T(count), shifted_mean = sum / m;
        const T var = max((sum_sq - sum * shifted_mean) / m, T(0));
        mean[c] = bn_input<T, PRE_RELU>(x, unsigned(c) * S) + shifted_mean;
        bn_store_statistics(c, var, count, rstd, running_mean, running_var, mean, momentum, keep,
                            eps, unbiased);
    }, at);
}

template <typename T, bool PRE_RELU>
__global__ void __launch_bounds__(REDUCE_THREADS)
bn_moments(T* mean, T* rstd, T* running_mean, T* running_var, T* partial, unsigned* arrivals,
           const T* x, int N, int C, int S, T momentum, T keep, T eps, int unbiased) {
    __shared__ T warp_totals[REDUCE_THREADS / 32];
    bn_moments_slice<T, PRE_RELU>(mean, rstd, running_mean, running_var, partial, arrivals, x, N,
                                  C, S, momentum, keep, eps, unbiased, warp_totals, block_slice());
}

// y of one value of channel c, then max(y, 0) when POST_RELU. (Shared with fused.cu, so
// fused passes compute the very same bits.)
template <typename T, bool POST_RELU>
__device__ __forceinline__ T bn_output(T value, int c, const T* mean, const T* rstd,
                                       const T* gamma, const T* beta) {
    const T y = (value - mean[c]) * (rstd[c] * gamma[c]) + beta[c];
    return POST_RELU && !(y > T(0)) ? T(0) : y;
}

// y = (x - mean) * (rstd * gamma) + beta, of bn_input(x), then max(y, 0) when POST_RELU.
// One thread per element.
template <typename T, bool PRE_RELU, bool POST_RELU>
__global__ void bn_normalize(T* y, const T* x, const T* mean, const T* rstd, const T* gamma,
                             const T* beta, int total, int C, int S) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    y[i] = bn_output<T, POST_RELU>(bn_input<T, PRE_RELU>(x, i), i / S % C, mean, rstd, gamma, beta);
}

// The gradient reaching the normalization: dy, or dy where the fused ReLU's output y > 0.
template <typename T, bool POST_RELU>
__device__ __forceinline__ T bn_output_grad(const T* dy, const T* y, unsigned i) {
    return POST_RELU && !(y[i] > T(0)) ? T(0) : dy[i];
}

// Element i's term of dbeta (g) or, for_gamma, of dgamma (g * xhat), g = bn_output_grad.
template <typename T, bool PRE_RELU, bool POST_RELU>
__device__ __forceinline__ T bn_backward_term(unsigned i, int c, bool for_gamma, const T* dy,
                                              const T* y, const T* x, const T* mean,
                                              const T* rstd) {
    const T g = bn_output_grad<T, POST_RELU>(dy, y, i);
    return for_gamma ? g * ((bn_input<T, PRE_RELU>(x, i) - mean[c]) * rstd[c]) : g;
}

// dbeta = sum of g, dgamma = sum of g * xhat over each channel (g = bn_output_grad).
// Grid (C, P, 2): z = 0 sums for dbeta, z = 1 for dgamma. y: the fused ReLU's output
// (any array when not POST_RELU: it is not read then).
template <typename T, bool PRE_RELU, bool POST_RELU>
__global__ void __launch_bounds__(REDUCE_THREADS)
bn_backward_sums(T* dbeta, T* dgamma, T* partial, unsigned* arrivals, const T* dy, const T* y,
                 const T* x, const T* mean, const T* rstd, int N, int C, int S) {
    __shared__ T warp_totals[REDUCE_THREADS / 32];
    const bool for_gamma = blockIdx.z == 1;
    channel_reduce(partial, arrivals, N, C, S, warp_totals, [=](unsigned i, int c) {
        return bn_backward_term<T, PRE_RELU, POST_RELU>(i, c, for_gamma, dy, y, x, mean, rstd);
    }, [=](int c, T total) { (for_gamma ? dgamma : dbeta)[c] = total; });
}

// The gradient of one input value of channel c, from g (the gradient reaching the
// normalization) and the channel sums. (Shared with fused.cu.)
template <typename T>
__device__ __forceinline__ T bn_input_grad(T g, T value, int c, const T* gamma, const T* mean,
                                           const T* rstd, const T* dbeta, const T* dgamma,
                                           int count) {
    const T xhat = (value - mean[c]) * rstd[c];
    return gamma[c] * rstd[c] / T(count) * (T(count) * g - dbeta[c] - xhat * dgamma[c]);
}

// dx = gamma * rstd / m * (m * g - dbeta - xhat * dgamma), zero where x <= 0 when PRE_RELU.
// One thread per element.
template <typename T, bool PRE_RELU, bool POST_RELU>
__device__ __forceinline__ T bn_dx(unsigned i, int c, const T* dy, const T* y, const T* x,
                                   const T* gamma, const T* mean, const T* rstd, const T* dbeta,
                                   const T* dgamma, int count) {
    const T value = bn_input_grad(bn_output_grad<T, POST_RELU>(dy, y, i),
                                  bn_input<T, PRE_RELU>(x, i), c, gamma, mean, rstd, dbeta,
                                  dgamma, count);
    return PRE_RELU && !(x[i] > T(0)) ? T(0) : value;
}

template <typename T, bool PRE_RELU, bool POST_RELU>
__global__ void bn_backward_dx(T* dx, const T* dy, const T* y, const T* x, const T* gamma,
                               const T* mean, const T* rstd, const T* dbeta, const T* dgamma,
                               int total, int C, int S, int count) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    dx[i] = bn_dx<T, PRE_RELU, POST_RELU>(i, i / S % C, dy, y, x, gamma, mean, rstd, dbeta, dgamma,
                                          count);
}

// bn_backward_dx that also sums dx per channel: dx_sums is the bias gradient of the conv (or
// linear) layer before the batch norm, which then needs no channel_sums launch of its own
// (reduce.cu's write_and_channel_sum: the same bits). Grid (C, P).
template <typename T, bool PRE_RELU, bool POST_RELU>
__global__ void __launch_bounds__(REDUCE_THREADS)
bn_backward_dx_sums(T* dx, T* dx_sums, T* partial, unsigned* arrivals, const T* dy, const T* y,
                    const T* x, const T* gamma, const T* mean, const T* rstd, const T* dbeta,
                    const T* dgamma, int N, int C, int S) {
    __shared__ T warp_totals[REDUCE_THREADS / 32];
    write_and_channel_sum(dx, dx_sums, partial, arrivals, N, C, S, warp_totals, [=](unsigned i, int c) {
        return bn_dx<T, PRE_RELU, POST_RELU>(i, c, dy, y, x, gamma, mean, rstd, dbeta, dgamma, N * S);
    });
}

// Inference: the per-channel affine map of the running statistics. One thread per element.
template <typename T>
__global__ void bn_eval(T* y, const T* x, const T* gamma, const T* beta, const T* running_mean,
                        const T* running_var, T eps, int total, int C, int S) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const int c = i / S % C;
    const T scale = gamma[c] / dev_sqrt(running_var[c] + eps);
    y[i] = x[i] * scale + (beta[c] - running_mean[c] * scale);
}

// Eval-mode backward. The statistics are constants there, so y = gamma * xhat + beta with
// xhat = (x - running_mean) * rstd, rstd = 1 / sqrt(running_var + eps):
//   dx = dy * gamma * rstd, and dy_xhat = dy * xhat, whose channel sums (reduce.cu) are dgamma.
// (dbeta is the channel sums of dy.) One thread per element.
template <typename T>
__global__ void bn_eval_backward(T* dx, T* dy_xhat, const T* dy, const T* x, const T* gamma,
                                 const T* running_mean, const T* running_var, T eps, int total,
                                 int C, int S) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const int c = i / S % C;
    const T rstd = T(1) / dev_sqrt(running_var[c] + eps);
    dx[i] = dy[i] * (gamma[c] * rstd);
    dy_xhat[i] = dy[i] * ((x[i] - running_mean[c]) * rstd);
}
