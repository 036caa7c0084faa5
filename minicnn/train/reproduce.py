"""Train several documented networks in turn and put measured beside reported accuracy.

`epoch_scale` (or `epochs`) shortens every recipe for a quick look; the learning-rate milestones
shrink in proportion, so a step schedule still steps. The table says when it was shortened:
such numbers are a preview, not a reproduction.
"""
from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from minicnn.train.checkpoint import write_atomically
from minicnn.train.config import TrainConfig
from minicnn.train.errors import TrainError
from minicnn.train.loop import train
from minicnn.train.runfolder import claim_folder


def shortened(recipe, epoch_scale=None, epochs=None) -> dict:
    """Recipe overrides for fewer epochs: {'epochs': n, 'lr_milestones': scaled} (empty if neither given)."""
    if epoch_scale is None and epochs is None:
        return {}
    if epochs is None:
        if epoch_scale <= 0:
            raise TrainError(f"--epoch-scale must be positive, got {epoch_scale}")
        epochs = max(1, round(recipe.epochs * epoch_scale))
    factor = epochs / recipe.epochs
    milestones = tuple(sorted({max(1, round(m * factor)) for m in recipe.lr_milestones}))
    return {"epochs": epochs, "lr_milestones": milestones}


def _percent(value) -> str:
    return "-" if value is None else f"{value:.2%}"


def reproduce(specs, *, out="runs", epoch_scale=None, epochs=None, seed=0, device="auto", data_dir=None,
              limit=None, workers=0, progress=True, log=tqdm.write, data=None) -> Path:
    """Train each spec with its recipe (shortened if asked) and write out/reproduce-<time>.md."""
    if not specs:
        raise TrainError("nothing to reproduce: no networks selected")
    configs = [TrainConfig.from_spec(spec, seed=seed, device=device, data=data_dir, limit=limit, workers=workers,
                                     **shortened(spec.recipe, epoch_scale, epochs)) for spec in specs]
    out = claim_folder(out, f"reproduce-{time.strftime('%Y%m%d-%H%M%S')}")
    rows = []
    for spec, config in zip(specs, configs):
        try:
            result = train(config, out=out, spec=spec, data=data, progress=progress, log=log)
        finally:
            if not rows and not any(out.iterdir()):  # the first run failed before writing anything
                out.rmdir()
        if result.interrupted:
            raise KeyboardInterrupt
        rows.append(table_row(spec, result))
    return write_table(out, rows, epoch_scale=epoch_scale, epochs=epochs, limit=limit, log=log)


def table_row(spec, result, failure=None) -> str:
    """The table's row of one run; `failure` (one line) stands in the measured cell of a run that failed."""
    measured = (f"failed: {failure}" if failure else
                f"{_percent(result.test_accuracy)} ({result.tested}, epoch {result.epoch_tested})")
    return (f"| {spec.name} | {', '.join(spec.aliases) or spec.report} | {spec.reported} | {measured} | "
            f"{len(result.history)} of {spec.recipe.epochs} | {result.seconds:.0f} | {result.run_dir.name} |")


def write_table(out: Path, rows, *, epoch_scale=None, epochs=None, limit=None, log=tqdm.write) -> Path:
    """out/reproduce.md: the notes on what was shortened, then the rows."""
    notes = []
    if epoch_scale is not None or epochs is not None:
        how = f"scaled by {epoch_scale}" if epochs is None else f"set to {epochs}"
        notes.append(f"Epochs {how} for a quick look: the measured column is a preview, not a reproduction.")
    if limit:
        notes.append(f"Only the first {limit} images of each split were used (--limit).")
    notes.append("Measured = test accuracy of the checkpoint the recipe keeps. Recipes that validate on the "
                 "test set (reports A, C, D) pick their best epoch by test accuracy, as the reports did.")
    text = "\n".join(["# minicnn: measured against the reports", "", *notes, "",
                      "| network | id in the report | reported | measured (test) | epochs | seconds | run |",
                      "|---|---|---|---|---|---|---|", *rows, ""])
    out.mkdir(parents=True, exist_ok=True)
    table = out / "reproduce.md"
    write_atomically(table, lambda f: f.write(text.encode()))
    log(text)
    return table
