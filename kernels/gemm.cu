// gemm.cu - C = op(A) @ op(B), the matrix product every conv and linear layer runs on.
//
// Maths: C[m, n] = sum_k op(A)[m, k] * op(B)[k, n], with op(A): M x K, op(B): K x N, all
// matrices row-major; op transposes when TRANS_A / TRANS_B is set (then A is stored K x M,
// B is stored N x K). numpy_ref.gemm is the specification.
//
// Versions (all kept; benchmarks/kernels.py times them side by side, benchmarks/sass_counts.py
// counts their instructions per K step):
//   gemm_v1  naive: one thread per C element, reading its row of A and column of B straight
//            from global memory. Every A and B element is fetched N (or M) times, so it runs
//            at a few percent of peak. It is here to read, and as the baseline.
//   gemm_v2  shared-memory tiling + register blocking. A block of 256 threads owns a
//            64 x 64 tile of C. It walks K in steps of 16: the 64 x 16 slab of A and the
//            16 x 64 slab of B are copied into shared memory once (coalesced, zero-filled
//            past the edges), then each thread computes a 4 x 4 patch of C from registers:
//            per k it reads 4 values of A and 4 of B and does 16 fused multiply-adds, so
//            every shared-memory load feeds 2 FMAs instead of 1/2 in v1's global loads.
//            Thread (tx, ty) = (t % 16, t / 16) owns rows ty + 16 i and columns tx + 16 j
//            (i, j < 4): strided, not contiguous, so a warp reads 16 consecutive B values
//            (no bank conflicts), A values are broadcasts, and the final stores of C are
//            coalesced along rows.
//            Split-K: when C has too few tiles to fill the GPU (dW = dY^T X: small M x N,
//            K = batch * pixels), blockIdx.z takes a slice of K and writes its own partial C;
//            sum_splits then adds the slices in a fixed order. No atomics, so results are
//            bitwise reproducible from run to run.
//   gemm_v3  tensor cores (float only; --precision tf32 or bf16): the same 64 x 64 tiles and
//            split-K, 128 threads, mma.sync with FP32 accumulators, and the slabs of the next
//            K step copied by cp.async while this one is multiplied (see the v3 section).
//
// The block loops (gemm_tile, mma_gemm_tile below) do not care where A and B come from: they
// ask an operand for the address of element (row, col). Here the operands are plain matrices;
// conv.cu plugs in operands that compute im2col addresses on the fly (implicit GEMM) and
// reuses both loops unchanged.
#include "common.cuh"
#include "warp_mma.cuh"  // v3's tensor-core primitives and cp.async

constexpr int TILE_M = 64, TILE_N = 64, TILE_K = 16;
constexpr int GEMM_THREADS = 256;                // 16 x 16 threads, each a 4 x 4 patch
constexpr int PATCH = 4;                         // TILE_M / 16 == TILE_N / 16
constexpr int TILE_PAD = 1;                      // one spare column avoids bank conflicts
constexpr int A_TILE_SIZE = TILE_K * (TILE_M + TILE_PAD);
constexpr int B_TILE_SIZE = TILE_K * (TILE_N + TILE_PAD);
// minicnn/backends/kernel_facts.py reads the integer constants above to size grids.
static_assert(TILE_M == 16 * PATCH && TILE_N == 16 * PATCH && GEMM_THREADS == 16 * 16,
              "v2: 16 x 16 threads, each owning a PATCH x PATCH strided patch of the tile");

// Operands. The tile loader reads an operand, a rows x cols matrix, element by element.
// contiguous_cols says which index walks memory with stride 1 (columns, or rows if false);
// along it the loader keeps one index per thread for a whole tile, so an operand splits its
// addressing in two: line(contiguous index) once per tile (for conv.cu's operands the
// division of a pixel into (n, h, w)), then address(line, other index) per element: a pointer
// into global memory, or nullptr for an implicit zero (convolution padding).

