"""The emulator's performance counters give the hand-worked counts of emu_kernels/counters.cu."""
from pathlib import Path

import numpy as np
import pytest

from minicnn.emu import EmulatorRuntime
from minicnn.emu.counters import profile_launch, sampled_blocks

EMU_KERNELS = Path(__file__).parent / "emu_kernels"
NAMES = ["copy_coalesced", "copy_stride2", "copy_double", "read_transposed", "quarter_warp",
         "bank_conflict_32way", "bank_conflict_2way", "transpose_tile<1>", "transpose_tile<0>",
         "broadcast_two_barriers", "cp_async_two_sites"]


@pytest.fixture(scope="module")
def kernels():
    module = EmulatorRuntime(kernels_dir=EMU_KERNELS).module("counters.cu", NAMES)
    return {name: module.get_function(name) for name in NAMES}


def counts(c, space, op):
    """(requests, lanes, units, ideal_units) of the whole grid."""
    return tuple(c.total(space, op, name) for name in ("requests", "lanes", "units", "ideal_units"))


def test_coalesced_copy_moves_4_sectors_per_warp_request(kernels):
    x, y = np.arange(256, dtype=np.float32), np.zeros(256, np.float32)
    c = profile_launch(kernels["copy_coalesced"], (2,), (128,), (x, y, np.int32(256)), blocks="all")
    assert counts(c, "global", "load") == (8, 256, 32, 32)
    assert counts(c, "global", "store") == (8, 256, 32, 32)
    assert c.efficiency("global") == 1.0
    assert counts(c, "shared", None) == (0, 0, 0, 0)
    np.testing.assert_array_equal(y, x)  # counting does not change what the kernel computes


def test_stride_2_read_touches_twice_the_ideal_sectors(kernels):
    x, y = np.arange(128, dtype=np.float32), np.zeros(64, np.float32)
    c = profile_launch(kernels["copy_stride2"], (1,), (64,), (x, y, np.int32(64)), blocks="all")
    assert counts(c, "global", "load") == (2, 64, 16, 8)
    assert c.efficiency("global", "load") == 0.5
    assert c.efficiency("global", "store") == 1.0


def test_double_lanes_need_8_sectors_and_that_is_ideal(kernels):
    x, y = np.arange(32, dtype=np.float64), np.zeros(32, np.float64)
    c = profile_launch(kernels["copy_double"], (1,), (32,), (x, y, np.int32(32)), blocks="all")
    assert counts(c, "global", "load") == (1, 32, 8, 8)
    assert {s.width for s in c.sites} == {8}


def test_transposed_read_is_one_sector_per_lane(kernels):
    x, y = np.arange(1024, dtype=np.float32).reshape(32, 32), np.zeros((32, 32), np.float32)
    c = profile_launch(kernels["read_transposed"], (1,), (32, 32), (x, y), blocks="all")
    assert counts(c, "global", "load") == (32, 1024, 32 * 32, 32 * 4)
    assert c.efficiency("global", "load") == 0.125
    assert counts(c, "global", "store") == (32, 1024, 128, 128)
    np.testing.assert_array_equal(y, x.T)


def test_divergent_quarter_warp_counts_its_active_lanes(kernels):
    x, y = np.arange(64, dtype=np.float32), np.zeros(64, np.float32)
    c = profile_launch(kernels["quarter_warp"], (1,), (64,), (x, y), blocks="all")
    assert counts(c, "global", "load") == (2, 16, 2, 2)


@pytest.mark.parametrize("name, wavefronts", [("bank_conflict_32way", 32), ("bank_conflict_2way", 2)])
def test_bank_conflicts_serialize_into_extra_wavefronts(kernels, name, wavefronts):
    x, y = np.arange(32, dtype=np.float32), np.zeros(32, np.float32)
    c = profile_launch(kernels[name], (1,), (32,), (x, y), blocks="all")
    assert counts(c, "shared", "store") == (1, 32, wavefronts, 1)
    assert counts(c, "shared", "load") == (1, 32, wavefronts, 1)
    assert c.extra_wavefronts() == 2 * (wavefronts - 1)
    assert c.barriers == 1
    np.testing.assert_array_equal(y, x)


