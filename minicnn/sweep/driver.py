"""The driver: turn a grid or a report into trials, run them on an engine, write the tables.

    from minicnn.models import get_spec
    from minicnn.sweep import EngineOptions, launch, parse_grid, sweep_trials
    trials = sweep_trials(get_spec("vgg8_bn"), parse_grid(["batch=32,50", "lr=1e-3,3e-4"]), epochs=3)
    table = launch(EngineOptions("ray", gpus_per_run=1), kind="sweep", trials=trials, out="runs")

Every config is built (and so checked) before the engine connects, and the engine is checked
before the sweep folder is made: a bad flag starts nothing.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from tqdm import tqdm

from minicnn.sweep.board import Board
from minicnn.sweep.engines import EngineOptions, open_engine
from minicnn.sweep.grid import trial_name
from minicnn.sweep.plan import FINAL, Plan, Trial, is_finished, new_plan, unique_names, write_outcome
from minicnn.train.checkpoint import write_atomically
from minicnn.train.config import TrainConfig
from minicnn.train.reproduce import shortened


def sweep_trials(spec, grid: list[dict], **fixed) -> list[Trial]:
    """One trial per grid point: the spec's recipe with `fixed` (train's flags) and the point's values."""
    configs = [TrainConfig.from_spec(spec, **{**fixed, **point}) for point in grid]
    names = unique_names([trial_name(spec.name, point) for point in grid])
    return [Trial(name, config, point) for name, config, point in zip(names, configs, grid)]


def reproduce_trials(specs, *, epoch_scale=None, epochs=None, **run) -> list[Trial]:
    """One trial per network, each with its own recipe, shortened as reproduce shortens it."""
    configs = [TrainConfig.from_spec(spec, **run, **shortened(spec.recipe, epoch_scale, epochs)) for spec in specs]
    return [Trial(name, config) for name, config in zip(unique_names([s.name for s in specs]), configs)]


def _recorder(plan: Plan, board: Board):
    def record(outcome) -> None:
        run_dir = plan.folder / outcome.name
        for name, content in (outcome.files or {}).items():  # copy-back mode: the worker's run folder
            run_dir.mkdir(parents=True, exist_ok=True)
            write_atomically(run_dir / name, lambda f, content=content: f.write(content))
        if outcome.status in FINAL:
            write_outcome(run_dir, {"status": outcome.status, "reason": outcome.reason,
                                    "attempts": board.attempts.get(outcome.name, 0)})
        board.finish(outcome.name, outcome.status, outcome.reason)
    return record


def run_plan(plan: Plan, engine, *, progress=True, log=tqdm.write, command="minicnn sweep") -> Path | None:
    """Run the plan's unfinished trials; the table's path, or None after Ctrl-C (having said how to continue)."""
    from minicnn.sweep.tables import write_results
    todo = [trial for trial in plan.trials if not is_finished(plan, trial)]
    if len(todo) < len(plan.trials):
        log(f"{plan.folder}: {len(plan.trials) - len(todo)} of {len(plan.trials)} trials already finished")
    if todo:
        board = Board(todo, progress, log)
        try:
            engine.run(plan, todo, board.update, _recorder(plan, board))
        except KeyboardInterrupt:
            board.close()
            left = sum(not is_finished(plan, trial) for trial in plan.trials)
            log(f"interrupted: {left} of {len(plan.trials)} trials unfinished, each keeps its last finished "
                f"epoch; continue with `{command} --resume {shlex.quote(str(plan.folder))}`")
            return None
        board.close()
    return write_results(plan, log)


def launch(options: EngineOptions, *, plan: Plan | None = None, kind="sweep", trials=None, out="runs",
           notes=None, progress=True, log=tqdm.write) -> Path | None:
    """Run a new plan (kind, trials, notes under `out`) or continue `plan`, on the engine of `options`."""
    engine = open_engine(options)
    try:
        plan = plan or new_plan(out, kind, trials, notes)
        command = shlex.join(["minicnn", plan.kind, *options.flags()] + ([] if progress else ["--no-progress"]))
        return run_plan(plan, engine, progress=progress, log=log, command=command)
    finally:
        engine.close()
