"""Where in the image a class's evidence lies: CAM and Grad-CAM.

CAM (Zhou et al. 2016) needs a network that ends in global average pooling and one linear
layer: logit_c = sum_k w_ck * mean_xy A_k(x, y) + b_c, so the map
    CAM_c(x, y) = sum_k w_ck * A_k(x, y)
says how much each position adds to the logit. A: the (N, K, h, w) maps that enter the pooling.

Grad-CAM (Selvaraju et al. 2017) works for any layer of any network: it weighs the layer's maps
by the mean gradient of the class score,
    alpha_k = mean_xy d logit_c / d A_k(x, y),   GradCAM_c = ReLU(sum_k alpha_k * A_k).
The gradient comes from minicnn's own autograd: the layer's output is captured during the
forward pass and asked to keep its gradient (Tensor.retain_grad). On a GAP + linear network, at
the pooled maps, d logit_c / d A_k(x, y) = w_ck / (h*w), so Grad-CAM there is CAM / (h*w).

Every image of the batch gets its own map: the model runs in eval mode, where image n's logits
depend only on image n, so one backward of sum_n logit[n, class_n] yields every image's gradient.
"""
from __future__ import annotations

import numpy as np

from minicnn import nn
from minicnn.backends import to_host
from minicnn.autograd import no_grad
from minicnn.nn.module import capture
from minicnn.viz.activations import as_input, evaluating


class CamError(ValueError):
    """CAM asked of a network it is not defined for."""


def cam_layers(model) -> tuple[nn.GlobalAvgPool2d, nn.Linear]:
    """The (pooling, linear) pair CAM reads, or a CamError saying why this network has none."""
    layers = [layer for layer in model.children() if not isinstance(layer, (nn.Dropout, nn.Flatten))] \
        if isinstance(model, nn.Sequential) else []
    if len(layers) >= 2 and isinstance(layers[-2], nn.GlobalAvgPool2d) and isinstance(layers[-1], nn.Linear):
        return layers[-2], layers[-1]
    ending = " -> ".join(type(layer).__name__ for layer in layers[-3:]) or type(model).__name__
    raise CamError(f"CAM needs a network ending in global average pooling + one linear layer, this one "
                   f"ends {ending}; use --what gradcam (works for any network and conv layer)")


def class_activation_maps(model, images: np.ndarray, classes=None) -> tuple[np.ndarray, np.ndarray]:
    """images: (N, C, H, W) normalized -> (maps (N, h, w) = sum_k w_ck A_k, logits (N, K)).

    classes: (N,) class per image; None takes each image's predicted class. The maps are raw
    (no ReLU, no scaling) at the resolution of the pooled layer."""
    pool, linear = cam_layers(model)
    pooled_input = {}
    handle = pool.register_forward_hook(lambda module, inputs, output: pooled_input.update(maps=inputs[0]))
    try:
        with evaluating(model), no_grad():
            logits = to_host(model(as_input(model, images)).data)
    finally:
        handle.remove()
    maps = to_host(pooled_input["maps"].data)
    classes = logits.argmax(axis=1) if classes is None else np.asarray(classes)
    weights = to_host(linear.weight.data)[classes]              # (N, K)
    return np.einsum("nk,nkhw->nhw", weights, maps), logits


def grad_cam(model, images: np.ndarray, layer: str, classes=None, relu=True) -> tuple[np.ndarray, np.ndarray]:
    """images: (N, C, H, W) normalized -> (maps (N, h, w) at `layer`'s resolution, logits (N, K)).

    classes: (N,) class per image; None takes each image's predicted class. relu=False returns
    sum_k alpha_k A_k before the ReLU (to compare with CAM)."""
    with evaluating(model), capture(model, [layer]) as outputs:
        # an input that wants a gradient makes every layer record, parameters or not
        logits = model(as_input(model, images, requires_grad=True))
    maps = outputs.get(layer)
    if maps is None or maps.ndim != 4:
        shape = None if maps is None else tuple(maps.shape[1:])
        raise ValueError(f"Grad-CAM needs a layer with spatial maps (C, H, W); {layer!r} gives {shape}: "
                         f"pick a conv layer (`minicnn layers` lists them)")
    host_logits = to_host(logits.data)
    classes = host_logits.argmax(axis=1) if classes is None else np.asarray(classes)
    select = np.zeros(host_logits.shape, host_logits.dtype)
    select[np.arange(len(classes)), classes] = 1
    maps.retain_grad()
    (logits * select).sum().backward()
    model.zero_grad()                                              # leave no gradients behind
    alpha = to_host(maps.grad).mean(axis=(2, 3))                  # (N, K)
    weighted = np.einsum("nk,nkhw->nhw", alpha, to_host(maps.data))
    return (np.maximum(weighted, 0) if relu else weighted), host_logits


def upsample_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """maps: (N, h, w) -> (N, H, W), bilinear with pixel centres aligned (PyTorch's
    align_corners=False): output pixel i samples the input at (i + 0.5) * h / H - 0.5."""
    h, w = maps.shape[1:]

    def taps(n_in, n_out):
        position = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, position - low

    top, bottom, fy = taps(h, size[0])
    left, right, fx = taps(w, size[1])
    rows = maps[:, top] * (1 - fy)[:, None] + maps[:, bottom] * fy[:, None]     # (N, H, w)
    return rows[:, :, left] * (1 - fx) + rows[:, :, right] * fx


def normalize_maps(maps: np.ndarray) -> np.ndarray:
    """Scale each map of (N, H, W) to [0, 1] (a map that is all zeros stays zero)."""
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), 0.0)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities along axis 1 of (N, K)."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
