"""A sweep's results, read back from its run folders: a markdown table and a CSV beside it.

Rows are built from what is on disk (result.json, last.json, trial.json), never from memory, so a
sweep finished in several sittings (`--resume`) gets the same table as one run straight through.
A reproduce plan gets reproduce's own table (reported vs measured); a sweep gets one column per
field it varies.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from minicnn.sweep.grid import value_text
from minicnn.sweep.plan import Plan, read_outcome
from minicnn.train.checkpoint import write_atomically
from minicnn.train.loop import TrainResult

COLUMNS = ("run", "arch", "status", "reason", "test_accuracy", "test_loss", "tested", "epoch_tested",
           "best_val_acc", "best_epoch", "epochs", "images_per_s", "seconds", "run_dir")


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def result_on_disk(run_dir: Path, config) -> TrainResult:
    """What a run folder says about its run; a run that never saved an epoch has an empty history."""
    last, test = _json(run_dir / "last.json"), _json(run_dir / "result.json")
    history = last.get("history", [])
    best_epoch = last.get("best", {}).get("epoch", 0)
    tested = test.get("tested", "last" if config.recipe.checkpoint == "every-epoch" else "best")
    return TrainResult(run_dir, config, history, best_epoch, test.get("test_accuracy"), test.get("test_loss"),
                       tested, test.get("epoch_tested", best_epoch), sum(row["seconds"] for row in history))


def _percent(value) -> str:
    return "-" if value is None else f"{value:.2%}"


def _csv_row(trial, outcome: dict, result: TrainResult) -> dict:
    history = result.history
    best = max(history, key=lambda row: row["val_acc"]) if history else {}
    speed = sum(row["images_per_s"] for row in history) / len(history) if history else None
    return {"run": trial.name, "arch": trial.config.arch, **trial.overrides,
            "status": outcome.get("status", "not run"), "reason": outcome.get("reason") or "",
            "test_accuracy": result.test_accuracy, "test_loss": result.test_loss, "tested": result.tested,
            "epoch_tested": result.epoch_tested, "best_val_acc": best.get("val_acc"), "best_epoch": best.get("epoch"),
            "epochs": len(history), "images_per_s": speed, "seconds": result.seconds, "run_dir": str(result.run_dir)}


def _sweep_row(row: dict, fields: list[str], recipe_epochs: int) -> str:
    if row["status"] == "done":
        measured = f"{_percent(row['test_accuracy'])} ({row['tested']}, epoch {row['epoch_tested']})"
    else:
        measured = f"{row['status']}: {row['reason']}" if row["reason"] else row["status"]
    best = "-" if row["best_val_acc"] is None else f"{row['best_val_acc']:.2%} (epoch {row['best_epoch']})"
    speed = "-" if row["images_per_s"] is None else f"{row['images_per_s']:.0f}"
    values = " | ".join(value_text(row[f]) for f in fields)
    return (f"| {row['run']} | {values} | {measured} | {best} | {row['epochs']} of {recipe_epochs} | "
            f"{speed} | {row['seconds']:.0f} |")


def _write_sweep_table(plan: Plan, rows: list[dict], fields: list[str], log) -> Path:
    header = " | ".join(fields)
    lines = ["# minicnn sweep", "", f"{len(rows)} trials of {', '.join(sorted({r['arch'] for r in rows}))}, "
             f"varying {', '.join(fields) or 'nothing'}. Test accuracy is that of the checkpoint the recipe "
             "keeps; runs are the folders beside this file.", "",
             f"| run | {header} | measured (test) | best validation | epochs | img/s | seconds |",
             "|---" * (len(fields) + 6) + "|",
             *[_sweep_row(row, fields, t.config.recipe.epochs) for row, t in zip(rows, plan.trials)], ""]
    text = "\n".join(lines)
    table = plan.folder / "sweep.md"
    write_atomically(table, lambda f: f.write(text.encode()))
    log(text)
    return table


def _write_csv(path: Path, rows: list[dict], extra: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, [COLUMNS[0], COLUMNS[1], *extra, *COLUMNS[2:]], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, lambda f: f.write(buffer.getvalue().encode()))


def write_results(plan: Plan, log) -> Path:
    """<folder>/<kind>.md and <kind>.csv from the trials' run folders; returns the markdown's path."""
    from minicnn.models import get_spec
    outcomes = [read_outcome(plan.run_dir(t)) for t in plan.trials]
    results = [result_on_disk(plan.run_dir(t), t.config) for t in plan.trials]
    rows = [_csv_row(t, o, r) for t, o, r in zip(plan.trials, outcomes, results)]
    if plan.kind == "reproduce":
        from minicnn.train.reproduce import table_row, write_table
        specs = [get_spec(t.config.arch) for t in plan.trials]
        for row, spec in zip(rows, specs):
            row.update(reported=spec.reported, reported_accuracy=spec.reported_accuracy)
        _write_csv(plan.folder / "reproduce.csv", rows, ["reported", "reported_accuracy"])
        lines = [table_row(spec, result, None if o.get("status") == "done" else o.get("reason") or "not run")
                 for spec, result, o in zip(specs, results, outcomes)]
        return write_table(plan.folder, lines, log=log, **plan.notes)
    fields = list(dict.fromkeys(f for t in plan.trials for f in t.overrides))
    _write_csv(plan.folder / "sweep.csv", rows, fields)
    return _write_sweep_table(plan, rows, fields, log)
