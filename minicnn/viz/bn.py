"""`minicnn visualize --what bn`: every batch-norm layer's running statistics beside the
statistics of an actual batch, and what that does to accuracy.

In eval mode a BN layer normalizes with its running mean and variance; in training it used each
batch's own. Early in training (Keras' momentum 0.99 averages the last ~100 steps while the
weights still move fast) the two disagree, and eval-mode accuracy trails what the same weights
reach with batch statistics. The figure shows, per layer, one point per channel: running value
(x) against the batch's value (y); on the diagonal they agree.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minicnn.autograd import no_grad, tensor
from minicnn.backends import to_host
from minicnn.train.bn_stats import batch_norm_layers, recomputed_bn_stats


@dataclass
class LayerStatistics:
    name: str
    running_mean: np.ndarray    # (C,)
    running_var: np.ndarray     # (C,)
    batch_mean: np.ndarray      # (C,) over the images shown, BN layers in training mode
    batch_var: np.ndarray       # (C,) in the layer's variance convention


def layer_statistics(model, x: np.ndarray) -> list[LayerStatistics]:
    """Running and batch statistics of every BN layer for one batch x (N, C, H, W); the model is
    left as it was (its running averages come back)."""
    layers = batch_norm_layers(model)
    if not layers:
        return []
    running = [(to_host(layer.running_mean).copy(), to_host(layer.running_var).copy()) for _, layer in layers]
    device = model.parameters()[0].device
    with recomputed_bn_stats(model, [device.asarray(x)]):  # one batch: its own statistics
        batch = [(to_host(layer.running_mean).copy(), to_host(layer.running_var).copy()) for _, layer in layers]
    return [LayerStatistics(path, *run, *now) for (path, _), run, now in zip(layers, running, batch)]


def accuracies(model, x: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(eval-mode accuracy, accuracy with BN on the batch's statistics) of x as one batch."""
    device = model.parameters()[0].device

    def predict():
        with no_grad():
            return to_host(model(tensor(x, device=device)).data).argmax(axis=1)

    model.eval()
    running = float((predict() == labels).mean())
    with recomputed_bn_stats(model, [device.asarray(x)]):
        batch = float((predict() == labels).mean())
    return running, batch


def summary(stats: LayerStatistics) -> tuple[str, str]:
    """How far apart they are: the mean shift in units of the batch's standard deviation, and the
    ratio of the variances (medians over channels)."""
    shift = np.abs(stats.running_mean - stats.batch_mean) / np.sqrt(stats.batch_var + 1e-12)
    ratio = np.median(stats.running_var / np.maximum(stats.batch_var, 1e-12))
    return f"off by {np.median(shift):.2f} batch std", f"running / batch {ratio:.2f}"
