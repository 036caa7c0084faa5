// backward.cu - a layer's whole backward in one launch: the gradients of a convolution's or a
// linear layer's input, weights and bias from one grid.
//
// Maths (conv.cu's notation; a linear layer is the 1 x 1 case with x: N x IN, w: OUT x IN):
//   data    dx = W^T (C x F*kH*kW) @ dY_col (F*kH*kW x N*H*W)          (linear: dy @ w)
//           times the ReLU mask (x > 0) when x is a ReLU's output (relu_input): that ReLU's
//           backward, applied where its gradient is produced instead of by a pass of its own
//   weight  dw = dY (F x N*Ho*Wo) @ X_col^T                               (linear: dy^T @ x)
//   bias    db[f] = sum over n, pixels of dy[n, f, ...]
// Run as separate launches (conv2d_backward_data, conv2d_backward_weight, reduce.cu's
// channel_sums for db), each of them reads dy.
//
// Same bits as those launches: each product is cut into the K slices its own launch would use
// (the launcher passes them), and every output element sums its K in the same order whatever
// the tile shape; db's blocks are channel_sums' (reduce.cu's channel_reduce: the same slices of
// the same 256 per-thread runs and the same tree, a block of fewer threads running several runs
// in turn). So the fused and the separate backward give the same numbers (and a batch norm that
// hands a layer its bias gradient, computed by channel sums too, changes no bit).
// The bias could instead be a column of ones appended to X_col^T (one more output column of the
// weight product); that sums in the product's order, not channel_sums', and costs a column of
// tiles more on layers whose C*kH*kW fills whole tiles.
//
// Thread layout: one 1-D grid, THREADS threads per block. Each product runs its own block loop
// (gemm.cu's SimtTile v2 or MmaTile v3): WeightTile for the weight product, DataTile for the data
// product, the shapes their own launches would pick (kernel_facts.backward_tiles), e.g. 64 x 64
// for dw and 32 x 128 for dx of a 32 -> 64-channel layer. A block has one size, so the two loops
// have the same THREADS (where the launches' own shapes differ in threads, the launcher takes
// the pair of one thread count that computes the fewest padding cells), and one shared array
// holds a product's shared tiles, sized for the larger product. Running a 64-thread
// loop on a subset of a 256-thread block was the other way: it would need the loops' barriers
// and loaders to know about idle threads.
// Blocks [0, weight blocks) each compute one tile of one K slice of the weight product (the long
// one: K = N*Ho*Wo, few tiles, so it starts first), then the data product's blocks, then the
// bias's (F channels x P slices). Block j of a product with `tiles` output tiles takes tile
// j % tiles (row-major in tiles) of slice j / tiles. A split product (splits > 1) writes its
// slices (splits, rows, cols) into scratch and the last block of each tile to finish adds them
// in slice order (gemm.cu's last_to_arrive and add_tile_slices: sum_splits' order) and stores
// the sums through the product's output; an unsplit one stores its tile straight through it.
// The launch geometry is kernel_facts.BackwardPlan's.
#include "conv.cu"
#include "reduce.cu"

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

// Block blockIdx.x of the launch: one of the weight product's blocks, the data product's or the
// bias's (channel_sums' block (c, p) of dy viewed as (N, F, S), P = bias_slices of each channel;
// none when bias_slices is 0), in that order; the weight product's tiles are WeightTile's, the
// data product's DataTile's. arrivals: a counter per tile of each product and one per channel,
// zeroed (left zero).
template <typename WeightTile, typename DataTile, typename T, typename Weight, typename Data>
__device__ void backward_block(const ProductPlan& weight, const ProductPlan& data, int bias_slices,
                               T* db, T* db_partial, unsigned* arrivals, const T* dy, int N, int F,
                               int S, const Weight& weight_block, const Data& data_block) {
    static_assert(WeightTile::THREADS == DataTile::THREADS, "one block size runs both products");
    // one array for a product's b_tile then its a_tile: two arrays of the larger sizes would pass
    // the 48 KB of static shared memory in double for 64 x 64 with 32 x 128 (and with a_tile
    // first, ptxas gave the 32 x 32 kernel 80 registers instead of 72)
    constexpr int WEIGHT_SIZE = WeightTile::A_SIZE + WeightTile::B_SIZE;
    constexpr int DATA_SIZE = DataTile::A_SIZE + DataTile::B_SIZE;
    __shared__ __align__(16) T tiles[WEIGHT_SIZE > DATA_SIZE ? WEIGHT_SIZE : DATA_SIZE];
    __shared__ T warp_totals[REDUCE_THREADS / 32];
    static_assert(REDUCE_THREADS % WeightTile::THREADS == 0, "a block stands in for whole 256-thread blocks");
    int job = blockIdx.x;
    if (job < weight.blocks<WeightTile>())
        return weight_block(job, arrivals, tiles + WeightTile::B_SIZE, tiles);
    job -= weight.blocks<WeightTile>();
    arrivals += weight.tiles<WeightTile>();
    if (job < data.blocks<DataTile>()) return data_block(job, arrivals, tiles + DataTile::B_SIZE, tiles);
    job -= data.blocks<DataTile>();
    arrivals += data.tiles<DataTile>();
    channel_reduce(db_partial, arrivals, N, F, S, warp_totals, [=](unsigned i, int) { return dy[i]; },
                   [=](int c, T total) { db[c] = total; },
                   ChannelSlice{job / bias_slices, job % bias_slices, bias_slices, 0});
}

