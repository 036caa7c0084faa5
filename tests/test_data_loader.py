"""Splits, normalization and batching."""
import numpy as np
import pytest

from data_fixtures import cifar10_root  # noqa: F401
from minicnn.backends import Device, DeviceError, get_device, numpy_ref
from minicnn.data import (PRESETS, AugmentSpec, BatchLoader, Cifar, DataError, DataRecipe, Normalizer,
                          holdout_indices, load_cifar, prepare_data, split_loaders)


def fake_cifar(n_train=500, n_test=100, seed=0) -> Cifar:
    rng = np.random.default_rng(seed)
    return Cifar("cifar10", rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8), np.arange(n_train) % 10,
                 rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8), np.arange(n_test) % 10,
                 [f"c{i}" for i in range(10)], source=None)


def test_normalizer_constants():
    x = np.random.default_rng(1).integers(0, 256, (50, 3, 4, 4), dtype=np.uint8)
    assert Normalizer.fit("raw", x) == Normalizer((0.0,) * 3, (1.0,) * 3)
    assert Normalizer.fit("scale", x) == Normalizer((0.0,) * 3, (255.0,) * 3)
    std = Normalizer.fit("standardize", x)
    as_float = x.astype(np.float64)
    np.testing.assert_allclose(std.mean, as_float.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std.std, as_float.std(axis=(0, 2, 3)), rtol=1e-12)
    out = std(as_float, np)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-12)
    assert np.array_equal(Normalizer.fit("scale", x)(as_float, np), as_float / 255)


def test_holdout_split_is_seeded_disjoint_and_complete():
    train, val = holdout_indices(50_000, 10_000, seed=3)
    assert len(train) == 40_000 and len(val) == 10_000
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(50_000))
    again, _ = holdout_indices(50_000, 10_000, seed=3)
    other, _ = holdout_indices(50_000, 10_000, seed=4)
    assert np.array_equal(train, again) and not np.array_equal(train, other)
    with pytest.raises(DataError, match="val_size"):
        holdout_indices(100, 100, 0)


def test_report_b_recipe_on_real_cifar10(cifar10_root):
    splits = prepare_data(DataRecipe(preprocess="standardize", split="holdout"), cifar10_root)  # report B
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (40_000, 10_000, 10_000)
    assert not splits.val_is_test and "validation 10,000 held out" in splits.describe()
    # statistics come from the 40,000 training images only
    np.testing.assert_allclose(splits.normalizer.mean, splits.train_x.mean(axis=(0, 2, 3)), rtol=1e-12)
    full = load_cifar("cifar10", cifar10_root)
    assert not np.allclose(splits.normalizer.mean, full.train_x.mean(axis=(0, 2, 3)), rtol=1e-7, atol=0)
    counts = np.bincount(splits.val_y)   # a random 10,000 of a balanced set: about 1,000 per class
    assert counts.sum() == 10_000 and 900 < counts.min() and counts.max() < 1100


def test_test_as_validation_says_so():
    splits = prepare_data(DataRecipe(), data=fake_cifar())
    assert splits.val_is_test and splits.val_x is splits.test_x
    assert "validation = the test set" in splits.describe()


def test_recipe_validation():
    with pytest.raises(DataError, match="preprocess must be one of"):
        DataRecipe(preprocess="minmax")
    with pytest.raises(DataError, match="split must be one of"):
        DataRecipe(split="kfold")
    with pytest.raises(DataError, match="unknown augmentation"):
        DataRecipe(augment="cutout")


def test_batches_cover_the_split_in_order_and_normalize():
    data = fake_cifar(n_train=250)
    loader = BatchLoader(data.train_x, data.train_y, 64, normalizer=Normalizer.fit("scale", data.train_x))
    batches = list(loader)
    assert len(loader) == len(batches) == 4 and [len(y) for _, y in batches] == [64, 64, 64, 58]
    x = np.concatenate([b[0] for b in batches])
    assert x.dtype == np.float32 and batches[0][1].dtype == np.int64
    np.testing.assert_allclose(x, data.train_x / np.float32(255), rtol=1e-6)
    assert len(BatchLoader(data.train_x, data.train_y, 64, drop_last=True)) == 3


