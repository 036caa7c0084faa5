"""Find a training run and load what the figures need from it: the model with a checkpoint's
weights, the class names and the input normalization the run trained with.

A run folder is what `minicnn train` writes (runs/<arch>-<time>/): config.json, metrics.csv and
checkpoints best.npz/.json, last.npz/.json, and epoch-NNN.npz snapshots where the recipe keeps them.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from minicnn.data import Normalizer
from minicnn.train.checkpoint import Checkpoint, find_checkpoint
from minicnn.train.evaluate import checkpoint_normalizer, load_model

RUNS = Path("runs")
EPOCH_FILE = re.compile(r"epoch-(\d+)\.npz$")


class VizError(ValueError):
    """Something the user asked to look at that is not there (a run, a layer, an image)."""


@dataclass
class LoadedRun:
    run_dir: Path
    checkpoint: Checkpoint
    arch: str
    model: object           # the zoo network in eval mode, on the chosen device
    classes: list[str]
    normalizer: Normalizer  # the training split's constants
    dataset: str            # cifar10 | cifar100
    data_dir: str | None    # where the run read its data (None: $MINICNN_DATA or the cache)

    @property
    def label(self) -> str:
        """e.g. 'vgg8_bn best (epoch 24)' for titles."""
        return f"{self.arch} {self.checkpoint.path.stem} (epoch {self.checkpoint.meta['epoch']})"


def latest_run(root=RUNS) -> Path:
    """The run folder under `root` whose newest checkpoint was written last; runs one level down
    count too (`minicnn reproduce` puts its runs in root/reproduce-<time>/)."""
    root = Path(root)
    folders = [folder for folder in root.iterdir() if folder.is_dir()] if root.is_dir() else []
    folders += [inner for folder in folders for inner in folder.iterdir() if inner.is_dir()]
    runs = [folder for folder in folders if _checkpoints(folder)]
    if not runs:
        raise VizError(f"no training run in {root}/ to look inside; train one first, e.g. "
                       f"`minicnn train --arch vgg8_bn` (or pass --run FOLDER)")
    return max(runs, key=lambda folder: max(path.stat().st_mtime for path in _checkpoints(folder)))


def _checkpoints(folder: Path) -> list[Path]:
    return [path for path in folder.glob("*.npz") if not path.name.startswith(".")]


def load_run(run=None, *, checkpoint: str = "best", device: str = "auto", runs_root=RUNS) -> LoadedRun:
    """run: a run folder or a checkpoint file (None: the latest run under runs_root).

    checkpoint: which one of the folder to read (best, else last; or e.g. epoch-005)."""
    path = Path(run) if run is not None else latest_run(runs_root)
    if run is not None and not path.exists():
        raise VizError(f"--run {path}: no such run folder or checkpoint")
    if path.is_dir() and checkpoint != "best" and not (path / f"{checkpoint}.npz").is_file():
        kept = ", ".join(sorted(p.stem for p in _checkpoints(path))) or "none"
        raise VizError(f"--checkpoint {checkpoint}: {path} has no {checkpoint}.npz (it has: {kept})")
    npz = find_checkpoint(path, checkpoint)  # best, else last
    loaded, config, model = load_model(npz, device)
    return LoadedRun(npz.parent, loaded, config.arch, model, list(loaded.meta["classes"]),
                     checkpoint_normalizer(loaded), config.recipe.dataset, config.data)


def improvement_checkpoints(run_dir) -> tuple[list[Path], str]:
    """The checkpoints of a run to follow training by, and a sentence saying which they are.

    Recipes with the checkpoint rule 'improvements' (report C) keep an epoch-NNN snapshot each
    time validation accuracy improved, and 'every-epoch' (report D) one per epoch; the
    improvement epochs are the ones report C plotted. Without snapshots only best and last
    exist, and those are what the figure can show."""
    run_dir = Path(run_dir)
    epochs = {int(EPOCH_FILE.search(p.name).group(1)): p for p in run_dir.glob("epoch-*.npz")}
    if epochs:
        improved = [epoch for epoch in _improvement_epochs(run_dir) if epoch in epochs]
        if improved:
            return [epochs[e] for e in improved], f"the {len(improved)} epochs where validation accuracy improved"
        return [epochs[e] for e in sorted(epochs)], f"all {len(epochs)} per-epoch checkpoints"
    found = [run_dir / f"{name}.npz" for name in ("best", "last") if (run_dir / f"{name}.npz").is_file()]
    if not found:
        raise VizError(f"{run_dir}: no checkpoints in this folder")
    return found, ("this run kept no per-epoch checkpoints (its recipe keeps best and last only), so "
                   "those are shown; a run that saves epoch-NNN checkpoints gets one panel per improvement")


def _improvement_epochs(run_dir: Path) -> list[int]:
    """Epochs whose validation accuracy beat every earlier one, from the history in last.json."""
    try:
        history = json.loads((run_dir / "last.json").read_text())["history"]
    except (OSError, ValueError, KeyError):
        return []
    epochs, best = [], None
    for row in history:
        if best is None or row["val_acc"] > best:
            epochs.append(int(row["epoch"]))
            best = row["val_acc"]
    return epochs
