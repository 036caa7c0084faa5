"""The functional API (`from minicnn import functional as F`): parses arguments, then runs an op.

Names and layouts follow PyTorch's torch.nn.functional so people can move between the two.
The shape and dtype rules live in one place, minicnn/backends/checks.py, and run when the op
calls its kernel, on every device alike: a bad call is a ValueError naming the op and the
shapes. What is checked here is only what kernels cannot see: that inputs are Tensors, and
the stride and padding arguments.
"""
from __future__ import annotations

import math

import numpy as np

from minicnn.autograd import Tensor
from minicnn.backends.checks import cross_entropy_forward as check_cross_entropy
from minicnn.backends.checks import dropout_rate, only_supported
from minicnn.ops import activation, basic, conv, fused, loss, norm, pool

# --------------------------------------------------------------------------- argument checks

def _check_tensor(op, x):
    if not isinstance(x, Tensor):
        raise ValueError(f"{op}: expected a minicnn Tensor, got {type(x).__name__}")


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


# --------------------------------------------------------------------------- layers

def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """x: (N, C, H, W), w: (F, C, kH, kW), b: (F,) or None -> (N, F, Ho, Wo)."""
    _check_tensor("conv2d", x)
    only_supported("conv2d", dilation=(dilation, 1), groups=(groups, 1))
    stride = _pair("conv2d", "stride", stride)
    pads = resolve_padding("conv2d", padding, x.shape[2:], w.shape[2:], stride)
    inputs = (x, w) if b is None else (x, w, b)
    return conv.Conv2d(stride, pads)(*inputs)


def linear(x, w, b=None):
    """x: (N, IN), w: (OUT, IN), b: (OUT,) -> (N, OUT)."""
    _check_tensor("linear", x)
    return basic.Linear()(*((x, w) if b is None else (x, w, b)))


def _pool_geometry(op, x, kernel_size, stride, padding):
    """(kernel, stride, pads) of a pooling of x: (N, C, H, W) (the kernels check the rest)."""
    _check_tensor(op, x)
    kernel = _pair(op, "kernel_size", kernel_size)
    stride = kernel if stride is None else _pair(op, "stride", stride)
    return kernel, stride, resolve_padding(op, padding, x.shape[2:], kernel, stride)


def _pool(mode, x, kernel_size, stride, padding, dropout=None):
    """dropout: (rate, seed, step) of a dropout applied to the output in the same pass."""
    op = f"{mode}_pool2d"
    kernel, stride, pads = _pool_geometry(op, x, kernel_size, stride, padding)
    if dropout is not None:
        dropout_rate(op, dropout[0])
    if dropout is None or dropout[0] == 0:
        return pool.Pool2d(mode, kernel, stride, pads)(x)
    return pool.Pool2d(mode, kernel, stride, pads, tuple(dropout))(x)

def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, dropout=None):
    """Max over windows; padded cells never win. stride defaults to kernel_size.

    dropout: (rate, seed, step) applies that dropout to the output in the same pass
    (nn.Sequential's fusion of a pool and the dropout layer after it); likewise for
    min_pool2d and avg_pool2d.
    """
    only_supported("max_pool2d", dilation=(dilation, 1), ceil_mode=(ceil_mode, False),
                   return_indices=(return_indices, False))
    return _pool("max", x, kernel_size, stride, padding, dropout)


def min_pool2d(x, kernel_size, stride=None, padding=0, dropout=None):
    """Min over windows; padded cells never win."""
    return _pool("min", x, kernel_size, stride, padding, dropout)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=False,
               divisor_override=None, dropout=None):
    """Mean over windows; padded cells are not counted (count_include_pad=False, which is not
    PyTorch's default: TensorFlow's 'same' pooling, which the reports use, counts this way)."""
    only_supported("avg_pool2d", ceil_mode=(ceil_mode, False),
                   count_include_pad=(count_include_pad, False),
                   divisor_override=(divisor_override, None))
    return _pool("avg", x, kernel_size, stride, padding, dropout)


def global_avg_pool2d(x):
    """(N, C, H, W) -> (N, C)."""
    _check_tensor("global_avg_pool2d", x)
    return pool.GlobalAvgPool2d()(x)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5, unbiased=True, relu=None, pool=None):
    """Normalize each channel of (N, C) or (N, C, H, W).

    running_mean, running_var: arrays (C,) updated in place when training. momentum is the
    weight of the new batch in the running average (PyTorch's convention: Keras'
    momentum=0.99 is momentum=0.01 here, with unbiased=False). weight / bias None: 1 / 0.
    relu: 'before' (batch_norm(relu(x))) or 'after' (relu(batch_norm(x))) fuses a ReLU into
    the same passes, training only (nn.Sequential's fusion pass uses it, minicnn/nn/fusion.py).
    pool: (mode, kernel_size, stride, padding) with relu='after' pools the result in the same
    pass as well (max_pool2d's arguments; mode 'max', 'min' or 'avg').
    """
    _check_tensor("batch_norm", x)
    if weight is None:
        weight = Tensor(x.device.xp.ones(x.shape[1], x.dtype), x.device)
    if bias is None:
        bias = Tensor(x.device.xp.zeros(x.shape[1], x.dtype), x.device)
    if relu not in FUSED_BATCH_NORMS or (relu and not training):
        raise ValueError(f"batch_norm: relu must be None, or 'before' / 'after' in training, "
                         f"got {relu!r} with training={training}")
    state = (running_mean, running_var, training, momentum, eps, unbiased)
    if pool is None:
        return FUSED_BATCH_NORMS[relu](*state)(x, weight, bias)
    mode, kernel_size, stride, padding = pool
    if relu != "after":
        raise ValueError(f"batch_norm: pool needs relu='after', got relu={relu!r}")
    geometry = _pool_geometry(f"{mode}_pool2d", x, kernel_size, stride, padding)
    return fused.BatchNormReLUPool(*state, mode, *geometry)(x, weight, bias)


