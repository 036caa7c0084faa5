// backward.cu - a layer's whole backward in one launch: the gradients of a convolution or a
// linear layer's input, weights and bias from one grid.
//
// Maths (conv.cu's notation; a linear layer is the 1 x 1 case with x: N x IN, w: OUT x IN):
//   data    dx = W^T (C x F*kH*kW) @ dY_col (F*kH*kW x N*H*W)          (linear: dy @ w)
//           times the ReLU mask (x > 0) when x is a ReLU's output (relu_input): the ReLU's
//           backward, applied here, where its gradient is produced, instead of by a pass of its own
//   weight  [dw | db] = dY (F x N*Ho*Wo) @ [X_col^T | 1]              (linear: dy^T @ [x | 1])
//           the bias gradient db[f] = sum over pixels of dy is the product's extra column: the
//           im2col operand gets a column of ones (WithOnesColumn), so no channel-sum pass reads dy
// The two products read the same dy; run as two launches (conv2d_backward_data then
// conv2d_backward_weight, plus reduce.cu's channel_sums for db) each of them reads it.
//
// Thread layout: one 1-D grid covering both products. Blocks [0, weight blocks) each compute one
// tile of one K slice of the weight product (the long one: K = N*Ho*Wo, few tiles, so split-K),
// the rest one tile of one slice of the data product; both use the same Tile policy of gemm.cu
// (SimtTile v2 or MmaTile v3, so one block size and the larger shared tiles of the two). Block
// j of a product with `tiles` output tiles takes tile j % tiles (row-major in tiles) of slice
// j / tiles. A split product (splits > 1) writes its slices (splits, rows, cols) into scratch and
// the last block of each tile to finish adds them in slice order (gemm.cu's last_to_arrive and
// add_tile_slices: sum_splits' order) and stores the sums through the product's output; an
// unsplit one stores its tile straight through it. The launch geometry (splits, k_chunk, blocks)
// is kernel_facts.BackwardPlan's.
#include "conv.cu"

// An operand with one more column, all ones (the bias column of a weight gradient): element
// (r, cols) is *one, a 1 in global memory (cp.async copies only from global memory).
template <typename T, typename Operand>
struct WithOnesColumn {
    Operand inner;
    const T* one;
    int cols;  // inner's columns
    static constexpr bool contiguous_cols = Operand::contiguous_cols;
    struct Line {
        typename Operand::Line inner;
        bool ones;
    };
    __device__ Line line(int index) const {
        if constexpr (contiguous_cols) return {inner.line(index < cols ? index : 0), index == cols};
        else return {inner.line(index), false};
    }
    __device__ const T* address(const Line& start, int other) const {
        const bool ones = contiguous_cols ? start.ones : other == cols;
        return ones ? one : inner.address(start.inner, other);
    }
};

// [dw | db]: columns below `cols` go to dw (rows x cols, row-major), column `cols` to db.
template <typename T>
struct WeightBiasOutput {
    T* dw;
    T* db;
    int cols;
    __device__ void operator()(int r, int c, T value) const {
        if (c < cols) dw[(long long)r * cols + c] = value;
        else db[r] = value;
    }
};

// dx, passed through the mask of the ReLU whose output was the layer's input (relu_output[i] >
// 0 ? dx[i] : 0, elementwise.cu's relu_backward) when relu_output is given.
template <typename T, typename Store>
struct ReluMaskedOutput {
    Store store;
    const T* relu_output;  // laid out as dx, or nullptr: no ReLU
    __device__ void operator()(int r, int c, T value) const {
        store(r, c, !relu_output || relu_output[store.offset(r, c)] > T(0) ? value : T(0));
    }
};

// One product of the launch: rows x cols over K = depth, in `splits` slices of k_chunk.
struct ProductPlan {
    int rows, cols, depth, splits, k_chunk;
    template <typename Tile>
    __device__ int tiles() const {
        return (rows + Tile::TILE_ROWS - 1) / Tile::TILE_ROWS * ((cols + Tile::TILE_COLS - 1) / Tile::TILE_COLS);
    }
    template <typename Tile>
    __device__ int blocks() const { return tiles<Tile>() * splits; }
};

// Block `job` of product p (0 <= job < p.blocks<Tile>()): its tile of its slice, stored through
// out, or (split) into partial: (splits, rows, cols), then summed by the tile's last block.
// arrivals: p.tiles<Tile>() zeroed counters (left zero).
template <typename Tile, typename T, typename OperandA, typename OperandB, typename Output>
__device__ void product_block(const ProductPlan& p, int job, const OperandA& a, const OperandB& b,
                              const Output& out, T* partial, unsigned* arrivals, T* a_tile,
                              T* b_tile) {
    const int col_tiles = (p.cols + Tile::TILE_COLS - 1) / Tile::TILE_COLS, tiles = p.tiles<Tile>();
    const int tile = job % tiles, slice = job / tiles, k_begin = slice * p.k_chunk;
    const TilePlace at{tile / col_tiles, tile % col_tiles};
    const int k_end = k_slice_end(k_begin, p.k_chunk, p.depth);
    if (p.splits == 1) {
        Tile::run(a, b, out, p.rows, p.cols, k_begin, k_end, a_tile, b_tile, at);
        return;
    }
    const long long size = (long long)p.rows * p.cols;
    Tile::run(a, b, RowMajorOutput<T>{partial + slice * size, p.cols}, p.rows, p.cols, k_begin, k_end,
              a_tile, b_tile, at);
    if (!last_to_arrive(&arrivals[tile], p.splits)) return;
    add_tile_slices<Tile>(partial, p.rows, p.cols, at, p.splits,
                          [&](int m, int n) { return (long long)m * p.cols + n; },
                          [&](int m, int n, long long, T sum) { out(m, n, sum); });
}

