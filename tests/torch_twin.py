"""A PyTorch twin of a minicnn network: the same layers, minicnn's weights copied in, parameters
named by minicnn's dotted paths. Used by tests/test_torch_parity.py, benchmarks/bn_seeds.py and
benchmarks/cpu_train.py.

    twin = torch_twin(model, bn="keras")          # model: a minicnn Module; twin: a torch.nn.Module
    dict(twin.named_parameters())["conv1.weight"]  # the same name as in model.named_parameters()

bn="keras" keeps minicnn's Keras-convention layers exactly (the plain batch variance in
running_var, momentum as minicnn stores it); bn="torch" uses torch.nn.BatchNorm*d with the same
momentum and eps, which stores the unbiased variance (PyTorch's own convention).
dropout="minicnn" takes minicnn's masks: the twin draws each mask from the reference Philox
generator with the layer's (seed, step), as minicnn does, so both networks drop the same units.
dropout="torch" is torch.nn.Dropout with the same rate: other masks, but PyTorch's own speed,
which is what a speed comparison wants (bn="torch" likewise).

Padding follows minicnn's arguments, 'same' by TensorFlow's rule (the odd extra row/column at the
bottom/right), restated here rather than imported so the parity test also checks minicnn's rule.
Pads equal on both sides go to the convolution or pooling itself, as PyTorch code writes them;
only uneven ones become an explicit F.pad first.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn as tnn
from torch.nn import functional as TF

from minicnn import nn
from minicnn.backends import numpy_ref, to_host

BN_CONVENTIONS = ("keras", "torch")
DROPOUT_MASKS = ("minicnn", "torch")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' rule: (before, after), the odd extra row/column after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, (int, np.integer)) else tuple(value)


def _fixed_pads(padding) -> tuple[int, int, int, int]:
    """minicnn's padding argument other than 'same' -> F.pad's (left, right, top, bottom)."""
    if padding == "valid" or padding == 0:
        return (0, 0, 0, 0)
    if isinstance(padding, (int, np.integer)):
        return (padding,) * 4
    if len(padding) == 2:
        return (padding[1], padding[1], padding[0], padding[0])
    top, bottom, left, right = padding
    return (left, right, top, bottom)


def _padded(x, padding, kernel, stride, fill=0.0, most_per_side=None):
    """(x, the padding argument for PyTorch's op): pads equal on both sides of each axis (and at
    most most_per_side, max_pool2d's limit) are left to the op, which needs no padded copy of x;
    uneven ones, as 'same' gives for an even kernel or a stride of 2, are applied with F.pad."""
    height, width = x.shape[2:]
    if padding == "same":
        pads = same_padding(width, kernel[1], stride[1]) + same_padding(height, kernel[0], stride[0])
    else:
        pads = _fixed_pads(padding)
    left, right, top, bottom = pads
    fits = most_per_side is None or (top <= most_per_side[0] and left <= most_per_side[1])
    if left == right and top == bottom and fits:
        return x, (top, left)
    return TF.pad(x, pads, value=fill), (0, 0)


def _parameter(array) -> tnn.Parameter:
    return tnn.Parameter(torch.tensor(np.array(to_host(array)), dtype=torch.float64))


class Conv(tnn.Module):
    def __init__(self, layer: nn.Conv2d):
        super().__init__()
        self.weight = _parameter(layer.weight.data)
        self.bias = _parameter(layer.bias.data) if layer.bias is not None else None
        self.stride, self.padding = _pair(layer.stride), layer.padding

    def forward(self, x):
        x, pads = _padded(x, self.padding, self.weight.shape[2:], self.stride)
        return TF.conv2d(x, self.weight, self.bias, self.stride, pads)


class Linear(tnn.Module):
    def __init__(self, layer: nn.Linear):
        super().__init__()
        self.weight = _parameter(layer.weight.data)
        self.bias = _parameter(layer.bias.data) if layer.bias is not None else None

    def forward(self, x):
        return TF.linear(x, self.weight, self.bias)


class KerasBatchNorm(tnn.Module):
    """Batch norm that keeps the biased batch variance in running_var, as Keras (and minicnn's
    convention='keras') does; momentum is the weight of the new batch (minicnn's stored sense).
    running_var_unbiased follows PyTorch's rule beside it (the unbiased batch variance), so one
    training run shows what either convention would evaluate with: the weights do not depend on it."""

    def __init__(self, layer):
        super().__init__()
        self.weight, self.bias = _parameter(layer.weight.data), _parameter(layer.bias.data)
        self.register_buffer("running_mean", torch.tensor(np.array(to_host(layer.running_mean)), dtype=torch.float64))
        self.register_buffer("running_var", torch.tensor(np.array(to_host(layer.running_var)), dtype=torch.float64))
        self.register_buffer("running_var_unbiased", self.running_var.clone())
        self.momentum, self.eps = layer.momentum, layer.eps

    def forward(self, x):
        if not self.training:
            return TF.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        axes = [0] + list(range(2, x.ndim))
        with torch.no_grad():
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * x.mean(axes))
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * x.var(axes, unbiased=False))
            self.running_var_unbiased.mul_(1 - self.momentum).add_(self.momentum * x.var(axes, unbiased=True))
        return TF.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


def torch_batch_norm(layer):
    """torch.nn.BatchNorm*d with the layer's momentum (torch sense) and eps: unbiased running_var."""
    kind = tnn.BatchNorm1d if isinstance(layer, nn.BatchNorm1d) else tnn.BatchNorm2d
    twin = kind(layer.weight.shape[0], eps=layer.eps, momentum=layer.momentum).double()
    with torch.no_grad():
        twin.weight.copy_(torch.tensor(np.array(to_host(layer.weight.data))))
        twin.bias.copy_(torch.tensor(np.array(to_host(layer.bias.data))))
        twin.running_mean.copy_(torch.tensor(np.array(to_host(layer.running_mean))))
        twin.running_var.copy_(torch.tensor(np.array(to_host(layer.running_var))))
    return twin


class Dropout(tnn.Module):
    """minicnn's inverted dropout with minicnn's mask: counts steps from the layer's own."""

    def __init__(self, layer: nn.Dropout):
        super().__init__()
        self.rate, self.seed, self.step = layer.rate, int(layer.seed), int(layer.step)

    def forward(self, x):
        if not self.training or self.rate == 0:
            return x
        self.step += 1
        _, mask = numpy_ref.dropout_forward(np.ones(tuple(x.shape)), self.rate, self.seed, self.step)
        return x * torch.tensor(mask, dtype=x.dtype)


class MaxPool(tnn.Module):
    def __init__(self, layer: nn.MaxPool2d):
        super().__init__()
        self.kernel = _pair(layer.kernel_size)
        self.stride = _pair(layer.stride or layer.kernel_size)
        self.padding = layer.padding

    def forward(self, x):
        half_kernel = (self.kernel[0] // 2, self.kernel[1] // 2)
        x, pads = _padded(x, self.padding, self.kernel, self.stride, -torch.inf, half_kernel)
        return TF.max_pool2d(x, self.kernel, self.stride, pads)


class Function(tnn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


class Sequential(tnn.Module):
    """Children registered under minicnn's names, so parameter names match."""

    def __init__(self, layer: nn.Sequential, convert_child):
        super().__init__()
        for key, child in layer._modules.items():
            self.add_module(key, convert_child(child))

    def forward(self, x):
        for child in self.children():
            x = child(x)
        return x


class SEBlock(tnn.Module):
    def __init__(self, layer: nn.SEBlock):
        super().__init__()
        self.fc1, self.fc2 = Linear(layer.fc1), Linear(layer.fc2)

    def forward(self, x):
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3))))))
        return x * gate[:, :, None, None]


