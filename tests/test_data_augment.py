"""Augmentation: exact identities, independent references (per-pixel loops, np.rot90, SciPy), seeds.

The array work is numpy_ref.affine_warp / adjust_colour (the specification the CUDA kernels in
kernels/augment.cu are checked against in test_kernels_augment.py); apply_params takes a kernel set.
"""
import math

import numpy as np
import pytest

from minicnn.backends import numpy_ref
from minicnn.data import (PRESETS, AugmentParams, AugmentSpec, DataError, affine_inverse, apply_params, augment,
                          augment_preset, sample_params)

warp, adjust_colour = numpy_ref.affine_warp, numpy_ref.adjust_colour


def images(n=4, c=3, h=8, w=8, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).uniform(0, 255, (n, c, h, w)).astype(dtype)


def warp_one(x, inverse, fill="nearest"):
    return warp(x, np.broadcast_to(inverse, (len(x), 2, 3)), fill)


def bilinear_reference(image, inverse, fill):
    """Per-pixel loops, written from the definition: image (C, H, W), inverse (2, 3)."""
    c, h, w = image.shape
    out = np.zeros_like(image)
    for y in range(h):
        for x in range(w):
            sx = inverse[0, 0] * x + inverse[0, 1] * y + inverse[0, 2]
            sy = inverse[1, 0] * x + inverse[1, 1] * y + inverse[1, 2]
            if fill == "nearest":
                sx, sy = min(max(sx, 0), w - 1), min(max(sy, 0), h - 1)
            x0, y0 = math.floor(sx), math.floor(sy)
            for yi, wy in ((y0, 1 - (sy - y0)), (y0 + 1, sy - y0)):
                for xi, wx in ((x0, 1 - (sx - x0)), (x0 + 1, sx - x0)):
                    if 0 <= xi < w and 0 <= yi < h:
                        out[:, y, x] += wy * wx * image[:, yi, xi]
    return out


def test_zero_warp_is_exactly_identity():
    x = images()
    for fill in ("nearest", "constant"):
        assert np.array_equal(warp_one(x, affine_inverse(8, 8), fill), x)
        assert np.array_equal(warp_one(x, affine_inverse(8, 8, angle=0.0, shift_x=0.0, scale=1.0), fill), x)


@pytest.mark.parametrize("flip, reverse", [("hflip", -1), ("vflip", -2)])
def test_flip_equals_reversal_and_twice_is_identity(flip, reverse):
    x = images(h=6, w=9)
    inverse = affine_inverse(6, 9, **{flip: True})
    once = warp_one(x, inverse)
    assert np.array_equal(once, np.flip(x, axis=reverse))
    assert np.array_equal(warp_one(once, inverse), x)


@pytest.mark.parametrize("dx, dy", [(3, 0), (0, -2), (2, 5), (-4, 4)])
def test_integer_shift_is_roll_with_edge_replication(dx, dy):
    x = images(h=8, w=10)
    pad = ((0, 0), (0, 0), (abs(dy), abs(dy)), (abs(dx), abs(dx)))
    rows = slice(abs(dy) - dy, abs(dy) - dy + 8)
    cols = slice(abs(dx) - dx, abs(dx) - dx + 10)
    inverse = affine_inverse(8, 10, shift_x=dx, shift_y=dy)
    assert np.array_equal(warp_one(x, inverse, "nearest"), np.pad(x, pad, mode="edge")[..., rows, cols])
    # the same shift with zero fill is a crop of the zero-padded image (the ResNet pad-and-crop)
    assert np.array_equal(warp_one(x, inverse, "constant"), np.pad(x, pad)[..., rows, cols])


@pytest.mark.parametrize("angle, k", [(90, 1), (-90, -1), (180, 2)])
def test_right_angle_rotation_equals_rot90(angle, k):
    x = images(h=7, w=7)
    got = warp_one(x, affine_inverse(7, 7, angle=angle))
    np.testing.assert_allclose(got, np.rot90(x, k, axes=(-2, -1)), rtol=0, atol=1e-9)


def test_inverse_undoes_an_independently_built_forward_map():
    h, w = 6, 10
    angle, shear, scale, tx, ty = 23.0, -11.0, 1.2, 1.5, -0.75
    cx, cy = (w - 1) / 2, (h - 1) / 2
    t = math.radians(angle)

    def translate(x, y):
        return np.array([[1, 0, x], [0, 1, y], [0, 0, 1.0]])

    rotate = np.array([[math.cos(t), math.sin(t), 0], [-math.sin(t), math.cos(t), 0], [0, 0, 1]])
    shear_x = np.array([[1, math.tan(math.radians(shear)), 0], [0, 1, 0], [0, 0, 1]])
    zoom = np.diag([scale, scale, 1.0])
    flip = np.diag([-1.0, 1.0, 1.0])
    forward = translate(cx + tx, cy + ty) @ rotate @ shear_x @ zoom @ flip @ translate(-cx, -cy)
    inverse = affine_inverse(h, w, angle=angle, shear=shear, scale=scale, shift_x=tx, shift_y=ty, hflip=True)
    np.testing.assert_allclose(np.vstack([inverse[0], [0, 0, 1]]) @ forward, np.eye(3), atol=1e-12)


