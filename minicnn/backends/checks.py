"""The one validator: every argument rule of the kernels, in one table.

numpy_ref and CudaKernels share names and signatures; RULES holds, under a kernel's name and
with its signature, the rule its arguments must pass. Each op's forward (minicnn/ops/) runs
the rule beside its kernel call, `checks.conv2d_forward(*args)` then
`self.kernels.conv2d_forward(*args)`, so a bad call is the same one-line ValueError on cpu,
emu and cuda, whatever kernel set the device holds, and it comes before any work: no kernel
launch, no running statistic updated. tests/test_op_walk.py checks that every forward does.
Code that calls kernels directly can wrap a kernel set in `CheckedKernels` to get the same
rules on every call. The ops add only what kernels cannot see (that inputs are Tensors;
parsing stride and padding), so a shape or dtype rule is written once, here. Messages name
the public op (conv2d, max_pool2d) and the shapes.

Kernels without a rule here take what their arguments' shapes imply (backward passes receive
what their forward produced).
"""
from __future__ import annotations

import functools

import numpy as np

FLOAT_CHARS = {np.dtype(np.float32).char, np.dtype(np.float64).char}  # {"f", "d"}
POOL_MODES = ("max", "min", "avg")
FILL_MODES = ("nearest", "constant")


# --------------------------------------------------------------------------- shared rules

def floats(op, *arrays):
    """Every array given (None skipped) is float32 or float64, all of one dtype."""
    present = [a for a in arrays if a is not None]
    chars = {a.dtype.char for a in present}  # comparing chars is cheap; this runs every op call
    if chars <= FLOAT_CHARS and len(chars) <= 1:
        return
    for a in present:
        if a.dtype.char not in FLOAT_CHARS:
            raise ValueError(f"{op}: input must be float32 or float64, got {a.dtype}")
    raise ValueError(f"{op}: mixed dtypes {', '.join(str(a.dtype) for a in present)} "
                     f"(an op takes arrays of one dtype)")


def layout(op, x, ndims, text):
    """x has one of the ranks in ndims; text names the layout, e.g. '(N, C, H, W)'."""
    if x.ndim not in ndims:
        raise ValueError(f"{op}: input must be {text}, got shape {tuple(x.shape)}")


def weight_and_bias(op, x, w, b, weight_layout):
    """w (laid out as weight_layout, input features on axis 1) matches x's axis 1;
    b is (w.shape[0],)."""
    if w.ndim != weight_layout.count(",") + 1 or w.shape[1] != x.shape[1]:
        text = weight_layout.replace("IN", str(x.shape[1]))
        raise ValueError(f"{op}: weight must be {text} for input {tuple(x.shape)}, got "
                         f"{tuple(w.shape)} (the input has {x.shape[1]} channels/features)")
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise ValueError(f"{op}: bias must be ({w.shape[0]},) for weight {tuple(w.shape)}, "
                         f"got {tuple(b.shape)}")


def window(op, x_shape, kernel, pads):
    """A kernel x kernel window fits the padded (H, W) of x_shape (N, C, H, W)."""
    padded = (x_shape[2] + pads[0] + pads[1], x_shape[3] + pads[2] + pads[3])
    if kernel[0] > padded[0] or kernel[1] > padded[1]:
        raise ValueError(f"{op}: kernel {kernel[0]}x{kernel[1]} is larger than the padded input "
                         f"{padded[0]}x{padded[1]} (input shape {tuple(x_shape)}, pads "
                         f"{tuple(pads)}): the window does not fit")


def conv_output_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int) -> int:
    """Windows along one axis (convolution and pooling); at least one, else a ValueError."""
    out = (size + pad_before + pad_after - kernel) // stride + 1
    if out < 1:
        raise ValueError(f"window {kernel} with stride {stride} and pads ({pad_before}, "
                         f"{pad_after}) does not fit an input of size {size}")
    return out


def dropout_rate(op, rate):
    if not 0 <= rate < 1:
        raise ValueError(f"{op}: rate must be in [0, 1), got {rate}")


