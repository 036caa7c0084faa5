"""Batches for training and evaluation, moved to a minicnn Device (cpu, cuda or emu).

Each split is copied to the device once, as uint8 (a quarter of the bytes of float32; CIFAR's
training set is 150 MB), and every epoch's shuffled order and augmentation draws go over in one
copy at the epoch's start; so a training step copies nothing from the host: a batch is gathered,
made float, augmented and normalized on the device by one kernel (`kernels.prepare_batch`; three
more launches when colour changes need each image's mean luma). Shuffling and
augmentation draw from a NumPy Generator seeded by (seed, epoch), so any epoch can be replayed
exactly, e.g. after resuming a checkpoint.
"""
import numpy as np

from minicnn.backends import Device, checks, get_device

from .augment import AugmentParams, AugmentSpec, augment_preset, sample_params
from .errors import DataError
from .splits import DataSplits, Normalizer


class BatchLoader:
    """Iterate (x, y): x (B, C, H, W) of `dtype`, y (B,) int64, both arrays of `device`.

    images: (N, C, H, W) uint8; labels: (N,) int. `limit` keeps the first N samples.
    device: a Device or its name; its xp holds the batches and its kernels augment them.
    Each `for` loop over the loader is one epoch; `set_epoch` chooses which (for resuming).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, *,
                 normalizer: Normalizer | None = None, augment: AugmentSpec | None = None,
                 shuffle: bool = False, seed: int = 0, limit: int | None = None,
                 drop_last: bool = False, device: Device | str = "cpu", dtype=np.float32):
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        self.device, self.dtype = get_device(device), dtype
        self.images = self.device.asarray(images[:limit])  # no copy on the CPU
        self.labels = self.device.asarray(labels[:limit], dtype=np.int64)
        self.batch_size, self.normalizer, self.augment = batch_size, normalizer, augment
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        # (mean, std) on the device, copied once
        self.scale = normalizer.constants(self.device.xp, dtype) if normalizer is not None else (None, None)
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        device, n = self.device, len(self.labels)
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        order = device.asarray(rng.permutation(n) if self.shuffle else np.arange(n))
        draws = AugmentParams(None, "nearest", None)  # no augmentation
        if self.augment is not None and (self.augment.geometric or self.augment.colour):
            h, w = self.images.shape[2:]
            draws = sample_params(self.augment, n, rng, h, w).to(device.xp, self.dtype)
        for b in range(len(self)):
            start, stop = b * self.batch_size, (b + 1) * self.batch_size
            batch = draws.rows(start, stop)
            args = (self.images, self.labels, order[start:stop], batch.inverse, batch.fill,
                    batch.colour, *self.scale, self.dtype)
            checks.prepare_batch(*args)
            yield device.kernels.prepare_batch(*args)


def split_loaders(splits: DataSplits, batch_size: int, *, seed: int = 0, limit: int | None = None,
                  device: Device | str = "cpu", dtype=np.float32) -> dict[str, BatchLoader]:
    """'train' (shuffled, augmented as the recipe says), 'val' and 'test' loaders for `splits`."""
    common = dict(normalizer=splits.normalizer, limit=limit, device=device, dtype=dtype)
    return {
        "train": BatchLoader(splits.train_x, splits.train_y, batch_size, shuffle=True, seed=seed,
                             augment=augment_preset(splits.recipe.augment), **common),
        "val": BatchLoader(splits.val_x, splits.val_y, batch_size, **common),
        "test": BatchLoader(splits.test_x, splits.test_y, batch_size, **common),
    }
