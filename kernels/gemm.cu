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
//            16 x 64 slab of B are copied into shared memory (coalesced, zero-filled past the
//            edges), then each thread computes a 4 x 4 patch of C from registers: per k it
//            reads 4 values of A and 4 of B and does 16 fused multiply-adds.
//            Thread (tx, ty) = (t % 16, t / 16) owns the contiguous rows 4 ty .. 4 ty + 3 and
//            columns 4 tx .. 4 tx + 3, so its 4 values of A (or B) per k are one 16-byte
//            shared load (float4; two for double): 2 loads feed 16 FMAs. Rows of the shared
//            tiles are padded by 4 to keep them 16-byte aligned. A warp's B loads are 16
//            consecutive float4 (no bank conflicts), its A loads two broadcasts.
//            Double buffering: two shared stages; the slabs of step k + 1 are copied while
//            step k is multiplied, by cp.async on sm_80+ (no round trip through registers).
//            C leaves through shared memory, one row of every patch at a time, so that
//            consecutive threads store consecutive columns (coalesced).
//            Tile shapes: besides 64 x 64, 32 x 128 / 128 x 32 (256 threads) and 32 x 32 (64
//            threads), listed in SIMT_SHAPES; per product the launchers keep 64 x 64 unless
//            it would waste more than an eighth of its cells, then take the shape computing
//            the fewest padding cells (a 32-channel layer fills 32 x 128 tiles, not half of
//            a 64 x 64 one; kernel_facts.best_tile).
//            Split-K: when C has too few tiles to fill the GPU (dW = dY^T X: small M x N,
//            K = batch * pixels; the 4 x 4 layers of a small batch), blockIdx.z takes a slice of
//            K and writes its own partial C; sum_splits then adds the slices in a fixed order.
//            No atomics, so results are bitwise reproducible from run to run.
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
constexpr int TILE_PAD = 4;                      // keeps the rows of v2's shared tiles 16-byte aligned
constexpr int SIMT_STAGES = 2;                   // v2's double buffering
// v2's tile shapes {rows, cols, threads} of C per block (SimtTile); the launchers choose among
// them per product (kernel_facts.simt_products). Each thread computes a PATCH x PATCH patch.
constexpr int SIMT_SHAPES[][3] = {{TILE_M, TILE_N, GEMM_THREADS}, {32, 128, 256}, {128, 32, 256}, {32, 32, 64}};
// minicnn/backends/kernel_facts.py reads the integer constants above to size grids.
static_assert(TILE_M == 16 * PATCH && TILE_N == 16 * PATCH && GEMM_THREADS == 16 * 16,
              "v2: 16 x 16 threads, each owning a PATCH x PATCH patch of the tile");

// cp.async exists from sm_80 on (and in the emulator); older GPUs load v2's stages synchronously.
#if defined(MINICNN_EMULATOR) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800)
constexpr bool SIMT_CP_ASYNC = true;
#else
constexpr bool SIMT_CP_ASYNC = false;
#endif

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
    // An int product: the launchers keep every array under 2^31 elements. (A 64-bit one made
    // ptxas keep the loader's row offsets in register pairs: 119 registers in BF16 backward-data.)
    __device__ const T* address(Line start, int other) const { return start + other * (TRANS ? rows : cols); }
    __device__ T operator()(int r, int c) const { return TRANS ? *address(line(r), c) : *address(line(c), r); }
};

// Writes C row-major with leading dimension ld. offset(r, c): where element (r, c) lives, also
// in each split-K slice (add_splits_when_last reads the slices through it).
template <typename T>
struct RowMajorOutput {
    T* data;
    int ld;
    __device__ long long offset(int r, int c) const { return (long long)r * ld + c; }
    __device__ void operator()(int r, int c, T value) const { data[offset(r, c)] = value; }
};

// Which output tile a block computes, counted in tiles: by default its blockIdx (y: row, x:
// column); a launch running two products in one grid (backward.cu) places its blocks itself.
struct TilePlace {
    int row, col;
};
__device__ __forceinline__ TilePlace block_tile() { return {int(blockIdx.y), int(blockIdx.x)}; }

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

// PATCH consecutive values of a shared tile, read or written by vector instructions (one
// 16-byte float4 for float; two for double: 16 bytes is the widest shared access).
template <typename T>
struct alignas(PATCH * sizeof(T) < 16 ? PATCH * sizeof(T) : 16) Fragment {
    T v[PATCH];
};

