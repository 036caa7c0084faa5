"""Every op and every module, on small random shapes chosen to hit the awkward cases:
odd sizes, batch 1, strides 1 and 2, TensorFlow-'same' padding with its extra bottom/right row,
asymmetric pads, kernels that overlap (3x3/2 pools) and that do not (2x2/2).

Each entry is a gradcheck.Case; `minicnn gradcheck --op NAME` selects by its `op` field.
"""

import numpy as np

from minicnn import functional as F
from minicnn import nn
from minicnn.gradcheck import Case, leaf


def _op(op, shape, inputs, fn, **scales):
    """A case for fn(*tensors) with random inputs of the given shapes."""
    def build(rng, device, dtype):
        tensors = [leaf(rng, device, dtype, s, scales.get("scale", 1.0)) for s in inputs]
        return (lambda: fn(*tensors)), tensors
    return Case(op, shape, build)


def _module(op, shape, x_shape, make, train=True):
    """A case for a module: the input and every parameter are checked."""
    def build(rng, device, dtype):
        module = make().to(device, dtype).train(train)
        params = module.parameters()
        for p in params:  # fresh draws from the case's rng so every device sees the same numbers
            p.data[...] = device.asarray(rng.standard_normal(p.shape) * 0.5, dtype=dtype)
        for _, buffer in module.named_buffers():
            if buffer.dtype.kind == "f":
                buffer[...] = device.asarray(rng.uniform(0.5, 1.5, buffer.shape), dtype=dtype)
        x = leaf(rng, device, dtype, x_shape)
        dropouts = [m for m in module.modules() if isinstance(m, nn.Dropout)]

        def forward():
            for d in dropouts:  # a fixed mask: the same (seed, step) on every call
                d.step[...] = 0
            return module(x)
        return forward, [x] + params
    return Case(op, shape, build)


def _labels(rng, n, classes):
    return rng.integers(0, classes, n)


def _cross_entropy_case(soft):
    def build(rng, device, dtype):
        logits = leaf(rng, device, dtype, (5, 7))
        if soft:
            target = rng.uniform(size=(5, 7))
            target = device.asarray(target / target.sum(axis=1, keepdims=True), dtype=dtype)
        else:
            target = device.asarray(_labels(rng, 5, 7))
        return (lambda: F.cross_entropy(logits, target)), [logits]
    return Case("cross_entropy", f"(5,7) {'soft targets' if soft else 'int labels'}", build)


def _cross_entropy_variant(soft, reduction, label_smoothing):
    """PyTorch's other forms: reduction 'sum' / 'none', label smoothing (built from ops)."""
    def build(rng, device, dtype):
        logits = leaf(rng, device, dtype, (4, 5))
        target = (device.asarray(rng.dirichlet(np.ones(5), 4), dtype=dtype) if soft
                  else device.asarray(_labels(rng, 4, 5)))
        return (lambda: F.cross_entropy(logits, target, reduction=reduction,
                                        label_smoothing=label_smoothing)), [logits]
    kind = "soft targets" if soft else "int labels"
    return Case("cross_entropy", f"(4,5) {kind} reduction={reduction} smoothing={label_smoothing}", build)


def _batch_norm_case(ndim_shape, training):
    def build(rng, device, dtype):
        x = leaf(rng, device, dtype, ndim_shape)
        gamma, beta = leaf(rng, device, dtype, (ndim_shape[1],)), leaf(rng, device, dtype, (ndim_shape[1],))
        mean = device.asarray(rng.standard_normal(ndim_shape[1]), dtype=dtype)
        var = device.asarray(rng.uniform(0.5, 2.0, ndim_shape[1]), dtype=dtype)
        return (lambda: F.batch_norm(x, mean, var, gamma, beta, training, 0.1, 1e-3)), [x, gamma, beta]
    mode = "train" if training else "eval"
    return Case("batch_norm", f"{ndim_shape} {mode}", build)


