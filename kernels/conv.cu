// conv.cu - 2-D convolution forward, backward-data and backward-weight as implicit GEMMs.
//
// Maths (NCHW, weights F x C x kH x kW, stride (sh, sw), pads top pt / left pl):
//   forward   y[n, f, ho, wo] = b[f] + sum_{c,i,j} w[f, c, i, j] * x[n, c, ho*sh - pt + i, wo*sw - pl + j]
//             = W (F x CkHkW) @ X_col (CkHkW x N*Ho*Wo), X_col being im2col(x)
//   backward  dw = dY (F x N*Ho*Wo) @ X_col^T               (dY viewed channel-major)
//             dx = W^T (C x F*kH*kW) @ dY_col (F*kH*kW x N*H*W), where dY_col[(f,i,j), (n,h,w)]
//                  is the dy that pixel (h, w) received through kernel cell (i, j), or 0
//   (out-of-range input cells are zero padding; the bias gradient is reduce.cu's channel sum.)
//
// Why implicit GEMM rather than im2col + GEMM: the three products run the tiled GEMM block
// loop of gemm.cu (included below) unchanged; only the operands differ, and an operand is a
// small struct that turns (row, col) into an address in x, w or dy. The im2col matrix is never
// stored: at batch 512 it would be kH*kW = 9 times the activations (over 1 GB for a 64-channel
// 32 x 32 layer), and writing then re-reading it costs more memory traffic than the conv itself.
// col2im's overlapping scatter (which would need atomics, hence nondeterminism) becomes a
// gather: backward-data computes each dx element once, so results are reproducible.
// Addresses cost no division per element: a thread of the tile loader keeps one pixel per
// tile and divides it into (n, h, w) once (the operand's line()), and the kernel cell of a row
// (c, i, j) comes from a per-layer table of taps (offset, i, j) built by Python. What remains
// is, for backward-data with stride 2, zeros fed through the multiply.
//
// Thread layout and versions: each pass is templated on gemm.cu's block loop, SimtTile<ROWS,
// COLS, THREADS> (v2: FP32 or FP64 FMAs, the tile shape chosen per layer from gemm.cu's
// SIMT_SHAPES) or MmaTile<Mma::TF32 / BF16> (v3: 128 threads, 64 x 64, tensor cores); both
// double-buffer their shared tiles with cp.async. The grid is (ceil(cols / tile cols),
// ceil(rows / tile rows), splits): when the output has too few tiles to fill the GPU (the
// long K of backward-weight, the small images of the last layers at a small batch), every pass
// splits K over blockIdx.z into partial sums (splits, output) added by sum_splits, or, in each
// pass's _split_k twin, by the last block of each tile in the same launch (add_splits_when_last).
// A training step's forward kernels may have whole columns of blocks more, which write the
// transposed weights that its backward-data reads (transposing_block, in "W^T for
// backward-data" below).
#include "gemm.cu"

// dy etc. as (N, R, P) arrays viewed as an R x (N*P) matrix: row r, column (n, p).
// That is how a channel-major GEMM sees an NCHW batch (rows = channels, columns = pixels of
// every image).
template <typename T>
struct BatchedRows {
    const T* data;
    int R, P;
    static constexpr bool contiguous_cols = true;
    using Line = const T*;  // element (0, col)
    __device__ Line line(int col) const { return data + (long long)(col / P) * R * P + col % P; }
    __device__ const T* address(Line start, int r) const { return start + (long long)r * P; }
};

// Writes the R x (N*P) product into an (N, R, P) array, adding bias[r] when bias is given.
// offset(r, col): where element (r, col) lives (gemm.cu's add_splits_when_last reads it).
template <typename T>
struct BatchedRowsOutput {
    T* data;
    const T* bias;
    int R, P;
    __device__ long long offset(int r, int col) const { return ((long long)(col / P) * R + r) * P + col % P; }
    __device__ void operator()(int r, int col, T value) const {
        data[offset(r, col)] = bias ? value + bias[r] : value;
    }
};

struct ConvShape {
    int N, C, H, W, F, kh, kw, sh, sw, pt, pl, Ho, Wo;
};

