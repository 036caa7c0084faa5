"""Weight initializers, by name, for conv (F, C, kH, kW) and linear (OUT, IN) weights.

    he_uniform / he_normal        variance 2 / fan_in        (He et al. 2015, for ReLU nets)
    glorot_uniform / glorot_normal variance 2 / (fan_in + fan_out) (Glorot & Bengio; Keras' default)
    torch                         PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias
    zeros

The normal variants draw from a normal truncated at 2 standard deviations, as Keras does, and
rescale so the variance is still the one named.
"""
import contextlib
import math

import numpy as np

from minicnn.random import generator

SCHEMES = ("he_uniform", "he_normal", "glorot_uniform", "glorot_normal", "torch", "zeros")
# a normal truncated to [-2, 2] has std 0.8796; dividing by it restores the intended std
_TRUNCATED_STD = 0.87962566103423978
_drawing = [True]  # False inside shapes_only()


def fans(shape):
    """(fan_in, fan_out) of a weight: a conv's receptive field counts once per channel."""
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _truncated_normal(rng, std, shape):
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2
    while bad.any():  # redraw the tails: the expected number of rounds is tiny
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2
    return out * (std / _TRUNCATED_STD)


def weight(scheme, shape, dtype=np.float32, rng=None):
    """A new weight array of `shape` drawn by `scheme`."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown init {scheme!r}; choose one of {', '.join(SCHEMES)}")
    rng = rng or generator()
    fan_in, fan_out = fans(shape)
    if scheme == "zeros" or not _drawing[0]:
        return np.zeros(shape, dtype)
    if scheme == "torch":
        bound = 1 / math.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape).astype(dtype)
    variance = 2 / fan_in if scheme.startswith("he") else 2 / (fan_in + fan_out)
    if scheme.endswith("uniform"):
        bound = math.sqrt(3 * variance)
        return rng.uniform(-bound, bound, shape).astype(dtype)
    return _truncated_normal(rng, math.sqrt(variance), shape).astype(dtype)


def bias(scheme, weight_shape, dtype=np.float32, rng=None):
    """The bias that goes with a weight: PyTorch draws it like its weight, everyone else zeros."""
    if scheme != "torch" or not _drawing[0]:
        return np.zeros(weight_shape[0], dtype)
    bound = 1 / math.sqrt(fans(weight_shape)[0])
    return (rng or generator()).uniform(-bound, bound, weight_shape[0]).astype(dtype)


def initialize(model, scheme, rng=None):
    """Re-initialize every conv and linear layer of `model` with one scheme (per-model choice)."""
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.init = scheme
            module.reset_parameters(rng)
    return model


@contextlib.contextmanager
def shapes_only():
    """Inside the block weight() and bias() return zeros instead of random draws: for building a
    network only to count or list its parameters (drawing VGG-11's 10M weights takes ~0.1 s,
    and `minicnn models` builds every network). The generator is not advanced either."""
    _drawing[0] = False
    try:
        yield
    finally:
        _drawing[0] = True