// Convolution: dx: (N, C, H, W) when with_dx (times (x > 0) when relu_input), dw: (F, C, kH, kW),
// db: (F,) when db_slices > 0 (channel_sums' P), from dy: (N, F, Ho, Wo), x and wt: (C, F, kH,
// kW), the weights transposed (conv.cu's weight transpose: W^T's rows contiguous). *_partial:
// scratch: (splits, rows, cols) of a split product, (F, P) for db; the taps as conv.cu's. Grid
// (weight blocks + data blocks + F * db_slices,), block (WeightTile::THREADS,).
template <typename T, typename WeightTile = SimtTile<>, typename DataTile = WeightTile>
__global__ void __launch_bounds__(WeightTile::THREADS)
conv2d_backward(T* dx, T* dw, T* db, T* dx_partial, T* dw_partial, T* db_partial, unsigned* arrivals,
                const T* dy, const T* wt, const T* x, const int* dy_taps, const int* x_taps,
                CONV_SHAPE_PARAMS, int dx_splits, int dx_k_chunk, int dw_splits, int dw_k_chunk,
                int db_slices, int with_dx, int relu_input) {
    const ConvShape s{N, C, H, W, F, kh, kw, sh, sw, pt, pl, Ho, Wo};
    const int patch = C * kh * kw;
    const ProductPlan weight{F, patch, N * Ho * Wo, dw_splits, dw_k_chunk};
    const ProductPlan data{C, with_dx ? N * H * W : 0, F * kh * kw, dx_splits, dx_k_chunk};
    backward_block<WeightTile, DataTile>(
        weight, data, db_slices, db, db_partial, arrivals, dy, N, F, Ho * Wo,
        [&](int job, unsigned* counters, T* a_tile, T* b_tile) {
            product_block<WeightTile>(weight, job, BatchedRows<T>{dy, F, Ho * Wo}, Im2colOperand<T, true>{x, x_taps, s},
                                RowMajorOutput<T>{dw, patch}, dw_partial, counters, a_tile, b_tile);
        },
        [&](int job, unsigned* counters, T* a_tile, T* b_tile) {
            product_block<DataTile>(data, job, MatrixOperand<T, false>{wt, C, F * kh * kw},
                                Col2imOperand<T>{dy, dy_taps, s},
                                ReluMaskedOutput<T, BatchedRowsOutput<T>>{{dx, nullptr, C, H * W},
                                                                          relu_input ? x : nullptr},
                                dx_partial, counters, a_tile, b_tile);
        });
}

// Linear layer (x: (N, IN), w: (OUT, IN)): dx: (N, IN) = dy @ w when with_dx, dw: (OUT, IN) =
// dy^T @ x, db: (OUT,) when db_slices > 0, from dy: (N, OUT). Arguments and grid as
// conv2d_backward's (dy viewed as (N, OUT, 1) for db).
template <typename T, typename WeightTile = SimtTile<>, typename DataTile = WeightTile>
__global__ void __launch_bounds__(WeightTile::THREADS)
linear_backward(T* dx, T* dw, T* db, T* dx_partial, T* dw_partial, T* db_partial, unsigned* arrivals,
                const T* dy, const T* w, const T* x, int N, int IN, int OUT, int dx_splits,
                int dx_k_chunk, int dw_splits, int dw_k_chunk, int db_slices, int with_dx) {
    const ProductPlan weight{OUT, IN, N, dw_splits, dw_k_chunk};
    const ProductPlan data{with_dx ? N : 0, IN, OUT, dx_splits, dx_k_chunk};
    backward_block<WeightTile, DataTile>(
        weight, data, db_slices, db, db_partial, arrivals, dy, N, OUT, 1,
        [&](int job, unsigned* counters, T* a_tile, T* b_tile) {
            product_block<WeightTile>(weight, job, MatrixOperand<T, true>{dy, OUT, N}, MatrixOperand<T, false>{x, N, IN},
                                RowMajorOutput<T>{dw, IN}, dw_partial, counters, a_tile, b_tile);
        },
        [&](int job, unsigned* counters, T* a_tile, T* b_tile) {
            product_block<DataTile>(data, job, MatrixOperand<T, false>{dy, N, OUT},
                                MatrixOperand<T, false>{w, OUT, IN}, RowMajorOutput<T>{dx, IN},
                                dx_partial, counters, a_tile, b_tile);
        });
}
