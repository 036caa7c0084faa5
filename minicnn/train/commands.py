"""`minicnn train | evaluate | predict | reproduce`: thin over minicnn.train.

Errors a user can cause are TrainError / DataError / DeviceError (ValueErrors): `minicnn` prints
them as one line and exits 1.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from minicnn.sweep import flags as sweep_flags

DEVICE_HELP = "auto (GPU if usable), cpu, cuda or emu."
DATA_HELP = "Data folder (default: $MINICNN_DATA, else ~/.cache/minicnn; get it with `minicnn data download cifar10`)."
PROGRESS_HELP = "Show progress bars (drawn only when stderr is a terminal)."
BN_STATS_HELP = ("BN statistics to evaluate with: running (the running averages) or recompute (measured "
                 "for the current weights over --bn-batches training batches)")
BN_BATCHES_HELP = "Training batches --bn-stats recompute measures"
PRECISION_HELP = ("Multiply of the CUDA convolutions and GEMMs: fp32 (exact), tf32 or bf16 (tensor cores, "
                  "FP32 sums and weights); auto is tf32 on CUDA, fp32 on emu and cpu.")


def train_command(
    arch: Optional[str] = typer.Option(None, help="Network name or report id (see `minicnn models`)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (default: the recipe's)."),
    batch: Optional[int] = typer.Option(None, help="Batch size (default: the recipe's)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (default: the recipe's)."),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP + "  [default: auto]"),
    precision: Optional[str] = typer.Option(None, help=PRECISION_HELP + "  [default: auto]"),
    data: Optional[Path] = typer.Option(None, help=DATA_HELP),
    out: Path = typer.Option(Path("runs"), help="Folder for run folders (<arch>-<time>/)."),
    seed: Optional[int] = typer.Option(None, help="Seed of init, dropout, shuffling, augmentation.  [default: 0]"),
    limit: Optional[int] = typer.Option(None, help="Use only the first N images of each split (quick runs)."),
    resume: Optional[Path] = typer.Option(None, help="Continue this run folder from its last checkpoint."),
    workers: Optional[int] = typer.Option(None, help="Batches prepared ahead in a background thread.  [default: 0]"),
    progress: bool = typer.Option(True, help=PROGRESS_HELP),
    bn_stats: Optional[str] = typer.Option(None, help=BN_STATS_HELP + " for validation and test.  [default: running]"),
    bn_batches: Optional[int] = typer.Option(None, help=BN_BATCHES_HELP + ".  [default: 100]"),
    graphs: Optional[bool] = typer.Option(None, "--graphs/--no-graphs",
                                          help="Replay each training step as one CUDA graph.  [default: on with CUDA]"),
):
    """Train a documented network with its report's recipe; flags override the recipe.

    Writes config.json, metrics.csv, curves.png, last.npz/.json, best.npz/.json into the run
    folder. Ctrl-C keeps the last finished epoch; `--resume RUN_DIR` continues exactly.
    """
    from minicnn.train.config import TrainConfig
    from minicnn.train.errors import TrainError
    from minicnn.train.loop import resume as resume_run, train

    data_dir = str(data) if data is not None else None
    if resume is not None:
        fixed = {"--arch": arch, "--batch": batch, "--lr": lr, "--seed": seed, "--limit": limit,
                 "--precision": precision}
        given = [flag for flag, value in fixed.items() if value is not None]
        if given:
            raise TrainError(f"--resume continues a run with its own settings; {', '.join(given)} cannot change "
                             f"(only --epochs, --device, --data, --workers, --bn-stats, --bn-batches and --graphs can)")
        result = resume_run(resume, epochs=epochs, device=device, data_dir=data_dir, workers=workers,
                            progress=progress, bn_stats=bn_stats, bn_batches=bn_batches, graphs=graphs)
    else:
        if arch is None:
            raise TrainError("--arch NAME is required (or --resume RUN_DIR); `minicnn models` lists the names")
        from minicnn.models import get_spec
        spec = get_spec(arch)
        config = TrainConfig.from_spec(spec, epochs=epochs, batch_size=batch, lr=lr, device=device or "auto",
                                       precision=precision, data=data_dir, seed=seed, limit=limit, workers=workers,
                                       bn_stats=bn_stats, bn_batches=bn_batches, graphs=graphs)
        result = train(config, out=out, spec=spec, progress=progress)
    if result.interrupted:
        raise typer.Exit(130)


def evaluate_command(
    run: Path = typer.Argument(..., help="A run folder (uses best.npz, else last.npz) or a checkpoint .npz."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    precision: Optional[str] = typer.Option(None, help=PRECISION_HELP + " [default: tf32 on CUDA, else fp32]"),
    data: Optional[Path] = typer.Option(None, help=DATA_HELP),
    limit: Optional[int] = typer.Option(None, help="Use only the first N test images."),
    bn_stats: Optional[str] = typer.Option(None, help=BN_STATS_HELP + ".  [default: the run's, else running]"),
    bn_batches: Optional[int] = typer.Option(None, help=BN_BATCHES_HELP + ".  [default: the run's]"),
):
    """Test accuracy, per-class accuracy and a confusion-matrix PNG for a checkpoint."""
    from minicnn.train.evaluate import evaluate_checkpoint
    from minicnn.train.finite import format_loss

    report = evaluate_checkpoint(run, device=device, data_dir=str(data) if data else None, limit=limit,
                                 bn_stats=bn_stats, bn_batches=bn_batches, precision=precision)
    evaluation = report.evaluation
    typer.echo(f"{report.arch}, {report.checkpoint} (epoch {report.epoch}): test accuracy "
               f"{evaluation.accuracy:.2%}, loss {format_loss(evaluation.loss)} on {len(evaluation.labels):,} images "
               f"({report.bn_note})")
    width = max(len(name) for name in report.classes)
    for name, accuracy, count in zip(report.classes, report.per_class, report.confusion.sum(axis=1)):
        typer.echo(f"  {name:<{width}}  {accuracy:7.2%}  ({count} images)")
    typer.echo(f"confusion matrix: {report.confusion_png}")


def predict_command(
    checkpoint: Path = typer.Argument(..., help="A checkpoint .npz or a run folder."),
    image: Path = typer.Argument(..., help="An image file (PNG, JPEG, ...); resized to 32x32 RGB."),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
    top: int = typer.Option(3, help="How many classes to list."),
    bn_stats: Optional[str] = typer.Option(None, help=BN_STATS_HELP + ".  [default: the run's, else running]"),
    bn_batches: Optional[int] = typer.Option(None, help=BN_BATCHES_HELP + ".  [default: the run's]"),
):
    """The most likely classes of one image."""
    from minicnn.train.evaluate import predict_image

    ranked = predict_image(checkpoint, image, device=device, top=top, bn_stats=bn_stats, bn_batches=bn_batches)
    for rank, (name, probability) in enumerate(ranked, 1):
        typer.echo(f"{rank}. {name:<16} {probability:7.2%}")


def reproduce_command(
    report: Optional[str] = typer.Option(None, help="Train every network of this report (A, B, C, D, E)."),
    arch: Optional[str] = typer.Option(None, help="Comma-separated network names or ids instead."),
    epoch_scale: Optional[float] = typer.Option(None, help="Multiply every recipe's epochs (0.1: a quick look)."),
    epochs: Optional[int] = typer.Option(None, help="Train every network this many epochs instead."),
    out: Path = typer.Option(Path("runs"), help="Where the runs and reproduce.md go."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    data: Optional[Path] = typer.Option(None, help=DATA_HELP),
    seed: int = typer.Option(0, help="Seed of every run."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N images of each split."),
    workers: int = typer.Option(0, help="Batches prepared ahead in a background thread."),
    progress: bool = typer.Option(True, help=PROGRESS_HELP),
    engine: str = sweep_flags.ENGINE, address: Optional[str] = sweep_flags.ADDRESS,
    gpus_per_run: float = sweep_flags.GPUS_PER_RUN, cpus_per_run: float = sweep_flags.CPUS_PER_RUN,
    copy_back: bool = sweep_flags.COPY_BACK, resume: Optional[Path] = sweep_flags.RESUME,
):
    """Train several documented networks (in turn, or at once on Ray); write a table of reported vs measured."""
    from minicnn.models import all_specs, get_spec
    from minicnn.train.errors import TrainError
    from minicnn.train.reproduce import reproduce

    options = sweep_flags.engine_options(engine, address, gpus_per_run, cpus_per_run, copy_back)
    if resume is not None:
        sweep_flags.refuse_with_resume({"--report": report, "--arch": arch, "--epoch-scale": epoch_scale,
                                        "--epochs": epochs, "--limit": limit})
        return sweep_flags.continue_plan(resume, options, progress)
    if (report is None) == (arch is None):
        raise TrainError("give exactly one of --report LETTER or --arch a,b,c")
    if report is not None:
        specs = [s for s in all_specs() if s.report.upper() == report.upper()]
        if not specs:
            reports = sorted({s.report for s in all_specs()})
            raise TrainError(f"no networks for report {report!r}; reports are: {', '.join(reports)}")
    else:
        specs = [get_spec(name.strip()) for name in arch.split(",") if name.strip()]
    if not sweep_flags.is_default(options):  # Ray, or flags only Ray takes (a one-line error)
        return sweep_flags.reproduce_on(options, specs, out=out, epoch_scale=epoch_scale, epochs=epochs, seed=seed,
                                        device=device, data=str(data) if data else None, limit=limit,
                                        workers=workers, progress=progress)
    table = reproduce(specs, out=out, epoch_scale=epoch_scale, epochs=epochs, seed=seed, device=device,
                      data_dir=str(data) if data else None, limit=limit, workers=workers, progress=progress)
    typer.echo(f"table: {table}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("evaluate")(evaluate_command)
    app.command("predict")(predict_command)
    app.command("reproduce")(reproduce_command)
