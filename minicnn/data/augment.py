"""Random training-time changes to images, drawn on the host and applied by the device's kernels.

Two steps:
  1. `sample_params` draws each image's random parameters on the host with a NumPy Generator
     (a few small arrays: cheap, and reproducible from a seed);
  2. `apply_params` hands them to the device's kernels, `affine_warp` and `adjust_colour`
     (minicnn/backends/numpy_ref.py is their specification, kernels/augment.cu the CUDA version),
     so a batch on the GPU is augmented there, like every other op, with no per-image Python loop.

All geometry (flips, rotation, shear, zoom, shift, pad-and-crop) is folded into one affine map
per image and done by a single bilinear warp, so the image is resampled once and there is one
warp implementation. Images are float (N, C, H, W) in pixel units (0..255), before normalization.
"""
from dataclasses import dataclass

import numpy as np

from minicnn.backends import checks
from minicnn.backends.numpy_ref import FILL_MODES as FILLS

from .errors import DataError

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
    """Random draws for N images: small arrays, drawn on the host, usable on any device."""
    inverse: np.ndarray | None  # (N, 2, 3): output pixel (x, y, 1) -> source position (x, y); None: no warp
    fill: str                   # see AugmentSpec.fill
    colour: np.ndarray | None   # (N, 3) brightness, contrast, saturation factors; None: no colour change

    def to(self, xp, dtype) -> "AugmentParams":
        """The same draws as arrays of `xp` (one host-to-device copy for a whole epoch's draws)."""
        def move(a):
            return None if a is None else xp.asarray(a, dtype)
        return AugmentParams(move(self.inverse), self.fill, move(self.colour))

    def rows(self, start: int, stop: int) -> "AugmentParams":
        """The draws of images start..stop-1 (one batch of an epoch's draws)."""
        return AugmentParams(None if self.inverse is None else self.inverse[start:stop], self.fill,
                             None if self.colour is None else self.colour[start:stop])


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


def apply_params(images, params: AugmentParams, kernels):
    """Apply one batch's drawn parameters with a device's kernels (`device.kernels`: numpy_ref
    or the CUDA kernels). images: (N, C, H, W) float arrays of kernels.xp -> same shape, dtype."""
    xp = kernels.xp  # the small parameter arrays go to the images' device and dtype
    if params.inverse is not None:
        args = (images, xp.asarray(params.inverse, images.dtype), params.fill)
        checks.affine_warp(*args)  # the kernels' rules, the same on every device
        images = kernels.affine_warp(*args)
    if params.colour is not None:
        args = (images, xp.asarray(params.colour, images.dtype))
        checks.adjust_colour(*args)
        images = kernels.adjust_colour(*args)
    return images


def augment(images, spec: AugmentSpec, rng: np.random.Generator, kernels):
    """Sample and apply in one call: images (N, C, H, W) float -> augmented copy."""
    n, _, h, w = images.shape
    return apply_params(images, sample_params(spec, n, rng, h, w), kernels)