def _dropout_case():
    return _op("dropout", "(3,4,5) rate 0.4 fixed mask", [(3, 4, 5)],
               lambda x: F.dropout(x, 0.4, True, seed=7, step=3))


def _conv_cases():
    configs = [  # x shape, w shape, stride, padding, bias
        ((1, 3, 5, 6), (4, 3, 3, 3), 1, 1, True),
        ((2, 2, 7, 5), (3, 2, 3, 3), 2, "same", True),
        ((2, 3, 6, 6), (2, 3, 2, 2), 1, "valid", False),
        ((1, 2, 5, 7), (3, 2, 2, 3), (2, 1), (0, 1, 2, 0), True),
        ((2, 3, 5, 5), (4, 3, 1, 1), 2, 0, False),
        ((1, 1, 4, 4), (2, 1, 4, 4), 1, "same", True),
    ]
    cases = []
    for x, w, stride, padding, bias in configs:
        shapes = [x, w] + ([(w[0],)] if bias else [])
        cases.append(_op("conv2d", f"x{x} w{w} s={stride} p={padding!r}", shapes,
                         lambda *t, s=stride, p=padding: F.conv2d(*t, stride=s, padding=p)))
    return cases


def _pool_cases():
    configs = [  # x shape, kernel, stride, padding
        ((2, 2, 7, 7), 3, 2, "same"),
        ((1, 3, 8, 8), 3, 2, "same"),
        ((2, 2, 6, 5), 2, 2, 0),
        ((1, 2, 5, 5), 3, 1, 1),
        ((1, 1, 15, 15), 3, 2, "valid"),
    ]
    functions = {"max_pool2d": F.max_pool2d, "min_pool2d": F.min_pool2d, "avg_pool2d": F.avg_pool2d}
    return [_op(name, f"x{x} k={k} s={s} p={p!r}", [x], lambda t, fn=fn, k=k, s=s, p=p: fn(t, k, s, p))
            for name, fn in functions.items() for x, k, s, p in configs]


def op_cases():
    return [
        *_conv_cases(),
        *_pool_cases(),
        _op("global_avg_pool2d", "(2,3,5,4)", [(2, 3, 5, 4)], F.global_avg_pool2d),
        _op("linear", "x(3,5) w(4,5) b(4)", [(3, 5), (4, 5), (4,)], F.linear),
        _op("linear", "x(1,6) w(2,6) no bias", [(1, 6), (2, 6)], F.linear),
        _batch_norm_case((6, 4), True),
        _batch_norm_case((6, 4), False),
        _batch_norm_case((2, 3, 4, 5), True),
        _batch_norm_case((2, 3, 4, 5), False),
        _batch_norm_case((1, 2, 3, 3), True),
        _dropout_case(),
        _op("relu", "(2,3,4,5)", [(2, 3, 4, 5)], F.relu),
        _op("sigmoid", "(4,7)", [(4, 7)], F.sigmoid, scale=3.0),
        _op("softmax", "(4,7)", [(4, 7)], F.softmax),
        _op("log_softmax", "(4,7)", [(4, 7)], F.log_softmax),
        _cross_entropy_case(soft=False),
        _cross_entropy_case(soft=True),
        _cross_entropy_variant(False, "none", 0.0),
        _cross_entropy_variant(False, "sum", 0.1),
        _cross_entropy_variant(True, "mean", 0.2),
        _op("softmax", "(3,4,5) dim=0", [(3, 4, 5)], lambda x: F.softmax(x, dim=0)),
        _op("log_softmax", "(2,3,4) dim=-1", [(2, 3, 4)], lambda x: F.log_softmax(x, dim=-1)),
        _op("sum", "(2,3,4) dim=(0,2) torch names", [(2, 3, 4)], lambda x: x.sum(dim=(0, 2))),
        _op("add", "(2,3,4,4) + (2,3,4,4)", [(2, 3, 4, 4), (2, 3, 4, 4)], F.add),
        _op("add", "(2,3,4) + (3,1) broadcast", [(2, 3, 4), (3, 1)], F.add),
        _op("mul", "(2,3,4,4) * (2,3,1,1) SE scale", [(2, 3, 4, 4), (2, 3, 1, 1)], F.mul),
        _op("mean", "(2,3,4,5) over (2,3)", [(2, 3, 4, 5)], lambda x: F.mean(x, axis=(2, 3))),
        _op("mean", "(3,4) all", [(3, 4)], F.mean),
        _op("sum", "(3,4,2) over 1 keepdims", [(3, 4, 2)], lambda x: F.sum(x, axis=1, keepdims=True)),
        _op("flatten", "(2,3,2,2)", [(2, 3, 2, 2)], F.flatten),
        _op("zero_pad2d", "(1,2,3,3) pad (1,0,2,1)", [(1, 2, 3, 3)], lambda x: F.zero_pad2d(x, (1, 0, 2, 1))),
    ]


