"""`minicnn data ...`: fetch and inspect datasets (thin over minicnn.data)."""
from pathlib import Path

import numpy as np
import typer

from .cifar import SPECS, data_root, load_cifar
from .download import download as download_dataset
from .errors import DataError

data_app = typer.Typer(help="Get and inspect the datasets.", no_args_is_help=True)

ROOT_HELP = "Data folder (default: $MINICNN_DATA, else ~/.cache/minicnn)."


def _fail(error: DataError):
    typer.echo(f"minicnn: error: {error}", err=True)
    raise typer.Exit(1)


@data_app.command()
def download(name: str = typer.Argument(..., help=f"One of: {', '.join(SPECS)}."),
             root: Path = typer.Option(None, "--root", "--data", help=ROOT_HELP),
             url: str = typer.Option(None, hidden=True, help="Fetch from here instead (tests)."),
             md5: str = typer.Option(None, hidden=True, help="Expected MD5 of that archive (tests)."),
             quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar.")):
    """Download the official archive, verify its MD5 and unpack it (resumes an interrupted download)."""
    try:
        folder = download_dataset(name, root, url=url, md5=md5, progress=not quiet)
    except DataError as e:
        _fail(e)
    typer.echo(f"{SPECS[name].title} ready in {folder}")


@data_app.command()
def info(name: str = typer.Argument("cifar10", help=f"One of: {', '.join(SPECS)}."),
         root: Path = typer.Option(None, "--data", "--root", help=ROOT_HELP)):
    """Say where a dataset is found and what it holds."""
    try:
        data = load_cifar(name, root)
    except DataError as e:
        _fail(e)
    per_class = np.bincount(data.train_y, minlength=len(data.classes))
    typer.echo(f"{SPECS[name].title} from {data.source} (data folder {data_root(root)})")
    typer.echo(f"train {len(data.train_y):,} images, test {len(data.test_y):,}, "
               f"{len(data.classes)} classes, {per_class.min():,}..{per_class.max():,} training images per class")
    typer.echo("classes: " + ", ".join(data.classes))