// The two products' blocks in one grid: the weight product's first. Shared tiles: the Tile's.
template <typename Tile, typename T, typename Weight, typename Data>
__device__ void weight_then_data_block(const ProductPlan& weight, const ProductPlan& data,
                                       unsigned* arrivals, const Weight& weight_block,
                                       const Data& data_block) {
    __shared__ __align__(16) T a_tile[Tile::A_SIZE];
    __shared__ __align__(16) T b_tile[Tile::B_SIZE];
    const int weight_blocks = weight.blocks<Tile>();
    if ((int)blockIdx.x < weight_blocks) weight_block(blockIdx.x, arrivals, a_tile, b_tile);
    else data_block(blockIdx.x - weight_blocks, arrivals + weight.tiles<Tile>(), a_tile, b_tile);
}

// Convolution: dx: (N, C, H, W) when with_dx (times (x > 0) when relu_input), dw: (F, C, kH, kW),
// db: (F,) when with_db, from dy: (N, F, Ho, Wo), w and x. *_partial: split-K scratch (splits,
// rows, cols) of each product (unused unsplit); one: a 1; the taps as conv.cu's. Grid
// (weight blocks + data blocks,), block (Tile::THREADS,).
template <typename T, typename Tile = SimtTile<>>
__global__ void __launch_bounds__(Tile::THREADS)
conv2d_backward(T* dx, T* dw, T* db, T* dx_partial, T* dw_partial, unsigned* arrivals, const T* dy,
                const T* w, const T* x, const T* one, const int* dy_taps, const int* x_taps,
                CONV_SHAPE_PARAMS, int dx_splits, int dx_k_chunk, int dw_splits, int dw_k_chunk,
                int with_dx, int with_db, int relu_input) {
    const ConvShape s{N, C, H, W, F, kh, kw, sh, sw, pt, pl, Ho, Wo};
    const int patch = C * kh * kw;
    const ProductPlan weight{F, patch + with_db, N * Ho * Wo, dw_splits, dw_k_chunk};
    const ProductPlan data{C, with_dx ? N * H * W : 0, F * kh * kw, dx_splits, dx_k_chunk};
    weight_then_data_block<Tile, T>(
        weight, data, arrivals,
        [&](int job, unsigned* counters, T* a_tile, T* b_tile) {
            product_block<Tile>(weight, job, BatchedRows<T>{dy, F, Ho * Wo},
                                WithOnesColumn<T, Im2colOperand<T, true>>{{x, x_taps, s}, one, patch},
                                WeightBiasOutput<T>{dw, db, patch}, dw_partial, counters, a_tile, b_tile);
        },
        [&](int job, unsigned* counters, T* a_tile, T* b_tile) {
            product_block<Tile>(data, job, BatchedRows<T>{w, C, kh * kw}, Col2imOperand<T>{dy, dy_taps, s},
                                ReluMaskedOutput<T, BatchedRowsOutput<T>>{{dx, nullptr, C, H * W},
                                                                          relu_input ? x : nullptr},
                                dx_partial, counters, a_tile, b_tile);
        });
}

// Linear layer (x: (N, IN), w: (OUT, IN)): dx: (N, IN) = dy @ w when with_dx, dw: (OUT, IN) =
// dy^T @ x, db: (OUT,) when with_db, from dy: (N, OUT). Arguments and grid as conv2d_backward.
template <typename T, typename Tile = SimtTile<>>
__global__ void __launch_bounds__(Tile::THREADS)
linear_backward(T* dx, T* dw, T* db, T* dx_partial, T* dw_partial, unsigned* arrivals, const T* dy,
                const T* w, const T* x, const T* one, int N, int IN, int OUT, int dx_splits,
                int dx_k_chunk, int dw_splits, int dw_k_chunk, int with_dx, int with_db) {
    const ProductPlan weight{OUT, IN + with_db, N, dw_splits, dw_k_chunk};
    const ProductPlan data{with_dx ? N : 0, IN, OUT, dx_splits, dx_k_chunk};
    weight_then_data_block<Tile, T>(
        weight, data, arrivals,
        [&](int job, unsigned* counters, T* a_tile, T* b_tile) {
            product_block<Tile>(weight, job, MatrixOperand<T, true>{dy, OUT, N},
                                WithOnesColumn<T, MatrixOperand<T, false>>{{x, N, IN}, one, IN},
                                WeightBiasOutput<T>{dw, db, IN}, dw_partial, counters, a_tile, b_tile);
        },
        [&](int job, unsigned* counters, T* a_tile, T* b_tile) {
            product_block<Tile>(data, job, MatrixOperand<T, false>{dy, N, OUT},
                                MatrixOperand<T, false>{w, OUT, IN}, RowMajorOutput<T>{dx, IN},
                                dx_partial, counters, a_tile, b_tile);
        });
}