// Kernel taps: the per-layer table that replaces division per element. Row k = (c, i, j) of
// an im2col matrix (or (f, i, j) of dY_col) has taps[2k] = the offset of its element from the
// pixel's window origin and taps[2k + 1] = i << 16 | j. Built once per layer shape by
// kernel_facts.conv_taps; a warp's threads read the same k, so it is one broadcast load.
// read_tap fetches both words as one 8-byte load, by every thread that reaches the row (also
// those that then find padding), so a warp's taps are one load instruction.
struct Tap {
    int offset, cell;
};
__device__ __forceinline__ Tap read_tap(const int* taps, int k) {
    const long long both = reinterpret_cast<const long long*>(taps)[k];  // little-endian: offset first
    return {int(both & 0xffffffff), int(both >> 32)};
}

struct PixelWindow {  // one pixel's view of the input: where its window starts
    long long base;   // offset of the window origin (h0, w0) in the array, for channel 0
    int h0, w0;       // may be negative (padding)
};

// X_col, the im2col matrix of x: row (c, i, j), column (n, ho, wo). Never stored.
// TRANSPOSED gives X_col^T (row (n, ho, wo), column (c, i, j)) for backward-weight. Either way
// the contiguous index is the pixel (along wo, x is contiguous): line() divides it once.
template <typename T, bool TRANSPOSED>
struct Im2colOperand {
    const T* x;
    const int* taps;  // offset c*H*W + i*W + j and i << 16 | j per row (c, i, j)
    ConvShape s;
    static constexpr bool contiguous_cols = !TRANSPOSED;
    using Line = PixelWindow;
    __device__ PixelWindow line(int pixel) const {
        const int n = pixel / (s.Ho * s.Wo), ho = pixel / s.Wo % s.Ho, wo = pixel % s.Wo;
        const int h0 = ho * s.sh - s.pt, w0 = wo * s.sw - s.pl;
        return {(long long)n * s.C * s.H * s.W + (long long)h0 * s.W + w0, h0, w0};
    }
    __device__ const T* address(const PixelWindow& p, int k) const {
        const Tap tap = read_tap(taps, k);
        const int h = p.h0 + (tap.cell >> 16), w = p.w0 + (tap.cell & 0xffff);
        if ((unsigned)h >= (unsigned)s.H || (unsigned)w >= (unsigned)s.W) return nullptr;  // zero padding
        return x + p.base + tap.offset;
    }
};

// dY_col of backward-data: row (f, i, j), column (n, h, w). Output (ho, wo) reads input
// h = ho*sh - pt + i, so input h was reached through cell i iff h + pt - i is a non-negative
// multiple of sh giving ho < Ho (likewise for w). With h + pt = qh*sh + rh and i = qi*sh + ri
// (0 <= rh, ri < sh), that is rh == ri and then ho = qh - qi: line() divides once per pixel,
// the taps carry (qi, ri, qj, rj), and no element needs a division.
struct OutputWindow {
    long long base;  // offset of dy[n, 0, 0, 0]
    int qh, rh, qw, rw;
};

template <typename T>
struct Col2imOperand {
    const T* dy;
    const int* taps;  // offset f*Ho*Wo and qi << 24 | ri << 16 | qj << 8 | rj per row (f, i, j)
    ConvShape s;
    static constexpr bool contiguous_cols = true;
    using Line = OutputWindow;
    __device__ OutputWindow line(int col) const {
        const int n = col / (s.H * s.W), h = col / s.W % s.H + s.pt, w = col % s.W + s.pl;
        return {(long long)n * s.F * s.Ho * s.Wo, h / s.sh, h % s.sh, w / s.sw, w % s.sw};
    }
    __device__ const T* address(const OutputWindow& p, int r) const {
        const Tap tap = read_tap(taps, r);
        const int q = tap.cell;
        if ((q >> 16 & 255) != p.rh || (q & 255) != p.rw) return nullptr;  // not a multiple of the stride
        const int ho = p.qh - (q >> 24), wo = p.qw - (q >> 8 & 255);
        if ((unsigned)ho >= (unsigned)s.Ho || (unsigned)wo >= (unsigned)s.Wo) return nullptr;
        return dy + p.base + tap.offset + (long long)ho * s.Wo + wo;
    }
};

