"""Fusion: neighbouring layers of an nn.Sequential run as one pass (the backends' business).

nn.Sequential runs its layers through run_layers(). In training mode, two neighbours become
one fused Function, which computes exactly the numbers of the two layers without storing the
map between them and with fewer kernel launches:

    ReLU -> batch norm, batch norm -> ReLU   F.batch_norm(..., relu='before' | 'after')
    pooling -> dropout                       F.max_pool2d(..., dropout=(rate, True, seed, step))

Nothing about the model changes: its layers, names, parameters and state dict stay the
user's, so layer tables, feature maps and CAM are unaffected. A layer with a forward hook is never fused, so every hook sees its own layer's
output; evaluation (model.eval()) runs the layers one by one.

    with fusion.unfused():        # the layers one by one, e.g. to compare the two
        loss = model(x)
"""
from __future__ import annotations

import contextlib

from minicnn.nn.layers import Dropout, ReLU, _BatchNorm, _Pool

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


def _fused_call(first, second):
    """The fused pass of two neighbouring layers as a function of x, or None."""
    if not enabled or second is None or first._hooks or second._hooks:
        return None
    if not (first.training and second.training):
        return None
    if type(first) is ReLU and isinstance(second, _BatchNorm):
        return lambda x: second.normalize(x, relu="before")
    if isinstance(first, _BatchNorm) and type(second) is ReLU:
        return lambda x: first.normalize(x, relu="after")
    if isinstance(first, _Pool) and isinstance(second, Dropout) and second.rate > 0:
        return lambda x: first.forward(x, dropout=second.next_mask())
    return None


def run_layers(layers, x):
    """Apply `layers` in order, fusing each pair of neighbours that allows it."""
    i = 0
    while i < len(layers):
        fused = _fused_call(layers[i], layers[i + 1] if i + 1 < len(layers) else None)
        x = layers[i](x) if fused is None else fused(x)
        i += 1 if fused is None else 2
    return x
