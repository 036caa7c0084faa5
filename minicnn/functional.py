"""The functional API (`from minicnn import functional as F`): checks arguments, then runs an op.

Names and layouts follow PyTorch's torch.nn.functional so people can move between the two.
Every check here turns a bad call into a ValueError naming the op and the shapes, instead of
an IndexError from deep inside a kernel.
"""
from __future__ import annotations

import math

import numpy as np

from minicnn.autograd import Tensor
from minicnn.ops import activation, basic, conv, fused, loss, norm, pool


# --------------------------------------------------------------------------- argument checks

def _check_input(op, x, ndim, layout):
    if not isinstance(x, Tensor):
        raise ValueError(f"{op}: expected a minicnn Tensor, got {type(x).__name__}")
    if x.ndim not in ndim:
        raise ValueError(f"{op}: input must be {layout}, got shape {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        raise ValueError(f"{op}: input must be float32 or float64, got {x.dtype}")


def _check_same_dtype(op, *tensors):
    named = [t for t in tensors if t is not None]
    if len({t.dtype for t in named}) > 1:
        raise ValueError(f"{op}: mixed dtypes {', '.join(str(t.dtype) for t in named)}")


def _pair(op, name, value):
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in pair):
        raise ValueError(f"{op}: {name} must be a positive int or a pair of them, got {value!r}")
    return tuple(int(v) for v in pair)


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


def _check_weight_and_bias(op, x, w, b, weight_layout):
    """w (laid out as weight_layout, input features on axis 1) must match x's axis 1;
    b must be (w.shape[0],); all of one dtype."""
    if w.ndim != weight_layout.count(",") + 1 or w.shape[1] != x.shape[1]:
        layout = weight_layout.replace("IN", str(x.shape[1]))
        raise ValueError(f"{op}: weight must be {layout} for input {x.shape}, got {w.shape}")
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"{op}: bias must be ({w.shape[0]},) for weight {w.shape}, got {b.shape}")
    _check_same_dtype(op, x, w, b)


def _check_window(op, x_shape, kernel, pads):
    padded = (x_shape[2] + pads[0] + pads[1], x_shape[3] + pads[2] + pads[3])
    if kernel[0] > padded[0] or kernel[1] > padded[1]:
        raise ValueError(f"{op}: kernel {kernel[0]}x{kernel[1]} is larger than the padded input "
                         f"{padded[0]}x{padded[1]} (input shape {x_shape}, pads {pads})")


# --------------------------------------------------------------------------- layers

def conv2d(x, w, b=None, stride=1, padding=0):
    """x: (N, C, H, W), w: (F, C, kH, kW), b: (F,) or None -> (N, F, Ho, Wo)."""
    _check_input("conv2d", x, (4,), "(N, C, H, W)")
    _check_weight_and_bias("conv2d", x, w, b, "(F, IN, kH, kW)")
    stride = _pair("conv2d", "stride", stride)
    kernel = w.shape[2:]
    pads = resolve_padding("conv2d", padding, x.shape[2:], kernel, stride)
    _check_window("conv2d", x.shape, kernel, pads)
    inputs = (x, w) if b is None else (x, w, b)
    return conv.Conv2d(stride, pads)(*inputs)


def linear(x, w, b=None):
    """x: (N, IN), w: (OUT, IN), b: (OUT,) -> (N, OUT)."""
    _check_input("linear", x, (2,), "(N, features)")
    _check_weight_and_bias("linear", x, w, b, "(OUT, IN)")
    return basic.Linear()(*((x, w) if b is None else (x, w, b)))


def _pool_geometry(op, x, kernel_size, stride, padding):
    """Checked (kernel, stride, pads) of a pooling of x: (N, C, H, W)."""
    _check_input(op, x, (4,), "(N, C, H, W)")
    kernel = _pair(op, "kernel_size", kernel_size)
    stride = kernel if stride is None else _pair(op, "stride", stride)
    pads = resolve_padding(op, padding, x.shape[2:], kernel, stride)
    if pads[0] >= kernel[0] or pads[1] >= kernel[0] or pads[2] >= kernel[1] or pads[3] >= kernel[1]:
        raise ValueError(f"{op}: padding {pads} must be smaller than the kernel {kernel} "
                         f"(a window of padding only has nothing to pool)")
    _check_window(op, x.shape, kernel, pads)
    return kernel, stride, pads


