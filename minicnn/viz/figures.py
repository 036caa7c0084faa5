"""The figures, drawn with matplotlib's object API (Figure + Agg), never pyplot: nothing global
is switched and no display is needed. Sizes are fixed by the layout (CELL inches per panel at
DPI dots per inch), so a grid of R x C panels is a predictable number of pixels.

Images to show are (H, W, 3) floats in [0, 1] (`to_display`); maps are (C, h, w) arrays.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

DPI = 100
CELL = 1.0         # inches per small panel (a feature map, a filter)
BIG_CELL = 2.0     # inches per large panel (a CAM overlay)
TITLE = 0.6        # inches above a grid for its title (two lines)
CAPTION = 0.4      # inches for two lines of small text over a panel
BAR = 0.9          # inches at the right of a figure for its colour bar and the bar's label
NAMES = 0.2        # inches under the every-layer figure for the class names of its last row


def to_display(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 3, H, W) or (3, H, W) -> float (N, H, W, 3) or (H, W, 3) in [0, 1]."""
    return np.moveaxis(np.asarray(images, np.float32) / 255.0, -3, -1)


def save(figure: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=DPI)
    return path


def grid_shape(count: int) -> tuple[int, int]:
    """(rows, cols) of the squarest grid that holds `count` panels."""
    cols = math.ceil(math.sqrt(count))
    return math.ceil(count / cols), cols


def _margins(figure, space=0.08, headroom=0.0, right=0.0, bottom=0.0) -> dict:
    """gridspec keywords: a thin border, TITLE (+ headroom for panel titles) inches free at the
    top, and `right` / `bottom` more inches free for a colour bar or labels."""
    return dict(left=0.2 / figure.get_figwidth(), right=1 - (0.2 + right) / figure.get_figwidth(),
                bottom=(0.1 + bottom) / figure.get_figheight(), top=1 - (TITLE + headroom) / figure.get_figheight(),
                wspace=space, hspace=space)


def _colour_bar(figure, drawn, under, label, ends=None):
    """A horizontal colour bar for `drawn` (an imshow result) under the axes `under`, below its
    label. An inset of that axes, so the figure's own axes stay the panels. ends: words for the
    two ends instead of numbers (for per-map scales)."""
    bar = under.inset_axes([0.05, -0.45, 0.9, 0.07])
    colour_bar = figure.colorbar(drawn, cax=bar, orientation="horizontal")
    colour_bar.set_label(label, fontsize=7)
    bar.tick_params(labelsize=6)
    if ends:
        colour_bar.set_ticks(drawn.get_clim(), labels=ends)


def _title(figure, text, fontsize=10):
    """A title centred in the TITLE inches at the top, whatever the figure's height, wrapped to
    the figure's width (about 7 characters per inch at 10 points)."""
    width = int(figure.get_figwidth() * 72 / fontsize * 1.6)
    lines = [wrapped for line in text.splitlines() for wrapped in textwrap.wrap(line, width, break_on_hyphens=False)]
    figure.suptitle("\n".join(lines), y=1 - TITLE / 2 / figure.get_figheight(), va="center", fontsize=fontsize)


def _blank(axes):
    axes.set_xticks([])
    axes.set_yticks([])


