// augment.cu - training-time augmentation on the device: the affine warp and the colour
// changes of minicnn/data/augment.py (numpy_ref.affine_warp and numpy_ref.adjust_colour are
// the specification), and prepare_batch, the data loader's whole per-batch work in one launch
// (numpy_ref.prepare_batch). Images are (N, C, H, W) in pixel units 0..255.
//
// Maths:
//   affine_warp   output pixel (x, y) of image n reads the source position
//                 (sx, sy) = inverse[n] @ (x, y, 1), x the column, y the row. Fill 'nearest'
//                 clamps it to [0, W-1] x [0, H-1] (edge pixels repeat); 'constant' gives the
//                 corners outside the image weight 0. With x0 = floor(sx), fx = sx - x0 (same
//                 for y), the bilinear mix of the four corners, in this order:
//                   (1-fy)(1-fx) p[y0, x0] + (1-fy) fx p[y0, x0+1] + fy (1-fx) p[y0+1, x0]
//                   + fy fx p[y0+1, x0+1]
//   adjust_colour factors (b, c, s) per image, luma g = 0.299 R + 0.587 G + 0.114 B
//                 (numpy_ref.GRAY_WEIGHTS), clip = clamp to [0, 255] after each step:
//                   brightness  x1 = clip(b x)
//                   contrast    x2 = clip(m + c (x1 - m)), m = mean luma of the image's x1
//                   saturation  y  = clip(g + s (x2 - g)),  g = luma of the pixel's x2
//   prepare_batch out[b] = normalized(warp(float(images[index[b]]))): the gather, the uint8 to
//                 float conversion, affine_warp's arithmetic on the uint8 values (each converts
//                 exactly) and (v - mean[c]) / std[c], so the bits are those of the separate
//                 steps (gather, astype, affine_warp, subtract, divide) it replaces.
//
// Thread layout:
//   affine_warp   one thread per output pixel (n, y, x), looping over the C channels: the
//                 source position, the four corner offsets and weights are the same for every
//                 channel, so they are computed once. Consecutive threads take consecutive x,
//                 so the writes of each channel plane are coalesced; the reads are a gather.
//   adjust_colour needs m, a per-image reduction, first: brightness_luma_partial_sums is
//                 reduce.cu's deterministic pass 1 with the images as its "channels" (x viewed
//                 as (1, N, H*W), grid (N, P)), then reduce.cu's sum_partials divides by H*W.
//                 No float atomics, so m (and the output) are bitwise reproducible. Then one
//                 thread per pixel (n, s) does all three channels: saturation mixes them.
//                 Brightness is recomputed there rather than stored: one multiply, one clamp,
//                 by the same function as in the reduction, so both see the same bits.
//   prepare_batch affine_warp's layout over the batch; the thread of pixel (0, 0) also copies
//                 the image's label. With colour changes it leaves the normalization to
//                 adjust_colour, which runs after it (the contrast needs each image's mean luma).
#include "reduce.cu"

template <typename T>
__device__ __forceinline__ T clip_pixel(T v) {
    return min(max(v, T(0)), T(255));
}

template <typename T>
__device__ __forceinline__ T luma(T r, T g, T b) {
    return T(0.299) * r + T(0.587) * g + T(0.114) * b;
}

// The four corners (offsets into an H x W plane, bilinear weights) that output pixel (x, y)
// mixes under the inverse map m (2 x 3); constant_fill: 0 'nearest', 1 'constant'.
template <typename T>
__device__ void warp_corners(int offset[4], T weight[4], const T* m, int x, int y, int H, int W,
                             int constant_fill) {
    T sx = m[0] * T(x) + m[1] * T(y) + m[2];
    T sy = m[3] * T(x) + m[4] * T(y) + m[5];
    // 'nearest' clamps to the image. For 'constant' a position beyond [-1, W] has every corner
    // outside, as at -1 or W itself, so clamping there changes nothing but keeps the int
    // conversion below in range.
    const T lo = constant_fill ? T(-1) : T(0);
    sx = min(max(sx, lo), T(constant_fill ? W : W - 1));
    sy = min(max(sy, lo), T(constant_fill ? H : H - 1));
    const T floor_x = floor(sx), floor_y = floor(sy);
    const T fx = sx - floor_x, fy = sy - floor_y;
    const int x0 = int(floor_x), y0 = int(floor_y);
    for (int corner = 0; corner < 4; ++corner) {
        const int dy = corner / 2, dx = corner % 2, xi = x0 + dx, yi = y0 + dy;
        const bool inside = xi >= 0 && xi < W && yi >= 0 && yi < H;
        weight[corner] = (dy ? fy : T(1) - fy) * (dx ? fx : T(1) - fx);
        if (constant_fill && !inside) weight[corner] = T(0);
        offset[corner] = min(max(yi, 0), H - 1) * W + min(max(xi, 0), W - 1);
    }
}

// The bilinear mix of one plane's four corners, added in corner order from 0. P: the plane's
// pixel type (T for affine_warp, unsigned char for prepare_batch: the same value either way).
template <typename T, typename P>
__device__ __forceinline__ T bilinear(const P* plane, const int offset[4], const T weight[4]) {
    T value = T(0);
    for (int corner = 0; corner < 4; ++corner) value += T(plane[offset[corner]]) * weight[corner];
    return value;
}