// The K loop of a double-buffered block: load(stage, k0) starts filling shared stage 0 or 1
// with the slabs at k0 (cp.async groups when ASYNC), multiply(stage) consumes a filled one.
// The next stage is filled while this one is multiplied.
template <bool ASYNC, typename Load, typename Multiply>
__device__ __forceinline__ void double_buffered_k_loop(int k_begin, int k_end, const Load& load,
                                                       const Multiply& multiply) {
    if (k_begin < k_end) load(0, k_begin);
    for (int k0 = k_begin, stage = 0; k0 < k_end; k0 += TILE_K, stage ^= 1) {
        const bool more = k0 + TILE_K < k_end;
        if (more) load(stage ^ 1, k0 + TILE_K);
        if constexpr (ASYNC) {  // this stage's copies have landed; the next ones may still fly
            if (more) cp_async_wait<1>();
            else cp_async_wait<0>();
        }
        __syncthreads();  // ... for every thread's copies
        multiply(stage);
        __syncthreads();  // everyone is done reading this stage before it is refilled
    }
}

// Writes each thread's PATCH x PATCH patch acc (rows PATCH ty + i, columns PATCH tx + j) to
// out, staging one row i of every patch at a time in shared memory (ROWS / PATCH x COLS,
// row stride COLS + TILE_PAD), so that consecutive threads store consecutive columns.
template <int ROWS, int COLS, int THREADS, typename T, typename Output>
__device__ void store_patches(const T (&acc)[PATCH][PATCH], const Output& out, int m0, int n0, int M,
                              int N, T* staging) {
    constexpr int STRIDE = COLS + TILE_PAD, CELLS = ROWS / PATCH * COLS;
    const int tx = threadIdx.x % (COLS / PATCH), ty = threadIdx.x / (COLS / PATCH);
#pragma unroll  // acc stays in registers only when every index is a constant
    for (int i = 0; i < PATCH; ++i) {
        Fragment<T> row;
#pragma unroll
        for (int j = 0; j < PATCH; ++j) row.v[j] = acc[i][j];
        *reinterpret_cast<Fragment<T>*>(staging + ty * STRIDE + PATCH * tx) = row;
        __syncthreads();
        for (int cell = threadIdx.x; cell < CELLS; cell += THREADS) {
            const int r = cell / COLS, c = cell % COLS, m = m0 + PATCH * r + i, n = n0 + c;
            if (m < M && n < N) out(m, n, staging[r * STRIDE + c]);
        }
        __syncthreads();  // the row is out before the next one overwrites it
    }
}

// One block's ROWS x COLS tile of C = A @ B over k in [k_begin, k_end); A: M x K, B: K x N.
// a_tile / b_tile: the kernel's __shared__ arrays of SimtTile<ROWS, COLS, THREADS>::A_SIZE /
// B_SIZE elements, 16-byte aligned.
template <int ROWS, int COLS, int THREADS, typename T, typename OperandA, typename OperandB, typename Output>
__device__ void gemm_tile(const OperandA& a, const OperandB& b, const Output& out, int M, int N,
                          int k_begin, int k_end, T* a_tile, T* b_tile, TilePlace at) {
    constexpr int A_STRIDE = ROWS + TILE_PAD, B_STRIDE = COLS + TILE_PAD;
    constexpr int A_STAGE = TILE_K * A_STRIDE, B_STAGE = TILE_K * B_STRIDE;
    const int m0 = at.row * ROWS, n0 = at.col * COLS;
    const int tx = threadIdx.x % (COLS / PATCH), ty = threadIdx.x / (COLS / PATCH);
    T acc[PATCH][PATCH] = {};
    auto load = [&](int stage, int k0) {
        // a_tile holds A^T (k-major) so that a thread's PATCH rows are adjacent in shared memory.
        load_tile<ROWS, TILE_K, THREADS, SIMT_CP_ASYNC>(a, m0, k0, M, k_end, a_tile + stage * A_STAGE, 1, A_STRIDE);
        load_tile<TILE_K, COLS, THREADS, SIMT_CP_ASYNC>(b, k0, n0, k_end, N, b_tile + stage * B_STAGE, B_STRIDE, 1);
        if constexpr (SIMT_CP_ASYNC) cp_async_commit();
    };
    auto multiply = [&](int stage) {
        const T* a_mine = a_tile + stage * A_STAGE + PATCH * ty;
        const T* b_mine = b_tile + stage * B_STAGE + PATCH * tx;
#pragma unroll
        for (int k = 0; k < TILE_K; ++k) {
            const Fragment<T> a_reg = *reinterpret_cast<const Fragment<T>*>(a_mine + k * A_STRIDE);
            const Fragment<T> b_reg = *reinterpret_cast<const Fragment<T>*>(b_mine + k * B_STRIDE);
#pragma unroll
            for (int i = 0; i < PATCH; ++i)
#pragma unroll
                for (int j = 0; j < PATCH; ++j) acc[i][j] += a_reg.v[i] * b_reg.v[j];
        }
    };
    double_buffered_k_loop<SIMT_CP_ASYNC>(k_begin, k_end, load, multiply);
    store_patches<ROWS, COLS, THREADS>(acc, out, m0, n0, M, N, b_tile);
}