def feature_maps_figure(image: np.ndarray, maps: np.ndarray, layer: str, shared_scale: bool = True,
                        limit: int = 64, caption: str = "input") -> Figure:
    """The input image (2x2 cells, at the left; `caption` and the colour bar under it) beside a
    grid of the layer's first `limit` maps.

    image: (H, W, 3) in [0, 1]; maps: (C, h, w). shared_scale: one colour range for every map
    (compares channels) or each map's own (shows the pattern inside weak maps). caption: e.g.
    the image's class and the network's prediction."""
    shown = maps[:limit]
    rows, cols = grid_shape(len(shown))
    figure = Figure(figsize=((cols + 2) * CELL, max(rows, 3) * CELL + TITLE))  # row 3: caption and colour bar
    spec = figure.add_gridspec(max(rows, 3), cols + 2, **_margins(figure, 0.15))
    input_axes = figure.add_subplot(spec[0:2, 0:2])
    input_axes.imshow(image)
    input_axes.set_xlabel(caption, fontsize=8)
    _blank(input_axes)
    low, high = float(shown.min()), float(shown.max())
    for index, channel in enumerate(shown):
        axes = figure.add_subplot(spec[index // cols, 2 + index % cols])
        scale = dict(vmin=low, vmax=high) if shared_scale else {}
        drawn = axes.imshow(channel, cmap="viridis", **scale)
        axes.set_title(str(index), fontsize=6, pad=1)
        _blank(axes)
    if shared_scale:
        _colour_bar(figure, drawn, input_axes, "activation (all maps)")
    else:
        _colour_bar(figure, drawn, input_axes, "each map: its own min to max", ends=("min", "max"))
    count = f"all {len(maps)} channels" if len(shown) == len(maps) else f"first {len(shown)} of {len(maps)} channels"
    scale = f"shared colour scale [{low:.3g}, {high:.3g}]" if shared_scale else "per-map colour scale"
    _title(figure, f"{layer}: {count}, {maps.shape[1]}x{maps.shape[2]} each; {scale}")
    return figure


def filters_figure(weight: np.ndarray, layer: str, limit: int = 64, grid: int = 16) -> Figure:
    """A conv layer's weights (F, C, kH, kW).

    C == 3 (a first layer): the first `limit` filters as RGB patches, each scaled to [0, 1] on
    its own range. Otherwise: the first `grid` filters (rows) x `grid` input channels (columns)
    on one symmetric colour scale (red positive, blue negative)."""
    filters, channels = weight.shape[:2]
    if channels == 3:
        shown = weight[:limit]
        rows, cols = grid_shape(len(shown))
        figure = Figure(figsize=(cols * CELL + 0.4, rows * CELL + TITLE))
        grid = figure.subplots(rows, cols, squeeze=False, gridspec_kw=_margins(figure)).ravel()
        for axes in grid[len(shown):]:
            axes.set_axis_off()
        for axes, patch in zip(grid, shown):
            rgb = np.moveaxis(patch, 0, -1)
            span = rgb.max() - rgb.min()
            axes.imshow((rgb - rgb.min()) / (span if span > 0 else 1), interpolation="nearest")
            _blank(axes)
        what = f"{len(shown)} of {filters} filters" if len(shown) < filters else f"all {filters} filters"
        _title(figure, f"{layer}: {what} ({weight.shape[2]}x{weight.shape[3]}) as RGB,\neach scaled to its own range")
        return figure
    shown = weight[:grid, :grid]
    rows, cols = shown.shape[:2]
    bound = float(np.abs(shown).max()) or 1.0
    size = CELL / 2                                  # small kernels need small panels
    figure = Figure(figsize=(cols * size + 0.4, rows * size + TITLE))
    grid = figure.subplots(rows, cols, squeeze=False, gridspec_kw=_margins(figure, 0.1))
    for f in range(rows):
        for c in range(cols):
            grid[f, c].imshow(shown[f, c], cmap="bwr", vmin=-bound, vmax=bound, interpolation="nearest")
            _blank(grid[f, c])
    _title(figure, f"{layer}: filters {rows} of {filters} (rows) x input channels {cols} of {channels} "
                   f"(columns); red +, blue -, scale +-{bound:.3g}", fontsize=8)
    return figure


def cam_figure(images: np.ndarray, heatmaps: np.ndarray, titles: list[list[str]], captions: list[str],
               title: str, empty: np.ndarray | None = None) -> Figure:
    """Per image a group of panels: the image, then one overlay per class shown. Groups fill a
    grid (cam_groups_per_row) rather than one tall column, and a colour bar sits at the right.

    images: (N, H, W, 3) in [0, 1]; heatmaps: (N, K, H, W) in [0, 1]; titles[n][k] names
    overlay k of image n; captions[n] sits over image n (e.g. its prediction). empty: (N, K)
    True where the map was all zeros (no evidence for the class): that panel says so."""
    count, shown = heatmaps.shape[:2]
    per_row = cam_groups_per_row(count, shown)
    rows, cols = math.ceil(count / per_row), per_row * (shown + 1)
    figure = Figure(figsize=(cols * BIG_CELL + BAR, rows * BIG_CELL + TITLE + CAPTION))
    grid = figure.subplots(rows, cols, squeeze=False,
                           gridspec_kw={**_margins(figure, 0.1, headroom=CAPTION, right=BAR), "hspace": 0.35})
    for axes in grid.ravel():
        _blank(axes)
        axes.set_axis_off()
    for n in range(count):
        group = grid[n // per_row, (n % per_row) * (shown + 1):][:shown + 1]
        group[0].set_axis_on()
        group[0].imshow(images[n])
        group[0].set_title(captions[n], fontsize=8)
        for k in range(shown):
            axes = group[k + 1]
            axes.set_axis_on()
            axes.imshow(images[n])
            overlay = axes.imshow(heatmaps[n, k], cmap="jet", alpha=0.5, vmin=0, vmax=1)
            axes.set_title(titles[n][k], fontsize=8)
            if empty is not None and empty[n, k]:
                axes.text(0.5, 0.5, "all-zero map:\nno evidence\nfor this class", transform=axes.transAxes,
                          ha="center", va="center", fontsize=8, bbox=dict(facecolor="white", alpha=0.8))
    width, height = figure.get_figwidth(), figure.get_figheight()
    grid_height = height - TITLE - CAPTION - 0.1  # the panels' span, captions included
    bar = figure.add_axes([1 - (BAR - 0.15) / width, (0.1 + 0.1 * grid_height) / height, 0.15 / width,
                           0.8 * grid_height / height])
    figure.colorbar(overlay, cax=bar).set_label("map value / the map's maximum", fontsize=8)
    _title(figure, title)
    return figure


def cam_groups_per_row(count: int, shown: int) -> int:
    """How many (image + `shown` overlays) groups share a row: about twice as wide as tall."""
    return min(count, max(1, math.ceil(2 * math.sqrt(count) / (shown + 1))))


def _scatter(axes, coords, groups, names, title, legend=True):
    cmap = "tab10" if len(names) <= 10 else "tab20"
    for index, name in enumerate(names):
        chosen = groups == index
        axes.scatter(coords[chosen, 0], coords[chosen, 1], s=4, label=name,
                     color=_colour(cmap, index, len(names)))
    axes.set_title(title, fontsize=9)
    _blank(axes)
    if legend and len(names) <= 20:
        axes.legend(fontsize=6, markerscale=3, loc="best", frameon=False)


def _colour(cmap, index, count):
    colours = colormaps[cmap]
    return colours(index % colours.N) if count <= colours.N else colours(index / max(count - 1, 1))


def embedding_figure(embedding, classes: list[str], title: str) -> Figure:
    """t-SNE coordinates coloured by true label; with clusters, a second panel coloured by them."""
    panels = 1 if embedding.clusters is None else 2
    figure = Figure(figsize=(6 * panels, 6 + TITLE), layout="constrained")
    grid = figure.subplots(1, panels, squeeze=False)[0]
    _scatter(grid[0], embedding.coords, embedding.labels, classes, "coloured by true label")
    if embedding.clusters is not None:
        k = int(embedding.clusters.max()) + 1
        scores = embedding.scores
        _scatter(grid[1], embedding.coords, embedding.clusters, [f"cluster {i}" for i in range(k)],
                 f"{k}-component Gaussian mixture: ARI {scores['adjusted_rand_index']:.3f}, "
                 f"NMI {scores['normalized_mutual_info']:.3f}")
    figure.suptitle(title, fontsize=10)
    return figure


def progress_figure(panels: list, classes: list[str], title: str) -> Figure:
    """panels: [(caption, Embedding)], one t-SNE panel each, side by side (4 per row)."""
    rows, cols = math.ceil(len(panels) / 4), min(len(panels), 4)
    figure = Figure(figsize=(4 * cols, 4 * rows + TITLE), layout="constrained")
    grid = figure.subplots(rows, cols, squeeze=False).ravel()
    for axes, (caption, embedding) in zip(grid, panels):
        _scatter(axes, embedding.coords, embedding.labels, classes, caption, legend=axes is grid[0])
    for axes in grid[len(panels):]:
        axes.set_axis_off()
    figure.suptitle(title, fontsize=10)
    return figure


def all_layers_figure(image: np.ndarray, outputs: dict, title: str, limit: int = 8, caption: str = "",
                      classes: list[str] | None = None) -> Figure:
    """One row per layer: its name and shape, then its first `limit` maps (each on its own scale).
    A layer with a vector output (N, D) shows the vector as one strip; a strip of one value per
    class names the classes under it.

    image: (H, W, 3) in [0, 1]; outputs: {layer: (C, h, w) or (D,)} for one image, in order;
    caption: beside the input (its class, the prediction); classes: the class names."""
    rows = len(outputs) + 1
    figure = Figure(figsize=((limit + 2) * CELL, rows * CELL + TITLE + NAMES))
    spec = figure.add_gridspec(rows, limit + 2, **{**_margins(figure, bottom=NAMES), "hspace": 0.25})
    axes = figure.add_subplot(spec[0, 2])
    axes.imshow(image)
    _blank(axes)
    axes.text(1.1, 0.5, caption, transform=axes.transAxes, va="center", fontsize=8)
    _row_label(figure.add_subplot(spec[0, 0:2]), "input", image.shape[:2])
    for row, (layer, value) in enumerate(outputs.items(), start=1):
        _row_label(figure.add_subplot(spec[row, 0:2]), layer, value.shape)
        if value.ndim == 1:
            axes = figure.add_subplot(spec[row, 2:])
            axes.imshow(value[None, :], aspect="auto", cmap="viridis")
            _blank(axes)
            if classes is not None and len(value) == len(classes) <= 20:
                axes.set_xticks(range(len(classes)), classes, fontsize=6)
                axes.tick_params(length=0, pad=2)
            continue
        for index, channel in enumerate(value[:limit]):
            axes = figure.add_subplot(spec[row, 2 + index])
            axes.imshow(channel, cmap="viridis")
            _blank(axes)
    _title(figure, f"{title}: every layer, first {limit} channels each, each map on its own scale")
    return figure


def _row_label(axes, name, shape):
    axes.set_axis_off()
    axes.text(0.95, 0.5, f"{name}\n{tuple(shape)}", ha="right", va="center", fontsize=8,
              transform=axes.transAxes)
