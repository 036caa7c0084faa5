"""Correct CUDA kernels (tests/emu_kernels/basics.cu) run on the CPU emulator match NumPy."""
from pathlib import Path

import numpy as np
import pytest

from minicnn.emu import EmulatorRuntime

EMU_KERNELS = Path(__file__).parent / "emu_kernels"
NAMES = ["axpy<float>", "axpy<double>", "block_sum<float>", "block_sum<double>", "warp_sum<float>",
         "warp_scan_max", "count_positive", "histogram", "transpose<float>", "matmul<float>",
         "matmul<double>"]


@pytest.fixture(scope="module", params=["forward", "reverse"])
def kernels(request):
    module = EmulatorRuntime(kernels_dir=EMU_KERNELS, schedule=request.param).module("basics.cu", NAMES)
    return {name: module.get_function(name) for name in NAMES}


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("dtype, name", [(np.float32, "axpy<float>"), (np.float64, "axpy<double>")])
def test_axpy_covers_every_element_of_a_partial_last_block(kernels, rng, dtype, name):
    x, y = rng.standard_normal(1000).astype(dtype), rng.standard_normal(1000).astype(dtype)
    expected = 2.5 * x + y
    kernels[name]((4,), (256,), (dtype(2.5), x, y, np.int32(1000)))
    np.testing.assert_allclose(y, expected, rtol=1e-6)


@pytest.mark.parametrize("dtype, name", [(np.float32, "block_sum<float>"), (np.float64, "block_sum<double>")])
def test_block_sum_tree_reduction_in_shared_memory(kernels, rng, dtype, name):
    x = rng.standard_normal(700).astype(dtype)
    out = np.zeros(3, dtype)
    kernels[name]((3,), (256,), (x, out, np.int32(700)))
    expected = [x[:256].sum(), x[256:512].sum(), x[512:].sum()]
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_warp_sum_with_shfl_down_and_atomic_add(kernels, rng):
    x = rng.standard_normal(1000).astype(np.float32)
    out = np.zeros(1, np.float32)
    kernels["warp_sum<float>"]((4,), (256,), (x, out, np.int32(1000)))
    np.testing.assert_allclose(out[0], x.sum(dtype=np.float64), rtol=1e-5)


def test_warp_scan_and_max_with_shfl_up_xor_and_broadcast(kernels, rng):
    n = 1000
    x = rng.standard_normal(n).astype(np.float32)
    y, warp_max = np.zeros(n, np.float32), np.zeros(n, np.float32)
    kernels["warp_scan_max"]((8,), (128,), (x, y, warp_max, np.int32(n)))
    warps = np.pad(x, (0, 24), constant_values=np.nan).reshape(-1, 32)
    np.testing.assert_allclose(y, np.nancumsum(warps, axis=1).ravel()[:n], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(warp_max, np.repeat(np.nanmax(warps, axis=1), 32)[:n])


def test_count_positive_with_ballot(kernels, rng):
    x = rng.standard_normal(1000).astype(np.float32)
    count = np.zeros(1, np.uint32)
    kernels["count_positive"]((8,), (128,), (x, count, np.int32(1000)))
    assert count[0] == (x > 0).sum()


def test_histogram_with_dynamic_shared_memory_and_atomics(kernels, rng):
    bins = 37
    values = rng.integers(0, bins, 5000).astype(np.int32)
    counts = np.zeros(bins, np.uint32)
    kernels["histogram"]((3,), (64,), (values, counts, np.int32(5000), np.int32(bins)), shared_mem=bins * 4)
    np.testing.assert_array_equal(counts, np.bincount(values, minlength=bins))


@pytest.mark.parametrize("rows, cols", [(37, 21), (16, 16), (1, 33)])
def test_tiled_transpose_handles_tile_edges(kernels, rng, rows, cols):
    a = rng.standard_normal((rows, cols)).astype(np.float32)
    out = np.full((cols, rows), np.nan, np.float32)
    grid = (-(-cols // 16), -(-rows // 16))
    kernels["transpose<float>"](grid, (16, 16), (a, out, np.int32(rows), np.int32(cols)))
    np.testing.assert_array_equal(out, a.T)


@pytest.mark.parametrize("dtype, name", [(np.float32, "matmul<float>"), (np.float64, "matmul<double>")])
def test_tiled_matmul_with_odd_sizes(kernels, rng, dtype, name):
    m, k, n = 33, 45, 19
    a, b = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    c = np.zeros((m, n), dtype)
    kernels[name](((n + 15) // 16, (m + 15) // 16), (16, 16), (a, b, c, np.int32(m), np.int32(k), np.int32(n)))
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)