def broadcastable(op, a, b):
    try:
        np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
    except ValueError:
        raise ValueError(f"{op}: shapes {tuple(a.shape)} and {tuple(b.shape)} do not broadcast") from None


def only_supported(op, **given):
    """One line for what minicnn cannot compute. given: name=(value, the one value supported),
    for PyTorch arguments minicnn accepts so that PyTorch-style calls run where they can."""
    for name, (value, supported) in given.items():
        if value is not supported and (hasattr(value, "shape") or value != supported):
            shown = type(value).__name__ if hasattr(value, "shape") else repr(value)
            raise ValueError(f"{op}: {name}={shown} is not supported by minicnn "
                             f"(only {name}={supported!r})")


def _per_channel(op, x, **vectors):
    channels = x.shape[1]
    for name, v in vectors.items():
        if tuple(v.shape) != (channels,):
            raise ValueError(f"{op}: {name} must be ({channels},) for input {tuple(x.shape)}, "
                             f"got {tuple(v.shape)}")


# --------------------------------------------------------------------------- one rule per kernel
# Each has the kernel's name and signature (tests/test_checks.py compares them).

RULES = {}


def rule(function):
    """Register `function` as the rule of the kernel of the same name."""
    RULES[function.__name__] = function
    return function


@rule
def gemm(a, b, trans_a=False, trans_b=False):
    floats("gemm", a, b)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"gemm: takes 2-D arrays, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    k_a = a.shape[0] if trans_a else a.shape[1]
    k_b = b.shape[1] if trans_b else b.shape[0]
    if k_a != k_b:
        raise ValueError(f"gemm: inner sizes differ ({k_a} vs {k_b}) for shapes {tuple(a.shape)}, "
                         f"{tuple(b.shape)} with trans_a={trans_a}, trans_b={trans_b}")


@rule
def linear_forward(x, w, b):
    layout("linear", x, (2,), "(N, features)")
    floats("linear", x, w, b)
    weight_and_bias("linear", x, w, b, "(OUT, IN)")


@rule
def conv2d_forward(x, w, b, stride, pads):
    layout("conv2d", x, (4,), "(N, C, H, W)")
    floats("conv2d", x, w, b)
    weight_and_bias("conv2d", x, w, b, "(F, IN, kH, kW)")
    window("conv2d", x.shape, w.shape[2:], pads)


@rule
def conv2d_backward_data(dy, w, x_shape, stride, pads):
    floats("conv2d", dy, w)
    if len(x_shape) != 4 or w.ndim != 4 or w.shape[1] != x_shape[1] or dy.shape[1] != w.shape[0]:
        raise ValueError(f"conv2d: backward_data needs dy (N, F, Ho, Wo), w (F, C, kH, kW) and "
                         f"x_shape (N, C, H, W); got {tuple(dy.shape)}, {tuple(w.shape)}, {tuple(x_shape)}")
    window("conv2d", x_shape, w.shape[2:], pads)


@rule
def conv2d_backward_weight(dy, x, kernel, stride, pads):
    layout("conv2d", x, (4,), "(N, C, H, W)")
    floats("conv2d", dy, x)
    window("conv2d", x.shape, kernel, pads)


def _pool(mode, x_shape, kernel, pads):
    """The op name (max_pool2d ...) after checking the mode, the padding and the window."""
    if mode not in POOL_MODES:
        raise ValueError(f"pool2d: pool mode must be one of {', '.join(POOL_MODES)}, got {mode!r}")
    op = f"{mode}_pool2d"
    if len(x_shape) != 4:
        raise ValueError(f"{op}: input must be (N, C, H, W), got shape {tuple(x_shape)}")
    if max(pads[:2]) >= kernel[0] or max(pads[2:]) >= kernel[1]:
        raise ValueError(f"{op}: padding {tuple(pads)} must be smaller than the kernel {tuple(kernel)} "
                         f"(a window of padding only has nothing to pool)")
    window(op, x_shape, kernel, pads)
    return op


