"""Evaluate a model on a loader, a checkpoint on the test set, or classify one image file."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minicnn import functional as F
from minicnn.autograd import no_grad, tensor
from minicnn.backends import get_device
from minicnn.data import BatchLoader, Normalizer, prepare_data
from minicnn.train.checkpoint import load_checkpoint, restore
from minicnn.train.config import TrainConfig
from minicnn.train.errors import CheckpointError, TrainError
from minicnn.train.finite import names_in_short, non_finite_arrays
from minicnn.train.metrics import confusion_matrix, plot_confusion

IMAGE_SIZE = 32


@dataclass
class Evaluation:
    loss: float                 # mean cross-entropy
    accuracy: float
    predictions: np.ndarray     # (N,) predicted class, on the host
    labels: np.ndarray          # (N,) true class


def evaluate(model, loader) -> Evaluation:
    """Inference mode (BN running stats, no dropout) over `loader`; the model's mode is restored."""
    was_training = model.training
    device = model.parameters()[0].device
    xp = device.xp
    model.eval()
    loss_sum, predictions, labels = xp.zeros((), xp.float64), [], []
    try:
        with no_grad():
            for x, y in loader:
                logits = model(tensor(x, device=device))
                loss_sum += F.cross_entropy(logits, y).data * len(y)
                predictions.append(logits.data.argmax(axis=1))
                labels.append(y)
    finally:
        model.train(was_training)
    if not labels:
        raise TrainError("nothing to evaluate: the split is empty")
    to_host = get_device("cpu").asarray
    predictions, labels = to_host(xp.concatenate(predictions)), to_host(xp.concatenate(labels))
    return Evaluation(float(loss_sum) / len(labels), float((predictions == labels).mean()), predictions, labels)


@dataclass
class TestReport:
    checkpoint: Path
    arch: str
    epoch: int
    evaluation: Evaluation
    classes: list[str]
    per_class: np.ndarray       # (K,) accuracy of each true class
    confusion: np.ndarray       # (K, K) counts, row = true class
    confusion_png: Path


def load_model(path, device, spec=None):
    """(checkpoint, config, model on `device` holding the checkpoint's weights)."""
    checkpoint = load_checkpoint(path)
    bad = non_finite_arrays(checkpoint.model)
    if bad:  # every prediction, figure and accuracy from it would be noise
        raise CheckpointError(f"{checkpoint.path}: its weights are not finite (NaN/inf in {names_in_short(bad)}); "
                              f"it comes from a diverged run: use another checkpoint, or train again with a smaller --lr")
    config = TrainConfig.from_dict(checkpoint.meta["config"])
    if spec is None:
        from minicnn.models import get_spec
        spec = get_spec(config.arch)
    model = spec.build(len(checkpoint.meta["classes"])).to(get_device(device))
    restore(checkpoint, model)
    return checkpoint, config, model.eval()


def checkpoint_normalizer(checkpoint) -> Normalizer:
    saved = checkpoint.meta["normalizer"]  # the training split's constants, not refitted
    return Normalizer(tuple(saved["mean"]), tuple(saved["std"]))


def evaluate_checkpoint(path, *, device="auto", data_dir=None, limit=None, spec=None, data=None) -> TestReport:
    """Test-set accuracy, per-class accuracy and a confusion-matrix PNG (written beside the checkpoint).

    path: a run folder (its best.npz, else last.npz) or a checkpoint file.
    """
    if limit is not None and limit < 1:
        raise TrainError(f"--limit must be at least 1, got {limit}")
    checkpoint, config, model = load_model(path, device, spec)
    splits = prepare_data(config.data_recipe(), data_dir or config.data, data)
    loader = BatchLoader(splits.test_x, splits.test_y, config.recipe.batch_size, normalizer=checkpoint_normalizer(checkpoint),
                         limit=limit, device=model.parameters()[0].device)
    evaluation = evaluate(model, loader)
    classes = checkpoint.meta["classes"]
    matrix = confusion_matrix(evaluation.labels, evaluation.predictions, len(classes))
    per_class = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)
    png = checkpoint.path.with_name(f"confusion-{checkpoint.path.stem}.png")
    plot_confusion(png, matrix, classes, f"{config.arch} ({checkpoint.path.stem}, epoch {checkpoint.meta['epoch']}): "
                                         f"test accuracy {evaluation.accuracy:.2%}")
    return TestReport(checkpoint.path, config.arch, checkpoint.meta["epoch"], evaluation, classes, per_class,
                      matrix, png)


def read_image(path) -> np.ndarray:
    """Any image Pillow reads -> (1, 3, 32, 32) uint8 RGB, resized with bilinear filtering."""
    from PIL import Image
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise TrainError(f"{path}: cannot read this image ({type(error).__name__}: "
                         f"{(str(error).splitlines() or [''])[0]})") from None
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)[None]


def predict_image(checkpoint_path, image_path, *, device="cpu", top=3, spec=None) -> list[tuple[str, float]]:
    """The `top` most likely classes of one image file, as (class name, probability), best first."""
    if top < 1:
        raise TrainError(f"--top must be at least 1, got {top}")
    image = read_image(image_path)
    checkpoint, _, model = load_model(checkpoint_path, device, spec)
    device = model.parameters()[0].device
    x = checkpoint_normalizer(checkpoint)(device.asarray(image).astype(np.float32), device.xp)
    with no_grad():
        probabilities = F.softmax(model(tensor(x, device=device))).numpy()[0]
    best = np.argsort(-probabilities)[:top]
    return [(checkpoint.meta["classes"][i], float(probabilities[i])) for i in best]