// op(X) for a row-major matrix X: a rows x cols view, transposed when TRANS.
template <typename T, bool TRANS>
struct MatrixOperand {
    const T* data;
    int rows, cols;
    static constexpr bool contiguous_cols = !TRANS;
    using Line = const T*;  // the start of a column (a row when TRANS)
    __device__ Line line(int index) const { return data + index; }
    __device__ const T* address(Line start, int other) const { return start + (long long)other * (TRANS ? rows : cols); }
    __device__ T operator()(int r, int c) const { return TRANS ? *address(line(r), c) : *address(line(c), r); }
};

// Writes C row-major with leading dimension ld.
template <typename T>
struct RowMajorOutput {
    T* data;
    int ld;
    __device__ void operator()(int r, int c, T value) const { data[(long long)r * ld + c] = value; }
};

// Copy the ROWS x COLS block of `op` at (row0, col0) into shared memory: element (r, c) goes
// to tile[r * row_stride + c * col_stride]; cells past (row_end, col_end) become 0, so the
// multiply below needs no edge checks. Consecutive threads take consecutive elements along the
// operand's contiguous index, which makes the global loads coalesced; as THREADS is a multiple
// of the tile's extent along that index, each thread keeps one index and one op.line().
// ASYNC: each element is a cp.async instead (no round trip through registers, zero-filled where
// the operand has no element); it lands at the cp_async_wait covering the caller's next commit.
template <int ROWS, int COLS, int THREADS = GEMM_THREADS, bool ASYNC = false, typename T, typename Operand>
__device__ void load_tile(const Operand& op, int row0, int col0, int row_end, int col_end,
                          T* tile, int row_stride, int col_stride) {
    constexpr bool BY_COL = Operand::contiguous_cols;
    constexpr int LINES = BY_COL ? COLS : ROWS, DEPTH = BY_COL ? ROWS : COLS;
    static_assert(THREADS % LINES == 0, "a thread keeps one index along the contiguous direction");
    const int mine = threadIdx.x % LINES, index = (BY_COL ? col0 : row0) + mine;
    const bool inside = index < (BY_COL ? col_end : row_end);
    const int other0 = BY_COL ? row0 : col0, other_end = BY_COL ? row_end : col_end;
    const typename Operand::Line line = op.line(index);  // dereferenced only when inside
    for (int o = threadIdx.x / LINES; o < DEPTH; o += THREADS / LINES) {
        const T* source = inside && other0 + o < other_end ? op.address(line, other0 + o) : nullptr;
        T* cell = &tile[(BY_COL ? o : mine) * row_stride + (BY_COL ? mine : o) * col_stride];
        if constexpr (ASYNC) cp_async<sizeof(T)>(cell, source, source != nullptr);
        else *cell = source ? *source : T(0);
    }
}

// One block's 64 x 64 tile of C = A @ B over k in [k_begin, k_end); A: M x K, B: K x N.
// a_tile / b_tile: the kernel's __shared__ arrays of A_TILE_SIZE / B_TILE_SIZE elements.
template <typename T, typename OperandA, typename OperandB, typename Output>
__device__ void gemm_tile(const OperandA& a, const OperandB& b, const Output& out, int M, int N,
                          int k_begin, int k_end, T* a_tile, T* b_tile) {
    const int m0 = blockIdx.y * TILE_M, n0 = blockIdx.x * TILE_N;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    T acc[PATCH][PATCH] = {};
    for (int k0 = k_begin; k0 < k_end; k0 += TILE_K) {
        // a_tile holds A^T (k-major) so that a thread's 4 rows sit in one shared-memory row.
        load_tile<TILE_M, TILE_K>(a, m0, k0, M, k_end, a_tile, 1, TILE_M + TILE_PAD);
        load_tile<TILE_K, TILE_N>(b, k0, n0, k_end, N, b_tile, TILE_N + TILE_PAD, 1);
        __syncthreads();
#pragma unroll
        for (int k = 0; k < TILE_K; ++k) {
            T a_reg[PATCH], b_reg[PATCH];
#pragma unroll
            for (int i = 0; i < PATCH; ++i) a_reg[i] = a_tile[k * (TILE_M + TILE_PAD) + ty + 16 * i];
#pragma unroll
            for (int j = 0; j < PATCH; ++j) b_reg[j] = b_tile[k * (TILE_N + TILE_PAD) + tx + 16 * j];
#pragma unroll
            for (int i = 0; i < PATCH; ++i)
#pragma unroll
                for (int j = 0; j < PATCH; ++j) acc[i][j] += a_reg[i] * b_reg[j];
        }
        __syncthreads();  // everyone is done reading before the next slab overwrites the tiles
    }
    for (int i = 0; i < PATCH; ++i)
        for (int j = 0; j < PATCH; ++j) {
            const int m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
            if (m < M && n < N) out(m, n, acc[i][j]);
        }
}

