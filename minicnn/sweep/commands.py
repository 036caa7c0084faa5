"""`minicnn sweep`, and the engine flags that `minicnn reproduce` shares with it: thin over minicnn.sweep."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from minicnn.sweep import flags
from minicnn.train.commands import DATA_HELP, DEVICE_HELP, PROGRESS_HELP


def sweep_command(
    arch: Optional[str] = typer.Option(None, help="Network name or report id (see `minicnn models`)."),
    set_: List[str] = typer.Option([], "--set", help="FIELD=v1,v2: a recipe field's values (repeat for a grid; "
                                   "batch, lr, epochs, optimizer, seed ...; tuples as 0.9:0.999)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs of every trial (default: the recipe's)."),
    batch: Optional[int] = typer.Option(None, help="Batch size of every trial (default: the recipe's)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate of every trial (default: the recipe's)."),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP + " [default: auto]"),
    data: Optional[Path] = typer.Option(None, help=DATA_HELP),
    out: Path = typer.Option(Path("runs"), help="Where the sweep folder (sweep-<time>/) goes; shared by the "
                             "cluster, or trials' files are copied back here."),
    seed: Optional[int] = typer.Option(None, help="Seed of every trial [default: 0]."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N images of each split (quick runs)."),
    workers: Optional[int] = typer.Option(None, help="Batches prepared ahead in a background thread [default: 0]."),
    progress: bool = typer.Option(True, help=PROGRESS_HELP),
    engine: str = flags.ENGINE, address: Optional[str] = flags.ADDRESS, gpus_per_run: float = flags.GPUS_PER_RUN,
    cpus_per_run: float = flags.CPUS_PER_RUN, copy_back: bool = flags.COPY_BACK,
    resume: Optional[Path] = flags.RESUME,
):
    """Train a network over a grid of recipe values, one ordinary run per trial; write sweep.md and sweep.csv.

    Ctrl-C stops the trials (each keeps its last finished epoch) and prints the command that continues.
    """
    from minicnn.sweep.driver import launch, sweep_trials
    from minicnn.sweep.grid import parse_grid
    from minicnn.train.errors import TrainError

    options = flags.engine_options(engine, address, gpus_per_run, cpus_per_run, copy_back)
    fixed = {"epochs": epochs, "batch_size": batch, "lr": lr, "device": device, "seed": seed, "limit": limit,
             "workers": workers, "data": str(data) if data is not None else None}
    if resume is not None:
        flags.refuse_with_resume({"--arch": arch, "--set": set_, **{f"--{k}": v for k, v in fixed.items()}})
        return flags.continue_plan(resume, options, progress)
    if arch is None:
        raise TrainError("--arch NAME is required (or --resume SWEEP_DIR); `minicnn models` lists the names")
    from minicnn.models import get_spec
    spec = get_spec(arch)
    grid = parse_grid(set_)
    both = [field for field in grid[0] if fixed.get(field) is not None]
    if both:
        raise TrainError(f"{', '.join(both)} is both fixed by a flag and swept by --set; keep one")
    trials = sweep_trials(spec, grid, **{k: v for k, v in fixed.items() if v is not None})
    flags.finish(launch(options, kind="sweep", trials=trials, out=out, progress=progress))


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_command)