// v2's block loop as a policy (see MmaTile for v3's): conv.cu writes each of its products
// once, templated on the policy; THREADS and the shared tile sizes are its launch contract.
template <int ROWS = TILE_M, int COLS = TILE_N, int BLOCK = GEMM_THREADS>
struct SimtTile {
    static_assert(ROWS * COLS == BLOCK * PATCH * PATCH && ROWS % PATCH == 0 && COLS % PATCH == 0,
                  "v2: every thread owns one PATCH x PATCH patch of the tile");
    static_assert(ROWS / PATCH * (COLS + TILE_PAD) <= SIMT_STAGES * TILE_K * (COLS + TILE_PAD),
                  "store_patches stages a row of patches in b_tile");
    static constexpr int THREADS = BLOCK, TILE_ROWS = ROWS, TILE_COLS = COLS;
    static constexpr int A_SIZE = SIMT_STAGES * TILE_K * (ROWS + TILE_PAD);
    static constexpr int B_SIZE = SIMT_STAGES * TILE_K * (COLS + TILE_PAD);
    template <typename T, typename OperandA, typename OperandB, typename Output>
    static __device__ void run(const OperandA& a, const OperandB& b, const Output& out, int M, int N,
                               int k_begin, int k_end, T* a_tile, T* b_tile, TilePlace at = block_tile()) {
        gemm_tile<ROWS, COLS, BLOCK>(a, b, out, M, N, k_begin, k_end, a_tile, b_tile, at);
    }
};

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
    __shared__ __align__(16) T a_tile[SimtTile<>::A_SIZE];
    __shared__ __align__(16) T b_tile[SimtTile<>::B_SIZE];
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = k_begin + k_chunk < K ? k_begin + k_chunk : K;
    SimtTile<>::run(MatrixOperand<T, TRANS_A>{a, M, K}, MatrixOperand<T, TRANS_B>{b, K, N},
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
// gemm_v3 runs the same block loop shape as v2 (a 64 x 64 tile of C, K in steps of 16, split-K
// over blockIdx.z) but the multiply is mma.sync: 4 warps in a 2 x 2 grid each own a 32 x 32
// patch, i.e. 2 x 4 accumulators of 16 x 8, and per K step of 16 issue 16 TF32 mma (m16n8k8)
// or 8 BF16 mma (m16n8k16) where a v2 thread did 256 FMAs. The slabs of step k + 1 are copied
// into shared memory by cp.async while the warps multiply those of step k. Operands are rounded
// to TF32 or BF16 as the fragments are built; C stays FP32.
//
// Shared memory without bank conflicts. Each slab is stored the way its operand runs in global
// memory, so that a warp's cp.async stores (consecutive lanes: consecutive elements along the
// operand's contiguous index) fill 32 different banks:
//
//   k-major slab (contiguous along k: W in forward and backward-data, dY and X_col^T in
//   backward-weight, a GEMM's A and transposed B): 64 rows (one m or n each) of 16 floats, unpadded; the four 16-byte chunks of row r are
//   XOR-swizzled, chunk c stored at position c ^ (r / 2 % 4). Bank groups (4 banks = 1 chunk):
//
//               banks  0-3   4-7   8-11  12-15 | 16-19 20-23 24-27 28-31
//        row 0:        c0    c1    c2    c3    |
//        row 1:                                | c0    c1    c2    c3
//        row 2:        c1    c0    c3    c2    |
//        row 3:                                | c1    c0    c3    c2
//        row 4:        c2    c3    c0    c1    |
//        row 5:                                | c2    c3    c0    c1
//        row 6:        c3    c2    c1    c0    |
//        row 7:                                | c3    c2    c1    c0      (rows 8.. repeat)
//
//   Stores: 16 lanes write all of one row, 16 the next: 32 banks. Fragment loads: each phase of
//   an ldmatrix reads one chunk of 8 consecutive rows, e.g. c0 above: 8 different bank groups.
//   Padding alone cannot do both: stride 20 suits ldmatrix but two rows 20 words apart share
//   4 banks when stored; stride 16 suits the stores but puts rows r and r + 2 in the same banks.
//
//   mn-major slab (contiguous along m or n: X_col in forward, dY_col in backward-data, whose
//   pixels are contiguous; a GEMM's transposed A and B): 16 rows (one k each) of 64 floats padded to 72. Stores: 32 consecutive words.
//   Fragment loads are scalar: lane (g, t) reads row t (+ 4), column g (+ 8), word 72 t + g,
//   which is in bank 8 t + g: 32 different banks. ldmatrix cannot serve this slab: its .trans
//   transposes 16-bit elements, which would split each FP32 value between two lanes.
//
// ldmatrix on FP32 slabs: an 8 x 8 b16 matrix is 8 rows of 4 floats, and lane (g, t) receives
// float t of row g: TF32's a0 (row g, column t); an .x4 gives a1..a3 (or b0, b1 of two n
// blocks) from the other three. BF16 wants two adjacent k per register, but the order of k
// inside one mma is free as long as A and B agree: a BF16 register here packs k = t and t + 4
// (in the fragment drawings' terms, logical columns 2t, 2t+1 are physical t, t + 4). The slabs
// stay FP32 because cp.async copies bytes and cannot convert; the rounding is in registers.
enum class Mma { TF32, BF16 };  // the operand type of the tensor-core kernels

constexpr int MMA_THREADS = 128;  // 4 warps, each a 32 x 32 patch of the 64 x 64 tile
constexpr int MMA_WARP_TILE = 32;
constexpr int MN_MAJOR_STRIDE = TILE_M + 8;              // word 72 t + g is in bank 8 t + g
constexpr int MMA_TILE_SIZE = TILE_K * MN_MAJOR_STRIDE;  // floats per stage, the larger slab
constexpr int MMA_STAGES = 2;  // double buffering: cp.async fills one stage while the mma read the other
static_assert(TILE_M == 2 * MMA_WARP_TILE && TILE_N == 2 * MMA_WARP_TILE && MMA_THREADS == 4 * 32 &&
              TILE_K == 16 && TILE_M * TILE_K <= MMA_TILE_SIZE && MMA_THREADS / TILE_K % 8 == 0,
              "v3: 2 x 2 warps of 32 x 32 (2 x 4 mma tiles), one BF16 k16 / two TF32 k8 steps; "
              "a loader thread's k-major rows 8 apart (KMajorSlab::shift)");

// The 8 x 4 block q (0..3) of a 16 x 8 region at (mn0, k0) of a slab: A's fragment order (rows
// first: q = 1 is 8 rows down) or B's (k first: blocks 0, 1 of one n block, then 2, 3 of the
// next). Lane (g, t) of a warp's fragment load receives element (g, t) of each block.
__device__ __forceinline__ int block_mn(int q, bool rows_first) { return 8 * (rows_first ? q % 2 : q / 2); }
__device__ __forceinline__ int block_k(int q, bool rows_first) { return 4 * (rows_first ? q / 2 : q % 2); }

struct KMajorSlab {  // 64 rows of 16 floats, chunks swizzled (drawing above)
    static __device__ __forceinline__ int offset(int mn, int k) {
        return mn * TILE_K + ((k / 4) ^ (mn / 2 % 4)) * 4 + k % 4;
    }
    // For load_tile (copy_slab): the unswizzled strides, and the swizzle as a shift of this
    // thread's cells. load_tile gives a thread one k (thread % 16: the operand is contiguous
    // along k) and the rows thread / 16 + 8 i, which share one swizzle (it repeats every 8 rows).
    static constexpr int MN_STRIDE = TILE_K, K_STRIDE = 1;
    static __device__ __forceinline__ int shift() {
        const int mn = threadIdx.x / TILE_K, k = threadIdx.x % TILE_K;
        return offset(mn, k) - (mn * MN_STRIDE + k * K_STRIDE);
    }
    // words[q] = block q's element (g, t) for this lane: one ldmatrix.x4, lanes 8q..8q+7
    // addressing the 8 rows of block q.
    static __device__ __forceinline__ void load_blocks(unsigned (&words)[4], const float* slab, int mn0,
                                                       int k0, bool rows_first) {
        const int lane = threadIdx.x % 32, q = lane / 8;
        ldmatrix<4, false>(words, slab + offset(mn0 + block_mn(q, rows_first) + lane % 8, k0 + block_k(q, rows_first)));
    }
};

struct MnMajorSlab {  // 16 rows of 64 floats, stride 72
    static constexpr int MN_STRIDE = 1, K_STRIDE = MN_MAJOR_STRIDE;
    static __device__ __forceinline__ int offset(int mn, int k) { return k * K_STRIDE + mn * MN_STRIDE; }
    static __device__ __forceinline__ int shift() { return 0; }
    static __device__ __forceinline__ void load_blocks(unsigned (&words)[4], const float* slab, int mn0,
                                                       int k0, bool rows_first) {
        const int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
#pragma unroll
        for (int q = 0; q < 4; ++q)
            words[q] = __float_as_uint(slab[offset(mn0 + block_mn(q, rows_first) + g, k0 + block_k(q, rows_first) + t)]);
    }
};

// The slab layout of an operand contiguous along k or not.
template <bool K_CONTIGUOUS> struct SlabFor { using type = MnMajorSlab; };
template <> struct SlabFor<true> { using type = KMajorSlab; };

// Starts the cp.async copies of A's 64 x 16 block at (row0, col0) (A_SIDE: rows m, columns
// k) or B's 16 x 64 block (rows k, columns n) into a slab, through load_tile: zeros past
// (row_end, col_end), lanes along the operand's contiguous index.
template <bool A_SIDE, typename Slab, typename Operand>
__device__ void copy_slab(const Operand& op, int row0, int col0, int row_end, int col_end, float* slab) {
    constexpr int ROWS = A_SIDE ? TILE_M : TILE_K, COLS = A_SIDE ? TILE_K : TILE_N;
    load_tile<ROWS, COLS, MMA_THREADS, true>(op, row0, col0, row_end, col_end, slab + Slab::shift(),
                                             A_SIDE ? Slab::MN_STRIDE : Slab::K_STRIDE,
                                             A_SIDE ? Slab::K_STRIDE : Slab::MN_STRIDE);
}

// acc[i][j] += the warp's 32 x 16 slab of A times the 16 x 32 slab of B (i: 16-row block, j:
// 8-column block); the warp's patch starts at row warp_m of a_slab and column warp_n of b_slab.
template <Mma P, typename SlabA, typename SlabB>
__device__ __forceinline__ void mma_warp_step(float (&acc)[2][4][4], const float* a_slab, const float* b_slab,
                                              int warp_m, int warp_n) {
    unsigned a[2][4], b[4][2];  // BF16: filled over both k halves, then one k16 mma
#pragma unroll
    for (int kk = 0; kk < TILE_K; kk += 8) {
        unsigned a_words[2][4], b_words[2][4];  // FP32 bits: A's 16 x 8 per i, B's 8 x 16 per pair of j
#pragma unroll
        for (int i = 0; i < 2; ++i) SlabA::load_blocks(a_words[i], a_slab, warp_m + 16 * i, kk, true);
#pragma unroll
        for (int jj = 0; jj < 2; ++jj) SlabB::load_blocks(b_words[jj], b_slab, warp_n + 16 * jj, kk, false);
        if constexpr (P == Mma::TF32) {  // the blocks are the registers: a0..a3, and b0, b1 per j
#pragma unroll
            for (int q = 0; q < 4; ++q) {
#pragma unroll
                for (int i = 0; i < 2; ++i) a[i][q] = tf32_bits(__uint_as_float(a_words[i][q]));
#pragma unroll
                for (int jj = 0; jj < 2; ++jj) b[2 * jj + q / 2][q % 2] = tf32_bits(__uint_as_float(b_words[jj][q]));
            }
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) mma_tf32_m16n8k8(acc[i][j], a[i], b[j]);
        } else {  // k half h: A registers 2h (row g), 2h + 1 (row g + 8) and B register h, each k and k + 4
            const int h = kk / 8;
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                a[i][2 * h] = bf16x2_bits(__uint_as_float(a_words[i][0]), __uint_as_float(a_words[i][2]));
                a[i][2 * h + 1] = bf16x2_bits(__uint_as_float(a_words[i][1]), __uint_as_float(a_words[i][3]));
            }
#pragma unroll
            for (int jj = 0; jj < 2; ++jj) {
                b[2 * jj][h] = bf16x2_bits(__uint_as_float(b_words[jj][0]), __uint_as_float(b_words[jj][1]));
                b[2 * jj + 1][h] = bf16x2_bits(__uint_as_float(b_words[jj][2]), __uint_as_float(b_words[jj][3]));
            }
        }
    }
    if constexpr (P == Mma::BF16) {
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
                              int k_begin, int k_end, float* a_tile, float* b_tile, TilePlace at) {
    using SlabA = typename SlabFor<OperandA::contiguous_cols>::type;   // A is M x K
    using SlabB = typename SlabFor<!OperandB::contiguous_cols>::type;  // B is K x N
    const int m0 = at.row * TILE_M, n0 = at.col * TILE_N;
    const int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
    const int warp_m = warp / 2 * MMA_WARP_TILE, warp_n = warp % 2 * MMA_WARP_TILE;
    auto start_loading = [&](int stage, int k0) {
        copy_slab<true, SlabA>(a, m0, k0, M, k_end, a_tile + stage * MMA_TILE_SIZE);
        copy_slab<false, SlabB>(b, k0, n0, k_end, N, b_tile + stage * MMA_TILE_SIZE);
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
        mma_warp_step<P, SlabA, SlabB>(acc, a_tile + stage * MMA_TILE_SIZE, b_tile + stage * MMA_TILE_SIZE,
                                       warp_m, warp_n);
        __syncthreads();  // everyone is done reading this stage before it is refilled
    }
#pragma unroll  // constant indices keep acc in registers (else a 128-byte stack frame)
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
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
                     a_tile, b_tile, block_tile());
}

