"""`minicnn visualize` and `minicnn layers`: thin over minicnn.viz.views.

    minicnn visualize --layer conv1                   # the latest run's best checkpoint, test image 0
    minicnn visualize --what gradcam --layer conv6 --class cat --images 0-15
    minicnn visualize --what tsne --layer fc1 --gmm 10
    minicnn layers                                     # the names --layer accepts, with shapes

Errors a user can cause are ValueErrors (VizError, CamError, CheckpointError, DataError,
DeviceError): `minicnn` prints them as one line and exits 1.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

WHATS = ("maps", "filters", "cam", "gradcam", "tsne", "tsne-progress", "layers")
DEVICE_HELP = "auto (GPU if usable), cpu, cuda or emu."
RUN_HELP = "A run folder or checkpoint .npz (default: the latest run under --runs)."


def visualize(
    what: str = typer.Option("maps", help=f"What to draw: {', '.join(WHATS)}."),
    layer: Optional[str] = typer.Option(None, help="Layer name or path (see `minicnn layers`); "
                                        "default: first conv (maps, filters), last conv (gradcam), "
                                        "the penultimate layer (tsne)."),
    run: Optional[Path] = typer.Option(None, help=RUN_HELP),
    runs: Path = typer.Option(Path("runs"), help="Where to look for the latest run."),
    checkpoint: str = typer.Option("best", help="Which checkpoint of the run: best, last, epoch-NNN."),
    image: str = typer.Option("0", help="A test-set index (7), a range (0-15) or an image file."),
    images: Optional[str] = typer.Option(None, help="Same as --image, for ranges: 0-15 or 3,5,9-11."),
    class_name: Optional[str] = typer.Option(None, "--class", help="gradcam: explain this class "
                                             "(default: each image's prediction; --topk is then ignored)."),
    topk: int = typer.Option(1, help="cam/gradcam: the k most likely classes side by side."),
    gmm: Optional[int] = typer.Option(None, help="tsne: fit a Gaussian mixture with this many components."),
    samples: int = typer.Option(2000, help="tsne: how many test images to embed."),
    shared_scale: bool = typer.Option(True, "--shared-scale/--per-map-scale",
                                      help="maps: one colour range for all channels, or one per map."),
    limit: int = typer.Option(64, help="maps: show at most this many channels."),
    out: Optional[Path] = typer.Option(None, help="Folder for the PNGs (default: <run>/figures)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    data: Optional[Path] = typer.Option(None, help="Data folder (default: where the run read its data)."),
    show: bool = typer.Option(False, help="Also open the figures in a window, where one can open."),
    progress: bool = typer.Option(True, help="Show progress bars (drawn only when stderr is a terminal)."),
):
    """Look inside a trained network: feature maps, filters, CAM / Grad-CAM, t-SNE (+ GMM)."""
    from minicnn.viz import views
    from minicnn.viz.inputs import choose_inputs
    from minicnn.viz.runs import VizError, load_run

    if what not in WHATS:
        raise VizError(f"--what must be one of {', '.join(WHATS)}, got {what!r}")
    if limit < 1:
        raise VizError(f"--limit must be at least 1, got {limit}")
    loaded = load_run(run, checkpoint=checkpoint, device=device, runs_root=runs)
    folder = out or loaded.run_dir / "figures"
    data_dir = str(data) if data else None
    if what in ("maps", "filters", "gradcam", "tsne"):
        layer = views.check_layer(loaded.model, layer or views.default_layer(loaded.model, what))
    if what == "filters":
        drawn = views.filters(loaded, layer, folder)
    elif what == "tsne":
        drawn = views.tsne(loaded, layer, folder, samples, gmm, data_dir=data_dir, progress=progress)
    elif what == "tsne-progress":
        drawn = views.tsne_progress(loaded.run_dir, layer, folder, samples, device, data_dir=data_dir,
                                    progress=progress)
    else:
        inputs = choose_inputs(loaded, images or image, data_dir=data_dir)
        if what == "maps":
            drawn = views.feature_maps(loaded, layer, inputs, folder, shared_scale, limit)
        elif what == "cam":
            drawn = views.cam(loaded, inputs, folder, topk)
        elif what == "gradcam":
            drawn = views.gradcam(loaded, layer, inputs, folder, class_name, topk)
        else:
            drawn = views.all_layers(loaded, inputs, folder)
    for line in drawn.lines:
        typer.echo(line)
    for path in drawn.paths:
        typer.echo(str(path))
    if show:
        _show([p for p in drawn.paths if p.suffix == ".png"])


def _show(paths):
    """Open each PNG in a matplotlib window, or say in one line why there is none."""
    import matplotlib.pyplot as plt
    from matplotlib.image import imread
    backend = plt.get_backend().lower()
    if "agg" in backend or backend in ("pdf", "svg", "ps", "template"):
        typer.echo(f"--show: no window can open here (matplotlib backend {backend!r}); the PNGs above are saved")
        return
    for path in paths:
        figure = plt.figure(path.name)
        figure.figimage(imread(path))
        figure.set_size_inches(*(reversed(imread(path).shape[:2])), forward=True)
    plt.show()


def layers(
    run: Optional[Path] = typer.Option(None, help=RUN_HELP),
    runs: Path = typer.Option(Path("runs"), help="Where to look for the latest run."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
):
    """The layer names `--layer` accepts, with each layer's type and output shape."""
    from minicnn.viz.activations import layer_table
    from minicnn.viz.runs import load_run

    loaded = load_run(run, device=device, runs_root=runs)
    table = layer_table(loaded.model)
    width = max(len(path) for path, _, _ in table)
    typer.echo(f"{loaded.label}, {loaded.run_dir}")
    typer.echo(f"{'layer':<{width}}  {'type':<16} output shape")
    for path, kind, shape in table:
        typer.echo(f"{path:<{width}}  {kind:<16} {shape}")


def register(app: typer.Typer) -> None:
    app.command("visualize")(visualize)
    app.command("layers")(layers)