def test_padded_tile_has_no_conflicts_and_the_unpadded_one_has_32_way(kernels):
    x = np.arange(1024, dtype=np.float32).reshape(32, 32)
    for name, read_wavefronts in (("transpose_tile<1>", 32), ("transpose_tile<0>", 32 * 32)):
        y = np.zeros_like(x)
        c = profile_launch(kernels[name], (1,), (32, 32), (x, y), blocks="all")
        assert counts(c, "shared", "store") == (32, 1024, 32, 32)
        assert counts(c, "shared", "load") == (32, 1024, read_wavefronts, 32)
        np.testing.assert_array_equal(y, x.T)


def test_broadcast_is_one_wavefront_and_barriers_are_counted_per_block(kernels):
    x, y = np.full(1, 7, np.float32), np.zeros(64, np.float32)
    c = profile_launch(kernels["broadcast_two_barriers"], (3,), (64,), (x, y), blocks="all")
    assert counts(c, "shared", "load") == (6, 192, 6, 6)
    assert c.barriers == 6 and c.blocks_run == 3


def test_cp_async_is_counted_at_each_call_site_and_zero_filling_lanes_stay_in_step(kernels):
    x, y = np.arange(128, dtype=np.float32), np.zeros(96, np.float32)
    c = profile_launch(kernels["cp_async_two_sites"], (1,), (32,), (x, y, np.int32(2)), blocks="all")
    loads = sorted((s.requests, s.lanes, s.units, s.ideal_units) for s in c.sites
                   if s.space == "global" and s.op == "load")
    assert loads == [(1, 32, 8, 4), (2, 63, 8, 8)]
    assert {s.where for s in c.sites if s.space == "global" and s.op == "load"} == {"counters.cu:84", "counters.cu:85"}
    assert counts(c, "shared", "store") == (3, 96, 3, 3)  # every copy lands, lane 0's zeros too
    np.testing.assert_array_equal(y, np.concatenate([[0], x[1:64], x[64::2]]))


def test_sampled_blocks_are_the_only_ones_run_and_totals_scale(kernels):
    x, y = np.arange(1, 1000 * 32 + 1, dtype=np.float32), np.zeros(1000 * 32, np.float32)
    c = profile_launch(kernels["copy_coalesced"], (1000,), (32,), (x, y, np.int32(x.size)))
    assert (c.blocks_run, c.blocks_total) == (3, 1000)
    assert counts(c, "global", "load") == pytest.approx((1000, 32000, 4000, 4000))
    assert "3 of 1000 blocks" in c.sampling
    ran = np.flatnonzero(y.reshape(1000, 32).any(axis=1))
    assert list(ran) == [0, 500, 999]


def test_sampled_blocks_spread_over_the_grid():
    assert sampled_blocks(1000) == [0, 500, 999]
    assert sampled_blocks(1000, 5) == [0, 250, 500, 749, 999]
    assert sampled_blocks(2) == [] and sampled_blocks(7, "all") == []
    with pytest.raises(ValueError, match="blocks must be"):
        sampled_blocks(10, 0)


def test_sites_map_back_to_source_lines(kernels):
    x, y = np.arange(128, dtype=np.float32), np.zeros(64, np.float32)
    c = profile_launch(kernels["copy_stride2"], (1,), (64,), (x, y, np.int32(64)), blocks="all")
    worst = min(c.sites, key=lambda s: s.efficiency)
    assert worst.where == "counters.cu:15" and worst.op == "load"


def test_counting_is_off_after_a_profiled_launch(kernels):
    x, y = np.arange(1000 * 32, dtype=np.float32), np.zeros(1000 * 32, np.float32)
    profile_launch(kernels["copy_coalesced"], (1000,), (32,), (x, y, np.int32(x.size)))
    kernels["copy_coalesced"]((1000,), (32,), (x, y, np.int32(x.size)))
    np.testing.assert_array_equal(y, x)  # every block ran again
