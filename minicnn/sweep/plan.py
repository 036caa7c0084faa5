"""A sweep's plan on disk: <out>/<kind>-<time>/sweep.json lists every trial with its full config.

The plan is written before any trial starts and never changes, so `--resume FOLDER` needs
nothing else: a trial whose run folder holds an outcome (`trial.json`, done or failed) is kept,
the others run again and continue from their last checkpoint. `token` is a random id: a worker
that finds the same token in <folder>/sweep.json sees the driver's folder (a shared
filesystem) and trains there; otherwise it trains in a local folder and its files are copied back.
"""
from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from minicnn.train.checkpoint import write_atomically
from minicnn.train.config import TrainConfig
from minicnn.train.errors import TrainError
from minicnn.train.runfolder import claim_folder

PLAN_FILE = "sweep.json"
OUTCOME_FILE = "trial.json"
FINAL = ("done", "failed")     # outcomes a continued sweep does not run again
KINDS = ("sweep", "reproduce")


@dataclass(frozen=True)
class Trial:
    name: str                   # its run folder's name inside the sweep folder
    config: TrainConfig
    overrides: dict = field(default_factory=dict)   # what the grid set (empty for reproduce rows)


@dataclass(frozen=True)
class Plan:
    folder: Path                # absolute: workers compare it with what they see
    kind: str                   # "sweep" | "reproduce" (which table is written)
    trials: list
    notes: dict                 # reproduce's table notes: epoch_scale, epochs, limit
    token: str

    def run_dir(self, trial: Trial) -> Path:
        return self.folder / trial.name


def unique_names(names: list[str]) -> list[str]:
    """names with -2, -3 ... added to repeats, so every trial has its own folder."""
    seen, unique = {}, []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return unique


def new_plan(out, kind: str, trials: list[Trial], notes: dict | None = None) -> Plan:
    """Create the sweep folder and write its plan (nothing has started yet)."""
    folder = claim_folder(Path(out).resolve(), f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}")
    plan = Plan(folder, kind, trials, notes or {}, secrets.token_hex(8))
    text = json.dumps({"kind": kind, "token": plan.token, "notes": plan.notes,
                       "trials": [{"name": t.name, "overrides": t.overrides, "config": t.config.to_dict()}
                                  for t in trials]}, indent=1)
    write_atomically(plan.folder / PLAN_FILE, lambda f: f.write(text.encode()))
    return plan


def load_plan(folder) -> Plan:
    """The plan of a sweep folder, or one line saying it is not one."""
    folder = Path(folder).resolve()
    try:
        values = json.loads((folder / PLAN_FILE).read_text())
        trials = [Trial(t["name"], TrainConfig.from_dict(t["config"]),
                        {k: tuple(v) if isinstance(v, list) else v for k, v in t["overrides"].items()})
                  for t in values["trials"]]
        kind, token, notes = values["kind"], values["token"], values["notes"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise TrainError(f"--resume {folder}: not a sweep folder ({PLAN_FILE} missing or unreadable: "
                         f"{type(error).__name__})") from None
    if kind not in KINDS:
        raise TrainError(f"--resume {folder}: unknown sweep kind {kind!r}")
    return Plan(folder, kind, trials, notes, token)


def read_outcome(run_dir: Path) -> dict:
    """{'status': 'done'|'failed'|'interrupted', 'reason': str|None, 'attempts': n}, or {} if none yet."""
    try:
        return json.loads((run_dir / OUTCOME_FILE).read_text())
    except (OSError, ValueError):
        return {}


def write_outcome(run_dir: Path, outcome: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(run_dir / OUTCOME_FILE, lambda f: f.write(json.dumps(outcome, indent=1).encode()))


def is_finished(plan: Plan, trial: Trial) -> bool:
    return read_outcome(plan.run_dir(trial)).get("status") in FINAL