def _pool(mode, x, kernel_size, stride, padding, dropout=None):
    op = f"{mode}_pool2d"
    kernel, stride, pads = _pool_geometry(op, x, kernel_size, stride, padding)
    if dropout is None or not dropout[1] or dropout[0] == 0:  # no dropout in this pass
        return pool.Pool2d(mode, kernel, stride, pads)(x)
    rate, _, seed, step = dropout
    if not 0 <= rate < 1:
        raise ValueError(f"{op}: dropout rate must be in [0, 1), got {rate}")
    return pool.Pool2d(mode, kernel, stride, pads, (rate, seed, step))(x)


def max_pool2d(x, kernel_size, stride=None, padding=0, dropout=None):
    """Max over windows; padded cells never win. stride defaults to kernel_size.

    dropout: (rate, training, seed, step), F.dropout's arguments, applies dropout to the output
    in the same pass (nn.Sequential's fusion of a pool and the dropout after it); likewise for
    min_pool2d and avg_pool2d.
    """
    return _pool("max", x, kernel_size, stride, padding, dropout)


def min_pool2d(x, kernel_size, stride=None, padding=0, dropout=None):
    """Min over windows; padded cells never win."""
    return _pool("min", x, kernel_size, stride, padding, dropout)


def avg_pool2d(x, kernel_size, stride=None, padding=0, dropout=None):
    """Mean over windows; padded cells are not counted."""
    return _pool("avg", x, kernel_size, stride, padding, dropout)


def global_avg_pool2d(x):
    """(N, C, H, W) -> (N, C)."""
    _check_input("global_avg_pool2d", x, (4,), "(N, C, H, W)")
    return pool.GlobalAvgPool2d()(x)


