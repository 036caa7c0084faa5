// grid_sync.cuh - a grid-wide barrier for kernels launched as cooperative grids.
//
// grid_sync() returns in a thread once every thread of the grid has called it; what any thread
// wrote before it is then visible to all. This is cooperative_groups' grid.sync(), which is
// only defined in a cooperative launch (CuPy's RawModule(enable_cooperative_groups=True),
// cuLaunchCooperativeKernel): the driver refuses a grid larger than the blocks the GPU can
// hold at once, so a block can never wait for one that has not started (the deadlock a
// hand-written barrier in an ordinary launch risks). The launcher (cuda_launch.py's
// cooperative_grid) sizes the grid from the kernel's launch bounds and the SM count, and the
// kernels loop over their work with grid strides, so any array size fits any grid.
//
// Rules a kernel must keep (the emulator reports each breach): every thread of every block
// reaches each grid_sync(), in the same order (no return before it), and the grid is at most
// the co-resident limit.
//
// CUDA graphs: a cooperative launch can be captured (CUDA 12: a kernel node with the
// cooperative attribute), and replays correctly as long as the grid, which depends only on the
// kernel and the GPU, stays the same: it does on one device.
#pragma once

#ifdef MINICNN_EMULATOR
// cuda_emu.h provides cooperative_groups::this_grid().sync() (minicnn/emu/runtime.cpp)
#else
#include <cooperative_groups.h>
#endif

// Blocks per SM every cooperative kernel is compiled for: __launch_bounds__(threads,
// COOPERATIVE_BLOCKS_PER_SM) makes ptxas keep registers low enough that this many blocks fit
// on any SM, so COOPERATIVE_BLOCKS_PER_SM * SMs blocks are always co-resident.
constexpr int COOPERATIVE_BLOCKS_PER_SM = 2;

__device__ inline void grid_sync() { cooperative_groups::this_grid().sync(); }

// Calls f(i) for i in [0, count), spread over every thread of the grid (grid-stride loop;
// 64-bit steps, so i + stride cannot overflow near INT_MAX).
template <typename F>
__device__ inline void for_each_in_grid(int count, F f) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += stride) f(int(i));
}
