"""`--bn-stats running|recompute`: which batch-norm statistics validation, evaluate, predict and
visualize use.

  running    the running averages the checkpoint holds: what Keras and PyTorch evaluate with and
             what the reports' figures measure (the default).
  recompute  the exact mean and variance of every BN input for the current weights, measured over
             `--bn-batches` unaugmented training batches (minicnn.nn.bn_stats); it removes the lag
             of the running averages behind weights that still move fast.

Checkpoints always hold the running averages, since an exact resume needs them, and their
metadata says so ("bn_stats": "running"); recomputed statistics are measured again on load.
"""
from __future__ import annotations

from minicnn.data import BatchLoader, prepare_data
from minicnn.nn.bn_stats import recompute_bn_stats
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
