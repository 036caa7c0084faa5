// One-warp kernels for the emulator's mma.sync, ldmatrix and cp.async (tests/test_emu_tensor_core.py):
// each moves fragments between global memory and registers by the layouts drawn in
// kernels/warp_mma.cuh, so the tests check those layouts against NumPy; the last kernels
// carry a seeded bug each.
#include "warp_mma.cuh"

// d (16 x 8) = a (16 x 8) @ b (8 x 8) + c, all row-major. round: cvt.rna to TF32 first, as the
// kernels do; otherwise the raw FP32 bits go in and the mma ignores their low 13 bits.
__global__ void mma_tf32_tile(float* d, const float* a, const float* b, const float* c, int round) {
    const int g = threadIdx.x / 4, t = threadIdx.x % 4;
    unsigned a_frag[4], b_frag[2];
    float acc[4];
    for (int r = 0; r < 4; ++r) {
        const float value = a[(g + 8 * (r % 2)) * 8 + t + 4 * (r / 2)];
        a_frag[r] = round ? tf32_bits(value) : __float_as_uint(value);
        acc[r] = c[(g + 8 * (r / 2)) * 8 + 2 * t + r % 2];
    }
    for (int r = 0; r < 2; ++r) {
        const float value = b[(t + 4 * r) * 8 + g];
        b_frag[r] = round ? tf32_bits(value) : __float_as_uint(value);
    }
    mma_tf32_m16n8k8(acc, a_frag, b_frag);
    for (int r = 0; r < 4; ++r) d[(g + 8 * (r / 2)) * 8 + 2 * t + r % 2] = acc[r];
}

// d (16 x 8) = bf16(a) (16 x 16) @ bf16(b) (16 x 8) + c.
__global__ void mma_bf16_tile(float* d, const float* a, const float* b, const float* c) {
    const int g = threadIdx.x / 4, t = threadIdx.x % 4;
    unsigned a_frag[4], b_frag[2];
    float acc[4];
    for (int r = 0; r < 4; ++r) {
        const float* pair = a + (g + 8 * (r % 2)) * 16 + 2 * t + 8 * (r / 2);
        a_frag[r] = bf16x2_bits(pair[0], pair[1]);
        acc[r] = c[(g + 8 * (r / 2)) * 8 + 2 * t + r % 2];
    }
    for (int r = 0; r < 2; ++r) {
        const int k = 2 * t + 8 * r;
        b_frag[r] = bf16x2_bits(b[k * 8 + g], b[(k + 1) * 8 + g]);
    }
    mma_bf16_m16n8k16(acc, a_frag, b_frag);
    for (int r = 0; r < 4; ++r) d[(g + 8 * (r / 2)) * 8 + 2 * t + r % 2] = acc[r];
}

// out[lane][i] = register i of ldmatrix over 4 matrices m (4 x 8 x 8 16-bit values), staged
// in shared memory. count: 1, 2 or 4 matrices; trans: 0 or 1.
__global__ void ldmatrix_registers(unsigned* out, const unsigned short* m, int count, int trans) {
    __shared__ __align__(16) unsigned short staged[4 * 8 * 8];
    for (int e = threadIdx.x; e < 4 * 8 * 8; e += 32) staged[e] = m[e];
    __syncthreads();
    const void* row = staged + (threadIdx.x % (8 * count)) * 8;  // lanes 8i..8i+7: matrix i
    unsigned r[4] = {0, 0, 0, 0};
    if (count == 1 && trans) ldmatrix<1, true>(reinterpret_cast<unsigned(&)[1]>(r), row);
    else if (count == 1) ldmatrix<1, false>(reinterpret_cast<unsigned(&)[1]>(r), row);
    else if (count == 2 && trans) ldmatrix<2, true>(reinterpret_cast<unsigned(&)[2]>(r), row);
    else if (count == 2) ldmatrix<2, false>(reinterpret_cast<unsigned(&)[2]>(r), row);
    else if (trans) ldmatrix<4, true>(r, row);
    else ldmatrix<4, false>(r, row);
    for (int i = 0; i < 4; ++i) out[threadIdx.x * 4 + i] = r[i];
}

// y[i] = x[(i + 1) % 32] through shared memory filled by cp.async; x[i] is read only when
// i < valid (the rest arrive as zeros). wait = 0 is the seeded bug: no cp.async.wait_group.
__global__ void cp_async_rotate(float* y, const float* x, int valid, int wait) {
    __shared__ __align__(16) float staged[32];
    cp_async<4>(&staged[threadIdx.x], x + threadIdx.x, int(threadIdx.x) < valid);
    cp_async_commit();
    if (wait) cp_async_wait<0>();
    __syncthreads();
    y[threadIdx.x] = staged[(threadIdx.x + 1) % 32];
}

// Seeded bug: the last lane leaves before the warp's mma.
__global__ void mma_missing_lane(float* d) {
    if (threadIdx.x == 31) return;
    unsigned a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
    float acc[4] = {0, 0, 0, 0};
    mma_tf32_m16n8k8(acc, a, b);
    d[threadIdx.x] = acc[0];
}

// Seeded bug: a fragment register left unwritten. forget: 0 fills every register; 1 skips A's
// a3 in lanes 16..31 (an off-by-half-warp loop); 2 never initializes the accumulators.
__global__ void mma_unwritten_register(float* d, int forget) {
    unsigned a[4], b[2];
    float acc[4];
    for (int r = 0; r < 4; ++r)
        if (!(forget == 1 && r == 3 && threadIdx.x >= 16)) a[r] = tf32_bits(1.0f);
    for (int r = 0; r < 2; ++r) b[r] = tf32_bits(1.0f);
    if (forget != 2)
        for (int r = 0; r < 4; ++r) acc[r] = 0.0f;
    mma_tf32_m16n8k8(acc, a, b);
    d[threadIdx.x] = acc[0];
}
