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
// reduce.cu's sum_partials over the N per-row terms: a fixed order, reproducible (version 1),
// or by the last block of the same launch in the same order (version 2, at the end).
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

// One row n of the int-labels loss, by the calling warp: probs[n, :] and, unless dlogits is
// null, dlogits[n, :] = (probs - onehot(label)) / N, the gradient for dloss = 1 with the bits
// cross_entropy_backward_labels writes. Returns -logp[n, label_n] to every lane (infinite for
// a label outside [0, K)).
template <typename T>
__device__ T cross_entropy_row_labels(T* probs, T* dlogits, const T* logits,
                                      const long long* labels, int n, int N, int K) {
    const long long offset = (long long)n * K, label = labels[n];
    const T shift = row_max(logits + offset, K);
    const T lse = row_log_sum_exp(logits + offset, K, shift);
    for (int k = threadIdx.x % 32; k < K; k += 32) {
        const T p = dev_exp((logits[offset + k] - shift) - lse);
        probs[offset + k] = p;
        if (dlogits) dlogits[offset + k] = (p - (label == k ? T(1) : T(0))) * (T(1) / T(N));
    }
    return label >= 0 && label < K ? -((logits[offset + label] - shift) - lse) : T(INFINITY);
}

// One row of the probability-target loss, as cross_entropy_row_labels: returns
// -sum_k logp[n, k] * target[n, k]; dlogits = (probs - target) / N.
template <typename T>
__device__ T cross_entropy_row_soft(T* probs, T* dlogits, const T* logits, const T* target,
                                    int n, int N, int K) {
    const long long offset = (long long)n * K;
    const T shift = row_max(logits + offset, K);
    const T lse = row_log_sum_exp(logits + offset, K, shift);
    T picked = 0;
    for (int k = threadIdx.x % 32; k < K; k += 32) {
        const T logp = (logits[offset + k] - shift) - lse;
        const T p = dev_exp(logp);
        probs[offset + k] = p;
        picked += logp * target[offset + k];
        if (dlogits) dlogits[offset + k] = (p - target[offset + k]) * (T(1) / T(N));
    }
    return -warp_sum(picked);
}

// Version 1 of the loss: row_loss[n] per row, then reduce.cu's sum_partials (a second launch).
template <typename T>
__global__ void cross_entropy_forward_labels(T* probs, T* row_loss, const T* logits,
                                             const long long* labels, int N, int K) {
    const int n = warp_row(N);
    if (n < 0) return;
    const T loss = cross_entropy_row_labels(probs, (T*)nullptr, logits, labels, n, N, K);
    if (threadIdx.x % 32 == 0) row_loss[n] = loss;
}

template <typename T>
__global__ void cross_entropy_forward_soft(T* probs, T* row_loss, const T* logits,
                                           const T* target, int N, int K) {
    const int n = warp_row(N);
    if (n < 0) return;
    const T loss = cross_entropy_row_soft(probs, (T*)nullptr, logits, target, n, N, K);
    if (threadIdx.x % 32 == 0) row_loss[n] = loss;
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

// ---- Version 2 of the loss: one launch for the batch mean and, in training, the gradient.
//
// Each warp does its row as version 1 and, when with_grad is set, also writes dlogits for the
// dloss = 1 that loss.backward() seeds the graph with, so the backward needs no launch of its
// own (the launcher keeps version 1's backward for any other dloss). Then each block counts
// itself in with an integer atomicAdd on arrivals[0], as reduce.cu's channel_reduce does, and
// the last block to arrive adds row_loss[0 .. N-1] in order from one thread and divides by N:
// sum_partials' order, so the same bits as version 1's two launches, and no float atomics.
// Grid and block as version 1; arrivals: one zeroed uint32 that the last block resets.
template <typename T, typename Row>
__device__ void cross_entropy_mean(T* loss, T* row_loss, unsigned* arrivals, int N, Row row) {
    const int n = warp_row(N);
    if (n >= 0) {  // no early return: the block meets at the barrier below
        const T value = row(n);
        if (threadIdx.x % 32 == 0) {
            row_loss[n] = value;
            __threadfence();  // visible to the last block before this block counts itself in
        }
    }
    __syncthreads();
    if (threadIdx.x != 0 || atomicAdd(arrivals, 1u) != gridDim.x - 1) return;
    __threadfence();
    const volatile T* rows = row_loss;  // written by other blocks: read past L1
    T sum = 0;
    for (int i = 0; i < N; ++i) sum += rows[i];
    loss[0] = sum / T(N);
    arrivals[0] = 0;
}

// dlogits: (N, K), written only when with_grad (the launcher passes probs otherwise).
template <typename T>
__global__ void cross_entropy_mean_labels(T* loss, T* probs, T* dlogits, T* row_loss,
                                          unsigned* arrivals, const T* logits,
                                          const long long* labels, int N, int K, int with_grad) {
    T* grad = with_grad ? dlogits : nullptr;
    cross_entropy_mean(loss, row_loss, arrivals, N, [=](int n) {
        return cross_entropy_row_labels(probs, grad, logits, labels, n, N, K);
    });
}

template <typename T>
__global__ void cross_entropy_mean_soft(T* loss, T* probs, T* dlogits, T* row_loss,
                                        unsigned* arrivals, const T* logits, const T* target,
                                        int N, int K, int with_grad) {
    T* grad = with_grad ? dlogits : nullptr;
    cross_entropy_mean(loss, row_loss, arrivals, N, [=](int n) {
        return cross_entropy_row_soft(probs, grad, logits, target, n, N, K);
    });
}