@rule
def pool2d_forward(x, mode, kernel, stride, pads):
    floats(_pool(mode, x.shape, kernel, pads), x)


@rule
def pool2d_backward(dy, index, x_shape, mode, kernel, stride, pads):
    floats(_pool(mode, x_shape, kernel, pads), dy)


@rule
def global_avg_pool_forward(x):
    layout("global_avg_pool2d", x, (4,), "(N, C, H, W)")
    floats("global_avg_pool2d", x)


@rule
def batch_norm_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps, unbiased):
    batch_norm_forward_eval(x, gamma, beta, running_mean, running_var, eps)
    if x.size == x.shape[1]:
        raise ValueError(f"batch_norm: training needs more than one value per channel, got input "
                         f"{tuple(x.shape)}")


@rule
def batch_norm_forward_eval(x, gamma, beta, running_mean, running_var, eps):
    layout("batch_norm", x, (2, 4), "(N, C) or (N, C, H, W)")
    floats("batch_norm", x, gamma, beta)
    _per_channel("batch_norm", x, weight=gamma, bias=beta, running_mean=running_mean,
                 running_var=running_var)


def _rows(op):
    def check(x):
        layout(op, x, (2,), "(N, classes)")
        floats(op, x)
    check.__name__ = f"{op}_forward"
    return rule(check)


softmax_forward = _rows("softmax")
log_softmax_forward = _rows("log_softmax")


def _elementwise(op):
    def check(x):
        floats(op, x)
    check.__name__ = f"{op}_forward"
    return rule(check)


relu_forward = _elementwise("relu")
sigmoid_forward = _elementwise("sigmoid")


@rule
def cross_entropy_forward(logits, target):
    layout("cross_entropy", logits, (2,), "(N, classes)")
    floats("cross_entropy", logits)
    n, classes = logits.shape
    if target.ndim == 1 and target.dtype.kind in "iu":
        if tuple(target.shape) != (n,):
            raise ValueError(f"cross_entropy: {n} logits rows but {target.shape[0]} labels")
        # Range-check host labels only: on a GPU the check would cost a device-to-host sync
        # every step. There, a label out of range makes the loss inf, which training reports.
        # (The recorder's DeviceArray is a NumPy array standing for a GPU one: not checked.)
        host = isinstance(target, np.ndarray) and not getattr(target, "on_device", False)
        if n and host and (int(target.min()) < 0 or int(target.max()) >= classes):
            raise ValueError(f"cross_entropy: labels must be in [0, {classes}), got range "
                             f"[{int(target.min())}, {int(target.max())}]")
    elif not (tuple(target.shape) == (n, classes) and target.dtype == logits.dtype):
        raise ValueError(f"cross_entropy: target must be int labels ({n},) or probabilities "
                         f"{(n, classes)} of the logits' dtype, got {target.dtype} {tuple(target.shape)}")


@rule
def cross_entropy_forward_train(logits, target):
    cross_entropy_forward(logits, target)


@rule
def dropout_forward(x, rate, seed, step):
    dropout_rate("dropout", rate)
    floats("dropout", x)


def _binary(op):
    def check(a, b):
        floats(op, a, b)
        broadcastable(op, a, b)
    check.__name__ = f"{op}_forward"
    return rule(check)


add_forward = _binary("add")
mul_forward = _binary("mul")


@rule
def zero_pad2d_forward(x, pads):
    layout("zero_pad2d", x, (4,), "(N, C, H, W)")
    floats("zero_pad2d", x)
    if len(pads) != 4 or min(pads) < 0:
        raise ValueError(f"zero_pad2d: pads must be 4 ints >= 0 (top, bottom, left, right), got {pads!r}")


@rule
def affine_warp(images, inverse, fill):
    floats("affine_warp", images)
    if fill not in FILL_MODES:
        raise ValueError(f"fill must be one of {', '.join(FILL_MODES)}, got {fill!r}")
    if images.ndim != 4:
        raise ValueError(f"affine_warp takes (N, C, H, W) images, got shape {tuple(images.shape)}")
    if tuple(np.shape(inverse)) != (images.shape[0], 2, 3):
        raise ValueError(f"inverse must have shape ({images.shape[0]}, 2, 3), got {tuple(np.shape(inverse))}")


