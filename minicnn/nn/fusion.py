"""Fusion: neighbouring layers of an nn.Sequential run as one pass (the backends' business).

nn.Sequential runs its layers through run_layers(). In training mode, neighbours become one
fused Function, which computes exactly the numbers of the separate layers without storing the
maps between them and with fewer kernel launches (the first pattern that fits wins):

    ReLU -> batch norm -> pooling -> dropout F.batch_norm(..., relu='before', pool=..., dropout=...)
    ReLU -> batch norm 1d -> dropout         F.batch_norm(..., relu='before', dropout=...)
    batch norm -> ReLU -> pooling            F.batch_norm(..., relu='after', pool=...)
    ReLU -> batch norm, batch norm -> ReLU   F.batch_norm(..., relu='before' | 'after')
    pooling -> dropout                       F.max_pool2d(..., dropout=(rate, True, seed, step))
    conv -> ReLU (no batch norm next)        F.conv2d(..., relu=True)

A conv -> ReLU pair followed by another conv (vgg_like's conv_a, ReLU, conv_b) also hands the
ReLU's backward to that conv: its dx is multiplied by the ReLU mask (x > 0) where the kernel
produces it (kernels.conv2d_backward's relu_input), so the pair's backward is its conv's alone.

(A ReLU between a conv and a batch norm joins the batch norm: either way it costs no launch
of its own, and the batch norm's passes read the conv's output once instead of twice.)
A conv or linear layer with a bias whose output goes to a batch norm (alone or in one of the
groups above) stays its own Function, but hands its bias gradient over to the batch norm: that
gradient is the channel sums of the batch norm's dx, which its dx pass adds up as it writes dx
(ops/norm.py's BatchNorm.bias_grad_to), so no pass of the layer's own computes it.

Nothing about the model changes: its layers, names, parameters and state dict stay the user's,
so layer tables, feature maps and CAM are unaffected. A layer with a forward hook is never
fused, so every hook sees its own layer's output; evaluation (model.eval()) runs the layers one
by one.

    with fusion.unfused():        # the layers one by one, e.g. to compare the two
        loss = model(x)
"""
from __future__ import annotations

import contextlib
import inspect

from minicnn.nn.layers import BatchNorm1d, Conv2d, Dropout, Linear, ReLU, _BatchNorm, _Pool
from minicnn.ops.conv import Conv2d as Conv2dFunction
from minicnn.ops.conv import Conv2dReLU
from minicnn.ops.norm import BatchNorm, TakesBiasGrad

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


def _fusable(layers) -> bool:
    return enabled and all(layer.training and not layer._hooks for layer in layers)


def _plain_pool(layer) -> bool:
    """A pooling layer whose PyTorch options (ceil_mode ...) are all at their defaults: the
    fused passes implement only those (the layer alone says so in one line otherwise)."""
    defaults = inspect.signature(type(layer).__init__).parameters
    return isinstance(layer, _Pool) and all(
        name in defaults and defaults[name].default == value for name, value in layer.options.items())


def _fused_call(layers):
    """(the fused pass of the first layers of `layers` as a function of x, how many layers it
    covers), or (None, 1) when the first layer runs on its own."""
    first, second, third, fourth = (list(layers[:4]) + [None] * 3)[:4]
    norm_next = isinstance(second, _BatchNorm) or type(second) is ReLU and isinstance(third, _BatchNorm)
    if isinstance(first, (Conv2d, Linear)) and first.bias is not None and _fusable(layers[:1]) \
            and norm_next:
        normalize, count = _fused_call(layers[1:])
        if normalize is not None or _fusable(layers[1:2]):
            return lambda x: _bias_grad_by_batch_norm(first(x), normalize or layers[1]), 1 + count
    if fourth is not None and _fusable(layers[:4]) and type(first) is ReLU \
            and isinstance(second, _BatchNorm) and _plain_pool(third) \
            and isinstance(fourth, Dropout) and fourth.rate > 0:
        return lambda x: second.normalize(x, relu="before", pool=third,
                                          dropout=fourth.next_mask()), 4
    if third is not None and _fusable(layers[:3]) and type(first) is ReLU \
            and isinstance(second, BatchNorm1d) and isinstance(third, Dropout) and third.rate > 0:
        return lambda x: second.normalize(x, relu="before", dropout=third.next_mask()), 3
    if third is not None and _fusable(layers[:3]) and isinstance(first, _BatchNorm) \
            and type(second) is ReLU and _plain_pool(third):
        return lambda x: first.normalize(x, relu="after", pool=third), 3
    if second is None or not _fusable(layers[:2]):
        return None, 1
    if type(first) is ReLU and isinstance(second, _BatchNorm):
        return lambda x: second.normalize(x, relu="before"), 2
    if isinstance(first, _BatchNorm) and type(second) is ReLU:
        return lambda x: first.normalize(x, relu="after"), 2
    if _plain_pool(first) and isinstance(second, Dropout) and second.rate > 0:
        return lambda x: first.forward(x, dropout=second.next_mask()), 2
    if isinstance(first, Conv2d) and type(second) is ReLU and not isinstance(third, _BatchNorm):
        return lambda x: first.forward(x, relu=True), 2
    return None, 1


def _bias_grad_by_batch_norm(y, normalize):
    """normalize(y), the batch norm's Function told to hand its dx sums to y's creator."""
    out = normalize(y)
    taker, norm = y.creator, out.creator
    if isinstance(taker, TakesBiasGrad) and isinstance(norm, BatchNorm) and norm.inputs[0] is y:
        norm.bias_grad_to = taker
    return out


def run_layers(layers, x):
    """Apply `layers` in order, fusing neighbours that allow it."""
    i, relu_output = 0, None  # the output of a fused conv -> ReLU just run
    while i < len(layers):
        fused, count = _fused_call(layers[i:])
        y = layers[i](x) if fused is None else fused(x)
        if relu_output is not None and isinstance(layers[i], Conv2d) and _fusable(layers[i:i + 1]):
            _move_relu_backward(relu_output, y)
        relu_output = y if fused is not None and count == 2 and isinstance(layers[i], Conv2d) \
            and type(layers[i + 1]) is ReLU else None
        x, i = y, i + count
    return x


def _move_relu_backward(x, y):
    """x: a fused conv -> ReLU's output, whose only consumer is the conv layer that led to y (y
    its output, or that of a pattern starting with it). That conv's dx then applies the ReLU's
    backward (relu_input) as it is produced, and the pair's backward skips its own pass."""
    producer, consumer = x.creator, y.creator
    for _ in range(3):  # the conv's Function is y's creator or a batch norm's input's
        if consumer is None or consumer.inputs[0] is x:
            break
        consumer = consumer.inputs[0].creator
    if isinstance(producer, Conv2dReLU) and isinstance(consumer, Conv2dFunction) \
            and consumer.inputs[0] is x:
        consumer.relu_input = producer.grad_masked_below = True