FUSED_BATCH_NORMS = {None: norm.BatchNorm, "before": fused.ReLUBatchNorm,
                     "after": fused.BatchNormReLU}

def dropout(x, p=0.5, training=True, inplace=False, *, seed=0, step=0):
    """Inverted dropout with rate p; the identity when not training or p == 0.

    (seed, step) choose the mask: nn.Dropout advances step on every call. inplace is accepted
    for PyTorch's signature; minicnn always returns a new tensor.
    """
    dropout_rate("dropout", p)  # also when not training: a bad rate is a bug either way
    if not training or p == 0:
        return x
    return activation.Dropout(p, seed, step)(x)


# --------------------------------------------------------------------------- activations, loss

def relu(x, inplace=False):
    """max(x, 0). inplace is accepted for PyTorch's signature; the result is a new tensor."""
    return activation.ReLU()(x)


def sigmoid(x):
    return activation.Sigmoid()(x)


def _dim(op, x, dim):
    """dim as an axis of x: negative dims count from the end; None is PyTorch's implicit
    choice (0 for 0-, 1- and 3-D inputs, else 1: the class axis of (N, K) and (N, C, H, W))."""
    _check_tensor(op, x)
    if dim is None:
        dim = 0 if x.ndim in (0, 1, 3) else 1
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"{op}: dim {dim} is out of range for an input of shape {x.shape}")
    return dim % x.ndim


def softmax(x, dim=None):
    """Probabilities along `dim`, for inputs of any rank."""
    return activation.Softmax(_dim("softmax", x, dim))(x)


def log_softmax(x, dim=None):
    """log(softmax(x, dim)), computed without forming softmax (no log(0))."""
    return activation.LogSoftmax(_dim("log_softmax", x, dim))(x)


def cross_entropy(logits, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):
    """Softmax cross-entropy of logits (N, K); target: int labels (N,) or probabilities (N, K).

    reduction: 'mean' over the batch, 'sum', or 'none' (one loss per row, (N,)).
    label_smoothing e: the target becomes (1 - e) * target + e / K, PyTorch's rule.
    The plain mean is one fused kernel (the training loss); the other forms are built from
    ops (one-hot, log_softmax, mul, sum), so their backward comes from those ops.
    """
    _check_tensor("cross_entropy", logits)
    only_supported("cross_entropy", weight=(weight, None), ignore_index=(ignore_index, -100))
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    t = target.data if isinstance(target, Tensor) else logits.device.asarray(target)
    if t.dtype.kind == "f":  # probabilities are read in the logits' dtype
        t = t.astype(logits.dtype, copy=False)
    if reduction == "mean" and label_smoothing == 0:
        return loss.CrossEntropy(t)(logits)
    check_cross_entropy(logits.data, t)
    classes = logits.shape[1]
    if t.ndim == 1:
        t = logits.device.kernels.one_hot(t, classes, logits.dtype)
    q = Tensor(t, logits.device)
    if label_smoothing:
        q = q * (1 - label_smoothing) + label_smoothing / classes
    rows = -sum(log_softmax(logits, dim=1) * q, dim=1)
    return rows if reduction == "none" else sum(rows) if reduction == "sum" else mean(rows)


# --------------------------------------------------------------------------- shapes, arithmetic

def flatten(x):
    """(N, ...) -> (N, prod(...))."""
    return basic.Reshape((x.shape[0], -1))(x)


def reshape(x, shape):
    return basic.Reshape(tuple(shape))(x)


def zero_pad2d(x, padding):
    """Pad H and W with zeros: padding as in conv2d (int, pair or 4-tuple)."""
    _check_tensor("zero_pad2d", x)
    return basic.ZeroPad2d(resolve_padding("zero_pad2d", padding, x.shape[2:], (1, 1), (1, 1)))(x)


def _as_tensor(value, like):
    if isinstance(value, Tensor):
        return value
    return Tensor(like.device.asarray(value, dtype=like.dtype), like.device)


def add(a, b):
    """a + b with broadcasting."""
    a, b = (_as_tensor(a, b), b) if not isinstance(a, Tensor) else (a, _as_tensor(b, a))
    return basic.Add()(a, b)


def mul(a, b):
    """a * b with broadcasting (e.g. SE scaling: (N, C, H, W) * (N, C, 1, 1))."""
    a, b = (_as_tensor(a, b), b) if not isinstance(a, Tensor) else (a, _as_tensor(b, a))
    return basic.Mul()(a, b)


def _axes(dim, axis, keepdim, keepdims):
    """PyTorch's (dim, keepdim) or NumPy's (axis, keepdims): (axes tuple or None, keepdims)."""
    dim = axis if dim is None else dim
    keep = keepdim if keepdims is None else keepdims
    return (None if dim is None else tuple(np.atleast_1d(dim).tolist())), bool(keep)


def sum(x, dim=None, keepdim=False, *, axis=None, keepdims=None):  # noqa: A001 - mirrors torch.sum
    """Sum over `dim` (an int, a tuple, or None for all); NumPy's axis/keepdims also work."""
    axes, keep = _axes(dim, axis, keepdim, keepdims)
    return basic.Sum(axes, keep)(x)


def mean(x, dim=None, keepdim=False, *, axis=None, keepdims=None):
    """Mean over `dim` (an int, a tuple, or None for all); NumPy's axis/keepdims also work."""
    axes, keep = _axes(dim, axis, keepdim, keepdims)
    count = x.size if axes is None else int(np.prod([x.shape[a] for a in axes]))
    return basic.Sum(axes, keep, scale=1.0 / count)(x)