// Each pass is one product run by a Tile policy of gemm.cu: SimtTile<...> (v2, float or
// double) or MmaTile<Mma::TF32 / BF16> (v3, float). Every pass takes k_chunk, the length of
// K each blockIdx.z slice sums (the whole K when there is one slice).
//
// Every kernel takes the layer's sizes after its arrays, ConvShape's fields in order
// (kernel_facts.ConvShape.ints()), and starts with CONV_PROLOGUE: the shared tiles of its block
// loop and the ConvShape s.
#define CONV_SHAPE_PARAMS \
    int N, int C, int H, int W, int F, int kh, int kw, int sh, int sw, int pt, int pl, int Ho, int Wo
// The two tiles are one array, so a forward block that transposes weights instead
// (transposing_block, below) has A_SIZE + B_SIZE values in one piece.
#define CONV_PROLOGUE(T, Tile)                                              \
    __shared__ __align__(16) T conv_shared[Tile::A_SIZE + Tile::B_SIZE];    \
    T* const a_tile = conv_shared;                                          \
    T* const b_tile = conv_shared + Tile::A_SIZE;                           \
    const ConvShape s{N, C, H, W, F, kh, kw, sh, sw, pt, pl, Ho, Wo}

// Each pass is a slice function, <pass>_slice (one block's tile of slice blockIdx.z of the
// product, written into partial: (splits, output)), run by two kernels:
//   <pass>(partial, inputs, sizes, k_chunk): the slices, added by a second launch, sum_splits
//     (with one split, partial is the output itself);
//   <pass>_split_k(out, partial, arrivals, inputs, sizes, k_chunk): the same slices, then the
//     last block of each tile adds them into out in the same launch (gemm.cu's
//     add_splits_when_last, bit for bit sum_splits).
// Grid (ceil(cols / tile cols), ceil(rows / tile rows), splits), the twin's only with splits > 1.

// ---------------------------------------------------------------------------- W^T for backward-data
// Backward-data multiplies by W^T, C x (F kH kW). Read in place from w: (F, C, kH, kW), a row
// of it (one c) is F runs of kH kW values, C kH kW apart, so the tile loader's warp, reading 16
// consecutive k of two rows, touched 2-3 runs of 36 bytes each (3 x 3): three quarters of the
// sectors were useful. So it reads wt: (C, F, kH kW) instead, where each row is contiguous (|W|
// read and written once more), written in training by extra blocks of the forward conv's own
// launch (transposing_block, below: the forward reads w anyway and always runs first, so no
// launch is added), else by conv_weight_transpose, a launch of its own (backward-data's
// separate launches; a backward whose forward kept no wt).
// A block moves a tile of `filters` x `channels` cells (kH kW values each) through shared
// memory: it reads `filters` runs of channels * taps contiguous values and writes `channels`
// runs of filters * taps, so both sides are coalesced. The tile (kernel_facts.
// weight_transpose_tile) holds at most TRANSPOSE_VALUES values (16 x 16 cells of 3 x 3) in
// conv_weight_transpose, FORWARD_TRANSPOSE_VALUES in a forward block, whose shared tiles it
// reuses (the smallest, SimtTile<32, 32, 64>'s, hold 2304 values): 16 x 8 cells of 3 x 3, so
// that with 3 x 3 kernels and C a multiple of 8 each run read starts and ends on a 32-byte
// sector (runs of 12 channels' 108 values did not). TRANSPOSE_FILTERS
// filters or fewer, each filter's row padded by up to TRANSPOSE_PAD values against bank
// conflicts (transpose_weight_tile).
constexpr int TRANSPOSE_VALUES = 2304, TRANSPOSE_FILTERS = 16, TRANSPOSE_THREADS = 256;
constexpr int FORWARD_TRANSPOSE_VALUES = 1152, TRANSPOSE_PAD = 62;

