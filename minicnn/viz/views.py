"""Each figure `minicnn visualize --what ...` draws, from a loaded run to PNG files.

Every function returns the paths it wrote and the lines worth printing (scores, notes), so the
CLI stays a thin layer and notebooks can call the same functions.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minicnn import nn
from minicnn.autograd import no_grad
from minicnn.backends import to_host
from minicnn.data import load_cifar
from minicnn.viz import figures
from minicnn.viz.activations import activations, as_input, evaluating, features, layer_table
from minicnn.viz.cam import cam_layers, class_activation_maps, grad_cam, normalize_maps, softmax, upsample_bilinear
from minicnn.viz.embed import EmbedConfig, embed
from minicnn.viz.inputs import Inputs, from_test_set
from minicnn.viz.runs import LoadedRun, VizError, improvement_checkpoints, load_run


@dataclass
class Drawn:
    paths: list[Path] = field(default_factory=list)   # the PNGs (and score files) written
    lines: list[str] = field(default_factory=list)    # what to tell the user


# --------------------------------------------------------------------------- choosing layers

def default_layer(model, what: str) -> str:
    """maps/filters: the first conv; gradcam: the last conv's activated output; tsne: the layer
    feeding the last linear layer (the penultimate features; dropout and flatten skipped)."""
    table = layer_table(model)
    if what in ("maps", "filters"):
        return next(path for path, kind, _ in table if kind == "Conv2d")
    if what == "gradcam":  # the last conv, after its BN and ReLU (the last layer at its resolution)
        last_conv = max(i for i, (_, kind, _) in enumerate(table) if kind == "Conv2d")
        size = table[last_conv][2][1:]
        return [path for path, _, shape in table[last_conv:] if shape[1:] == size][-1]
    last_linear = max(i for i, (_, kind, _) in enumerate(table) if kind == "Linear")
    # dropout and flatten pass the same numbers on in eval mode: name the layer that made them
    feeding = [path for path, kind, _ in table[:last_linear] if kind not in ("Dropout", "Flatten")]
    return feeding[-1]


def check_layer(model, layer: str) -> str:
    """The layer name itself, or a VizError listing every name `--layer` accepts."""
    try:
        model.get_layer(layer)
    except ValueError:
        names = ", ".join(path for path, _, _ in layer_table(model))
        raise VizError(f"unknown layer {layer!r}; this network's layers are: {names}") from None
    return layer


# --------------------------------------------------------------------------- figures

def feature_maps(run: LoadedRun, layer: str, inputs: Inputs, out, shared_scale=True, limit=64) -> Drawn:
    """One PNG per image: the image beside every channel of `layer` (the first `limit`)."""
    maps = activations(run.model, inputs.x, [check_layer(run.model, layer)])[layer]
    if maps.ndim != 4:
        raise VizError(f"{layer} outputs vectors {maps.shape[1:]}, not maps; pick a conv layer "
                       f"(`minicnn layers`) or look at it with --what tsne")
    captions = _captions(run, inputs, _probabilities(run, inputs.x))
    drawn = Drawn()
    for n, name in enumerate(inputs.names):
        figure = figures.feature_maps_figure(figures.to_display(inputs.pixels[n]), maps[n], f"{run.arch} {layer}",
                                             shared_scale, limit, captions[n])
        drawn.paths.append(figures.save(figure, Path(out) / f"maps-{layer}-{_file_part(name)}.png"))
    return drawn


def filters(run: LoadedRun, layer: str, out) -> Drawn:
    """The weights of a conv layer: RGB patches for a first layer, filter x channel grids after."""
    module = run.model.get_layer(check_layer(run.model, layer))
    if not isinstance(module, nn.Conv2d):
        convs = ", ".join(path for path, kind, _ in layer_table(run.model) if kind == "Conv2d")
        raise VizError(f"{layer} is a {type(module).__name__}, not a conv layer; conv layers are: {convs}")
    figure = figures.filters_figure(to_host(module.weight.data), f"{run.arch} {layer}")
    return Drawn([figures.save(figure, Path(out) / f"filters-{layer}.png")])


def cam(run: LoadedRun, inputs: Inputs, out, topk=1) -> Drawn:
    """CAM (GAP + linear networks) for each image's top-k predicted classes."""
    cam_layers(run.model)  # other networks: a CamError suggesting Grad-CAM, before any work

    def maps_for(classes):
        return class_activation_maps(run.model, inputs.x, classes)

    return _heatmaps(run, inputs, out, "CAM", "cam", maps_for, topk, None)


