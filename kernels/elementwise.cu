// elementwise.cu - maps with one thread per element: activations, bias add, dropout,
// and the broadcast of global average pooling's backward.
//
// Maths: relu y = max(x, 0), dx = dy * (y > 0)
//        sigmoid y = 1 / (1 + e^-x), computed from e = e^-|x| so exp never overflows;
//                dx = dy * y * (1 - y)
//        add_bias y[n, f, s] += b[f]
//        dropout y = x * mask, mask = (u >= rate) / (1 - rate), u uniform in [0, 1) from
//                Philox-4x32-10 (below); dx = dy * mask (multiply)
//        global average pool backward dx[n, c, s] = dy[n, c] / S
// (global average pooling's forward is a reduction: reduce.cu's channel sums.)
//
// Thread layout: 1-D, 256 threads per block, thread i handles element i (dropout: thread q
// handles elements 4q .. 4q+3, one Philox call giving the 4 words). Memory-bound: each kernel
// reads and writes every element once, coalesced.
#include "common.cuh"

template <typename T>
__global__ void relu_forward(T* y, const T* x, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i] > T(0) ? x[i] : T(0);
}

template <typename T>
__global__ void relu_backward(T* dx, const T* dy, const T* y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dx[i] = y[i] > T(0) ? dy[i] : T(0);
}

template <typename T>
__global__ void sigmoid_forward(T* y, const T* x, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const T e = dev_exp(-dev_abs(x[i]));
    y[i] = x[i] >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
}

template <typename T>
__global__ void sigmoid_backward(T* dx, const T* dy, const T* y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dx[i] = dy[i] * y[i] * (T(1) - y[i]);
}

// y: (N, F, S) += b: (F,), in place.
template <typename T>
__global__ void add_bias(T* y, const T* b, int n, int F, int S) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] += b[i / S % F];
}

// out = a * b elementwise (dropout's backward: dx = dy * mask).
template <typename T>
__global__ void multiply(T* out, const T* a, const T* b, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i] * b[i];
}

// dx: (N*C, S) = dy: (N*C,) / S broadcast over each map.
template <typename T>
__global__ void global_avg_pool_backward(T* dx, const T* dy, int n, int S) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dx[i] = dy[i / S] / T(S);
}

// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011):
// ten rounds of multiply / xor-swap on a 128-bit counter with a 64-bit key bumped by the Weyl
// constants between rounds. Same layout as numpy_ref.philox4x32: counter = (lo, hi, step lo,
// step hi), key = seed. The 32 x 32 -> 64-bit products give the high and low halves
// (what __umulhi and a plain multiply return).
struct Philox4 {
    unsigned w[4];
};

__device__ inline Philox4 philox4x32_10(unsigned long long counter, unsigned long long step,
                                        unsigned long long seed) {
    unsigned c0 = (unsigned)counter, c1 = (unsigned)(counter >> 32);
    unsigned c2 = (unsigned)step, c3 = (unsigned)(step >> 32);
    unsigned k0 = (unsigned)seed, k1 = (unsigned)(seed >> 32);
    for (int round = 0; round < 10; ++round) {
        const unsigned long long p0 = 0xD2511F53ull * c0, p1 = 0xCD9E8D57ull * c2;
        const unsigned n0 = (unsigned)(p1 >> 32) ^ c1 ^ k0, n1 = (unsigned)p1;
        const unsigned n2 = (unsigned)(p0 >> 32) ^ c3 ^ k1, n3 = (unsigned)p0;
        c0 = n0, c1 = n1, c2 = n2, c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return Philox4{{c0, c1, c2, c3}};
}

// y = x * mask, mask[i] = (u_i >= rate) / (1 - rate), element i using word i % 4 of counter
// i / 4 and u = (top 24 bits) * 2^-24. Compared and divided in double exactly like the NumPy
// reference, then rounded to T, so the masks match bit for bit. One thread per counter.
template <typename T>
__global__ void dropout_forward(T* y, T* mask, const T* x, int n, double rate,
                                unsigned long long seed, unsigned long long step) {
    const int q = blockIdx.x * blockDim.x + threadIdx.x;
    if (q >= (n + 3) / 4) return;
    const Philox4 bits = philox4x32_10((unsigned long long)q, step, seed);
    for (int word = 0; word < 4; ++word) {
        const int i = 4 * q + word;
        if (i >= n) break;
        const double u = (double)(bits.w[word] >> 8) * (1.0 / 16777216.0);
        mask[i] = T((u >= rate ? 1.0 : 0.0) / (1.0 - rate));
        y[i] = x[i] * mask[i];
    }
}

// words: (4, n), words[w][i] = word w of Philox(counter = lo[i] | hi[i] << 32, step; seed):
// numpy_ref.philox4x32 on the GPU, for tests. One thread per counter.
__global__ void philox_words(unsigned long long* words, const unsigned long long* lo,
                             const unsigned long long* hi, int n, unsigned long long step,
                             unsigned long long seed) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const Philox4 bits = philox4x32_10((lo[i] & 0xFFFFFFFFull) | (hi[i] << 32), step, seed);
    for (int w = 0; w < 4; ++w) words[(long long)w * n + i] = bits.w[w];
}
