"""Shared helpers for tests/test_train_*.py: a tiny zoo-like network and small learnable datasets."""
import numpy as np

from minicnn import nn
from minicnn.data import Cifar
from minicnn.models import ModelSpec, Recipe

CLASSES = [f"class{i}" for i in range(10)]


def tiny_net(num_classes=10):
    """Conv-BN-ReLU-pool-dropout-FC: every kind of state a checkpoint must carry, in ~1k parameters."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(4),
                         nn.Dropout(0.2), nn.Flatten(), nn.Linear(64, num_classes))


def tiny_spec(**recipe):
    return ModelSpec("tiny", ("T1",), "T", "a test network", tiny_net,
                     Recipe(**{"batch_size": 16, "epochs": 2, **recipe}), "50.00%", 0.5)


def colour_images(labels, rng):
    """Images whose mean colour depends on the class, plus noise: learnable in a few steps."""
    palette = np.random.default_rng(123).integers(30, 226, (10, 3))
    base = palette[labels][:, :, None, None]
    noise = rng.integers(-30, 31, (len(labels), 3, 32, 32))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def colour_cifar(n_train=96, n_test=48, seed=0) -> Cifar:
    rng = np.random.default_rng(seed)
    train_y, test_y = np.arange(n_train) % 10, np.arange(n_test) % 10
    return Cifar("cifar10", colour_images(train_y, rng), train_y.astype(np.int64),
                 colour_images(test_y, rng), test_y.astype(np.int64), list(CLASSES), source=None)


def write_colour_cifar10(root, n_per_batch=20, n_test=40, seed=0):
    """colour_cifar's kind of data in the official CIFAR-10 layout under root/cifar-10-batches-py."""
    from data_fixtures import cifar10_batch, py2_pickle
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        labels = (np.arange(n_per_batch) + i) % 10
        (folder / f"data_batch_{i}").write_bytes(cifar10_batch(colour_images(labels, rng), labels))
    labels = np.arange(n_test) % 10
    (folder / "test_batch").write_bytes(cifar10_batch(colour_images(labels, rng), labels))
    (folder / "batches.meta").write_bytes(py2_pickle([(b"label_names", [c.encode() for c in CLASSES])]))
    return root


def one_line_error(args, tmp_path, monkeypatch, capsys) -> str:
    """Run `minicnn ARGS` in this process ({tmp} in an argument becomes tmp_path); assert it failed
    with exit code 1 and one 'minicnn: error:' line, and return that line."""
    import sys

    import pytest

    from minicnn.cli import main
    monkeypatch.setattr(sys, "argv", ["minicnn"] + [a.replace("{tmp}", str(tmp_path)) for a in args])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.count("\n") == 1, err
    assert err.startswith("minicnn: error: "), err
    return err