def module_cases():
    return [
        _module("nn.Conv2d", "3->4 3x3 same", (2, 3, 5, 5), lambda: nn.Conv2d(3, 4, 3, padding="same")),
        _module("nn.Linear", "5->3", (4, 5), lambda: nn.Linear(5, 3)),
        _module("nn.BatchNorm1d", "4 train", (5, 4), lambda: nn.BatchNorm1d(4)),
        _module("nn.BatchNorm2d", "3 train keras", (2, 3, 3, 3),
                lambda: nn.BatchNorm2d(3, convention="keras")),
        _module("nn.BatchNorm2d", "3 eval", (2, 3, 3, 3), lambda: nn.BatchNorm2d(3), train=False),
        _module("nn.Dropout", "rate 0.3", (3, 8), lambda: nn.Dropout(0.3, seed=11)),
        _module("nn.ReLU", "", (2, 6), nn.ReLU),
        _module("nn.MaxPool2d", "3x3/2 same", (1, 2, 7, 6), lambda: nn.MaxPool2d(3, 2, "same")),
        _module("nn.AvgPool2d", "2x2/2", (1, 2, 5, 6), lambda: nn.AvgPool2d(2)),
        _module("nn.MinPool2d", "3x3/2 pad 1", (1, 2, 6, 7), lambda: nn.MinPool2d(3, 2, 1)),
        _module("nn.GlobalAvgPool2d", "", (2, 3, 3, 2), nn.GlobalAvgPool2d),
        _module("nn.Flatten", "", (2, 2, 2, 3), nn.Flatten),
        _module("nn.ZeroPad2d", "1", (1, 2, 3, 3), lambda: nn.ZeroPad2d(1)),
        _module("nn.Sequential", "conv-bn-relu-pool-drop-fc", (2, 2, 6, 6), lambda: nn.Sequential(
            nn.Conv2d(2, 3, 3, padding="same"), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(3, 2, "same"),
            nn.Dropout(0.25, seed=5), nn.Flatten(), nn.Linear(27, 4))),
        _module("nn.ResidualBlock", "basic 3->3", (2, 3, 4, 4), lambda: nn.ResidualBlock(3, 3)),
        _module("nn.ResidualBlock", "basic 2->4 stride 2 (projection)", (2, 2, 5, 5),
                lambda: nn.ResidualBlock(2, 4, stride=2)),
        _module("nn.ResidualBlock", "pre-activation 2->3 (projection)", (2, 2, 4, 4),
                lambda: nn.ResidualBlock(2, 3, preact=True)),
        _module("nn.ResidualBlock", "pre-activation 3->3 + SE", (2, 3, 4, 4),
                lambda: nn.ResidualBlock(3, 3, preact=True, se=2)),
        _module("nn.SEBlock", "4 channels, reduction 2", (2, 4, 3, 3), lambda: nn.SEBlock(4, 2)),
    ]


def all_cases():
    return op_cases() + module_cases()