@pytest.mark.parametrize("fill", ["nearest", "constant"])
def test_vectorized_warp_equals_per_pixel_reference(fill):
    x = images(n=5, h=7, w=9, seed=1)
    rng = np.random.default_rng(2)
    inverse = affine_inverse(7, 9, angle=rng.uniform(-40, 40, 5), shear=rng.uniform(-15, 15, 5),
                             scale=rng.uniform(0.7, 1.3, 5), shift_x=rng.uniform(-3, 3, 5),
                             shift_y=rng.uniform(-3, 3, 5), hflip=[0, 1, 0, 1, 1], vflip=[1, 0, 0, 1, 0])
    got = warp(x, inverse, fill)
    for i in range(5):
        np.testing.assert_allclose(got[i], bilinear_reference(x[i], inverse[i], fill), rtol=1e-12, atol=1e-9)


def test_nearest_fill_matches_scipy_as_keras_uses_it():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = images(n=1, c=1, h=9, w=9, seed=3)[0, 0]
    m = affine_inverse(9, 9, angle=15, shift_x=0.9, shift_y=-0.9)[0]
    # scipy works in (row, col) = (y, x) order
    matrix, offset = np.array([[m[1, 1], m[1, 0]], [m[0, 1], m[0, 0]]]), np.array([m[1, 2], m[0, 2]])
    expected = ndimage.affine_transform(x, matrix, offset, order=1, mode="nearest")
    np.testing.assert_allclose(warp_one(x[None, None], m[None])[0, 0], expected, atol=1e-9)


def test_batch_equals_each_image_alone():
    x = images(n=6, seed=4)
    params = sample_params(PRESETS["report_b"], 6, np.random.default_rng(5), 8, 8)
    batch = apply_params(x, params, numpy_ref)
    for i in range(6):
        alone = AugmentParams(params.inverse[i:i + 1], params.fill, params.colour[i:i + 1])
        np.testing.assert_allclose(batch[i:i + 1], apply_params(x[i:i + 1], alone, numpy_ref), rtol=1e-12, atol=1e-9)


def test_colour_against_formulas():
    x = images(n=3, seed=6)
    factors = np.array([[1.0, 1.0, 1.0], [1.3, 0.6, 1.0], [0.8, 1.0, 0.0]])
    out = adjust_colour(x, factors)
    np.testing.assert_allclose(out[0], x[0], atol=1e-9)
    bright = np.clip(x[1] * 1.3, 0, 255)
    mean = np.mean(0.299 * bright[0] + 0.587 * bright[1] + 0.114 * bright[2])
    np.testing.assert_allclose(out[1], np.clip(mean + 0.6 * (bright - mean), 0, 255), atol=1e-9)
    luma = 0.299 * x[2, 0] + 0.587 * x[2, 1] + 0.114 * x[2, 2]
    np.testing.assert_allclose(out[2], np.broadcast_to(np.clip(0.8 * luma, 0, 255), (3, 8, 8)), atol=1e-9)
    with pytest.raises(ValueError, match=r"need \(N, 3, H, W\) images, got shape \(3, 1, 8, 8\)"):
        adjust_colour(x[:, :1], factors)


def test_seed_reproducibility_and_float32():
    x = images(dtype=np.float32)
    spec = augment_preset("keras_rot_shift_flip")
    a = augment(x, spec, np.random.default_rng(7), numpy_ref)
    b = augment(x, spec, np.random.default_rng(7), numpy_ref)
    c = augment(x, spec, np.random.default_rng(8), numpy_ref)
    assert a.dtype == np.float32 and a.shape == x.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_sampled_parameters_stay_in_range():
    rng = np.random.default_rng(9)
    crop = sample_params(PRESETS["pad_crop_flip"], 1000, rng, 32, 32).inverse
    assert np.array_equal(np.abs(crop[:, :, :2]), np.broadcast_to(np.eye(2), (1000, 2, 2)))  # only flips
    shift_y = -crop[:, 1, 2]
    assert np.array_equal(shift_y, np.round(shift_y)) and set(shift_y) == set(range(-4, 5))
    assert 0.4 < np.mean(crop[:, 0, 0] < 0) < 0.6     # half the images flipped
    keras = sample_params(PRESETS["keras_shift_flip"], 1000, rng, 32, 32).inverse
    assert np.abs(keras[:, 1, 2]).max() <= 3.2 and np.abs(keras[:, 1, 2]).max() > 3.0
    rot = sample_params(AugmentSpec(rotation=15), 1000, rng, 32, 32).inverse
    angles = np.degrees(np.arctan2(rot[:, 0, 1], rot[:, 0, 0]))
    assert np.abs(angles).max() <= 15 + 1e-9 and np.abs(angles).max() > 14


def test_presets_and_validation():
    assert set(PRESETS) == {"none", "keras_shift_flip", "keras_rot_shift_flip", "report_b", "pad_crop_flip"}
    assert PRESETS["keras_rot_shift_flip"] == AugmentSpec(rotation=15, shift=0.1, hflip=True)
    none = sample_params(PRESETS["none"], 3, np.random.default_rng(0), 8, 8)
    assert none.inverse is None and none.colour is None
    with pytest.raises(DataError, match="unknown augmentation 'mixup'"):
        augment_preset("mixup")
    with pytest.raises(DataError, match="rotation must be >= 0"):
        AugmentSpec(rotation=-5)
    with pytest.raises(DataError, match="fill must be one of"):
        AugmentSpec(fill="reflect")
