"""The data half of a training recipe: which dataset, how inputs are scaled, how it is split.

Scaling is always `(x - mean) / std` per channel in pixel units (0..255), so the three choices
the reports made are one operation with different constants:
  'raw'         mean 0, std 1     (report A1 fed 0..255 straight in)
  'scale'       mean 0, std 255   (Keras reports: inputs / 255)
  'standardize' mean, std of each channel over the TRAINING split only (report B, ResNet)
Splits: 'test-as-val' validates on the test set (reports A, C, D did; results say so), and
'holdout' sets aside a seeded random `val_size` of the training images (report B: 40,000 /
10,000 / 10,000).
"""
import os
from dataclasses import dataclass

import numpy as np

from .augment import augment_preset
from .cifar import Cifar, load_cifar
from .errors import DataError

PREPROCESS = ("raw", "scale", "standardize")
SPLITS = ("test-as-val", "holdout")


@dataclass(frozen=True)
class DataRecipe:
    dataset: str = "cifar10"          # 'cifar10' | 'cifar100'
    preprocess: str = "scale"         # one of PREPROCESS
    split: str = "test-as-val"        # one of SPLITS
    val_size: int = 10_000            # 'holdout' only: training images set aside for validation
    split_seed: int = 0               # 'holdout' only: which images
    augment: str = "none"             # a name in augment.PRESETS, applied to training batches

    def __post_init__(self):
        if self.preprocess not in PREPROCESS:
            raise DataError(f"preprocess must be one of {PREPROCESS}, got '{self.preprocess}'")
        if self.split not in SPLITS:
            raise DataError(f"split must be one of {SPLITS}, got '{self.split}'")
        augment_preset(self.augment)  # fail early on an unknown name


@dataclass(frozen=True)
class Normalizer:
    """x -> (x - mean) / std per channel; mean and std in pixel units, one value per channel."""
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, preprocess: str, train_x: np.ndarray) -> "Normalizer":
        """Constants for `preprocess`; 'standardize' measures train_x: (N, C, H, W) uint8."""
        channels = train_x.shape[1]
        if preprocess == "raw":
            return cls((0.0,) * channels, (1.0,) * channels)
        if preprocess == "scale":
            return cls((0.0,) * channels, (255.0,) * channels)
        if preprocess != "standardize":
            raise DataError(f"preprocess must be one of {PREPROCESS}, got '{preprocess}'")
        # A histogram of the 256 pixel values gives exact statistics without a float copy of the set.
        values = np.arange(256, dtype=np.float64)
        mean, std = [], []
        for c in range(channels):
            counts = np.bincount(train_x[:, c].ravel(), minlength=256)
            m = counts @ values / counts.sum()
            mean.append(float(m))
            std.append(float(np.sqrt(counts @ (values - m) ** 2 / counts.sum())))
        return cls(tuple(mean), tuple(std))

    def __call__(self, images, xp):
        """images: (N, C, H, W) float on the device -> normalized, same dtype."""
        return self.on(xp, images.dtype)(images)

    def on(self, xp, dtype):
        """The normalization of `dtype` batches of xp, its constants copied to the device once
        (a loader's steps then copy nothing from the host)."""
        mean, std = self.constants(xp, dtype)
        mean, std = mean[:, None, None], std[:, None, None]
        return lambda images: (images - mean) / std

    def constants(self, xp, dtype):
        """(mean, std), each (C,) of `dtype` on xp's device: what kernels.prepare_batch takes."""
        return xp.asarray(self.mean, dtype=dtype), xp.asarray(self.std, dtype=dtype)


@dataclass(frozen=True)
class DataSplits:
    """Train / validation / test arrays (uint8 images (N, 3, 32, 32), int64 labels) and how to scale them."""
    recipe: DataRecipe
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    normalizer: Normalizer
    val_is_test: bool     # True: "validation" numbers are test-set numbers, as in reports A, C, D

    def describe(self, limit: int | None = None) -> str:
        """One line for a run's banner. limit: the --limit in force (then the sizes used are shown)."""
        def size(n):
            return f"{n:,}" if not limit or limit >= n else f"{limit:,} of {n:,}"
        val = "validation = the test set" if self.val_is_test else f"validation {size(len(self.val_y))} held out"
        return (f"{self.recipe.dataset}: train {size(len(self.train_y))}, {val}, test {size(len(self.test_y))}; "
                f"inputs '{self.recipe.preprocess}', augmentation '{self.recipe.augment}'")


def holdout_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of range(n) into (train, validation) index arrays, each sorted."""
    if not 0 < val_size < n:
        raise DataError(f"val_size must be between 1 and {n - 1}, got {val_size}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[val_size:]), np.sort(order[:val_size])


def prepare_data(recipe: DataRecipe, root: str | os.PathLike | None = None, data: Cifar | None = None) -> DataSplits:
    """Load (or take `data`), split and fit the normalizer on the training split only."""
    data = data or load_cifar(recipe.dataset, root)
    if recipe.split == "holdout":
        train, val = holdout_indices(len(data.train_y), recipe.val_size, recipe.split_seed)
        train_x, train_y = data.train_x[train], data.train_y[train]
        val_x, val_y = data.train_x[val], data.train_y[val]
    else:
        train_x, train_y, val_x, val_y = data.train_x, data.train_y, data.test_x, data.test_y
    return DataSplits(recipe, train_x, train_y, val_x, val_y, data.test_x, data.test_y, data.classes,
                      Normalizer.fit(recipe.preprocess, train_x), recipe.split == "test-as-val")