// v3's block loop as a policy interchangeable with SimtTile, so conv.cu writes each of its
// products once: Tile::run computes one block's tile; THREADS and the shared tile sizes are
// its launch contract.
template <Mma P>
struct MmaTile {
    static constexpr int THREADS = MMA_THREADS, A_SIZE = MMA_STAGES * MMA_TILE_SIZE, B_SIZE = A_SIZE;
    static constexpr int TILE_ROWS = TILE_M, TILE_COLS = TILE_N;
    template <typename OperandA, typename OperandB, typename Output>  // float arrays only
    static __device__ void run(const OperandA& a, const OperandB& b, const Output& out, int M, int N,
                               int k_begin, int k_end, float* a_tile, float* b_tile,
                               TilePlace at = block_tile()) {
        mma_gemm_tile<P>(a, b, out, M, N, k_begin, k_end, a_tile, b_tile, at);
    }
};

// ---------------------------------------------------------------------------- split-K in one launch
// The slice of K that blockIdx.z sums: [z * k_chunk, min((z + 1) * k_chunk, K)).
__device__ __forceinline__ int k_slice_end(int k_begin, int k_chunk, int K) {
    return k_begin + k_chunk < K ? k_begin + k_chunk : K;
}

// Version 2 of split-K's sum: the block that computes the last slice of a tile to finish adds
// the tile's `splits` partial slices, s ascending, exactly as sum_splits would, so the result is
// bit for bit that of the two-launch version (product, then sum_splits) with one launch fewer.
// Each block stores its slice, fences, and counts itself in with an integer atomicAdd on
// arrivals[tile] (tile = blockIdx.y * gridDim.x + blockIdx.x); whichever block arrives last
// resets the counter and sums. Which block that is varies from run to run; what it adds, and in
// which order, does not (reduce.cu's channel_reduce uses the same pattern).
// out: where the M x N sum goes, an output functor (RowMajorOutput, conv.cu's
// BatchedRowsOutput) whose offset(r, col) places element (r, col) in out.data and in each
// slice of partial alike (the layout sum_splits adds elementwise); its epilogue (a bias) is not
// applied here: slice 0 already holds it. arrivals: at least gridDim.x * gridDim.y zeroed
// counters owned by the launcher (left zero).
//
// last_to_arrive is the counting: true in every thread of the block that arrives last of
// `blocks` on *arrival (which it resets), after this block's stores and before its reads.
__device__ __forceinline__ bool last_to_arrive(unsigned* arrival, unsigned blocks) {
    __shared__ int last;
    __threadfence();  // every thread's slice stores are visible before the block counts itself in
    __syncthreads();
    if (threadIdx.x == 0) {
        last = atomicAdd(arrival, 1u) == blocks - 1;
        if (last) *arrival = 0;
    }
    __syncthreads();
    if (last) __threadfence();
    return last;
}

