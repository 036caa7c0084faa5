"""Random training-time changes to images, vectorized over the batch, for NumPy or CuPy arrays.

Two steps, so that a CUDA kernel can later replace the second with the same signature:
  1. `sample_params` draws each image's random parameters on the host with a NumPy Generator
     (a few small arrays: cheap, and reproducible from a seed);
  2. `apply_params` applies them to the whole batch with array operations written against `xp`
     (numpy or cupy), with no per-image Python loop.

All geometry (flips, rotation, shear, zoom, shift, pad-and-crop) is folded into one affine map
per image and done by a single bilinear warp, so the image is resampled once and there is one
warp implementation. Images are float (N, C, H, W) in pixel units (0..255), before normalization.
"""
from dataclasses import dataclass

import numpy as np

from .errors import DataError

FILLS = ("nearest", "constant")
MAX_VALUE = 255.0                                # colour changes clip to the pixel range
GRAY_WEIGHTS = (0.299, 0.587, 0.114)             # ITU-R 601 luma, as torchvision uses
RANGES = ("rotation", "shift", "shear", "scale", "crop_pad", "brightness", "contrast", "saturation")


@dataclass(frozen=True)
class AugmentSpec:
    """Which random changes to make; every field off by default. Ranges are symmetric and uniform."""
    hflip: bool = False        # mirror left-right with probability 1/2
    vflip: bool = False        # mirror top-bottom with probability 1/2
    rotation: float = 0.0      # degrees in [-rotation, rotation], counter-clockwise when positive
    shift: float = 0.0         # fraction of width (height) to move by, like Keras width/height_shift_range
    shear: float = 0.0         # degrees of horizontal shear in [-shear, shear]
    scale: float = 0.0         # zoom factor in [1 - scale, 1 + scale]
    crop_pad: int = 0          # random 32x32 crop of the image padded by crop_pad px: a whole-pixel shift
    fill: str = "nearest"      # outside the image: 'nearest' repeats the edge (Keras), 'constant' reads 0
    brightness: float = 0.0    # multiply by a factor in [1 - brightness, 1 + brightness]
    contrast: float = 0.0      # scale the distance from the image's mean gray level, same kind of factor
    saturation: float = 0.0    # scale the distance from the pixel's gray level, same kind of factor

    def __post_init__(self):
        if self.fill not in FILLS:
            raise DataError(f"fill must be one of {FILLS}, got '{self.fill}'")
        for name in RANGES:
            if getattr(self, name) < 0:
                raise DataError(f"augmentation {name} must be >= 0, got {getattr(self, name)}")

    @property
    def geometric(self) -> bool:
        return bool(self.hflip or self.vflip or self.rotation or self.shift or self.shear
                    or self.scale or self.crop_pad)

    @property
    def colour(self) -> bool:
        return bool(self.brightness or self.contrast or self.saturation)


PRESETS = {
    "none": AugmentSpec(),
    # Report A (A12, A14): Keras ImageDataGenerator(width/height_shift_range=0.1, horizontal_flip=True)
    "keras_shift_flip": AugmentSpec(shift=0.1, hflip=True),
    # Report C: the same plus rotation_range=15
    "keras_rot_shift_flip": AugmentSpec(rotation=15, shift=0.1, hflip=True),
    # Report B (B5) names vertical flip, rotation, affine, random crop and colour change without
    # values; these are common torchvision settings (fill 0, as torchvision pads).
    "report_b": AugmentSpec(vflip=True, rotation=10, shear=10, scale=0.1, crop_pad=4, fill="constant",
                            brightness=0.2, contrast=0.2, saturation=0.2),
    # CIFAR ResNet (He et al. 2016): 4-pixel zero padding, random 32x32 crop, horizontal flip
    "pad_crop_flip": AugmentSpec(crop_pad=4, hflip=True, fill="constant"),
}


