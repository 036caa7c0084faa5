"""What the ops check before their kernels run: that inputs are Tensors, and the stride and
padding arguments, parsed into the tuples the kernels take.

Shape and dtype rules are the kernels' own (minicnn/backends/checks.py), the same on every
device.
"""
from __future__ import annotations

import math

import numpy as np

from minicnn.autograd import Tensor


def check_tensor(op, x):
    if not isinstance(x, Tensor):
        raise ValueError(f"{op}: expected a minicnn Tensor, got {type(x).__name__}")


def pair(op, name, value):
    values = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(values) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in values):
        raise ValueError(f"{op}: {name} must be a positive int or a pair of them, got {value!r}")
    return tuple(int(v) for v in values)


def resolve_padding(op, padding, size, kernel, stride):
    """padding -> (top, bottom, left, right).

    padding: int p (all sides), (ph, pw), (top, bottom, left, right), 'valid' (none) or 'same'.
    'same' follows TensorFlow: the output is ceil(size / stride) and when the padding needed is
    odd, the extra row/column goes at the bottom/right. Keras-trained reports depend on that.
    """
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        pads = []
        for n, k, s in zip(size, kernel, stride):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    if isinstance(padding, str):
        raise ValueError(f"{op}: padding must be an int, a tuple, 'same' or 'valid', got {padding!r}")
    pads = (padding,) * 4 if isinstance(padding, (int, np.integer)) else tuple(padding)
    if len(pads) == 2:
        pads = (pads[0], pads[0], pads[1], pads[1])
    if len(pads) != 4 or not all(isinstance(p, (int, np.integer)) for p in pads):
        raise ValueError(f"{op}: padding must be an int, (ph, pw) or (top, bottom, left, right), got {padding!r}")
    if min(pads) < 0:
        raise ValueError(f"{op}: padding must not be negative, got {padding!r}")
    return tuple(int(p) for p in pads)
