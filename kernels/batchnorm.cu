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
// Launch sequence (cuda.py): the channel sums are reduce.cu's two deterministic passes
// (grid (C, P) partials, then one thread per channel), so statistics are bitwise reproducible;
// the per-element kernels here use one thread per element, channel c = (i / S) % C.
//   train:    channel_partial_sums(x) -> sum_partials(mean) -> bn_sqdev_partial_sums ->
//             bn_finalize_stats (rstd + running stats, in place) -> bn_normalize
//   backward: channel_partial_sums(dy), bn_dot_partial_sums -> sum_partials x2 -> bn_backward_dx
// Version 1 (this one) reads x three times in training; a fused single-pass Welford kernel
// would read it once, at the cost of a less obvious kernel.
#include "reduce.cu"

// partial[c, p] = slice p of sum over channel c of (x - mean[c])^2. Grid (C, P).
template <typename T>
__global__ void __launch_bounds__(REDUCE_THREADS)
bn_sqdev_partial_sums(T* partial, const T* x, const T* mean, int N, int C, int S) {
    __shared__ T warp_totals[REDUCE_THREADS / 32];
    channel_slice_sum(partial, N, C, S, warp_totals, [=](long long i, int c) {
        const T d = x[i] - mean[c];
        return d * d;
    });
}

// partial[c, p] = slice p of sum over channel c of dy * xhat. Grid (C, P).
template <typename T>
__global__ void __launch_bounds__(REDUCE_THREADS)
bn_dot_partial_sums(T* partial, const T* dy, const T* x, const T* mean, const T* rstd, int N,
                    int C, int S) {
    __shared__ T warp_totals[REDUCE_THREADS / 32];
    channel_slice_sum(partial, N, C, S, warp_totals, [=](long long i, int c) {
        return dy[i] * ((x[i] - mean[c]) * rstd[c]);
    });
}

// From the variance partials: rstd, and the running statistics updated in place.
// One thread per channel. count = m; keep = 1 - momentum.
template <typename T>
__global__ void bn_finalize_stats(T* rstd, T* running_mean, T* running_var, const T* mean,
                                  const T* sqdev_partial, int C, int P, int count, T momentum,
                                  T keep, T eps, int unbiased) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    T sqdev = 0;
    for (int p = 0; p < P; ++p) sqdev += sqdev_partial[c * P + p];
    const T var = sqdev / T(count);
    rstd[c] = T(1) / dev_sqrt(var + eps);
    running_mean[c] = running_mean[c] * keep + momentum * mean[c];
    const T stored_var = unbiased ? var * T(count) / T(count > 1 ? count - 1 : 1) : var;
    running_var[c] = running_var[c] * keep + momentum * stored_var;
}

// y = (x - mean) * (rstd * gamma) + beta. One thread per element.
template <typename T>
__global__ void bn_normalize(T* y, const T* x, const T* mean, const T* rstd, const T* gamma,
                             const T* beta, int total, int C, int S) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const int c = i / S % C;
    y[i] = (x[i] - mean[c]) * (rstd[c] * gamma[c]) + beta[c];
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

// dx = gamma * rstd / m * (m * dy - dbeta - xhat * dgamma). One thread per element.
template <typename T>
__global__ void bn_backward_dx(T* dx, const T* dy, const T* x, const T* gamma, const T* mean,
                               const T* rstd, const T* dbeta, const T* dgamma, int total, int C,
                               int S, int count) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const int c = i / S % C;
    const T xhat = (x[i] - mean[c]) * rstd[c];
    dx[i] = gamma[c] * rstd[c] / T(count) * (T(count) * dy[i] - dbeta[c] - xhat * dgamma[c]);
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
