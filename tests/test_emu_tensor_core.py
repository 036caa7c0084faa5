"""The emulator's mma.sync, ldmatrix and cp.async follow the PTX ISA (kernels in
emu_kernels/tensor_core.cu): fragment layouts and operand rounding against NumPy, and the
misuses it reports (a lane missing from an mma, a fragment register no instruction wrote, a
cp.async read before its wait)."""
from pathlib import Path

import numpy as np
import pytest

from minicnn.backends.precision import round_bf16, round_tf32
from minicnn.emu import EmulatorError, EmulatorRuntime

EMU_KERNELS = Path(__file__).parent / "emu_kernels"
NAMES = ["mma_tf32_tile", "mma_bf16_tile", "ldmatrix_registers", "cp_async_rotate", "mma_missing_lane",
         "mma_unwritten_register"]
FP32_UNIT_ROUNDOFF = 2.0 ** -24


@pytest.fixture(scope="module")
def tc():
    module = EmulatorRuntime(kernels_dir=EMU_KERNELS).module("tensor_core.cu", NAMES)
    return {name: module.get_function(name) for name in NAMES}


def warp(kernel, *args):
    kernel((1,), (32,), args)


def assert_one_fp32_rounding(d, a, b, c):
    """d must be A @ B + C of the (already rounded) operands to within one FP32 rounding of
    each sum: the exact products are summed and rounded once per mma."""
    exact = a.astype(np.float64) @ b.astype(np.float64) + c
    bound = FP32_UNIT_ROUNDOFF * (np.abs(a.astype(np.float64)) @ np.abs(b) + np.abs(c))
    assert np.all(np.abs(d - exact) <= bound), np.abs(d - exact).max()


def test_tf32_mma_matches_numpy_on_operands_rounded_with_cvt_rna(tc):
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(s).astype(np.float32) for s in [(16, 8), (8, 8), (16, 8)])
    d = np.zeros((16, 8), np.float32)
    warp(tc["mma_tf32_tile"], d, a, b, c, np.int32(1))
    assert_one_fp32_rounding(d, round_tf32(a), round_tf32(b), c)
    # and not the FP32 product: TF32 rounding moves the result by ~2^-11 relative
    assert np.abs(d - (a.astype(np.float64) @ b + c)).max() > 1e-4


def test_tf32_rounding_ties_away_and_unrounded_registers_truncate(tc):
    a, b, c = np.zeros((16, 8), np.float32), np.zeros((8, 8), np.float32), np.zeros((16, 8), np.float32)
    a[0, 0], a[1, 1], b[0, 0], b[1, 0] = 1 + 2.0 ** -11, -(1 + 3 * 2.0 ** -12), 1, 1  # a tie; above one
    for rounded in [1, 0]:
        d = np.zeros((16, 8), np.float32)
        warp(tc["mma_tf32_tile"], d, a, b, c, np.int32(rounded))
        assert d[0, 0] == (1 + 2.0 ** -10 if rounded else 1.0)  # cvt.rna ties away; raw bits truncate
        assert d[1, 0] == (-(1 + 2.0 ** -10) if rounded else -1.0)
    assert round_tf32(np.float32(1 + 2.0 ** -11)) == np.float32(1 + 2.0 ** -10)


def test_bf16_mma_matches_numpy_on_operands_rounded_to_nearest_even(tc):
    rng = np.random.default_rng(1)
    a, b, c = (rng.standard_normal(s).astype(np.float32) for s in [(16, 16), (16, 8), (16, 8)])
    a[0, :3] = [1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, -(1 + 2.0 ** -8)]  # ties: to even
    d = np.zeros((16, 8), np.float32)
    warp(tc["mma_bf16_tile"], d, a, b, c)
    assert list(round_bf16(a[0, :3])) == [1.0, 1 + 2.0 ** -6, -1.0]
    assert_one_fp32_rounding(d, round_bf16(a), round_bf16(b), c)


def ldmatrix_reference(m, count, trans):
    """Register i of lane l: elements (l/4, 2(l%4)) and (l/4, 2(l%4)+1) of matrix i (low half
    first), or of its transpose with .trans."""
    out = np.zeros((32, 4), np.uint32)
    for lane in range(32):
        for i in range(count):
            matrix = m[i].T if trans else m[i]
            row, col = lane // 4, 2 * (lane % 4)
            out[lane, i] = int(matrix[row, col]) | int(matrix[row, col + 1]) << 16
    return out


@pytest.mark.parametrize("count", [1, 2, 4])
@pytest.mark.parametrize("trans", [0, 1])
def test_ldmatrix_fragments(tc, count, trans):
    m = np.arange(4 * 64, dtype=np.uint16).reshape(4, 8, 8) * 7 + 3
    out = np.zeros((32, 4), np.uint32)
    tc["ldmatrix_registers"]((1,), (32,), (out, m, np.int32(count), np.int32(trans)))
    np.testing.assert_array_equal(out, ldmatrix_reference(m, count, trans))


def test_cp_async_lands_at_its_wait_and_zero_fills(tc):
    x, y = np.arange(1, 33, dtype=np.float32), np.zeros(32, np.float32)
    warp(tc["cp_async_rotate"], y, x, np.int32(20), np.int32(1))
    np.testing.assert_array_equal(y, np.roll(np.where(np.arange(32) < 20, x, 0), -1))


def test_reading_a_cp_async_destination_before_its_wait_is_reported(tc):
    x, y = np.arange(32, dtype=np.float32), np.zeros(32, np.float32)
    with pytest.raises(EmulatorError, match=r"thread \(0,0,0\) reads shared variable 'staged' byte 4, "
                                            r"which a cp.async of thread \(1,0,0\) has not landed yet "
                                            r"\(missing cp.async.wait_group\)"):
        warp(tc["cp_async_rotate"], y, x, np.int32(32), np.int32(0))


def test_a_lane_missing_from_an_mma_is_warp_divergence(tc):
    with pytest.raises(EmulatorError, match=r"warp divergence: thread \(0,0,0\) waits in mma.sync.m16n8k8.tf32 "
                                            r"for lane 31 \(thread \(31,0,0\)\), which has exited"):
        warp(tc["mma_missing_lane"], np.zeros(32, np.float32))


def test_an_mma_needs_a_full_warp(tc):
    with pytest.raises(EmulatorError, match=r"mma.sync.m16n8k8.tf32 needs a full warp of 32 threads, "
                                            r"but this warp has 16"):
        tc["mma_missing_lane"]((1,), (16,), (np.zeros(32, np.float32),))


def test_an_mma_with_every_fragment_register_written_runs(tc):
    d = np.zeros(32, np.float32)
    warp(tc["mma_unwritten_register"], d, np.int32(0))
    np.testing.assert_array_equal(d, 8.0)  # a row of ones times a column of ones, k = 8


@pytest.mark.parametrize("forget, message", [
    (1, r"thread \(16,0,0\): mma.sync.m16n8k8.tf32 reads fragment register a3 of lane 16, which no "
        r"instruction wrote \(uninitialized; 16 of 32 lanes\)"),
    (2, r"thread \(0,0,0\): mma.sync.m16n8k8.tf32 reads fragment register c0 of lane 0, which no "
        r"instruction wrote \(uninitialized; 32 of 32 lanes\)"),
])
def test_an_mma_reading_an_unwritten_fragment_register_is_reported(tc, forget, message):
    with pytest.raises(EmulatorError, match=message):
        warp(tc["mma_unwritten_register"], np.zeros(32, np.float32), np.int32(forget))
