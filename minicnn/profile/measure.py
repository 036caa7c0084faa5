"""What a Recorder does with each launch while profiling (its `execute` callables).

    recorder.reset(execute=CountInEmulator(blocks="sample"))   # counters, sampled blocks
    recorder.reset(execute=CudaEventTimer())                    # GPU time of each launch
"""
from __future__ import annotations

import numpy as np

from minicnn.backends.kernel_facts import block_kinds
from minicnn.emu.counters import profile_kinds, profile_launch
from minicnn.emu.runtime import EmulatorRuntime


class CountInEmulator:
    """Runs each launch in the emulator with the performance counters on. Only the sampled
    blocks run (see minicnn.emu.counters), so outputs of a full-size step are incomplete (the
    profiler's recorder allocates zeros, so the rest stays 0). Fine for counting memory traffic:
    indices read from such outputs (pool's argmax) stay in range whatever the values, and only
    value-dependent branches (ReLU's backward skips dy where y <= 0) count fewer loads."""

    def __init__(self, blocks="sample"):
        self.blocks = blocks

    def __call__(self, record, kernel, grid, block, args, shared_mem):
        if kernel.cooperative:
            # sized for the profiled GPU, more blocks than the emulator holds at once: its
            # grid-stride loops do the same work (and the same accesses) on fewer blocks, and
            # the record keeps the GPU's grid for the estimate. Every block runs (a grid
            # barrier needs them all), so nothing is scaled.
            grid = (min(int(np.prod(grid)), EmulatorRuntime.co_resident_blocks(int(np.prod(block)))),)
        kinds = block_kinds(record.kernel, [a.value for a in record.args if a.shape is None], grid)
        if kinds is None or self.blocks == "all":
            record.counters = profile_launch(kernel, grid, block, args, shared_mem, blocks=self.blocks)
        else:  # blocks of different work: sampled kind by kind
            record.counters = profile_kinds(kernel, grid, block, args, shared_mem, kinds,
                                            blocks=self.blocks)


class CudaEventTimer:
    """Brackets each launch with two CUDA events; finish() synchronizes once at the end and
    fills record.gpu_seconds (no synchronization between launches, as in training)."""

    def __init__(self):
        import cupy
        self._cupy = cupy
        self._pending = []

    def __call__(self, record, kernel, grid, block, args, shared_mem):
        start, stop = self._cupy.cuda.Event(), self._cupy.cuda.Event()
        start.record()
        kernel(grid, block, args, shared_mem)
        stop.record()
        self._pending.append((record, start, stop))

    def finish(self) -> None:
        for record, start, stop in self._pending:
            stop.synchronize()
            record.gpu_seconds = self._cupy.cuda.get_elapsed_time(start, stop) / 1e3
        self._pending.clear()