// add_tile_slices is the sum, over the Tile-shaped tile `at`: element (m, n) of every slice is at
// where(m, n) in it, and finish(m, n, where(m, n), sum) stores the total.
template <typename Tile, typename T, typename Where, typename Finish>
__device__ void add_tile_slices(const T* partial, int M, int N, TilePlace at, int splits,
                                const Where& where, const Finish& finish) {
    const volatile T* slices = partial;  // volatile: written by other blocks, not cached in L1
    const long long slice = (long long)M * N;
    constexpr int ROWS = Tile::TILE_ROWS, COLS = Tile::TILE_COLS;
    for (int e = threadIdx.x; e < ROWS * COLS; e += blockDim.x) {
        const int m = at.row * ROWS + e / COLS, n = at.col * COLS + e % COLS;
        if (m >= M || n >= N) continue;
        T sum = 0;
        const long long offset = where(m, n);
        for (int s = 0; s < splits; ++s) sum += slices[s * slice + offset];
        finish(m, n, offset, sum);
    }
}

template <typename Tile, typename T, typename Output>
__device__ void add_splits_when_last(const Output& out, const T* partial, unsigned* arrivals, int M,
                                     int N) {
    if (!last_to_arrive(&arrivals[blockIdx.y * gridDim.x + blockIdx.x], gridDim.z)) return;
    add_tile_slices<Tile>(partial, M, N, block_tile(), gridDim.z,
                          [&](int m, int n) { return out.offset(m, n); },
                          [&](int, int, long long at, T sum) { out.data[at] = sum; });
}

