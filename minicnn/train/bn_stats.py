"""Recomputed ("precise") batch-norm statistics, and `--bn-stats running|recompute`: which BN
statistics validation, evaluate, predict and visualize use.

  running    the running averages the checkpoint holds: what Keras and PyTorch evaluate with and
             what the reports' figures measure (the default).
  recompute  the exact mean and variance of every BN layer's input for the current weights,
             measured over `--bn-batches` unaugmented training batches, in place of the averages.

Why recompute: a running average with Keras' momentum 0.99 remembers the last ~100 steps, and
early in training the weights move so fast that those steps describe a network that no longer
exists; eval-mode accuracy then trails the accuracy the same weights reach with batch
statistics. One forward pass over some training batches measures the statistics of the weights
as they are. Checkpoints always hold the running averages, since an exact resume needs them, and
their metadata says so ("bn_stats": "running"); recomputed statistics are measured again on load.

    n = recompute_bn_stats(model, (x for x, _ in loader), max_batches=100)
    with recomputed_bn_stats(model, batches):     # the running averages come back afterwards
        evaluate(model, val_loader)
"""
from __future__ import annotations

import contextlib
import itertools

from minicnn.autograd import no_grad, tensor
from minicnn.data import BatchLoader, prepare_data
from minicnn.nn.layers import _BatchNorm
from minicnn.train.errors import TrainError

BN_STATS = ("running", "recompute")
DEFAULT_BN_BATCHES = 100
HELD = "running"  # what a checkpoint's BN buffers hold


def check_bn_stats(bn_stats: str, bn_batches: int) -> None:
    if bn_stats not in BN_STATS:
        raise TrainError(f"--bn-stats must be one of {', '.join(BN_STATS)}, got {bn_stats!r}")
    if bn_batches < 1:
        raise TrainError(f"--bn-batches must be at least 1, got {bn_batches}")


def statistics_batches(splits, batch_size: int, *, seed: int = 0, limit: int | None = None, device="cpu"):
    """Training images without augmentation, in an order shuffled by `seed`: what recompute
    measures (test images are never augmented, so neither are the images describing them)."""
    return BatchLoader(splits.train_x, splits.train_y, batch_size, normalizer=splits.normalizer, shuffle=True,
                       seed=seed, limit=limit, device=device)


def use_bn_stats(model, config, bn_stats: str | None, bn_batches: int | None, *, splits=None, data_dir=None,
                 data=None) -> str:
    """Give a freshly loaded model (a checkpoint's copy) the statistics asked for, in place.

    bn_stats / bn_batches: None means the run's own setting. splits: the run's prepared data, else
    it is read from data_dir (or the run's folder) or taken from `data`. Returns a note for the user."""
    bn_stats = bn_stats or config.bn_stats
    bn_batches = bn_batches or config.bn_batches
    check_bn_stats(bn_stats, bn_batches)
    if bn_stats == "running":
        return "BN: running averages"
    splits = splits or prepare_data(config.data_recipe(), data_dir or config.data, data)
    device = model.parameters()[0].device
    used = recompute_bn_stats(model, statistics_batches(splits, config.recipe.batch_size, seed=config.seed,
                                                        device=device), bn_batches)
    return f"BN: statistics recomputed over {used} training batches of {config.recipe.batch_size}"



def batch_norm_layers(model) -> list:
    """(dotted path, layer) of every batch-norm layer, in forward order."""
    return [(path, module) for path, module in model.named_modules() if isinstance(module, _BatchNorm)]


class _Moments:
    """Per-channel count, mean and sum of squared deviations of one layer's inputs, merged batch
    by batch with Chan et al.'s pairwise rule (no E[x^2] - E[x]^2 cancellation), in float64."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, None, None

    def add(self, x, xp):
        """x: (N, C) or (N, C, H, W), an array of the model's device."""
        axes = (0,) + tuple(range(2, x.ndim))
        x = x.astype(xp.float64)
        count = x.size // x.shape[1]
        mean = x.mean(axis=axes)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        m2 = ((x - mean.reshape(shape)) ** 2).sum(axis=axes)
        if self.mean is None:
            self.count, self.mean, self.m2 = count, mean, m2
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta ** 2 * (self.count * count / total)
        self.count = total

    def variance(self, unbiased: bool):
        return self.m2 / (self.count - 1 if unbiased and self.count > 1 else self.count)


def recompute_bn_stats(model, batches, max_batches: int | None = None) -> int:
    """Replace every BN layer's running_mean / running_var by the mean and variance of its input
    over all of `batches` taken together (a cumulative, not exponential, average).

    batches: iterable of inputs x (N, C, H, W) on the model's device, or of (x, labels) pairs;
    max_batches: stop after this many. The pass runs the BN layers in training mode (each batch is
    normalized by its own statistics, as in training) and every other layer in eval mode (no
    dropout: the statistics are for the network as it is evaluated). Weights are untouched; the
    variance follows each layer's convention (unbiased for 'torch', the plain variance for
    'keras'), over the total count. The model's training flags are restored. Returns the number
    of batches used; with none, nothing changes.
    """
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    device = model.parameters()[0].device
    moments = {path: _Moments() for path, _ in layers}
    saved = {path: (layer.running_mean.copy(), layer.running_var.copy()) for path, layer in layers}
    flags = [(module, module.training) for module in model.modules()]
    handles = [layer.register_forward_hook(
        lambda module, inputs, output, path=path: moments[path].add(inputs[0].data, device.xp))
        for path, layer in layers]
    used = 0
    try:
        model.eval()
        for _, layer in layers:
            layer.training = True
        with no_grad():
            for batch in itertools.islice(batches, max_batches):
                x = batch[0] if isinstance(batch, tuple) else batch
                model(tensor(x, dtype=x.dtype, device=device))
                used += 1
    finally:
        for handle in handles:
            handle.remove()
        for module, training in flags:
            module.training = training
        for path, layer in layers:  # the pass itself moved the running averages: undo that first
            layer.running_mean[...], layer.running_var[...] = saved[path]
    if used:
        for path, layer in layers:
            layer.running_mean[...] = moments[path].mean.astype(layer.running_mean.dtype)
            layer.running_var[...] = moments[path].variance(layer.convention == "torch").astype(
                layer.running_var.dtype)
    return used


@contextlib.contextmanager
def recomputed_bn_stats(model, batches, max_batches: int | None = None):
    """Inside the block the BN layers hold recomputed statistics (yields the batch count);
    on exit, even after an error, the running averages they held before come back."""
    saved = [(layer, layer.running_mean.copy(), layer.running_var.copy()) for _, layer in batch_norm_layers(model)]
    try:
        yield recompute_bn_stats(model, batches, max_batches)
    finally:
        for layer, mean, var in saved:
            layer.running_mean[...], layer.running_var[...] = mean, var
