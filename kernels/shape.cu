// shape.cu - the glue ops as kernels: broadcasting add and multiply, sums over broadcast axes
// (and their adjoint, broadcasting a sum back), and 2-D zero padding.
//
// Maths: add/mul  out[i] = a[ia(i)] op b[ib(i)], out of the broadcast shape
//        sum_to   out[o] = scale * sum of x[i] over every i that broadcasting out up to x
//                 maps onto o (the gradient of a broadcast operand; sum and mean)
//        broadcast_to  out[i] = scale * x[ix(i)]
//        zero_pad2d    y = x inside, 0 in the border; its backward crops the border off
//
// Broadcast geometry: the launcher (CudaKernels._broadcast_geometry) merges neighbouring axes
// that broadcast alike, so any broadcast between tensors of up to 4 dims becomes at most 4
// dims d0..d3 (d3 innermost) of the large array, and one bit mask per small operand: bit k
// set = the operand has size 1 along dim k. Merged dims make the index arithmetic short.
//
// Thread layout: 1-D, 256 threads per block, one thread per element of the output. sum_to is
// version 1: one thread per output adds its reduced elements in order (deterministic, no
// atomics); it is fast when there are many outputs (SE gates, keepdims sums) and slow for a
// sum of a large array into few numbers, which minicnn's networks never ask for in a step.
#include "common.cuh"

// Where flat index i of the large (d0, d1, d2, d3) array lands in an operand with size 1 on the
// dims of `broadcast` (bit k = dim k): the operand's own flat index.
__device__ inline long long operand_index(long long i, int d0, int d1, int d2, int d3,
                                          int broadcast) {
    const int dims[4] = {d0, d1, d2, d3};
    long long index = 0, stride = 1;
    for (int k = 3; k >= 0; --k) {
        const long long coord = i % dims[k];
        i /= dims[k];
        if (!((broadcast >> k) & 1)) {
            index += coord * stride;
            stride *= dims[k];
        }
    }
    return index;
}

template <typename T>
__global__ void broadcast_add(T* out, const T* a, const T* b, int n, int d0, int d1, int d2,
                              int d3, int a_broadcast, int b_broadcast) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        out[i] = a[operand_index(i, d0, d1, d2, d3, a_broadcast)] +
                 b[operand_index(i, d0, d1, d2, d3, b_broadcast)];
}

template <typename T>
__global__ void broadcast_mul(T* out, const T* a, const T* b, int n, int d0, int d1, int d2,
                              int d3, int a_broadcast, int b_broadcast) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        out[i] = a[operand_index(i, d0, d1, d2, d3, a_broadcast)] *
                 b[operand_index(i, d0, d1, d2, d3, b_broadcast)];
}

// out: x's dims with size 1 on the `reduced` dims. One thread per output o; it visits the
// reduced elements in row-major order.
template <typename T>
__global__ void sum_to(T* out, const T* x, int outputs, int d0, int d1, int d2, int d3,
                       int reduced, T scale) {
    const int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= outputs) return;
    const int dims[4] = {d0, d1, d2, d3};
    int kept_coord[4], reduced_count = 1;
    long long rest = o;
    for (int k = 3; k >= 0; --k) {
        const bool is_reduced = (reduced >> k) & 1;
        kept_coord[k] = is_reduced ? 0 : (int)(rest % dims[k]);
        if (!is_reduced) rest /= dims[k];
        if (is_reduced) reduced_count *= dims[k];
    }
    T sum = 0;
    for (int r = 0; r < reduced_count; ++r) {
        long long left = r, index = 0, stride = 1;
        for (int k = 3; k >= 0; --k) {
            int coord = kept_coord[k];
            if ((reduced >> k) & 1) {
                coord = (int)(left % dims[k]);
                left /= dims[k];
            }
            index += coord * stride;
            stride *= dims[k];
        }
        sum += x[index];
    }
    out[o] = sum * scale;
}

template <typename T>
__global__ void broadcast_to(T* out, const T* x, int n, int d0, int d1, int d2, int d3,
                             int broadcast, T scale) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = x[operand_index(i, d0, d1, d2, d3, broadcast)] * scale;
}

// y: (NC, Ho, Wo) from x: (NC, H, W) placed at row `top`, column `left`. One thread per y.
template <typename T>
__global__ void zero_pad2d_forward(T* y, const T* x, int total, int H, int W, int top, int left,
                                   int Ho, int Wo) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const int col = i % Wo - left, row = i / Wo % Ho - top, plane = i / (Ho * Wo);
    const bool inside = row >= 0 && row < H && col >= 0 && col < W;
    y[i] = inside ? x[((long long)plane * H + row) * W + col] : T(0);
}

// dx: (NC, H, W) = the window of dy: (NC, Ho, Wo) at row `top`, column `left`. One thread per dx.
template <typename T>
__global__ void zero_pad2d_backward(T* dx, const T* dy, int total, int H, int W, int top, int left,
                                    int Ho, int Wo) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const int col = i % W, row = i / W % H, plane = i / (H * W);
    dx[i] = dy[((long long)plane * Ho + row + top) * Wo + col + left];
}

// out: (N, K) = 1 where k == labels[n], else 0 (cross-entropy's targets for reduction='none'
// and label smoothing). One thread per element of out.
template <typename T>
__global__ void one_hot(T* out, const long long* labels, int total, int K) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) out[i] = labels[i / K] == i % K ? T(1) : T(0);
}
