// pool.cu - 2-D max / min / average pooling, forward and backward.
//
// Maths, for output (ho, wo) of a plane and window cells (h, w) = (ho*sh - pt + i, wo*sw - pl + j)
// that fall inside the unpadded H x W input (padded cells never take part):
//   max/min  y = the largest / smallest cell; index = h * W + w of the first one in row-major
//            window order (strict > / <: ties keep the earlier cell, like NumPy's argmax)
//   avg      y = sum of the cells / their number
//   backward dx[h, w] = sum over the outputs whose window covers (h, w) of
//            max/min: dy if that output's index is (h, w);  avg: dy / that output's count
//
// Thread layout: forward, one thread per output element; backward, one thread per *input*
// element that gathers from the (at most ceil(kH/sh) * ceil(kW/sw)) outputs covering it.
// Gathering instead of scattering each dy into dx means no two threads write the same dx,
// so no atomics, and the sums come out in a fixed order (reproducible).
// mode: 0 max, 1 min, 2 avg (the codes cuda.py passes).
#include "common.cuh"

enum PoolMode { POOL_MAX = 0, POOL_MIN = 1, POOL_AVG = 2 };  // the codes cuda.py passes

// The unpadded input rows [h_begin, h_end) that window row ho covers; likewise for columns.
__device__ inline void window_span(int o, int stride, int pad, int kernel, int size, int* begin,
                                   int* end) {
    const int start = o * stride - pad;
    *begin = start > 0 ? start : 0;
    *end = start + kernel < size ? start + kernel : size;
}

// Output o of x: (NC, H, W) pooled to (NC, Ho, Wo), reading x[i] as value(i); *best_cell
// gets the winning cell's index h * W + w (max/min only). Shared by pool2d_forward and
// fused.cu's pool + dropout and batch norm + ReLU + pool.
template <typename T, typename Value>
__device__ inline T pool_output(int o, int* best_cell, Value value, int mode, int H, int W,
                                int kh, int kw, int sh, int sw, int pt, int pl, int Ho, int Wo) {
    const int plane = o / (Ho * Wo), ho = o / Wo % Ho, wo = o % Wo;
    int h_begin, h_end, w_begin, w_end;
    window_span(ho, sh, pt, kh, H, &h_begin, &h_end);
    window_span(wo, sw, pl, kw, W, &w_begin, &w_end);
    const int first = plane * H * W;
    if (mode == POOL_AVG) {
        T sum = 0;
        for (int h = h_begin; h < h_end; ++h)
            for (int w = w_begin; w < w_end; ++w) sum += value(first + h * W + w);
        return sum / T((h_end - h_begin) * (w_end - w_begin));
    }
    int best = h_begin * W + w_begin;  // scan starts at the first cell of the window
    T best_value = value(first + best);
    for (int h = h_begin; h < h_end; ++h)
        for (int w = w_begin; w < w_end; ++w) {
            const T v = value(first + h * W + w);
            if (mode == POOL_MAX ? v > best_value : v < best_value) best = h * W + w, best_value = v;
        }
    *best_cell = best;
    return best_value;
}

// x: (NC, H, W) -> y: (NC, Ho, Wo), index (max/min only; ignored for avg).
template <typename T>
__global__ void pool2d_forward(T* y, int* index, const T* x, int mode, int NC, int H, int W,
                               int kh, int kw, int sh, int sw, int pt, int pl, int Ho, int Wo) {
    const int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= NC * Ho * Wo) return;
    int best = 0;
    y[o] = pool_output<T>(o, &best, [=](int i) { return x[i]; }, mode, H, W, kh, kw, sh, sw, pt,
                          pl, Ho, Wo);
    if (mode != POOL_AVG) index[o] = best;
}

// dx at input cell i: the gradients dy_of(o) of the outputs o whose window holds i, added in
// a fixed order. Shared by pool2d_backward and fused.cu's pool + dropout.
template <typename T, typename Gradient>
__device__ inline T pool_gather(int i, Gradient dy_of, const int* index, int mode, int H, int W,
                                int kh, int kw, int sh, int sw, int pt, int pl, int Ho, int Wo) {
    const int plane = i / (H * W), h = i / W % H, w = i % W;
    // outputs ho whose window rows [ho*sh - pt, ho*sh - pt + kh) contain h
    const int ho_first = h + pt - kh + 1 > 0 ? (h + pt - kh + 1 + sh - 1) / sh : 0;
    const int ho_last = (h + pt) / sh < Ho - 1 ? (h + pt) / sh : Ho - 1;
    const int wo_first = w + pl - kw + 1 > 0 ? (w + pl - kw + 1 + sw - 1) / sw : 0;
    const int wo_last = (w + pl) / sw < Wo - 1 ? (w + pl) / sw : Wo - 1;
    T sum = 0;
    for (int ho = ho_first; ho <= ho_last; ++ho)
        for (int wo = wo_first; wo <= wo_last; ++wo) {
            const int o = (plane * Ho + ho) * Wo + wo;
            if (mode == POOL_AVG) {
                int h_begin, h_end, w_begin, w_end;
                window_span(ho, sh, pt, kh, H, &h_begin, &h_end);
                window_span(wo, sw, pl, kw, W, &w_begin, &w_end);
                sum += dy_of(o) / T((h_end - h_begin) * (w_end - w_begin));
            } else if (index[o] == h * W + w) {
                sum += dy_of(o);
            }
        }
    return sum;
}

// dy: (NC, Ho, Wo), index as from the forward -> dx: (NC, H, W).
template <typename T>
__global__ void pool2d_backward(T* dx, const T* dy, const int* index, int mode, int NC, int H,
                                int W, int kh, int kw, int sh, int sw, int pt, int pl, int Ho,
                                int Wo) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= NC * H * W) return;
    dx[i] = pool_gather<T>(i, [=](int o) { return dy[o]; }, index, mode, H, W, kh, kw, sh, sw,
                           pt, pl, Ho, Wo);
}
