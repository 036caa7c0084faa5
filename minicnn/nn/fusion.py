"""Fusion: neighbouring layers of an nn.Sequential run as one pass (the backends' business).

nn.Sequential runs its layers through run_layers(): in training mode, a ReLU right before or
right after a batch norm becomes one fused Function (F.batch_norm(..., relu='before' |
'after')), which computes exactly the numbers of the two layers without storing the map
between them and with fewer kernel launches. Nothing about the model changes: its layers,
names, parameters and state dict stay the user's, so layer tables, feature maps and CAM are
unaffected. A layer with a forward hook is never fused, so every hook sees its own layer's
output; evaluation (model.eval()) runs the layers one by one.

    with fusion.unfused():        # the layers one by one, e.g. to compare the two
        loss = model(x)
"""
from __future__ import annotations

import contextlib

from minicnn.nn.layers import ReLU, _BatchNorm

enabled = True  # fusion on; unfused() switches it off for a block of code


@contextlib.contextmanager
def unfused():
    """Run every layer on its own inside the block."""
    global enabled
    previous, enabled = enabled, False
    try:
        yield
    finally:
        enabled = previous


def _fusable(first, second) -> str | None:
    """'before' for ReLU -> batch norm, 'after' for batch norm -> ReLU, else None."""
    if not enabled or second is None or first._hooks or second._hooks:
        return None
    if not (first.training and second.training):
        return None
    if type(first) is ReLU and isinstance(second, _BatchNorm):
        return "before"
    if isinstance(first, _BatchNorm) and type(second) is ReLU:
        return "after"
    return None


def run_layers(layers, x):
    """Apply `layers` in order, fusing each ReLU / batch norm pair that allows it."""
    i = 0
    while i < len(layers):
        order = _fusable(layers[i], layers[i + 1] if i + 1 < len(layers) else None)
        if order is None or x.ndim != (bn := layers[i + (order == "before")]).expected_ndim:
            x = layers[i](x)  # (a batch norm given the wrong shape says so here)
            i += 1
            continue
        x = bn.normalize(x, relu=order)
        i += 2
    return x
