"""The emulator turns silent GPU bugs into clear errors (seeded bugs in emu_kernels/bugs.cu)."""
from pathlib import Path

import numpy as np
import pytest

from minicnn.emu import EmulatorError, EmulatorRuntime

EMU_KERNELS = Path(__file__).parent / "emu_kernels"
NAMES = ["fill_past_end", "shift_left", "reverse_missing_sync", "matmul_missing_sync",
         "read_unloaded_shared", "early_exit_barrier", "shuffle_in_branch",
         "stage_in_dynamic_shared", "last_writer"]


def load(schedule="forward"):
    module = EmulatorRuntime(kernels_dir=EMU_KERNELS, schedule=schedule).module("bugs.cu", NAMES)
    return {name: module.get_function(name) for name in NAMES}


@pytest.fixture(scope="module")
def bugs():
    return load()


def test_off_by_one_write_past_the_end_is_reported_before_it_happens(bugs):
    y = np.zeros(101, np.float32)
    with pytest.raises(EmulatorError, match=r"out-of-bounds global write of 4 bytes by thread \(36,0,0\) "
                                            r"at byte 400 of argument 0 \(400-byte float32 array\)"):
        bugs["fill_past_end"]((2,), (64,), (y[:100], np.float32(1), np.int32(100)))
    assert y[100] == 0  # the write was stopped


def test_out_of_bounds_read_names_the_argument(bugs):
    x, y = np.arange(100, dtype=np.float32), np.zeros(100, np.float32)
    with pytest.raises(EmulatorError, match=r"kernel shift_left:\n.*block \(1,0,0\): out-of-bounds global read "
                                            r".* at byte 400 of argument 0 .* 0 bytes past its end"):
        bugs["shift_left"]((2,), (64,), (x, y, np.int32(100)))


def test_missing_syncthreads_between_tiles_is_a_shared_memory_race(bugs):
    a, b, c = np.ones((16, 32), np.float32), np.ones((32, 16), np.float32), np.zeros((16, 16), np.float32)
    with pytest.raises(EmulatorError, match=r"thread \(1,0,0\) reads shared variable 'a_tile' byte 0 after a "
                                            r"write by thread \(0,0,0\) with no __syncthreads\(\) in between"):
        bugs["matmul_missing_sync"]((1, 1), (16, 16), (a, b, c, np.int32(16), np.int32(32), np.int32(16)))


@pytest.mark.parametrize("schedule", ["forward", "reverse"])
def test_missing_syncthreads_before_reading_other_threads_slots(schedule):
    x, y = np.arange(64, dtype=np.float32), np.zeros(64, np.float32)
    with pytest.raises(EmulatorError, match=r"shared variable 'slots' .* missing __syncthreads\(\)"):
        load(schedule)["reverse_missing_sync"]((1,), (64,), (x, y, np.int32(64)))


def test_reading_shared_memory_no_thread_wrote_is_reported(bugs):
    x, y = np.arange(64, dtype=np.float32), np.zeros(64, np.float32)
    with pytest.raises(EmulatorError, match=r"thread \(32,0,0\) reads shared variable 'tile' byte 128, which "
                                            r"no thread of this block has written"):
        bugs["read_unloaded_shared"]((1,), (64,), (x, y))


def test_barrier_divergence_names_a_thread_that_exited(bugs):
    with pytest.raises(EmulatorError, match=r"barrier divergence: 32 threads wait at __syncthreads\(\) "
                                            r"but thread \(32,0,0\) has exited"):
        bugs["early_exit_barrier"]((1,), (64,), (np.zeros(64, np.float32),))


def test_full_mask_shuffle_in_a_half_warp_branch_is_warp_divergence(bugs):
    with pytest.raises(EmulatorError, match=r"warp divergence: thread \(0,0,0\) waits in __shfl_down_sync "
                                            r"for lane 16 .* which has exited"):
        bugs["shuffle_in_branch"]((1,), (64,), (np.zeros(64, np.float32),))


def test_dynamic_shared_memory_is_bounded_by_shared_mem(bugs):
    x, y = np.arange(64, dtype=np.float32), np.zeros(64, np.float32)
    bugs["stage_in_dynamic_shared"]((1,), (64,), (x, y), shared_mem=64 * 4)
    np.testing.assert_array_equal(y, np.roll(x, -1))
    with pytest.raises(EmulatorError, match=r"out-of-bounds shared write .* at byte 240 of dynamic shared "
                                            r"memory \(shared_mem=240 bytes\)"):
        bugs["stage_in_dynamic_shared"]((1,), (64,), (x, y), shared_mem=60 * 4)


def test_schedule_changes_which_thread_wins_an_unsynchronized_global_write():
    winners = []
    for schedule in ["forward", "reverse"]:
        winner = np.full(1, -1, np.int32)
        load(schedule)["last_writer"]((1,), (64,), (winner,))
        winners.append(winner[0])
    assert winners == [63, 0]
