"""The `minicnn` command: a thin layer over the Python API.

    minicnn info                       versions, devices, and what --device auto picks
    minicnn gradcheck [--op conv2d]    every backward pass against finite differences

Errors a user can cause (a bad flag value, no GPU for --device cuda, missing data) print one
line and exit 1; they never show a traceback.
"""
from __future__ import annotations

import platform
import shutil
import sys
from typing import Optional


def _interrupted_quietly(kind, value, traceback, previous=sys.excepthook):
    """Ctrl-C while the commands are still being imported (before main() can catch it) ends like
    Ctrl-C anywhere else: one line, and Python then exits by SIGINT (status 130 in a shell).
    Only `import minicnn` itself (NumPy, ~0.2 s) runs before this hook is in place."""
    if issubclass(kind, KeyboardInterrupt):
        print("minicnn: interrupted", file=sys.stderr)
    else:
        previous(kind, value, traceback)


sys.excepthook = _interrupted_quietly

import numpy as np  # noqa: E402 - after the hook: typer's import and the commands' below are covered
import typer  # noqa: E402

from minicnn.backends import DEVICE_NAMES, cuda_status, get_device

app = typer.Typer(help="minicnn: train, check and look inside small CNNs.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)


def fail(message: str) -> None:
    """Print one error line and exit 1."""
    typer.echo(f"minicnn: error: {message}", err=True)
    raise typer.Exit(1)


def _mount_feature_commands():
    """Commands that live beside their feature: each package's `commands.register(app)` adds
    its own (`minicnn data ...`, `minicnn train`, `minicnn visualize` ...)."""
    import importlib
    from minicnn.data.cli import data_app
    app.add_typer(data_app, name="data", help="Download and inspect CIFAR-10/100.")
    for package in ("minicnn.models", "minicnn.train", "minicnn.viz", "minicnn.sweep", "minicnn.profile"):
        importlib.import_module(f"{package}.commands").register(app)


def _print_version(asked: bool) -> None:
    if asked:
        import minicnn
        typer.echo(f"minicnn {minicnn.__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="Print minicnn's version and exit.")):
    """minicnn: train, check and look inside small CNNs."""


@app.command()
def info():
    """Versions, the devices found, and which one `--device auto` picks and why."""
    import minicnn
    typer.echo(f"minicnn {minicnn.__version__}  python {platform.python_version()}  numpy {np.__version__}")
    usable, reason = cuda_status()
    typer.echo(f"cuda: {'usable' if usable else 'not usable'}: {reason}")
    typer.echo(f"nvcc: {shutil.which('nvcc') or 'not found'} (compiles kernels/*.cu to PTX)")
    typer.echo(f"g++:  {shutil.which('g++') or 'not found'} (runs kernels/*.cu in the CPU emulator, --device emu)")
    picked = "cuda" if usable else "cpu"
    typer.echo(f"--device auto picks: {picked} ({'a GPU is usable' if usable else 'no usable GPU'})")


def _devices_for(spec: str):
    if spec == "all":
        usable, _ = cuda_status()
        return ["cpu"] + (["cuda"] if usable else [])
    if spec not in DEVICE_NAMES:
        fail(f"unknown device {spec!r}: choose all, {', '.join(DEVICE_NAMES)}")
    return [get_device(spec).name]


@app.command()
def gradcheck(
    op: Optional[str] = typer.Option(None, help="Check only this op (e.g. conv2d, nn.ResidualBlock)."),
    device: str = typer.Option("all", help="all (cpu + cuda if usable), cpu, cuda, emu or auto."),
    dtype: str = typer.Option("float64", help="float64 (the meaningful check) or float32."),
    seed: int = typer.Option(0, help="Seed of the random inputs."),
):
    """Check every backward pass against central finite differences; exit 1 on any failure.

    On a non-CPU device it also prints parity rows: the same case on that device and on the
    CPU reference, outputs and gradients compared.
    """
    from minicnn.gradcheck import check_case, check_parity
    from minicnn.gradcheck_cases import all_cases

    if dtype not in ("float64", "float32"):
        fail(f"--dtype must be float64 or float32, got {dtype!r}")
    if seed < 0:
        fail(f"--seed must be 0 or more, got {seed}")
    cases = all_cases()
    if op is not None:
        cases = [c for c in cases if c.op == op]
        if not cases:
            names = sorted({c.op for c in all_cases()})
            fail(f"no op named {op!r}; ops are: {', '.join(names)}")
    devices = _devices_for(device)
    rows = []
    header = f"{'op':<20} {'device':<6} {'check':<7} {'max abs':>9} {'max rel':>9}  {'result':<6} shape"
    typer.echo(header)
    typer.echo("-" * len(header))
    for device_name in devices:
        for case in cases:
            checks = [check_case(case, device_name, dtype, seed)]
            if device_name != "cpu":
                checks.append(check_parity(case, device_name, dtype, seed))
            for row in checks:
                rows.append(row)
                verdict = "ok" if row.passed else "FAIL"
                detail = f" [{row.worst}]" if row.worst else ""
                typer.echo(f"{row.op:<20} {row.device:<6} {row.kind:<7} {row.max_abs:9.2e} "
                           f"{row.max_rel:9.2e}  {verdict:<6} {row.shape}{detail}")
    failed = [r for r in rows if not r.passed]
    worst = max(rows, key=lambda r: r.max_rel)
    typer.echo(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed "
               f"(worst relative error {worst.max_rel:.2e}: {worst.op} {worst.shape})")
    if failed:
        raise typer.Exit(1)


def main():
    """Console entry point: one-line errors for what a user can get wrong."""
    try:
        app()
    except (ValueError, OSError) as error:  # DeviceError, DataError and bad arguments are ValueErrors
        typer.echo(f"minicnn: error: {_one_line(error)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("minicnn: interrupted", err=True)
        sys.exit(130)


def _one_line(error: Exception) -> str:
    """The error as a sentence: an OSError as 'path: reason', not '[Errno 30] ...'."""
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename is not None else ""
        return f"{where}{error.strerror.lower()}"
    return str(error)


_mount_feature_commands()

if __name__ == "__main__":
    main()
