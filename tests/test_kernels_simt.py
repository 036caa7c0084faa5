"""v2, the SIMT block loop (FP32 / FP64 FMAs), on the CPU emulator: every tile shape of
gemm.cu's SIMT_SHAPES on odd shapes, split-K in all three conv passes, every conv layer shape
of vgg_like, vgg8_bn, vgg11 and resnet20 at batch 1 (with the tile and split the launcher
picks), and SIMT_SHAPES as the one home of the shapes (a changed row changes the launches; an
inconsistent row does not compile).

Tolerance of the zoo layers, derived: the reference is numpy_ref in float64; a float32 output
summing K products through `splits` partial sums suffers at most K + splits + 1 roundings of
unit roundoff 2^-24, each at most the magnitude |A| @ |B| (the same product on absolute values).
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from minicnn.backends import numpy_ref
from minicnn.backends.cuda import CudaKernels
from minicnn.backends.kernel_facts import KERNELS_DIR, TiledProduct, best_tile, simt_products
from test_kernels_emu import CONV_CASES, check, randn
from test_kernels_precision import FULL_RUN_WEIGHTS, LAYERS

UNIT_ROUNDOFF = 2.0 ** -24
SHAPES = simt_products()
# (N, C, H, W, F, kernel, stride, pads): a 4 x 4 image of a small batch, the last layers of
# vgg_like: 1 x 4 tiles, so forward and backward-data split their K = 576 too.
SMALL_IMAGE = (1, 64, 4, 4, 64, (3, 3), (1, 1), (1, 1, 1, 1))
SHAPE_CASES = {"F67-C65": CONV_CASES["F67-C65"], "3x3-s2-tf-same": CONV_CASES["3x3-s2-tf-same"],
               "small-image": SMALL_IMAGE}


def emulated(kernels_dir=None):
    from minicnn.emu import EmulatorRuntime
    return CudaKernels(EmulatorRuntime(kernels_dir=kernels_dir))


@pytest.fixture(scope="module")
def kernels():
    return emulated()


def conv_inputs(case, dtype, seed=3):
    n, c, h, w, f, kernel, stride, pads = case
    rng = np.random.default_rng(seed)
    x, weight = randn(rng, (n, c, h, w), dtype), randn(rng, (f, c) + kernel, dtype)
    dy = randn(rng, numpy_ref.conv2d_forward(x, weight, None, stride, pads).shape, dtype)
    return x, weight, randn(rng, (f,), dtype), dy, stride, pads


def check_three_passes(kernels, case, dtype):
    x, w, b, dy, stride, pads = conv_inputs(case, dtype)
    check(kernels, "conv2d_forward", x, w, b, stride, pads)
    check(kernels, "conv2d_backward_data", dy, w, x.shape, stride, pads)
    check(kernels, "conv2d_backward_weight", dy, x, w.shape[2:], stride, pads)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(SHAPE_CASES))
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{p.tile_m}x{p.tile_n}" for p in SHAPES])
def test_every_simt_tile_shape(kernels, shape, case, dtype, monkeypatch):
    monkeypatch.setattr(kernels, "simt_products", [shape])  # the launcher's only choice
    check_three_passes(kernels, SHAPE_CASES[case], np.dtype(dtype))


def test_forward_and_backward_data_split_k_on_small_images(kernels):
    n, c, h, w, f = SMALL_IMAGE[:5]
    for rows, cols, depth in [(f, n * h * w, c * 9), (c, n * h * w, f * 9)]:  # forward, backward-data
        assert best_tile(kernels.simt_products, rows, cols).split(rows, cols, depth)[0] > 1


def assert_within_fp32_bound(ours, reference, inputs, depth, splits):
    operands = [a.astype(np.float64) for a in inputs[:2]]
    exact = reference(*operands, *inputs[2:])
    magnitude = reference(*[np.abs(a) for a in operands], *inputs[2:])
    excess = np.abs(ours - exact) - (depth + splits + 1) * UNIT_ROUNDOFF * magnitude
    assert excess.max() <= 0, f"over the bound by {excess.max():.3g}"


@pytest.mark.parametrize("case", list(LAYERS))
def test_zoo_layer_shapes(kernels, case):
    n, c, h, w, f, kernel, stride, pads = LAYERS[case]
    if f * c * kernel[0] * kernel[1] > FULL_RUN_WEIGHTS and not os.environ.get("MINICNN_EMU_FULL"):
        pytest.skip("over a minute in the emulator: set MINICNN_EMU_FULL=1 to run it")
    x, weight, _, _, stride, pads = conv_inputs(LAYERS[case], np.float32)

    def splits(rows, cols, depth):
        return best_tile(kernels.simt_products, rows, cols).split(rows, cols, depth)[0]

    taps = kernel[0] * kernel[1]
    y = kernels.conv2d_forward(x, weight, None, stride, pads)
    pixels = n * y.shape[2] * y.shape[3]
    assert_within_fp32_bound(y, numpy_ref.conv2d_forward, (x, weight, None, stride, pads), c * taps,
                             splits(f, pixels, c * taps))
    dy = np.random.default_rng(4).standard_normal(y.shape).astype(np.float32)
    dx = kernels.conv2d_backward_data(dy, weight, x.shape, stride, pads)
    assert_within_fp32_bound(dx, numpy_ref.conv2d_backward_data, (dy, weight, x.shape, stride, pads),
                             f * taps, splits(c, n * h * w, f * taps))
    dw = kernels.conv2d_backward_weight(dy, x, kernel, stride, pads)
    assert_within_fp32_bound(dw, numpy_ref.conv2d_backward_weight, (dy, x, kernel, stride, pads),
                             pixels, splits(f, c * taps, pixels))


def test_the_tile_follows_the_layer_shape():
    default = SHAPES[0]
    assert default == TiledProduct(threads=256, tile_m=64, tile_n=64, tile_k=16)
    assert best_tile(SHAPES, 64, 4096) == default  # ties go to the first listed
    assert best_tile(SHAPES, 32, 4096) == TiledProduct(256, 32, 128, 16)  # a 32-channel layer
    conv1_weight = best_tile(SHAPES, 32, 27)  # vgg_like conv1's dW: 32 filters x 3*3*3
    assert conv1_weight == TiledProduct(64, 32, 32, 16)
    assert 32 * 27 / (conv1_weight.tile_m * conv1_weight.tile_n) > 0.8  # 21% on 64 x 64
    assert best_tile(SHAPES, 256, 27) == TiledProduct(256, 128, 32, 16)
    assert best_tile(SHAPES, 64, 288) == default  # vgg_like conv3's dW: 90% useful on 64 x 64
    assert best_tile(SHAPES, 32, 288) == TiledProduct(64, 32, 32, 16)  # conv2's dW: 45% on 64 x 64


def copy_kernels(tmp_path, old, new):
    kernels_dir = tmp_path / "kernels"
    shutil.copytree(KERNELS_DIR, kernels_dir)
    gemm = kernels_dir / "gemm.cu"
    assert old in gemm.read_text()
    gemm.write_text(gemm.read_text().replace(old, new))
    return kernels_dir


def test_a_changed_simt_shape_changes_the_launches(tmp_path):
    kernels = emulated(copy_kernels(tmp_path, "{32, 128, 256}", "{16, 256, 256}"))
    changed = TiledProduct(256, 16, 256, 16)
    assert changed in kernels.simt_products and TiledProduct(256, 32, 128, 16) not in kernels.simt_products
    kernels.simt_products = [p for p in kernels.simt_products if p == changed]  # with its policy
    check_three_passes(kernels, (2, 3, 9, 9, 5, (3, 3), (1, 1), (1, 1, 1, 1)), np.dtype(np.float32))


def test_an_inconsistent_simt_shape_does_not_compile(tmp_path):
    """A row whose thread count does not match its tile would launch a wrong grid; the
    kernel's static_assert refuses it."""
    kernels = emulated(copy_kernels(tmp_path, "{32, 32, 64}", "{32, 32, 128}"))
    x, w, b, _, stride, pads = conv_inputs((1, 2, 5, 5, 3, (3, 3), (1, 1), (1, 1, 1, 1)), np.float32)
    with pytest.raises(Exception, match="PATCH x PATCH patch"):
        kernels.conv2d_forward(x, w, b, stride, pads)