// Tile `tile` (row-major over (filter tiles, channel tiles)) of wt: (C, F, taps) from w: (F,
// C, taps), taps = kH * kW; filters <= TRANSPOSE_FILTERS; shared: room for filters * channels
// * taps + TRANSPOSE_PAD * filters values. Any block size that is whole warps.
template <typename T>
__device__ void transpose_weight_tile(T* wt, const T* w, int F, int C, int taps, int filters,
                                      int channels, int tile, T* shared) {
    const int channel_tiles = (C + channels - 1) / channels;
    const int f0 = tile / channel_tiles * filters, c0 = tile % channel_tiles * channels;
    const int my_filters = min(filters, F - f0), my_channels = min(channels, C - c0);
    const int in_run = my_channels * taps, out_run = my_filters * taps;
    // A warp takes whole runs, 32 values at a time, so none spans two (it would meet its own
    // banks there), and each lane makes every access of its warp's runs: lanes past a run's
    // end read its last value again and store it in the tile row's padding, or in wt at the
    // same place as the lane that owns it (the same value, one store). Row f of the tile holds
    // in_run values, padded to a stride that is a whole number of 32 words plus taps: the
    // first loop's lanes write consecutive words, the second's read (f, t) at f * stride + t,
    // consecutive banks, so no two lanes share a bank.
    const int stride = (in_run + 31) / 32 * 32 + taps % 32;
    const int lane = threadIdx.x % 32, warps = blockDim.x / 32;
    for (int f = threadIdx.x / 32; f < my_filters; f += warps) {  // (c, t) of filter f
        for (int ct = lane; ct - lane < in_run; ct += 32)
            shared[f * stride + ct] = w[((long long)(f0 + f) * C + c0) * taps + min(ct, in_run - 1)];
    }
    __syncthreads();
    for (int c = threadIdx.x / 32; c < my_channels; c += warps) {  // (f, t) of channel c
        for (int ft = lane; ft - lane < out_run; ft += 32) {
            const int last = min(ft, out_run - 1);
            wt[((long long)(c0 + c) * F + f0) * taps + last] = shared[last / taps * stride + c * taps + last % taps];
        }
    }
}

// wt: (C, F, taps) from w: (F, C, taps) in a launch of its own. Grid (ceil(C / channels),
// ceil(F / filters)), block TRANSPOSE_THREADS; filters * channels * taps <= TRANSPOSE_VALUES.
template <typename T>
__global__ void __launch_bounds__(TRANSPOSE_THREADS)
conv_weight_transpose(T* wt, const T* w, int F, int C, int taps, int filters, int channels) {
    __shared__ T shared[TRANSPOSE_VALUES + TRANSPOSE_PAD * TRANSPOSE_FILTERS];  // [f][c][t]
    transpose_weight_tile(wt, w, F, C, taps, filters, channels, blockIdx.y * gridDim.x + blockIdx.x,
                          shared);
}

// A forward conv's extra blocks: whole columns of blocks after the product's (kernel_facts.
// TiledProduct.grid's extra_blocks; none when wt is null). Extra block j (row-major over
// (slice, row, extra column)) transposes tile j of w into wt, if there is one, in tiles of
// filters x channels cells; true for those blocks, which do nothing else. shared: the
// product's tiles (CONV_PROLOGUE's conv_shared).
template <typename Tile, typename T>
__device__ bool transposing_block(T* wt, const T* w, const ConvShape& s, int filters, int channels,
                                  T* shared) {
    static_assert(Tile::A_SIZE + Tile::B_SIZE >= FORWARD_TRANSPOSE_VALUES + TRANSPOSE_PAD * TRANSPOSE_FILTERS,
                  "a forward block's shared tiles hold a weight-transpose tile");
    const int col_tiles = (s.N * s.Ho * s.Wo + Tile::TILE_COLS - 1) / Tile::TILE_COLS;
    if (int(blockIdx.x) < col_tiles) return false;
    const int j = (blockIdx.z * gridDim.y + blockIdx.y) * (gridDim.x - col_tiles) + blockIdx.x - col_tiles;
    if (j < (s.F + filters - 1) / filters * ((s.C + channels - 1) / channels))
        transpose_weight_tile(wt, w, s.F, s.C, s.kh * s.kw, filters, channels, j, shared);
    return true;
}

