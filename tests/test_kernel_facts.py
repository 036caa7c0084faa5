"""Kernel facts have one home: Python reads tile sizes and thread counts from kernels/gemm.cu,
so a launch grid cannot disagree with the kernel, and ConvShape mirrors conv.cu's struct."""
import dataclasses
import shutil

import numpy as np
import pytest

from minicnn.backends.cuda import CudaKernels
from minicnn.backends.kernel_facts import (KERNELS_DIR, ConvShape, TiledProduct, source_constants,
                                           struct_fields, tiled_products)


def test_constants_are_read_from_the_source():
    constants = source_constants(KERNELS_DIR / "gemm.cu")
    assert constants["TILE_M"] == constants["TILE_N"] == 64 and constants["TILE_K"] == 16
    products = tiled_products()
    assert products["fp32"] == TiledProduct(threads=256, tile_m=64, tile_n=64, tile_k=16)
    assert products["tf32"] == products["bf16"] == TiledProduct(threads=128, tile_m=64, tile_n=64, tile_k=16)
    assert products["fp32"].grid(rows=65, cols=129, splits=3) == (3, 2, 3)  # x walks columns


def test_conv_shape_mirrors_the_kernel_struct():
    assert struct_fields(KERNELS_DIR / "conv.cu", "ConvShape") == [f.name for f in dataclasses.fields(ConvShape)]


def test_a_changed_tile_size_in_the_source_changes_the_grid(tmp_path):
    """Halve gemm_v2's tile in a copy of kernels/: the launcher must follow, or blocks would
    leave three quarters of C unwritten."""
    kernels_dir = tmp_path / "kernels"
    shutil.copytree(KERNELS_DIR, kernels_dir)
    gemm = kernels_dir / "gemm.cu"
    text = gemm.read_text()
    for old, new in [("TILE_M = 64, TILE_N = 64", "TILE_M = 32, TILE_N = 32"), ("PATCH = 4;", "PATCH = 2;"),
                     ("TILE_M == 2 * MMA_WARP_TILE && TILE_N == 2 * MMA_WARP_TILE", "true")]:
        assert old in text
        text = text.replace(old, new)
    gemm.write_text(text)
    from minicnn.emu import EmulatorRuntime
    kernels = CudaKernels(EmulatorRuntime(kernels_dir=kernels_dir))
    assert kernels.products["fp32"].tile_m == 32
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((70, 33)).astype(np.float32), rng.standard_normal((33, 65)).astype(np.float32)
    np.testing.assert_allclose(kernels.gemm(a, b), a @ b, rtol=1e-4, atol=1e-4)


def test_unparsable_struct_is_a_clear_error(tmp_path):
    source = tmp_path / "k.cu"
    source.write_text("struct Other { int a; };")
    with pytest.raises(ValueError, match="has no `struct ConvShape"):
        struct_fields(source, "ConvShape")