// gemm_v2 (Tile = SimtTile) or gemm_v3 (MmaTile<P>, float) with the split-K sum in the same
// launch: c: M x N, partial: splits x M x N scratch. Grid as v2 / v3 with splits > 1.
template <typename T, bool TRANS_A, bool TRANS_B, typename Tile = SimtTile<>>
__global__ void __launch_bounds__(Tile::THREADS)
gemm_split_k(T* c, T* partial, unsigned* arrivals, const T* a, const T* b, int M, int N, int K,
             int k_chunk) {
    __shared__ __align__(16) T a_tile[Tile::A_SIZE];
    __shared__ __align__(16) T b_tile[Tile::B_SIZE];
    const int k_begin = blockIdx.z * k_chunk;
    Tile::run(MatrixOperand<T, TRANS_A>{a, M, K}, MatrixOperand<T, TRANS_B>{b, K, N},
              RowMajorOutput<T>{partial + (long long)blockIdx.z * M * N, N}, M, N, k_begin,
              k_slice_end(k_begin, k_chunk, K), a_tile, b_tile);
    add_splits_when_last<Tile>(RowMajorOutput<T>{c, N}, partial, arrivals, M, N);
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
template <typename T, bool TRANS_A, bool TRANS_B, typename Tile = SimtTile<>>
__global__ void __launch_bounds__(Tile::THREADS)
gemm_bias(T* c, const T* a, const T* b, const T* bias, int M, int N, int K) {
    __shared__ __align__(16) T a_tile[Tile::A_SIZE];
    __shared__ __align__(16) T b_tile[Tile::B_SIZE];
    Tile::run(MatrixOperand<T, TRANS_A>{a, M, K}, MatrixOperand<T, TRANS_B>{b, K, N},
              RowMajorBiasOutput<T>{{c, N}, bias}, M, N, 0, K, a_tile, b_tile);
}
