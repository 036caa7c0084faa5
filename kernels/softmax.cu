// softmax.cu - softmax, log-softmax and the fused softmax cross-entropy over rows of (N, K).
//
// Maths (per row x, shifted by its max so exp never overflows):
//   softmax      y = e / sum(e), e = exp(x - max);      dx = y * (dy - sum(dy * y))
//   log-softmax  y = (x - max) - log(sum(e));           dx = dy - exp(y) * sum(dy)
//   cross-entropy  logp = log-softmax(x); loss = -(1/N) sum_n picked_n with
//                picked_n = logp[n, label_n] (int labels) or sum_k logp[n, k] * target[n, k];
//                probs = exp(logp) is kept for backward: dx = dloss * (probs - target) / N
//
// Thread layout: one warp per row, 4 rows per 128-thread block (grid ceil(N / 4)). Lane l
// handles columns l, l + 32, ...; row maxima and sums are butterfly shuffles (reduce.cu), so
// every lane holds the result and no shared memory or __syncthreads is needed. K is the class
// count (10 or 100 here), so a warp per row is plenty. The batch loss is then summed by
// reduce.cu's sum_partials over the N per-row terms: a fixed order, reproducible.
#include "reduce.cu"

constexpr int ROWS_PER_BLOCK = 4;  // warps per block

// The calling warp's row, or -1 past the end (a whole warp exits together: shuffles stay safe).
__device__ inline int warp_row(int N) {
    const int row = blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32;
    return row < N ? row : -1;
}

template <typename T>
__device__ T row_max(const T* x, int K) {
    T m = x[0];
    for (int k = threadIdx.x % 32; k < K; k += 32) m = x[k] > m ? x[k] : m;
    return warp_max(m);
}

// log(sum_k exp(x[k] - shift)) over the row.
template <typename T>
__device__ T row_log_sum_exp(const T* x, int K, T shift) {
    T sum = 0;
    for (int k = threadIdx.x % 32; k < K; k += 32) sum += dev_exp(x[k] - shift);
    return dev_log(warp_sum(sum));
}

template <typename T>
__device__ T row_dot(const T* a, const T* b, int K) {
    T sum = 0;
    for (int k = threadIdx.x % 32; k < K; k += 32) sum += a[k] * b[k];
    return warp_sum(sum);
}

template <typename T>
__global__ void softmax_forward(T* y, const T* x, int N, int K) {
    const int n = warp_row(N);
    if (n < 0) return;
    x += (long long)n * K, y += (long long)n * K;
    const T shift = row_max(x, K);
    T sum = 0;
    for (int k = threadIdx.x % 32; k < K; k += 32) {
        y[k] = dev_exp(x[k] - shift);
        sum += y[k];
    }
    sum = warp_sum(sum);
    for (int k = threadIdx.x % 32; k < K; k += 32) y[k] /= sum;  // each lane its own columns
}

template <typename T>
__global__ void softmax_backward(T* dx, const T* dy, const T* y, int N, int K) {
    const int n = warp_row(N);
    if (n < 0) return;
    const long long offset = (long long)n * K;
    const T dot = row_dot(dy + offset, y + offset, K);
    for (int k = threadIdx.x % 32; k < K; k += 32)
        dx[offset + k] = y[offset + k] * (dy[offset + k] - dot);
}

template <typename T>
__global__ void log_softmax_forward(T* y, const T* x, int N, int K) {
    const int n = warp_row(N);
    if (n < 0) return;
    x += (long long)n * K, y += (long long)n * K;
    const T shift = row_max(x, K);
    const T lse = row_log_sum_exp(x, K, shift);
    for (int k = threadIdx.x % 32; k < K; k += 32) y[k] = (x[k] - shift) - lse;
}

template <typename T>
__global__ void log_softmax_backward(T* dx, const T* dy, const T* y, int N, int K) {
    const int n = warp_row(N);
    if (n < 0) return;
    const long long offset = (long long)n * K;
    T sum = 0;
    for (int k = threadIdx.x % 32; k < K; k += 32) sum += dy[offset + k];
    sum = warp_sum(sum);
    for (int k = threadIdx.x % 32; k < K; k += 32)
        dx[offset + k] = dy[offset + k] - dev_exp(y[offset + k]) * sum;
}

// Int labels: row_loss[n] = -logp[n, label_n] (infinite for a label outside [0, K)).
template <typename T>
__global__ void cross_entropy_forward_labels(T* probs, T* row_loss, const T* logits,
                                             const long long* labels, int N, int K) {
    const int n = warp_row(N);
    if (n < 0) return;
    const long long offset = (long long)n * K, label = labels[n];
    const T shift = row_max(logits + offset, K);
    const T lse = row_log_sum_exp(logits + offset, K, shift);
    for (int k = threadIdx.x % 32; k < K; k += 32)
        probs[offset + k] = dev_exp((logits[offset + k] - shift) - lse);
    if (threadIdx.x % 32 == 0)
        row_loss[n] = label >= 0 && label < K ? -((logits[offset + label] - shift) - lse) : T(INFINITY);
}

// Probability targets: row_loss[n] = -sum_k logp[n, k] * target[n, k].
template <typename T>
__global__ void cross_entropy_forward_soft(T* probs, T* row_loss, const T* logits,
                                           const T* target, int N, int K) {
    const int n = warp_row(N);
    if (n < 0) return;
    const long long offset = (long long)n * K;
    const T shift = row_max(logits + offset, K);
    const T lse = row_log_sum_exp(logits + offset, K, shift);
    T picked = 0;
    for (int k = threadIdx.x % 32; k < K; k += 32) {
        const T logp = (logits[offset + k] - shift) - lse;
        probs[offset + k] = dev_exp(logp);
        picked += logp * target[offset + k];
    }
    picked = warp_sum(picked);
    if (threadIdx.x % 32 == 0) row_loss[n] = -picked;
}

// dlogits = (probs - onehot(label)) * (dloss / N); dloss: a 1-element array. One thread per element.
template <typename T>
__global__ void cross_entropy_backward_labels(T* dlogits, const T* probs, const T* dloss,
                                              const long long* labels, int N, int K) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * K) return;
    const T hit = labels[i / K] == i % K ? T(1) : T(0);
    dlogits[i] = (probs[i] - hit) * (dloss[0] / T(N));
}

// dlogits = (probs - target) * (dloss / N). One thread per element.
template <typename T>
__global__ void cross_entropy_backward_soft(T* dlogits, const T* probs, const T* dloss,
                                            const T* target, int N, int K) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N * K) dlogits[i] = (probs[i] - target[i]) * (dloss[0] / T(N));
}
