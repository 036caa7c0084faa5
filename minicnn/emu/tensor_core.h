// tensor_core.h - the emulator's twins of the tensor-core PTX in kernels/warp_mma.cuh.
//
// warp_mma.cuh calls these under MINICNN_EMULATOR and inline PTX otherwise, so a kernel reads
// the same either way. mma.sync and ldmatrix are warp collectives (a rendezvous of all 32
// lanes, like the shuffles); cp.async is per thread. tensor_core.cpp implements them.
#pragma once

namespace emu {

unsigned tf32_round(float x);               // cvt.rna.tf32.f32: nearest, ties away from zero
unsigned bf16x2_round(float lo, float hi);  // cvt.rn.bf16x2.f32: nearest even; lo in bits 0-15
// d[4] += A * B for this lane's fragments (op: MMA_TF32 or MMA_BF16).
void mma_sync(WarpOp op, float* d, const unsigned* a, const unsigned* b);
// r[count] = this lane's words of 1, 2 or 4 8x8 b16 matrices whose rows the lanes address.
// pc (here and in cp_async): the kernel's call site, where the performance counters charge the
// access (warp_mma.cuh passes its wrapper's return address).
void ldmatrix(WarpOp op, unsigned* r, const void* row, const void* pc);
// Copies `bytes` (4, 8 or 16) from global to shared memory when the thread waits for its
// group; only source_bytes of them are read, the rest become zeros.
void cp_async(void* shared, const void* global, int bytes, int source_bytes, const void* pc);
void cp_async_commit();
void cp_async_wait(int pending_groups);  // all but the newest pending_groups committed groups

}  // namespace emu
