"""The emulator's cooperative launches (emu_kernels/grid_sync.cu): blocks wait for each other at
grid_sync() with their own shared memory, and each misuse that would hang a GPU is one error."""
from pathlib import Path

import numpy as np
import pytest

from minicnn.emu import EmulatorError, EmulatorRuntime

EMU_KERNELS = Path(__file__).parent / "emu_kernels"
NAMES = ["sum_across_the_barrier", "block_exits_before_the_barrier",
         "threads_exit_before_the_barrier", "grid_and_block_barriers_mixed"]


def load(cooperative=True, schedule="forward"):
    module = EmulatorRuntime(kernels_dir=EMU_KERNELS, schedule=schedule).module(
        "grid_sync.cu", NAMES, cooperative=cooperative)
    return {name: module.get_function(name) for name in NAMES}


@pytest.fixture(scope="module")
def kernels():
    return load()


@pytest.mark.parametrize("schedule", ["forward", "reverse"])
def test_blocks_wait_for_each_other_and_keep_their_shared_memory(schedule):
    blocks = 7
    values = np.arange(1, blocks + 1, dtype=np.float32)
    partial, total = np.zeros(blocks, np.float32), np.zeros(blocks, np.float32)
    mine = np.full(blocks, -1, np.int32)
    load(schedule=schedule)["sum_across_the_barrier"]((blocks,), (64,), (values, partial, total, mine))
    np.testing.assert_array_equal(total, np.full(blocks, values.sum()))
    np.testing.assert_array_equal(mine, np.arange(blocks))


def test_a_grid_larger_than_the_gpu_holds_is_refused(kernels):
    limit = EmulatorRuntime.co_resident_blocks(64)
    assert limit == EmulatorRuntime.sm_count * 2048 // 64
    values = np.zeros(limit + 1, np.float32)
    with pytest.raises(EmulatorError, match=rf"a cooperative grid of {limit + 1} blocks is larger "
                                            rf"than the {limit} blocks of 64 threads .*"
                                            r"\(cudaErrorCooperativeLaunchTooLarge\)"):
        kernels["sum_across_the_barrier"]((limit + 1,), (64,), (values, values.copy(), values.copy(),
                                                               np.zeros(limit + 1, np.int32)))


def test_a_block_that_exits_without_reaching_the_barrier_is_a_deadlock(kernels):
    with pytest.raises(EmulatorError, match=r"block \(2,0,0\): exited without reaching grid.sync\(\), "
                                            r"where 3 blocks wait: .* \(deadlock\)"):
        kernels["block_exits_before_the_barrier"]((4,), (32,), (np.int32(2),))


def test_threads_that_exit_before_their_block_s_barrier_are_a_deadlock(kernels):
    with pytest.raises(EmulatorError, match=r"block \(0,0,0\): 32 threads wait at grid.sync\(\) but "
                                            r"thread \(32,0,0\) has exited: .* \(deadlock\)"):
        kernels["threads_exit_before_the_barrier"]((2,), (64,), ())


def test_a_thread_at_the_grid_barrier_while_its_block_waits_at_syncthreads(kernels):
    with pytest.raises(EmulatorError, match=r"barrier divergence: 63 threads wait at __syncthreads\(\) "
                                            r"but thread \(0,0,0\) waits at grid.sync\(\)"):
        kernels["grid_and_block_barriers_mixed"]((2,), (64,), ())


def test_grid_sync_outside_a_cooperative_launch_is_refused():
    with pytest.raises(EmulatorError, match=r"thread \(0,0,0\) calls grid.sync\(\) in a launch that "
                                            r"is not cooperative"):
        load(cooperative=False)["block_exits_before_the_barrier"]((2,), (32,), (np.int32(5),))