class ResidualBlock(tnn.Module):
    """Mirrors minicnn.nn.ResidualBlock.forward, both v1 and pre-activation."""

    def __init__(self, layer: nn.ResidualBlock, convert_child):
        super().__init__()
        self.preact = layer.preact
        for key, child in layer._modules.items():
            if child is not None:
                self.add_module(key, convert_child(child))
        self.has_se, self.has_shortcut = layer.se is not None, layer.shortcut is not None

    def forward(self, x):
        if self.preact:
            h = torch.relu(self.bn1(x))
            out = self.conv2(torch.relu(self.bn2(self.conv1(h))))
        else:
            h = x
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        if self.has_se:
            out = self.se(out)
        out = out + (self.shortcut(h) if self.has_shortcut else x)
        return out if self.preact else torch.relu(out)


def convert(layer, bn: str = "keras", dropout: str = "minicnn") -> tnn.Module:
    """The twin of one minicnn layer (recursively for containers)."""
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return KerasBatchNorm(layer) if bn == "keras" and layer.convention == "keras" else torch_batch_norm(layer)
    if isinstance(layer, nn.Dropout):
        return Dropout(layer) if dropout == "minicnn" else tnn.Dropout(layer.rate)
    simple = {nn.Conv2d: Conv, nn.Linear: Linear, nn.MaxPool2d: MaxPool, nn.SEBlock: SEBlock,
              nn.ZeroPad2d: lambda layer: tnn.ZeroPad2d(_fixed_pads(layer.padding))}
    if type(layer) in simple:
        return simple[type(layer)](layer)
    for kind, container in ((nn.Sequential, Sequential), (nn.ResidualBlock, ResidualBlock)):
        if isinstance(layer, kind):
            return container(layer, lambda child: convert(child, bn, dropout))
    functions = {nn.ReLU: torch.relu, nn.Flatten: lambda x: x.reshape(len(x), -1),
                 nn.GlobalAvgPool2d: lambda x: x.mean((2, 3))}
    if type(layer) in functions:
        return Function(functions[type(layer)])
    raise TypeError(f"no PyTorch twin for {type(layer).__name__}")


def torch_twin(model, bn: str = "keras", dtype=torch.float64, dropout: str = "minicnn") -> tnn.Module:
    """The twin of a minicnn model (built in float64, then cast to dtype), in the model's mode."""
    if bn not in BN_CONVENTIONS:
        raise ValueError(f"bn must be one of {BN_CONVENTIONS}, got {bn!r}")
    if dropout not in DROPOUT_MASKS:
        raise ValueError(f"dropout must be one of {DROPOUT_MASKS}, got {dropout!r}")
    return convert(model, bn, dropout).to(dtype).train(model.training)