def gradcam(run: LoadedRun, layer: str, inputs: Inputs, out, class_name: str | None = None, topk=1) -> Drawn:
    """Grad-CAM at `layer` for a named class, or each image's top-k predicted classes."""
    check_layer(run.model, layer)
    target = None
    if class_name is not None:
        if class_name not in run.classes:
            raise VizError(f"unknown class {class_name!r}; classes are: {', '.join(run.classes)}")
        target = run.classes.index(class_name)

    def maps_for(classes):
        return grad_cam(run.model, inputs.x, layer, classes)

    return _heatmaps(run, inputs, out, f"Grad-CAM at {layer}", f"gradcam-{layer}", maps_for, topk, target)


def _heatmaps(run, inputs, out, method, stem, maps_for, topk, target) -> Drawn:
    """Shared by CAM and Grad-CAM: one column per class shown, overlays on the upsampled map."""
    if not 1 <= topk <= len(run.classes):
        raise VizError(f"--topk must be between 1 and {len(run.classes)}, got {topk}")
    first, logits = maps_for(None)
    probabilities = softmax(logits)
    ranked = np.argsort(-probabilities, axis=1)
    columns = [np.full(len(logits), target)] if target is not None else [ranked[:, k] for k in range(topk)]
    raw = [first if k == 0 and target is None else maps_for(classes)[0] for k, classes in enumerate(columns)]
    size = inputs.pixels.shape[2:]
    heat = np.stack([normalize_maps(upsample_bilinear(m, size)) for m in raw], axis=1)   # (N, K, H, W)
    empty = np.stack([~(m > 0).any(axis=(1, 2)) for m in raw], axis=1)                 # (N, K): no evidence
    rows = np.arange(len(logits))
    titles = [[f"{run.classes[c[n]]} p={probabilities[n, c[n]]:.2f}" for c in columns] for n in rows]
    which = f"class {run.classes[target]}" if target is not None else f"top {len(columns)} predicted"
    figure = figures.cam_figure(figures.to_display(inputs.pixels), heat, titles,
                                _captions(run, inputs, probabilities), f"{method}, {which} ({run.label})", empty)
    suffix = f"-{run.classes[target]}" if target is not None else (f"-top{topk}" if topk > 1 else "")
    return Drawn([figures.save(figure, Path(out) / f"{stem}-{_file_part(inputs.tag)}{suffix}.png")])


def all_layers(run: LoadedRun, inputs: Inputs, out, limit=8) -> Drawn:
    """Every top-level layer's output for the first image, one row each."""
    names = [path for path, _ in run.model.named_modules() if path and "." not in path]
    outputs = activations(run.model, inputs.x[:1], names)
    caption = _captions(run, inputs, _probabilities(run, inputs.x[:1]))[0]
    figure = figures.all_layers_figure(figures.to_display(inputs.pixels[0]), {k: v[0] for k, v in outputs.items()},
                                       f"{run.label}, {inputs.names[0]}", limit, caption, run.classes)
    return Drawn([figures.save(figure, Path(out) / f"layers-{_file_part(inputs.names[0])}.png")])