def augment_preset(name: str) -> AugmentSpec:
    try:
        return PRESETS[name]
    except KeyError:
        raise DataError(f"unknown augmentation '{name}' (choose from {', '.join(PRESETS)})") from None


@dataclass(frozen=True)
class AugmentParams:
    """One batch's random draws, as small host (NumPy) arrays."""
    inverse: np.ndarray | None  # (N, 2, 3): output pixel (x, y, 1) -> source position (x, y); None: no warp
    fill: str                   # see AugmentSpec.fill
    colour: np.ndarray | None   # (N, 3) brightness, contrast, saturation factors; None: no colour change


def affine_inverse(height: int, width: int, *, angle=0.0, shear=0.0, scale=1.0, shift_x=0.0,
                   shift_y=0.0, hflip=False, vflip=False) -> np.ndarray:
    """The (N, 2, 3) maps from output pixel to source position for the given per-image values.

    Arguments are scalars or (N,) arrays (angles in degrees, shifts in pixels, positive = right
    and down). Around the image centre, the forward map flips, zooms, shears, rotates, then shifts;
    x is the column and y the row, with y pointing down.
    """
    angle, shear, scale, shift_x, shift_y, hflip, vflip = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (angle, shear, scale, shift_x, shift_y, hflip, vflip)))
    theta, phi = np.deg2rad(angle), np.deg2rad(shear)
    cos, sin = np.cos(theta), np.sin(theta)
    flip_x, flip_y = 1 - 2 * hflip, 1 - 2 * vflip
    # linear part: rotation @ shear @ zoom @ flip, with y down so positive angles turn counter-clockwise
    a = np.stack([np.stack([cos, cos * np.tan(phi) + sin], -1),
                  np.stack([-sin, -sin * np.tan(phi) + cos], -1)], -2)
    a = a * (scale[..., None] * np.stack([flip_x, flip_y], -1))[..., None, :]
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    b = centre + np.stack([shift_x, shift_y], -1) - a @ centre    # forward: out = a @ src + b
    det = a[..., 0, 0] * a[..., 1, 1] - a[..., 0, 1] * a[..., 1, 0]
    a_inv = np.stack([np.stack([a[..., 1, 1], -a[..., 0, 1]], -1),
                      np.stack([-a[..., 1, 0], a[..., 0, 0]], -1)], -2) / det[..., None, None]
    b_inv = -(a_inv @ b[..., None])[..., 0]
    return np.concatenate([a_inv, b_inv[..., None]], -1).reshape(-1, 2, 3)


def sample_params(spec: AugmentSpec, n: int, rng: np.random.Generator, height: int, width: int) -> AugmentParams:
    """Draw the random parameters of `n` images from `rng` (host side, small arrays)."""
    def symmetric(r):
        return rng.uniform(-r, r, n) if r else np.zeros(n)

    def coin(on):
        return rng.random(n) < 0.5 if on else np.zeros(n, bool)

    inverse = None
    if spec.geometric:
        hflip, vflip = coin(spec.hflip), coin(spec.vflip)
        angle, shear, zoom = symmetric(spec.rotation), symmetric(spec.shear), 1 + symmetric(spec.scale)
        shift_x, shift_y = symmetric(spec.shift) * width, symmetric(spec.shift) * height
        if spec.crop_pad:
            shift_x = shift_x + rng.integers(-spec.crop_pad, spec.crop_pad + 1, n)
            shift_y = shift_y + rng.integers(-spec.crop_pad, spec.crop_pad + 1, n)
        inverse = affine_inverse(height, width, angle=angle, shear=shear, scale=zoom, shift_x=shift_x,
                                 shift_y=shift_y, hflip=hflip, vflip=vflip)
    colour = None
    if spec.colour:
        colour = 1 + np.stack([symmetric(spec.brightness), symmetric(spec.contrast),
                               symmetric(spec.saturation)], -1)
    return AugmentParams(inverse, spec.fill, colour)