// Forward: slice z of y_partial: (splits, N, F, Ho, Wo), conv(x: (N, C, H, W), w: (F, C, kH,
// kW)) summed over the rows (c, i, j) in slice z of K = C*kH*kW, + bias: (F,) in slice 0 only.
template <typename T, typename Tile>
__device__ void conv2d_forward_slice(T* y_partial, const T* x, const T* w, const T* bias,
                                     const int* x_taps, const ConvShape& s, int k_chunk, T* a_tile,
                                     T* b_tile) {
    const int K = s.C * s.kh * s.kw, k_begin = blockIdx.z * k_chunk;
    T* y = y_partial + (long long)blockIdx.z * s.N * s.F * s.Ho * s.Wo;
    Tile::run(MatrixOperand<T, false>{w, s.F, K}, Im2colOperand<T, false>{x, x_taps, s},
              BatchedRowsOutput<T>{y, blockIdx.z == 0 ? bias : nullptr, s.F, s.Ho * s.Wo}, s.F,
              s.N * s.Ho * s.Wo, k_begin, k_slice_end(k_begin, k_chunk, K), a_tile, b_tile);
}
// The forward's kernels (y: (N, F, Ho, Wo)) end with wt, wt_filters, wt_channels: with wt given,
// whole columns of blocks after the product's write wt: (C, F, kH, kW) from w in tiles of
// wt_filters x wt_channels cells (transposing_block).
template <typename T, typename Tile = SimtTile<>>
__global__ void __launch_bounds__(Tile::THREADS)
conv2d_forward(T* partial, const T* x, const T* w, const T* bias, const int* x_taps,
               CONV_SHAPE_PARAMS, int k_chunk, T* wt, int wt_filters, int wt_channels) {
    CONV_PROLOGUE(T, Tile);
    if (transposing_block<Tile>(wt, w, s, wt_filters, wt_channels, conv_shared)) return;
    conv2d_forward_slice<T, Tile>(partial, x, w, bias, x_taps, s, k_chunk, a_tile, b_tile);
}
template <typename T, typename Tile = SimtTile<>>
__global__ void __launch_bounds__(Tile::THREADS)
conv2d_forward_split_k(T* y, T* partial, unsigned* arrivals, const T* x, const T* w, const T* bias,
                       const int* x_taps, CONV_SHAPE_PARAMS, int k_chunk, T* wt, int wt_filters,
                       int wt_channels) {
    CONV_PROLOGUE(T, Tile);
    if (transposing_block<Tile>(wt, w, s, wt_filters, wt_channels, conv_shared)) return;
    conv2d_forward_slice<T, Tile>(partial, x, w, bias, x_taps, s, k_chunk, a_tile, b_tile);
    add_splits_when_last<Tile>(BatchedRowsOutput<T>{y, nullptr, F, Ho * Wo}, partial, arrivals, F, N * Ho * Wo);
}

// Backward-data: slice z of dx_partial: (splits, N, C, H, W) from dy: (N, F, Ho, Wo) and wt: (C,
// F, kH, kW), the weights transposed (above), the sum over the rows
// (f, i, j) in slice z of K = F*kH*kW.
template <typename T, typename Tile>
__device__ void conv2d_backward_data_slice(T* dx_partial, const T* dy, const T* wt,
                                           const int* dy_taps, const ConvShape& s, int k_chunk,
                                           T* a_tile, T* b_tile) {
    const int K = s.F * s.kh * s.kw, k_begin = blockIdx.z * k_chunk;
    T* dx = dx_partial + (long long)blockIdx.z * s.N * s.C * s.H * s.W;
    Tile::run(MatrixOperand<T, false>{wt, s.C, K}, Col2imOperand<T>{dy, dy_taps, s},
              BatchedRowsOutput<T>{dx, nullptr, s.C, s.H * s.W}, s.C, s.N * s.H * s.W, k_begin,
              k_slice_end(k_begin, k_chunk, K), a_tile, b_tile);
}
template <typename T, typename Tile = SimtTile<>>
__global__ void __launch_bounds__(Tile::THREADS)
conv2d_backward_data(T* partial, const T* dy, const T* wt, const int* dy_taps, CONV_SHAPE_PARAMS,
                     int k_chunk) {
    CONV_PROLOGUE(T, Tile);
    conv2d_backward_data_slice<T, Tile>(partial, dy, wt, dy_taps, s, k_chunk, a_tile, b_tile);
}
template <typename T, typename Tile = SimtTile<>>
__global__ void __launch_bounds__(Tile::THREADS)
conv2d_backward_data_split_k(T* dx, T* partial, unsigned* arrivals, const T* dy, const T* wt,
                             const int* dy_taps, CONV_SHAPE_PARAMS, int k_chunk) {
    CONV_PROLOGUE(T, Tile);
    conv2d_backward_data_slice<T, Tile>(partial, dy, wt, dy_taps, s, k_chunk, a_tile, b_tile);
    add_splits_when_last<Tile>(BatchedRowsOutput<T>{dx, nullptr, C, H * W}, partial, arrivals, C, N * H * W);
}

