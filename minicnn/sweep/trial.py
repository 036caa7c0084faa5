"""One trial, as a worker runs it: an ordinary training run that continues what is on disk.

`run_trial` is the same code in the driver (engine local) and in a Ray worker (engine ray).
It trains in <sweep folder>/<trial> when the worker sees that folder (shared filesystem), else in
a local scratch folder whose files go back to the driver with the outcome. A run folder holding
last.npz continues from it (the loop's bit-exact resume), which is what makes a retry after a
killed worker lose at most the epoch in progress. Any error of the trial itself (divergence, a
bad setting, a bug) becomes a 'failed' outcome with a one-line reason: the sweep goes on.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from minicnn.sweep.plan import PLAN_FILE, Trial
from minicnn.train.checkpoint import load_checkpoint
from minicnn.train.loop import Trainer

LOG_FILE = "train.log"      # what the trainer would print, one file per trial


@dataclass
class Outcome:
    name: str
    status: str                         # done | failed | interrupted
    reason: str | None = None           # one line, when failed
    files: dict | None = None           # copy-back mode: the run folder's files, name -> bytes


def one_line(error: BaseException) -> str:
    """A failure as one line: user errors (ValueError) by their message, others with their type."""
    first = (str(error).splitlines() or [""])[0]
    text = first if isinstance(error, ValueError) and first else f"{type(error).__name__}: {first}".rstrip(": ")
    return text.replace("|", "/")  # the reason goes into a markdown table cell


class ReportingTrainer(Trainer):
    """A Trainer that tells the sweep's progress view about every finished epoch."""

    def __init__(self, name: str, report, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.name, self.report = name, report

    def run_epoch(self, epoch: int) -> None:
        super().run_epoch(epoch)
        row = self.history[-1]
        self.report(self.name, {"epoch": epoch, "epochs": self.config.recipe.epochs, "val_acc": row["val_acc"],
                                "images_per_s": row["images_per_s"]})


def sees_driver_folder(folder: Path, token: str) -> bool:
    try:
        return json.loads((folder / PLAN_FILE).read_text()).get("token") == token
    except (OSError, ValueError):
        return False


def scratch_dir(token: str, name: str) -> Path:
    return Path(tempfile.gettempdir()) / "minicnn-sweeps" / token / name


def _file_log(run_dir: Path):
    def log(message: str) -> None:
        with open(run_dir / LOG_FILE, "a") as file:
            file.write(message + "\n")
    return log


def _train(trial: Trial, run_dir: Path, report, data) -> str:
    """Train or continue the trial in run_dir -> 'done' | 'interrupted'."""
    from minicnn.models import get_spec
    if (run_dir / "result.json").is_file():  # finished before a kill or a Ctrl-C reached the driver
        return "done"
    run_dir.mkdir(parents=True, exist_ok=True)
    log = _file_log(run_dir)
    trainer = ReportingTrainer(trial.name, report, trial.config, get_spec(trial.config.arch), run_dir, data,
                               progress=False, log=log)
    if (run_dir / "last.npz").is_file():
        trainer.load(load_checkpoint(run_dir / "last.npz"))
        log(f"resuming {run_dir} after epoch {trainer.epoch}")
    report(trial.name, {"state": "started", "epoch": trainer.epoch, "epochs": trial.config.recipe.epochs,
                        "pid": os.getpid(), "host": socket.gethostname()})
    return "interrupted" if trainer.run().interrupted else "done"


def run_trial(trial: Trial, folder: Path, token: str, report=lambda name, event: None, data=None,
              copy_back=False) -> Outcome:
    """Run `trial` of the sweep in `folder` to its end; report(name, event) gets progress events.

    copy_back: train in a local scratch folder even if `folder` is visible (a slow network disk).
    """
    shared = not copy_back and sees_driver_folder(folder, token)
    run_dir = folder / trial.name if shared else scratch_dir(token, trial.name)
    try:
        outcome = Outcome(trial.name, _train(trial, run_dir, report, data))
    except KeyboardInterrupt:  # before or after the trainer's own Ctrl-C handling (data loading)
        outcome = Outcome(trial.name, "interrupted")
    except Exception as error:  # noqa: BLE001 - the trial's own failure is a row of the table, not a crash
        outcome = Outcome(trial.name, "failed", one_line(error))
    if not shared:
        outcome.files = {p.name: p.read_bytes() for p in sorted(run_dir.glob("*"))
                         if p.is_file() and not p.name.startswith(".")}
        if outcome.status != "interrupted":  # an interrupted trial continues from here on this node
            shutil.rmtree(run_dir, ignore_errors=True)
    return outcome