// v1. Launch: block (16, 16), grid (ceil(N / 16), ceil(M / 16)). c: M x N.
template <typename T, bool TRANS_A, bool TRANS_B>
__global__ void gemm_v1(T* c, const T* a, const T* b, int M, int N, int K) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    const int m = blockIdx.y * blockDim.y + threadIdx.y;
    if (m >= M || n >= N) return;
    const MatrixOperand<T, TRANS_A> op_a{a, M, K};
    const MatrixOperand<T, TRANS_B> op_b{b, K, N};
    T sum = 0;
    for (int k = 0; k < K; ++k) sum += op_a(m, k) * op_b(k, n);
    c[(long long)m * N + n] = sum;
}

// v2. Launch: block (256,), grid (ceil(N / 64), ceil(M / 64), splits); k_chunk: a multiple
// of TILE_K. c: splits x M x N, slice z holding the partial sum over k in
// [z * k_chunk, (z + 1) * k_chunk); with one split that is C itself.
template <typename T, bool TRANS_A, bool TRANS_B>
__global__ void __launch_bounds__(GEMM_THREADS)
gemm_v2(T* c, const T* a, const T* b, int M, int N, int K, int k_chunk) {
    __shared__ T a_tile[A_TILE_SIZE];
    __shared__ T b_tile[B_TILE_SIZE];
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = k_begin + k_chunk < K ? k_begin + k_chunk : K;
    gemm_tile(MatrixOperand<T, TRANS_A>{a, M, K}, MatrixOperand<T, TRANS_B>{b, K, N},
              RowMajorOutput<T>{c + (long long)blockIdx.z * M * N, N}, M, N, k_begin, k_end,
              a_tile, b_tile);
}

// out[i] = sum over s of partial[s * count + i], s ascending (fixed order: reproducible).
// Launch: one thread per element.
template <typename T>
__global__ void sum_splits(T* out, const T* partial, int count, int splits) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    T sum = 0;
    for (int s = 0; s < splits; ++s) sum += partial[(long long)s * count + i];
    out[i] = sum;
}

// ---------------------------------------------------------------------------- v3: tensor cores
// gemm_v3 runs the same block loop shape as v2 (a 64 x 64 tile of C, K in steps of 16, operands
// staged in shared memory by load_tile, split-K over blockIdx.z) but the multiply is mma.sync:
// 4 warps in a 2 x 2 grid each own a 32 x 32 patch, i.e. 2 x 4 accumulators of 16 x 8, and per
// K step of 16 issue 16 TF32 mma (m16n8k8) or 8 BF16 mma (m16n8k16) where a v2 thread did 256
// FMAs. Operands are rounded to TF32 or BF16 as the fragments are built; C stays FP32.
//
// Shared tiles are k-contiguous: a_tile[m][k] and b_tile[n][k], so a fragment register is
// one (TF32) or two adjacent (BF16, one float2 load) floats of a row. Row strides 20 (TF32) and
// 24 (BF16) floats spread a warp's fragment loads over all 32 banks: lane (g, t) reads word
// 20 g + t, or words 24 g + 2t, 24 g + 2t + 1 in each half-warp phase of a 64-bit load.
enum class Mma { TF32, BF16 };  // the operand type of the tensor-core kernels

