// counters.h - performance counters of the emulator, what Nsight Compute's memory tables show.
//
// Off unless Python calls minicnn_emu_profile_begin() (see counters.py): then checks.cpp hands
// every global and shared access of kernel code to count_access(), the scheduler reports each
// barrier, and accesses are grouped into warp-level instructions: the accesses of the 32 lanes
// of a warp made by the same program point (the return address of the instrumentation hook,
// or the kernel's call site of an emulated instruction such as cp.async) at the same dynamic
// occurrence (the k-th time that lane reached that point for that kind of access since the
// last barrier; a lane that executes the instruction without touching memory counts too, see
// count_idle_lane). Per group:
//   global  one request; the 32-byte sectors its bytes touch; the ideal, ceil(distinct
//           addresses * width / 32), which a perfectly coalesced warp would touch;
//   shared  one request; wavefronts = the most distinct 4-byte words any of the 32 banks must
//           serve (a word read by many lanes is one broadcast); the ideal, ceil(words / 32).
// Offsets are taken from the start of each buffer (a GPU allocation is 256-byte aligned), so
// the counts do not depend on where NumPy put the array.
#pragma once

#include <cstddef>
#include <cstdint>

namespace emu {

enum class Space : uint8_t { Global = 0, Shared = 1 };

extern bool counting;  // read on every access: the only cost when profiling is off

// One access by the running thread: region says which buffer (global) or which shared block
// (0 static, 1 dynamic); offset is from that region's start.
void count_access(const void* pc, Space space, bool write, int region, uint64_t offset, size_t size);
// A lane that executes the instruction at pc without touching memory (a zero-filling cp.async,
// an ldmatrix lane that addresses no row): it moves no bytes, but keeps this lane's k-th
// instruction at pc grouped with the other lanes' k-th.
void count_idle_lane(const void* pc, Space space, bool write, size_t size);
void count_barrier();      // a whole block passed __syncthreads(): closes the warp groups
void count_warp_op();      // a warp intrinsic (shuffle, vote) was released
void count_block_done();   // the block finished: closes the warp groups
bool block_selected(uint64_t linear_block);  // false: the runtime skips this block

}  // namespace emu