// Backward-weight: slice z of dw_partial: (splits, F, C*kH*kW), the sum over the pixels
// (n, ho, wo) in [z * k_chunk, (z + 1) * k_chunk).
template <typename T, typename Tile>
__device__ void conv2d_backward_weight_slice(T* dw_partial, const T* dy, const T* x,
                                             const int* x_taps, const ConvShape& s, int k_chunk,
                                             T* a_tile, T* b_tile) {
    const int K = s.N * s.Ho * s.Wo, cols = s.C * s.kh * s.kw, k_begin = blockIdx.z * k_chunk;
    Tile::run(BatchedRows<T>{dy, s.F, s.Ho * s.Wo}, Im2colOperand<T, true>{x, x_taps, s},
              RowMajorOutput<T>{dw_partial + (long long)blockIdx.z * s.F * cols, cols}, s.F, cols,
              k_begin, k_slice_end(k_begin, k_chunk, K), a_tile, b_tile);
}
template <typename T, typename Tile = SimtTile<>>
__global__ void __launch_bounds__(Tile::THREADS)
conv2d_backward_weight(T* partial, const T* dy, const T* x, const int* x_taps, CONV_SHAPE_PARAMS,
                       int k_chunk) {
    CONV_PROLOGUE(T, Tile);
    conv2d_backward_weight_slice<T, Tile>(partial, dy, x, x_taps, s, k_chunk, a_tile, b_tile);
}
template <typename T, typename Tile = SimtTile<>>
__global__ void __launch_bounds__(Tile::THREADS)
conv2d_backward_weight_split_k(T* dw, T* partial, unsigned* arrivals, const T* dy, const T* x,
                               const int* x_taps, CONV_SHAPE_PARAMS, int k_chunk) {
    CONV_PROLOGUE(T, Tile);
    conv2d_backward_weight_slice<T, Tile>(partial, dy, x, x_taps, s, k_chunk, a_tile, b_tile);
    add_splits_when_last<Tile>(RowMajorOutput<T>{dw, C * kh * kw}, partial, arrivals, F, C * kh * kw);
}

// ---------------------------------------------------------------------------- conv -> ReLU
// A conv followed by a ReLU (nn/fusion.py): the bias and the ReLU are applied in the product's
// epilogue, y = max(conv + b, 0) with the arithmetic of BatchedRowsOutput then relu_forward
// (elementwise.cu), so the pair gives the same bits as the two kernels and the map before the
// ReLU is never written. The backward's first step is fused.cu's relu_backward_channel_sums.
template <typename T>
struct BatchedRowsReluOutput {
    BatchedRowsOutput<T> store;  // given no bias: it is added here, before the ReLU
    const T* bias;
    __device__ void operator()(int r, int col, T value) const {
        const T y = value + bias[r];
        store(r, col, y > T(0) ? y : T(0));
    }
};

// y: (N, F, Ho, Wo) = max(conv(x, w) + bias, 0); wt as conv2d_forward's. Grid as
// conv2d_forward's with one split.
template <typename T, typename Tile = SimtTile<>>
__global__ void __launch_bounds__(Tile::THREADS)
conv2d_relu_forward(T* y, const T* x, const T* w, const T* bias, const int* x_taps,
                    CONV_SHAPE_PARAMS, T* wt, int wt_filters, int wt_channels) {
    CONV_PROLOGUE(T, Tile);
    if (transposing_block<Tile>(wt, w, s, wt_filters, wt_channels, conv_shared)) return;
    const int K = C * kh * kw;
    Tile::run(MatrixOperand<T, false>{w, F, K}, Im2colOperand<T, false>{x, x_taps, s},
              BatchedRowsReluOutput<T>{{y, nullptr, F, Ho * Wo}, bias}, F, N * Ho * Wo, 0, K, a_tile,
              b_tile);
}
