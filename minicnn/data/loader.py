"""Batches for training and evaluation, moved to the device array module `xp` (numpy or cupy).

A batch leaves the host as uint8 (a quarter of the bytes of float32), and becomes float,
augmented and normalized on the device. Shuffling and augmentation draw from a NumPy Generator
seeded by (seed, epoch), so any epoch can be replayed exactly, e.g. after resuming a checkpoint.
"""
import numpy as np

from .augment import AugmentSpec, augment, augment_preset
from .errors import DataError
from .splits import DataSplits, Normalizer


class BatchLoader:
    """Iterate (x, y): x (B, C, H, W) of `dtype` on `xp`, y (B,) int64 on `xp`.

    images: (N, C, H, W) uint8 on the host; labels: (N,) int. `limit` keeps the first N samples.
    Each `for` loop over the loader is one epoch; `set_epoch` chooses which (for resuming).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, *,
                 normalizer: Normalizer | None = None, augment: AugmentSpec | None = None,
                 shuffle: bool = False, seed: int = 0, limit: int | None = None,
                 drop_last: bool = False, xp=np, dtype=np.float32):
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        self.images, self.labels = images[:limit], labels[:limit]
        self.batch_size, self.normalizer, self.augment = batch_size, normalizer, augment
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.xp, self.dtype = xp, dtype
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        xp, n = self.xp, len(self.labels)
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        for b in range(len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = xp.asarray(self.images[index]).astype(self.dtype)   # uint8 over the bus, cast on the device
            if self.augment is not None and (self.augment.geometric or self.augment.colour):
                x = augment(x, self.augment, rng, xp)
            if self.normalizer is not None:
                x = self.normalizer(x, xp)
            yield x, xp.asarray(self.labels[index], dtype=xp.int64)


def split_loaders(splits: DataSplits, batch_size: int, *, seed: int = 0, limit: int | None = None,
                  xp=np, dtype=np.float32) -> dict[str, BatchLoader]:
    """'train' (shuffled, augmented as the recipe says), 'val' and 'test' loaders for `splits`."""
    common = dict(normalizer=splits.normalizer, limit=limit, xp=xp, dtype=dtype)
    return {
        "train": BatchLoader(splits.train_x, splits.train_y, batch_size, shuffle=True, seed=seed,
                             augment=augment_preset(splits.recipe.augment), **common),
        "val": BatchLoader(splits.val_x, splits.val_y, batch_size, **common),
        "test": BatchLoader(splits.test_x, splits.test_y, batch_size, **common),
    }