def warp(images, inverse, fill: str, xp):
    """Bilinear resampling of each image at the source positions its affine map gives.

    images: (N, C, H, W) float; inverse: (N, 2, 3), output pixel (x, y, 1) -> source (x, y).
    fill 'nearest' clamps positions to the image (edge pixels repeat, as Keras fills);
    'constant' lets corners that fall outside contribute 0.
    """
    n, c, h, w = images.shape
    m = xp.asarray(inverse, dtype=images.dtype)[:, :, :, None, None]   # (N, 2, 3, 1, 1)
    xs = xp.arange(w, dtype=images.dtype)
    ys = xp.arange(h, dtype=images.dtype)[:, None]
    src_x = m[:, 0, 0] * xs + m[:, 0, 1] * ys + m[:, 0, 2]             # (N, H, W)
    src_y = m[:, 1, 0] * xs + m[:, 1, 1] * ys + m[:, 1, 2]
    if fill == "nearest":
        src_x, src_y = xp.clip(src_x, 0, w - 1), xp.clip(src_y, 0, h - 1)
    x0, y0 = xp.floor(src_x), xp.floor(src_y)
    frac_x, frac_y = src_x - x0, src_y - y0
    x0, y0 = x0.astype(xp.int64), y0.astype(xp.int64)
    flat = images.reshape(n, c, h * w)
    out = xp.zeros_like(images)
    for dy, weight_y in ((0, 1 - frac_y), (1, frac_y)):
        for dx, weight_x in ((0, 1 - frac_x), (1, frac_x)):
            xi, yi = x0 + dx, y0 + dy
            weight = weight_y * weight_x
            if fill == "constant":
                weight = weight * ((xi >= 0) & (xi < w) & (yi >= 0) & (yi < h))
            index = xp.clip(yi, 0, h - 1) * w + xp.clip(xi, 0, w - 1)   # (N, H, W) into the flat image
            corner = xp.take_along_axis(flat, index.reshape(n, 1, h * w), axis=2)
            out += corner.reshape(n, c, h, w) * weight[:, None]
    return out


def _gray(images, xp):
    """(N, 3, H, W) -> (N, 1, H, W) luma."""
    weights = xp.asarray(GRAY_WEIGHTS, dtype=images.dtype)[:, None, None]
    return (images * weights).sum(axis=1, keepdims=True)


def adjust_colour(images, factors, xp):
    """Brightness, then contrast, then saturation, clipping to 0..255 after each (torchvision's formulas).

    images: (N, 3, H, W) float in pixel units; factors: (N, 3), 1 leaves a property unchanged.
    """
    if images.shape[1] != 3:
        raise DataError(f"colour changes need 3 channels, got {images.shape[1]}")
    f = xp.asarray(factors, dtype=images.dtype)[:, :, None, None, None]   # (N, 3, 1, 1, 1)
    out = xp.clip(images * f[:, 0], 0, MAX_VALUE)
    mean = _gray(out, xp).mean(axis=(1, 2, 3), keepdims=True)
    out = xp.clip((out - mean) * f[:, 1] + mean, 0, MAX_VALUE)
    gray = _gray(out, xp)
    return xp.clip((out - gray) * f[:, 2] + gray, 0, MAX_VALUE)


def apply_params(images, params: AugmentParams, xp):
    """Apply one batch's drawn parameters. images: (N, C, H, W) float -> same shape and dtype."""
    if params.inverse is not None:
        images = warp(images, params.inverse, params.fill, xp)
    if params.colour is not None:
        images = adjust_colour(images, params.colour, xp)
    return images


def augment(images, spec: AugmentSpec, rng: np.random.Generator, xp):
    """Sample and apply in one call: images (N, C, H, W) float -> augmented copy."""
    n, _, h, w = images.shape
    return apply_params(images, sample_params(spec, n, rng, h, w), xp)