def batch_norm(x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5,
               unbiased=True, relu=None, pool=None):
    """Normalize each channel of (N, C) or (N, C, H, W).

    running_mean, running_var: arrays (C,) updated in place when training. momentum is the
    weight of the new batch in the running average (PyTorch's convention: Keras'
    momentum=0.99 is momentum=0.01 here, with unbiased=False).
    relu: 'before' (batch_norm(relu(x))) or 'after' (relu(batch_norm(x))) fuses a ReLU into
    the same passes, training only (nn.Sequential's fusion pass uses it, minicnn/nn/fusion.py).
    pool: (mode, kernel_size, stride, padding) with relu='after' pools the result in the same
    pass as well (max_pool2d's arguments; mode 'max', 'min' or 'avg').
    """
    _check_input("batch_norm", x, (2, 4), "(N, C) or (N, C, H, W)")
    channels = x.shape[1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t.shape != (channels,):
            raise ValueError(f"batch_norm: {name} must be ({channels},) for input {x.shape}, got {t.shape}")
    if training and x.size == channels:
        raise ValueError(f"batch_norm: training needs more than one value per channel, got input {x.shape}")
    _check_same_dtype("batch_norm", x, weight, bias)
    if relu not in FUSED_BATCH_NORMS or (relu and not training):
        raise ValueError(f"batch_norm: relu must be None, or 'before' / 'after' in training, "
                         f"got {relu!r} with training={training}")
    state = (running_mean, running_var, training, momentum, eps, unbiased)
    if pool is None:
        return FUSED_BATCH_NORMS[relu](*state)(x, weight, bias)
    mode, kernel_size, stride, padding = pool
    if relu != "after" or mode not in ("max", "min", "avg"):
        raise ValueError(f"batch_norm: pool needs relu='after' and a mode of max, min or avg, "
                         f"got relu={relu!r}, mode {mode!r}")
    geometry = _pool_geometry(f"{mode}_pool2d", x, kernel_size, stride, padding)
    return fused.BatchNormReLUPool(*state, mode, *geometry)(x, weight, bias)


FUSED_BATCH_NORMS = {None: norm.BatchNorm, "before": fused.ReLUBatchNorm,
                     "after": fused.BatchNormReLU}


def dropout(x, rate, training=True, seed=0, step=0):
    """Inverted dropout; the identity when not training or rate == 0.

    (seed, step) choose the mask: nn.Dropout advances step on every call.
    """
    if not 0 <= rate < 1:
        raise ValueError(f"dropout: rate must be in [0, 1), got {rate}")
    if not training or rate == 0:
        return x
    return activation.Dropout(rate, seed, step)(x)


# --------------------------------------------------------------------------- activations, loss

def relu(x):
    return activation.ReLU()(x)


def sigmoid(x):
    return activation.Sigmoid()(x)


def softmax(x):
    """Along axis 1 of (N, K)."""
    _check_input("softmax", x, (2,), "(N, classes)")
    return activation.Softmax()(x)


def log_softmax(x):
    """Along axis 1 of (N, K)."""
    _check_input("log_softmax", x, (2,), "(N, classes)")
    return activation.LogSoftmax()(x)


def cross_entropy(logits, target):
    """Mean softmax cross-entropy. target: int labels (N,) or probabilities (N, K) (one-hot/soft)."""
    _check_input("cross_entropy", logits, (2,), "(N, classes)")
    t = target.data if isinstance(target, Tensor) else logits.device.asarray(target)
    n, classes = logits.shape
    if t.ndim == 1 and t.dtype.kind in "iu":
        if t.shape != (n,):
            raise ValueError(f"cross_entropy: {n} logits rows but {t.shape[0]} labels")
        # Range-check host labels only: on a GPU the check would cost a device-to-host sync
        # every step. There, a label out of range makes the loss inf, which training reports.
        if n and isinstance(t, np.ndarray) and (int(t.min()) < 0 or int(t.max()) >= classes):
            raise ValueError(f"cross_entropy: labels must be in [0, {classes}), got range "
                             f"[{int(t.min())}, {int(t.max())}]")
    elif t.shape == logits.shape and t.dtype.kind == "f":
        t = t.astype(logits.dtype, copy=False)
    else:
        raise ValueError(f"cross_entropy: target must be int labels ({n},) or probabilities "
                         f"{logits.shape}, got {t.dtype} {t.shape}")
    return loss.CrossEntropy(t)(logits)


# --------------------------------------------------------------------------- shapes, arithmetic

def flatten(x):
    """(N, ...) -> (N, prod(...))."""
    return basic.Reshape((x.shape[0], -1))(x)


def reshape(x, shape):
    return basic.Reshape(tuple(shape))(x)


def zero_pad2d(x, padding):
    """Pad H and W with zeros: padding as in conv2d (int, pair or 4-tuple)."""
    _check_input("zero_pad2d", x, (4,), "(N, C, H, W)")
    return basic.ZeroPad2d(resolve_padding("zero_pad2d", padding, x.shape[2:], (1, 1), (1, 1)))(x)


def _as_tensor(value, like):
    if isinstance(value, Tensor):
        return value
    return Tensor(like.device.asarray(value, dtype=like.dtype), like.device)


def add(a, b):
    """a + b with broadcasting."""
    a, b = (_as_tensor(a, b), b) if not isinstance(a, Tensor) else (a, _as_tensor(b, a))
    _check_broadcast("add", a, b)
    return basic.Add()(a, b)


def mul(a, b):
    """a * b with broadcasting (e.g. SE scaling: (N, C, H, W) * (N, C, 1, 1))."""
    a, b = (_as_tensor(a, b), b) if not isinstance(a, Tensor) else (a, _as_tensor(b, a))
    _check_broadcast("mul", a, b)
    return basic.Mul()(a, b)


def _check_broadcast(op, a, b):
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} do not broadcast") from None


def sum(x, axis=None, keepdims=False):  # noqa: A001 - mirrors torch.sum
    axes = None if axis is None else tuple(np.atleast_1d(axis).tolist())
    return basic.Sum(axes, keepdims)(x)


def mean(x, axis=None, keepdims=False):
    """Mean over `axis` (an int, a tuple, or None for all)."""
    axes = None if axis is None else tuple(np.atleast_1d(axis).tolist())
    count = x.size if axes is None else int(np.prod([x.shape[a] for a in axes]))
    return basic.Sum(axes, keepdims, scale=1.0 / count)(x)


# operators on Tensor, so that `a + b`, `a * b`, `-a` read naturally in model code
Tensor.__add__ = lambda self, other: add(self, other)
Tensor.__radd__ = lambda self, other: add(other, self)
Tensor.__mul__ = lambda self, other: mul(self, other)
Tensor.__rmul__ = lambda self, other: mul(other, self)
Tensor.__neg__ = lambda self: mul(self, -1.0)
Tensor.__sub__ = lambda self, other: add(self, -other if isinstance(other, Tensor) else -np.asarray(other))
Tensor.__rsub__ = lambda self, other: add(other, -self)
Tensor.reshape = lambda self, *shape: reshape(self, shape[0] if len(shape) == 1 else shape)
Tensor.sum = lambda self, axis=None, keepdims=False: sum(self, axis, keepdims)
Tensor.mean = lambda self, axis=None, keepdims=False: mean(self, axis, keepdims)