def test_shuffle_is_a_seeded_permutation_per_epoch():
    data = fake_cifar(n_train=300)
    labels = np.arange(300)
    loader = BatchLoader(data.train_x, labels, 100, shuffle=True, seed=5)
    first = np.concatenate([y for _, y in loader])
    second = np.concatenate([y for _, y in loader])
    assert np.array_equal(np.sort(first), labels) and not np.array_equal(first, labels)
    assert not np.array_equal(first, second)
    replay = BatchLoader(data.train_x, labels, 100, shuffle=True, seed=5)
    replay.set_epoch(1)   # resuming at epoch 1 replays the second epoch exactly
    assert np.array_equal(np.concatenate([y for _, y in replay]), second)
    # the images travel with their labels
    x, y = next(iter(BatchLoader(data.train_x, labels, 10, shuffle=True, seed=5)))
    assert np.array_equal(x, data.train_x[y].astype(np.float32))


def test_limit_dtype_and_augmentation():
    data = fake_cifar()
    loader = BatchLoader(data.train_x, data.train_y, 32, limit=70, dtype=np.float64,
                         augment=AugmentSpec(hflip=True), shuffle=False, seed=2)
    xs = [x for x, _ in loader]
    assert [len(x) for x in xs] == [32, 32, 6] and xs[0].dtype == np.float64
    x = np.concatenate(xs)
    original = data.train_x[:70].astype(np.float64)
    flipped = np.array([np.array_equal(a, b[..., ::-1]) for a, b in zip(x, original)])
    unchanged = np.array([np.array_equal(a, b) for a, b in zip(x, original)])
    assert np.all(flipped | unchanged) and 15 < flipped.sum() < 55


def test_split_loaders_follow_the_recipe():
    splits = prepare_data(DataRecipe(preprocess="standardize", augment="pad_crop_flip"), data=fake_cifar())
    loaders = split_loaders(splits, 50, seed=1, limit=120)
    assert loaders["train"].augment.crop_pad == 4 and loaders["train"].shuffle
    assert loaders["val"].augment is None and not loaders["test"].shuffle
    assert [len(loaders[k]) for k in ("train", "val", "test")] == [3, 2, 2]
    x, _ = next(iter(loaders["test"]))
    expected = (splits.test_x[:50] - np.array(splits.normalizer.mean)[:, None, None]) \
        / np.array(splits.normalizer.std)[:, None, None]
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)


def test_mismatched_lengths_and_batch_size():
    data = fake_cifar()
    with pytest.raises(DataError, match="500 images but 499 labels"):
        BatchLoader(data.train_x, data.train_y[:-1], 10)
    with pytest.raises(DataError, match="batch_size"):
        BatchLoader(data.train_x, data.train_y, 0)


class RecordingKernels:
    """numpy_ref, noting which kernels the loader calls."""

    def __init__(self):
        self.xp, self.calls = np, []

    def __getattr__(self, name):
        self.calls.append(name)
        return getattr(numpy_ref, name)


def test_augmentation_runs_through_the_device_kernels():
    data = fake_cifar(n_train=40)
    kernels = RecordingKernels()
    spec = PRESETS["report_b"]   # a warp and colour changes
    spied = BatchLoader(data.train_x, data.train_y, 16, augment=spec, seed=3, device=Device("spy", np, kernels))
    plain = BatchLoader(data.train_x, data.train_y, 16, augment=spec, seed=3)
    assert plain.device is get_device("cpu")
    for (x, y), (x_cpu, y_cpu) in zip(spied, plain):
        assert np.array_equal(x, x_cpu) and np.array_equal(y, y_cpu)
    assert kernels.calls == ["prepare_batch"] * 3   # the warp and colour changes inside it
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        BatchLoader(data.train_x, data.train_y, 16, device="tpu")


def test_emulated_cuda_augmentation_matches_the_reference():
    pytest.importorskip("minicnn.emu")
    data = fake_cifar(n_train=6)
    splits = prepare_data(DataRecipe(preprocess="standardize", augment="report_b"), data=data)
    cpu = split_loaders(splits, 3, seed=4)["train"]
    emu = split_loaders(splits, 3, seed=4, device="emu")["train"]
    assert emu.device is get_device("emu")
    for (x, y), (x_cpu, y_cpu) in zip(emu, cpu):
        assert np.array_equal(y, y_cpu)
        np.testing.assert_allclose(x, x_cpu, rtol=1e-4, atol=1e-4)