def tsne(run: LoadedRun, layer: str, out, samples=2000, gmm: int | None = None, data=None, data_dir=None,
         config: EmbedConfig = EmbedConfig(), progress=True) -> Drawn:
    """t-SNE of `layer`'s features of the first `samples` test images, coloured by label; with
    gmm=K, a K-component mixture beside it and its agreement with the labels (printed and saved)."""
    check_layer(run.model, layer)
    inputs = _first_test_images(run, samples, data, data_dir)
    result = embed(features(run.model, inputs.x, layer, progress=progress), inputs.labels, gmm, config, progress)
    figure = figures.embedding_figure(result, run.classes, f"t-SNE of {layer} ({len(inputs.labels)} test images, "
                                                           f"{run.label})")
    stem = Path(out) / (f"tsne-{layer}" + (f"-gmm{gmm}" if gmm else ""))
    drawn = Drawn([figures.save(figure, stem.with_suffix(".png"))])
    if gmm:
        scores = {"layer": layer, "components": gmm, "samples": len(inputs.labels), **result.scores}
        stem.with_suffix(".json").write_text(json.dumps(scores, indent=1))
        drawn.paths.append(stem.with_suffix(".json"))
        drawn.lines.append(f"GMM with {gmm} components vs the labels: adjusted Rand index "
                           f"{result.scores['adjusted_rand_index']:.4f}, NMI {result.scores['normalized_mutual_info']:.4f}")
    return drawn


def tsne_progress(run_dir, layer: str | None, out, samples=1000, device="auto", data=None, data_dir=None,
                  config: EmbedConfig = EmbedConfig(), progress=True) -> Drawn:
    """One t-SNE panel per checkpoint the run kept (per improvement when it kept every epoch)."""
    paths, which = improvement_checkpoints(run_dir)
    panels, inputs, runs = [], None, []
    for path in paths:
        run = load_run(path, device=device)
        if any(run.checkpoint.meta["epoch"] == shown.checkpoint.meta["epoch"] for shown in runs):
            continue  # best and last are often the same epoch
        layer = check_layer(run.model, layer or default_layer(run.model, "tsne"))
        inputs = inputs or _first_test_images(run, samples, data, data_dir)
        meta = run.checkpoint.meta
        accuracy = next((row["val_acc"] for row in meta["history"] if row["epoch"] == meta["epoch"]), None)
        caption = ("" if path.stem.startswith("epoch-") else f"{path.stem}: ") + f"epoch {meta['epoch']}" \
            + ("" if accuracy is None else f", val {accuracy:.2%}")
        embedding = embed(features(run.model, inputs.x, layer, progress=progress), inputs.labels, None, config, progress)
        panels.append((caption, embedding))
        runs.append(run)
    figure = figures.progress_figure(panels, runs[-1].classes,
                                     f"t-SNE of {layer} as {runs[-1].arch} trained ({len(inputs.labels)} test images)")
    return Drawn([figures.save(figure, Path(out) / f"tsne-progress-{layer}.png")], [f"panels: {which}"])


def _probabilities(run: LoadedRun, x: np.ndarray) -> np.ndarray:
    """The network's class probabilities (N, K) for normalized images x (N, 3, H, W)."""
    with evaluating(run.model), no_grad():
        return softmax(to_host(run.model(as_input(run.model, x)).data))


def _captions(run: LoadedRun, inputs: Inputs, probabilities: np.ndarray) -> list[str]:
    """Per image two lines: its name and true class (for test images), then the prediction."""
    predicted = probabilities.argmax(axis=1)
    return [(name if inputs.labels is None else f"{name}: {run.classes[inputs.labels[n]]}")
            + f"\npredicted {run.classes[predicted[n]]} {probabilities[n, predicted[n]]:.0%}"
            for n, name in enumerate(inputs.names)]


def _first_test_images(run, samples, data, data_dir) -> Inputs:
    if samples < 5:
        raise VizError(f"--samples must be at least 5, got {samples}")
    data = data or load_cifar(run.dataset, data_dir or run.data_dir)
    return from_test_set(run, range(min(samples, len(data.test_y))), data)


def _file_part(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text.replace("test ", "img"))
