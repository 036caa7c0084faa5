"""The flags `minicnn sweep` and `minicnn reproduce` share (engine, cluster, resources, --resume),
and the steps both commands end with. Imports nothing heavy: the CLI loads it at start."""
from __future__ import annotations

import typer

ENGINE = typer.Option("local", help="local: trials one after another here (no Ray); ray: each trial a Ray task.")
ADDRESS = typer.Option(None, help="Ray cluster to use (host:port, ray://host:port or auto; default: a local Ray).")
GPUS_PER_RUN = typer.Option(0.0, help="GPUs each trial asks Ray for (0.5: two trials share one).")
CPUS_PER_RUN = typer.Option(1.0, help="CPUs each trial asks Ray for.")
COPY_BACK = typer.Option(False, "--copy-back", help="Train in each worker's temp folder and copy the run "
                         "folder back when the trial ends (automatic when a worker cannot see --out).")
RESUME = typer.Option(None, help="Continue this sweep folder: only its unfinished trials run.")


def engine_options(engine: str, address, gpus_per_run: float, cpus_per_run: float, copy_back: bool):
    from minicnn.sweep.engines import EngineOptions
    return EngineOptions(engine, address, gpus_per_run, cpus_per_run, copy_back)


def is_default(options) -> bool:
    """True for plain --engine local: reproduce then runs exactly as it always did."""
    from minicnn.sweep.engines import EngineOptions
    return options == EngineOptions()


def refuse_with_resume(given: dict) -> None:
    """--resume takes the plan's own settings: name the given flags that it would ignore."""
    from minicnn.train.errors import TrainError
    flags = [flag for flag, value in given.items() if value is not None and value != []]
    if flags:
        raise TrainError(f"--resume continues a sweep with its own settings; {', '.join(flags)} cannot change")


def finish(table) -> None:
    """The command's end: the table's path, or exit 130 after Ctrl-C (the continue command was printed)."""
    if table is None:
        raise typer.Exit(130)
    typer.echo(f"table: {table}")


def continue_plan(folder, options, progress: bool) -> None:
    from minicnn.sweep.driver import launch
    from minicnn.sweep.plan import load_plan
    finish(launch(options, plan=load_plan(folder), progress=progress))


def reproduce_on(options, specs, *, out, epoch_scale, epochs, limit, progress, **run) -> None:
    """reproduce's rows as trials of a sweep on the engine of `options`."""
    from minicnn.sweep.driver import launch, reproduce_trials
    trials = reproduce_trials(specs, epoch_scale=epoch_scale, epochs=epochs, limit=limit, **run)
    finish(launch(options, kind="reproduce", trials=trials, out=out, progress=progress,
                  notes={"epoch_scale": epoch_scale, "epochs": epochs, "limit": limit}))