constexpr int MMA_THREADS = 128;  // 4 warps, each a 32 x 32 patch of the 64 x 64 tile
constexpr int MMA_WARP_TILE = 32;
template <Mma P>
__host__ __device__ constexpr int mma_tile_stride() { return P == Mma::TF32 ? TILE_K + 4 : TILE_K + 8; }
constexpr int MMA_TILE_SIZE = TILE_M * (TILE_K + 8);  // floats per shared tile, the larger stride
constexpr int MMA_STAGES = 2;  // double buffering: cp.async fills one stage while the mma read the other
static_assert(TILE_M == 2 * MMA_WARP_TILE && TILE_N == 2 * MMA_WARP_TILE && MMA_THREADS == 4 * 32 &&
              TILE_K == 16, "v3: 2 x 2 warps of 32 x 32 (2 x 4 mma tiles), one BF16 k16 / two TF32 k8 steps");

// acc[i][j] += the warp's 32 x 16 slab of A times the 16 x 32 slab of B; a_warp / b_warp point
// at the warp's first row of a_tile / b_tile. i: 16-row block, j: 8-column block.
template <Mma P>
__device__ __forceinline__ void mma_warp_step(float (&acc)[2][4][4], const float* a_warp,
                                              const float* b_warp) {
    constexpr int S = mma_tile_stride<P>();
    const int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
    if constexpr (P == Mma::TF32) {
#pragma unroll
        for (int kk = 0; kk < TILE_K; kk += 8) {
            unsigned a[2][4], b[4][2];
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int r = 0; r < 4; ++r)  // row g (+8 for odd r), column t (+4 for r >= 2)
                    a[i][r] = tf32_bits(a_warp[(16 * i + g + 8 * (r % 2)) * S + kk + t + 4 * (r / 2)]);
#pragma unroll
            for (int j = 0; j < 4; ++j)
#pragma unroll
                for (int r = 0; r < 2; ++r)  // k = t (+4 for r = 1), column g
                    b[j][r] = tf32_bits(b_warp[(8 * j + g) * S + kk + t + 4 * r]);
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) mma_tf32_m16n8k8(acc[i][j], a[i], b[j]);
        }
    } else {
        unsigned a[2][4], b[4][2];
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int r = 0; r < 4; ++r) {  // row g (+8 for odd r), columns 2t, 2t+1 (+8 for r >= 2)
                const float2 v = *reinterpret_cast<const float2*>(
                    a_warp + (16 * i + g + 8 * (r % 2)) * S + 2 * t + 8 * (r / 2));
                a[i][r] = bf16x2_bits(v.x, v.y);
            }
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int r = 0; r < 2; ++r) {  // k = 2t, 2t+1 (+8 for r = 1), column g
                const float2 v = *reinterpret_cast<const float2*>(b_warp + (8 * j + g) * S + 2 * t + 8 * r);
                b[j][r] = bf16x2_bits(v.x, v.y);
            }
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) mma_bf16_m16n8k16(acc[i][j], a[i], b[j]);
    }
}

