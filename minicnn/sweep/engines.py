"""Where trials run. Both engines take the trials left to run and call record(outcome) as each ends.

local: one after another in this process (no Ray import). ray: each trial a Ray task with the
resources asked for, see ray_engine.py. On Ctrl-C an engine stops its trials (each keeps its
last finished epoch), records the outcomes it gets back, and re-raises KeyboardInterrupt.
"""
from __future__ import annotations

from dataclasses import dataclass

from minicnn.sweep.trial import run_trial
from minicnn.train.errors import TrainError

ENGINES = ("local", "ray")


@dataclass
class EngineOptions:
    name: str = "local"                 # local | ray
    address: str | None = None          # a Ray cluster (host:port, ray://host:port or auto); None: local Ray
    gpus_per_run: float = 0.0           # Ray resources of each trial (fractions share a device)
    cpus_per_run: float = 1.0
    copy_back: bool = False             # train in each worker's temp folder, copy the run folder back at the end

    def flags(self) -> list[str]:
        """The command-line flags that ask for these options again (for the continue command)."""
        if self.name == "local":
            return []
        flags = ["--engine", self.name]
        if self.address:
            flags += ["--address", self.address]
        if self.gpus_per_run:
            flags += ["--gpus-per-run", f"{self.gpus_per_run:g}"]
        if self.cpus_per_run != 1:
            flags += ["--cpus-per-run", f"{self.cpus_per_run:g}"]
        if self.copy_back:
            flags.append("--copy-back")
        return flags


class LocalEngine:
    """Trials one after another in this process: a sweep without a cluster."""

    def __init__(self, data=None):
        self.data = data  # a loaded dataset to train on instead of each config's data folder (tests)

    def run(self, plan, trials, report, record) -> None:
        for trial in trials:
            outcome = run_trial(trial, plan.folder, plan.token, report, self.data)
            record(outcome)
            if outcome.status == "interrupted":
                raise KeyboardInterrupt

    def close(self) -> None:
        pass


def open_engine(options: EngineOptions):
    """The engine the options ask for, connected and checked; one-line errors, and nothing started."""
    if options.name not in ENGINES:
        raise TrainError(f"--engine must be one of {', '.join(ENGINES)}, got {options.name!r}")
    if options.gpus_per_run < 0 or options.cpus_per_run < 0:
        raise TrainError("--gpus-per-run and --cpus-per-run must be 0 or more")
    if options.name == "local":
        if options.address or options.gpus_per_run or options.cpus_per_run != 1 or options.copy_back:
            raise TrainError("--address, --gpus-per-run, --cpus-per-run and --copy-back need --engine ray")
        return LocalEngine()
    try:
        import ray  # noqa: F401 - only to say clearly that it is missing
    except ImportError:
        raise TrainError("--engine ray needs Ray, an optional extra: pip install 'minicnn[ray]'") from None
    from minicnn.sweep.ray_engine import RayEngine
    return RayEngine(options)
