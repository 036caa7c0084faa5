"""Sweeps and whole reports on one machine or a Ray cluster: every trial an ordinary training run.

    minicnn sweep --arch vgg8_bn --set batch=32,50 --set lr=1e-3,3e-4 --engine ray --gpus-per-run 1
    minicnn reproduce --report A --engine ray --address 10.0.0.5:6379
    minicnn sweep --resume runs/sweep-<time>       # after Ctrl-C: only the unfinished trials run

grid.py reads --set, plan.py keeps the plan on disk, trial.py is what a worker runs, engines.py
and ray_engine.py place the trials, board.py shows progress, tables.py writes the results.
The names below are imported on first use, so the CLI's start does not load the training code.
"""
import importlib

_HOMES = {"launch": "driver", "reproduce_trials": "driver", "run_plan": "driver", "sweep_trials": "driver",
          "EngineOptions": "engines", "LocalEngine": "engines", "open_engine": "engines", "parse_grid": "grid",
          "Plan": "plan", "Trial": "plan", "load_plan": "plan", "new_plan": "plan"}
__all__ = sorted(_HOMES)


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError(f"module 'minicnn.sweep' has no attribute {name!r}")
    return getattr(importlib.import_module(f"minicnn.sweep.{_HOMES[name]}"), name)
