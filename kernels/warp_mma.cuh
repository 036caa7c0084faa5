// warp_mma.cuh - the warp-level tensor-core primitives the v3 kernels are written with.
//
// Each function is a few lines of inline PTX on the GPU (sm_80+) and a call into the
// emulator's twin (minicnn/emu/tensor_core.cpp) under MINICNN_EMULATOR, so kernels read the
// same under NVRTC and g++. mma_* and ldmatrix_* are warp collectives: all 32 lanes of the
// warp call them together (.sync.aligned), each passing its own fragment.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k8 / m16n8k16"); lane = 4 g + t,
// g = lane / 4 (the groupID), t = lane % 4 (the thread in the group):
//
//   TF32 m16n8k8, one element per 32-bit register (rounded with tf32_bits):
//     A 16 x 8, a[4]:              B 8 x 8 (k x n), b[2]:     C, D 16 x 8, c[4]:
//                col t  col t+4                col g                     col 2t  col 2t+1
//       row g     a0     a2          row t      b0          row g         c0      c1
//       row g+8   a1     a3          row t+4    b1          row g+8       c2      c3
//
//   BF16 m16n8k16, two elements per register (the lower index in bits 0-15, bf16x2_bits):
//     A 16 x 16, a[4]:                           B 16 x 8, b[2]:        C, D as above
//                cols 2t,2t+1  cols 2t+8,2t+9                  col g
//       row g       a0            a2             rows 2t,2t+1     b0
//       row g+8     a1            a3             rows 2t+8,2t+9   b1
//
//   ldmatrix m8n8 .b16, count = 1, 2 or 4 matrices: lanes 8i..8i+7 pass the addresses of the
//   8 rows (16 bytes each, 16-byte aligned, shared memory) of matrix i; register i of lane l
//   receives row l/4, columns 2(l%4) and 2(l%4)+1 of matrix i (with .trans: rows 2(l%4) and
//   2(l%4)+1 of column l/4). For BF16 that is exactly one register of an A or B fragment; on
//   FP32 data (v3's shared tiles, gemm.cu) a matrix is 8 rows of 4 floats and lane l gets float
//   l%4 of row l/4, TF32's a0 layout (.trans would split the floats: it moves 16-bit halves).
//
// Rounding: tf32_bits is cvt.rna.tf32.f32 (to nearest, ties away from zero: 10 mantissa bits);
// bf16x2_bits is cvt.rn.bf16x2.f32 (to nearest, ties to even: 7 mantissa bits). The mma reads
// only those bits and accumulates in FP32.
#pragma once
#include "common.cuh"

// The wrappers of memory instructions (ldmatrix, cp_async). In the emulator they are never
// inlined and hand their return address to the twin: the kernel's call site, where the
// emulator's performance counters charge the access (each call site its own row).
#ifdef MINICNN_EMULATOR
#define MEMORY_WRAPPER __attribute__((noinline))
#define CALL_SITE __builtin_return_address(0)
#else
#define MEMORY_WRAPPER __forceinline__
#endif

// A 32-bit register holding a TF32 value: x rounded to 10 mantissa bits.
__device__ __forceinline__ unsigned tf32_bits(float x) {
#ifdef MINICNN_EMULATOR
    return emu::tf32_round(x);
#else
    unsigned bits;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(bits) : "f"(x));
    return bits;
#endif
}

// Two BF16 values in one register: lo in bits 0-15, hi in bits 16-31.
__device__ __forceinline__ unsigned bf16x2_bits(float lo, float hi) {
#ifdef MINICNN_EMULATOR
    return emu::bf16x2_round(lo, hi);
#else
    unsigned bits;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(bits) : "f"(hi), "f"(lo));  // first source -> high half
    return bits;
#endif
}

// d += A (16 x 8) * B (8 x 8) in TF32 with FP32 accumulation.
__device__ __forceinline__ void mma_tf32_m16n8k8(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
#ifdef MINICNN_EMULATOR
    emu::mma_sync(emu::MMA_TF32, d, a, b);
#else
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// d += A (16 x 16) * B (16 x 8) in BF16 with FP32 accumulation.
__device__ __forceinline__ void mma_bf16_m16n8k16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
#ifdef MINICNN_EMULATOR
    emu::mma_sync(emu::MMA_BF16, d, a, b);
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

#ifndef MINICNN_EMULATOR
__device__ __forceinline__ unsigned shared_address(const void* pointer) {
    return unsigned(__cvta_generic_to_shared(pointer));
}
#endif

// r[0..COUNT) from COUNT 8 x 8 b16 matrices in shared memory; row: this lane's row address.
template <int COUNT, bool TRANS>
__device__ MEMORY_WRAPPER void ldmatrix(unsigned (&r)[COUNT], const void* row) {
    static_assert(COUNT == 1 || COUNT == 2 || COUNT == 4, "ldmatrix loads 1, 2 or 4 matrices");
#ifdef MINICNN_EMULATOR
    constexpr emu::WarpOp ops[2][3] = {{emu::LDMATRIX_X1, emu::LDMATRIX_X2, emu::LDMATRIX_X4},
                                       {emu::LDMATRIX_X1_TRANS, emu::LDMATRIX_X2_TRANS, emu::LDMATRIX_X4_TRANS}};
    emu::ldmatrix(ops[TRANS][COUNT / 2], r, row, CALL_SITE);
#else
    if constexpr (COUNT == 1 && !TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];" : "=r"(r[0]) : "r"(shared_address(row)));
    else if constexpr (COUNT == 1)
        asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];" : "=r"(r[0]) : "r"(shared_address(row)));
    else if constexpr (COUNT == 2 && !TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];"
                     : "=r"(r[0]), "=r"(r[1]) : "r"(shared_address(row)));
    else if constexpr (COUNT == 2)
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];"
                     : "=r"(r[0]), "=r"(r[1]) : "r"(shared_address(row)));
    else if constexpr (!TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_address(row)));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_address(row)));
#endif
}

// Starts copying BYTES (4, 8 or 16) from global to shared memory without passing through
// registers; when `valid` is false nothing is read and the destination becomes zeros (the
// padding of an implicit GEMM). The data is there only after cp_async_wait covers its group.
template <int BYTES>
__device__ MEMORY_WRAPPER void cp_async(void* shared, const void* global, bool valid) {
    static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
#ifdef MINICNN_EMULATOR
    emu::cp_async(shared, global, BYTES, valid ? BYTES : 0, CALL_SITE);
#else
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;"
                 :: "r"(shared_address(shared)), "l"(global), "n"(BYTES), "r"(valid ? BYTES : 0));
#endif
}

// Closes the group of cp_async calls this thread issued since the last commit.
__device__ __forceinline__ void cp_async_commit() {
#ifdef MINICNN_EMULATOR
    emu::cp_async_commit();
#else
    asm volatile("cp.async.commit_group;");
#endif
}

// Waits until at most PENDING of this thread's committed groups are still in flight. Other
// threads see the data only after a __syncthreads() that follows the wait.
template <int PENDING>
__device__ __forceinline__ void cp_async_wait() {
#ifdef MINICNN_EMULATOR
    emu::cp_async_wait(PENDING);
#else
    asm volatile("cp.async.wait_group %0;" ::"n"(PENDING));
#endif
}