// gemm_tile with tensor cores: one block's 64 x 64 tile of C = A @ B over k in [k_begin, k_end).
// a_tile / b_tile: __shared__ arrays of MMA_STAGES * MMA_TILE_SIZE floats, 16-byte aligned.
// The slabs of step k + 1 are copied by cp.async while the warps multiply those of step k.
template <Mma P, typename OperandA, typename OperandB, typename Output>
__device__ void mma_gemm_tile(const OperandA& a, const OperandB& b, const Output& out, int M, int N,
                              int k_begin, int k_end, float* a_tile, float* b_tile) {
    constexpr int S = mma_tile_stride<P>();
    const int m0 = blockIdx.y * TILE_M, n0 = blockIdx.x * TILE_N;
    const int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
    const int warp_m = warp / 2 * MMA_WARP_TILE, warp_n = warp % 2 * MMA_WARP_TILE;
    auto start_loading = [&](int stage, int k0) {
        load_tile<TILE_M, TILE_K, MMA_THREADS, true>(a, m0, k0, M, k_end, a_tile + stage * MMA_TILE_SIZE, S, 1);
        load_tile<TILE_K, TILE_N, MMA_THREADS, true>(b, k0, n0, k_end, N, b_tile + stage * MMA_TILE_SIZE, 1, S);
        cp_async_commit();
    };
    float acc[2][4][4] = {};
    if (k_begin < k_end) start_loading(0, k_begin);
    int stage = 0;
    for (int k0 = k_begin; k0 < k_end; k0 += TILE_K, stage ^= 1) {
        if (k0 + TILE_K < k_end) {
            start_loading(stage ^ 1, k0 + TILE_K);
            cp_async_wait<1>();  // this step's group has landed; the next one may still fly
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();  // ... for every thread's copies
        mma_warp_step<P>(acc, a_tile + stage * MMA_TILE_SIZE + warp_m * S, b_tile + stage * MMA_TILE_SIZE + warp_n * S);
        __syncthreads();  // everyone is done reading this stage before it is refilled
    }
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 4; ++j)
            for (int r = 0; r < 4; ++r) {  // accumulator r: row g (+8 for r >= 2), column 2t + r % 2
                const int m = m0 + warp_m + 16 * i + g + 8 * (r / 2), n = n0 + warp_n + 8 * j + 2 * t + r % 2;
                if (m < M && n < N) out(m, n, acc[i][j][r]);
            }
}

// v3. Launch: block (128,), grid (ceil(N / 64), ceil(M / 64), splits), as v2 otherwise.
template <Mma P, bool TRANS_A, bool TRANS_B>
__global__ void __launch_bounds__(MMA_THREADS)
gemm_v3(float* c, const float* a, const float* b, int M, int N, int K, int k_chunk) {
    __shared__ __align__(16) float a_tile[MMA_STAGES * MMA_TILE_SIZE];
    __shared__ __align__(16) float b_tile[MMA_STAGES * MMA_TILE_SIZE];
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = k_begin + k_chunk < K ? k_begin + k_chunk : K;
    mma_gemm_tile<P>(MatrixOperand<float, TRANS_A>{a, M, K}, MatrixOperand<float, TRANS_B>{b, K, N},
                     RowMajorOutput<float>{c + (long long)blockIdx.z * M * N, N}, M, N, k_begin, k_end,
                     a_tile, b_tile);
}

// The block loops of v2 and v3 as interchangeable policies, so conv.cu writes each of its
// products once: Tile::run computes one block's tile; THREADS and the shared tile sizes are
// its launch contract.
struct SimtTile {
    static constexpr int THREADS = GEMM_THREADS, A_SIZE = A_TILE_SIZE, B_SIZE = B_TILE_SIZE;
    template <typename T, typename OperandA, typename OperandB, typename Output>
    static __device__ void run(const OperandA& a, const OperandB& b, const Output& out, int M, int N,
                               int k_begin, int k_end, T* a_tile, T* b_tile) {
        gemm_tile(a, b, out, M, N, k_begin, k_end, a_tile, b_tile);
    }
};

template <Mma P>
struct MmaTile {
    static constexpr int THREADS = MMA_THREADS, A_SIZE = MMA_STAGES * MMA_TILE_SIZE, B_SIZE = A_SIZE;
    template <typename OperandA, typename OperandB, typename Output>  // float arrays only
    static __device__ void run(const OperandA& a, const OperandB& b, const Output& out, int M, int N,
                               int k_begin, int k_end, float* a_tile, float* b_tile) {
        mma_gemm_tile<P>(a, b, out, M, N, k_begin, k_end, a_tile, b_tile);
    }
};