@rule
def adjust_colour(images, factors):
    floats("adjust_colour", images)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"colour changes need (N, 3, H, W) images, got shape {tuple(images.shape)}")
    if tuple(np.shape(factors)) != (images.shape[0], 3):
        raise ValueError(f"factors must have shape ({images.shape[0]}, 3), got {tuple(np.shape(factors))}")


@rule
def prepare_batch(images, labels, index, inverse, fill, factors, mean, std, dtype):
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"prepare_batch takes (N, C, H, W) uint8 images, got {images.dtype} "
                         f"{tuple(images.shape)}")
    if tuple(labels.shape) != images.shape[:1] or index.ndim != 1 or index.dtype.kind not in "iu":
        raise ValueError(f"prepare_batch takes ({images.shape[0]},) labels and a 1-D int index, got "
                         f"{tuple(labels.shape)} and {index.dtype} {tuple(index.shape)}")
    if np.dtype(dtype).char not in FLOAT_CHARS:
        raise ValueError(f"prepare_batch makes float32 or float64 batches, got {np.dtype(dtype)}")
    batch = np.empty((index.shape[0], images.shape[1], 0, 0), dtype)  # the output's rules, no data
    if inverse is not None:
        affine_warp(batch, inverse, fill)
    if factors is not None:
        adjust_colour(batch, factors)
    channels = (images.shape[1],)
    if (mean is None) != (std is None) or (mean is not None and (
            tuple(np.shape(mean)) != channels or tuple(np.shape(std)) != channels)):
        raise ValueError(f"prepare_batch: mean and std must both be {channels} or both None")


# Fused passes (nn/fusion.py): the rules of the layers they stand for.

@rule
def relu_batch_norm_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps,
                                  unbiased):
    batch_norm_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps, unbiased)


@rule
def batch_norm_relu_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps,
                                  unbiased):
    batch_norm_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps, unbiased)


@rule
def batch_norm_relu_pool_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps,
                                       unbiased, mode, kernel, stride, pads):
    batch_norm_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps, unbiased)
    pool2d_forward(x, mode, kernel, stride, pads)


@rule
def dropout_apply(x, rate, seed, step):
    dropout_forward(x, rate, seed, step)


@rule
def pool2d_dropout_forward(x, mode, kernel, stride, pads, rate, seed, step):
    pool2d_forward(x, mode, kernel, stride, pads)
    dropout_rate(f"{mode}_pool2d", rate)


@rule
def relu_batch_norm_pool_dropout_forward_train(x, gamma, beta, running_mean, running_var, momentum,
                                               eps, unbiased, mode, kernel, stride, pads, rate,
                                               seed, step):
    batch_norm_relu_pool_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps,
                                       unbiased, mode, kernel, stride, pads)
    dropout_rate(f"{mode}_pool2d", rate)


@rule
def conv2d_relu_forward(x, w, b, stride, pads):
    conv2d_forward(x, w, b, stride, pads)


# --------------------------------------------------------------------------- the wrapper

class CheckedKernels:
    """A kernel set (numpy_ref or CudaKernels) whose kernels first run their rule of RULES,
    for code that calls kernels directly (the ops run the rules themselves).

    Everything else (kernels without a rule, the set's own attributes such as xp) is the
    wrapped set's, so `CheckedKernels(device.kernels).<name>` takes the same calls.
    """

    def __init__(self, kernels):
        self.kernels = kernels
        for name, rule in RULES.items():
            setattr(self, name, _checked(rule, getattr(kernels, name)))

    def __getattr__(self, name):
        return getattr(self.kernels, name)

    def __repr__(self) -> str:
        return f"CheckedKernels({self.kernels!r})"


def _checked(rule, kernel):
    @functools.wraps(kernel)
    def call(*args, **kwargs):
        rule(*args, **kwargs)
        return kernel(*args, **kwargs)
    return call