// out, images: (N, C, H, W); inverse: (N, 2, 3); constant_fill: 0 'nearest', 1 'constant'.
template <typename T>
__global__ void affine_warp(T* out, const T* images, const T* inverse, int N, int C, int H, int W,
                            int constant_fill) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * H * W) return;
    const int x = i % W, y = i / W % H, n = i / (W * H);
    int offset[4];
    T weight[4];
    warp_corners(offset, weight, inverse + 6 * n, x, y, H, W, constant_fill);
    for (int c = 0; c < C; ++c)
        out[(n * C + c) * H * W + y * W + x] = bilinear(images + (n * C + c) * H * W, offset, weight);
}

// Luma of pixel s of image n after brightness. images: (N, 3, S); factors: (N, 3).
template <typename T>
__device__ __forceinline__ T brightened_luma(const T* images, const T* factors, int n, int S,
                                             int s) {
    const T* pixel = images + n * 3 * S + s;
    const T b = factors[3 * n];
    return luma(clip_pixel(pixel[0] * b), clip_pixel(pixel[S] * b), clip_pixel(pixel[2 * S] * b));
}

// partial[n, p] = slice p of the sum over image n's pixels of their luma after brightness.
// reduce.cu's pass 1 on the (1, N, S) view: `one` is its N = 1. Grid (N, P).
template <typename T>
__global__ void __launch_bounds__(REDUCE_THREADS)
brightness_luma_partial_sums(T* partial, const T* images, const T* factors, int one, int N, int S) {
    __shared__ T warp_totals[REDUCE_THREADS / 32];
    channel_slice_sum(partial, one, N, S, warp_totals, [=](long long i, int n) {
        return brightened_luma(images, factors, n, S, int(i - (long long)n * S));
    });
}

// Channel c of a pixel scaled as the loader's Normalizer does, (v - mean[c]) / std_dev[c],
// when `normalize` (a true division, as the array module's, so the bits are the same).
template <typename T>
__device__ __forceinline__ T normalized(T v, const T* mean, const T* std_dev, int c, int normalize) {
    return normalize ? (v - mean[c]) / std_dev[c] : v;
}

// out, images: (N, 3, S); factors: (N, 3) = (brightness, contrast, saturation);
// mean_luma: (N,), from the two passes above; mean, std_dev: (3,), read when `normalize`
// (prepare_batch's last step with colour changes). One thread per pixel (n, s).
template <typename T>
__global__ void adjust_colour(T* out, const T* images, const T* factors, const T* mean_luma,
                              const T* mean, const T* std_dev, int N, int S, int normalize) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * S) return;
    const int n = i / S, s = i % S;
    const T b = factors[3 * n], c = factors[3 * n + 1], saturation = factors[3 * n + 2];
    const T m = mean_luma[n];
    T v[3];
    for (int k = 0; k < 3; ++k)
        v[k] = clip_pixel((clip_pixel(images[(n * 3 + k) * S + s] * b) - m) * c + m);
    const T g = luma(v[0], v[1], v[2]);
    for (int k = 0; k < 3; ++k)
        out[(n * 3 + k) * S + s] =
            normalized(clip_pixel((v[k] - g) * saturation + g), mean, std_dev, k, normalize);
}

// A training or evaluation batch made on the device in one launch (the loader's per-batch
// work): image index[b] of the uint8 set, as float, warped by inverse[b] when `warp`, scaled
// by normalized() when `normalize`; its label copied by the thread of pixel (0, 0).
// out: (B, C, H, W); labels_out: (B,); images: (N, C, H, W) uint8; labels: (N,); index: (B,)
// rows of images; inverse: (B, 2, 3), read when `warp`; mean, std_dev: (C,), read when
// `normalize`. One thread per output pixel (b, y, x), looping over the C channels as
// affine_warp does; the image is read once, the output written once.
template <typename T>
__global__ void prepare_batch(T* out, long long* labels_out, const unsigned char* images,
                              const long long* labels, const long long* index, const T* inverse,
                              const T* mean, const T* std_dev, int B, int C, int H, int W,
                              int warp, int constant_fill, int normalize) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * H * W) return;
    const int x = i % W, y = i / W % H, b = i / (W * H);
    const long long row = index[b];
    if (x == 0 && y == 0) labels_out[b] = labels[row];
    const unsigned char* image = images + row * C * H * W;
    int offset[4] = {y * W + x, 0, 0, 0};
    T weight[4] = {T(1), T(0), T(0), T(0)};
    if (warp) warp_corners(offset, weight, inverse + 6 * b, x, y, H, W, constant_fill);
    for (int c = 0; c < C; ++c) {
        const unsigned char* plane = image + c * H * W;
        const T value = warp ? bilinear(plane, offset, weight) : T(plane[offset[0]]);
        out[(b * C + c) * H * W + y * W + x] = normalized(value, mean, std_dev, c, normalize);
    }
}
