"""Forward a batch to any named layer and read what it computed.

Every function here runs the model in eval mode (BN uses its running statistics, dropout is
off), so one image's activations do not depend on the other images in the batch, and restores
the mode it found. Layers are addressed as `--layer` addresses them: a name (conv1) or a dotted
path (block4.conv2); see `layer_table`.
"""
from __future__ import annotations

import contextlib

import numpy as np
from tqdm import tqdm

from minicnn.backends import to_host
from minicnn.autograd import Tensor, no_grad
from minicnn.nn.module import capture
from minicnn.progress import hide_bar


def model_device(model):
    """The device the model's parameters live on."""
    return model.parameters()[0].device


@contextlib.contextmanager
def evaluating(model):
    """Eval mode inside the block, the previous mode after it."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def as_input(model, images: np.ndarray, requires_grad=False) -> Tensor:
    """images: (N, C, H, W) normalized floats on the host -> a Tensor on the model's device."""
    device = model_device(model)
    dtype = model.parameters()[0].dtype
    return Tensor(device.asarray(images, dtype=dtype), device, requires_grad=requires_grad)


def layer_table(model, input_shape=(3, 32, 32)) -> list[tuple[str, str, tuple]]:
    """[(path, module type, output shape without the batch axis)] for every layer, blocks
    included, in the order the forward pass reaches them."""
    paths = [path for path, _ in model.named_modules() if path]
    with evaluating(model), no_grad(), capture(model, paths) as outputs:
        model(as_input(model, np.zeros((2,) + tuple(input_shape), np.float32)))
    # the hooks filled `outputs` in the order layers finished (a block after its children)
    return [(path, type(model.get_layer(path)).__name__, tuple(out.shape[1:])) for path, out in outputs.items()]


def activations(model, images: np.ndarray, layers) -> dict[str, np.ndarray]:
    """One forward pass of images (N, C, H, W); returns {layer: its output on the host}."""
    with evaluating(model), no_grad(), capture(model, list(layers)) as outputs:
        model(as_input(model, images))
    missing = [name for name in layers if name not in outputs]
    if missing:
        raise ValueError(f"layer {missing[0]!r} was not reached by the forward pass")
    return {name: to_host(outputs[name].data) for name in layers}


def features(model, images: np.ndarray, layer: str, batch_size: int = 256,
             progress: bool = True) -> np.ndarray:
    """The layer's output for every image, flattened: images (N, C, H, W) -> (N, D).

    Batches under no_grad keep the memory bounded by one batch of activations."""
    model.get_layer(layer)  # an unknown name fails before any work
    rows = []
    for start in tqdm(range(0, len(images), batch_size), desc=f"features of {layer}", unit="batch",
                      disable=hide_bar(progress)):
        batch = images[start:start + batch_size]
        rows.append(activations(model, batch, [layer])[layer].reshape(len(batch), -1))
    return np.concatenate(rows)