// ---------------------------------------------------------------------------- split-K in one launch
// Version 2 of split-K's sum: the block that computes the last slice of a tile to finish adds
// the tile's `splits` partial slices, s ascending, exactly as sum_splits would, so the result is
// bit for bit that of the two-launch version (product, then sum_splits) with one launch fewer.
// Each block stores its slice, fences, and counts itself in with an integer atomicAdd on
// arrivals[tile] (tile = blockIdx.y * gridDim.x + blockIdx.x); whichever block arrives last
// resets the counter and sums. Which block that is varies from run to run; what it adds, and in
// which order, does not (reduce.cu's channel_reduce uses the same pattern).
// arrivals: at least gridDim.x * gridDim.y zeroed counters owned by the launcher (left zero).
template <typename T>
__device__ void add_splits_when_last(T* c, const T* partial, unsigned* arrivals, int M, int N) {
    __shared__ int last;
    __threadfence();  // every thread's slice stores are visible before the block counts itself in
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned tile = blockIdx.y * gridDim.x + blockIdx.x;
        last = atomicAdd(&arrivals[tile], 1u) == gridDim.z - 1;
        if (last) arrivals[tile] = 0;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    const volatile T* slices = partial;  // volatile: written by other blocks, not cached in L1
    const long long slice = (long long)M * N;
    for (int e = threadIdx.x; e < TILE_M * TILE_N; e += blockDim.x) {
        const int m = blockIdx.y * TILE_M + e / TILE_N, n = blockIdx.x * TILE_N + e % TILE_N;
        if (m >= M || n >= N) continue;
        T sum = 0;
        for (int s = 0; s < (int)gridDim.z; ++s) sum += slices[s * slice + (long long)m * N + n];
        c[(long long)m * N + n] = sum;
    }
}

// gemm_v2 (Tile = SimtTile) or gemm_v3 (MmaTile<P>, float) with the split-K sum in the same
// launch: c: M x N, partial: splits x M x N scratch. Grid as v2 / v3 with splits > 1.
template <typename T, bool TRANS_A, bool TRANS_B, typename Tile = SimtTile>
__global__ void __launch_bounds__(Tile::THREADS)
gemm_split_k(T* c, T* partial, unsigned* arrivals, const T* a, const T* b, int M, int N, int K,
             int k_chunk) {
    __shared__ __align__(16) T a_tile[Tile::A_SIZE];
    __shared__ __align__(16) T b_tile[Tile::B_SIZE];
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = k_begin + k_chunk < K ? k_begin + k_chunk : K;
    Tile::run(MatrixOperand<T, TRANS_A>{a, M, K}, MatrixOperand<T, TRANS_B>{b, K, N},
              RowMajorOutput<T>{partial + (long long)blockIdx.z * M * N, N}, M, N, k_begin, k_end,
              a_tile, b_tile);
    add_splits_when_last(c, partial, arrivals, M, N);
}

// ---------------------------------------------------------------------------- bias in the epilogue
// A linear layer's y = x @ w.T + b with the bias added as each element is stored (value +
// bias[col], add_bias's arithmetic: the same bits), so no second pass over y. Unsplit K only:
// a split product's slices are summed first (the launcher adds the bias separately then).
template <typename T>
struct RowMajorBiasOutput {
    RowMajorOutput<T> store;
    const T* bias;  // one value per column
    __device__ void operator()(int r, int c, T value) const { store(r, c, value + bias[c]); }
};

// c: M x N = op(A) @ op(B) + bias (N,). Grid (ceil(N / 64), ceil(M / 64)).
template <typename T, bool TRANS_A, bool TRANS_B, typename Tile = SimtTile>
__global__ void __launch_bounds__(Tile::THREADS)
gemm_bias(T* c, const T* a, const T* b, const T* bias, int M, int N, int K) {
    __shared__ __align__(16) T a_tile[Tile::A_SIZE];
    __shared__ __align__(16) T b_tile[Tile::B_SIZE];
    Tile::run(MatrixOperand<T, TRANS_A>{a, M, K}, MatrixOperand<T, TRANS_B>{b, K, N},
              RowMajorBiasOutput<T>{{c, N}, bias}, M, N, 0, K, a_tile, b_tile);
}
