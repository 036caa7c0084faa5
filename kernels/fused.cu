// fused.cu - passes that do the work of two neighbouring layers (nn/fusion.py picks them).
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
        const T pooled = pool_output(o, &best, x, mode, H, W, kh, kw, sh, sw, pt, pl, Ho, Wo);
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
        dx[i] = pool_gather<T>(i, [=](int o) { return dy[o] * dropout_scale<T>(o, rate, seed, step); },
                               index, mode, H, W, kh, kw, sh, sw, pt, pl, Ho, Wo);
    finish_step(step_counter, arrivals, advance, step);
}
