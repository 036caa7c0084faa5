"""A PyTorch copy of a minicnn network, for benchmarks only: same layers, same padding rules,
same starting weights, so both frameworks do the same arithmetic on the same images.

    twin = torch_twin(spec.build(10))      # a torch.nn.Module

'same' padding is resolved by minicnn's own rule at each call (the odd extra row/column at the
bottom/right), so asymmetric pads become an explicit F.pad, as TensorFlow-style pads need in PyTorch.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn as tnn
from torch.nn import functional as TF

from minicnn import nn
from minicnn.functional import resolve_padding


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def _pad_then(x, op, padding, kernel, stride, fill=0.0):
    """Resolve minicnn's padding for x, pad x with fill where needed, and apply op."""
    top, bottom, left, right = resolve_padding("twin", padding, x.shape[2:], kernel, stride)
    if top == bottom and left == right:
        return op(x, (top, left))
    return op(TF.pad(x, (left, right, top, bottom), value=fill), (0, 0))


class Conv(tnn.Module):
    def __init__(self, layer: nn.Conv2d):
        super().__init__()
        self.weight = tnn.Parameter(torch.from_numpy(layer.weight.numpy().copy()))
        self.bias = None if layer.bias is None else tnn.Parameter(torch.from_numpy(layer.bias.numpy().copy()))
        self.stride, self.padding = _pair(layer.stride), layer.padding

    def forward(self, x):
        def conv(x, pads):
            return TF.conv2d(x, self.weight, self.bias, self.stride, pads)
        return _pad_then(x, conv, self.padding, self.weight.shape[2:], self.stride)


class MaxPool(tnn.Module):
    def __init__(self, layer: nn.MaxPool2d):
        super().__init__()
        self.kernel = _pair(layer.kernel_size)
        self.stride = _pair(layer.stride or layer.kernel_size)
        self.padding = layer.padding

    def forward(self, x):
        def pool(x, pads):
            return TF.max_pool2d(x, self.kernel, self.stride, pads)
        return _pad_then(x, pool, self.padding, self.kernel, self.stride, fill=-np.inf)


class Residual(tnn.Module):
    """ResNet v1's basic block (conv-BN-ReLU-conv-BN, add, ReLU) with an optional projection."""

    def __init__(self, block: nn.ResidualBlock):
        super().__init__()
        if block.preact or block.se is not None:
            raise ValueError("torch_twin copies ResNet v1 blocks without SE only")
        self.conv1, self.bn1 = Conv(block.conv1), _batch_norm(block.bn1)
        self.conv2, self.bn2 = Conv(block.conv2), _batch_norm(block.bn2)
        self.shortcut = tnn.Identity() if block.shortcut is None else torch_twin(block.shortcut)

    def forward(self, x):
        out = self.bn2(self.conv2(TF.relu(self.bn1(self.conv1(x)))))
        return TF.relu(out + self.shortcut(x))


class GlobalAvgPool(tnn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


def _batch_norm(layer):
    kind = tnn.BatchNorm2d if isinstance(layer, nn.BatchNorm2d) else tnn.BatchNorm1d
    return kind(layer.weight.shape[0], eps=layer.eps, momentum=layer.momentum)


def _linear(layer: nn.Linear):
    out_features, in_features = layer.weight_shape
    twin = tnn.Linear(in_features, out_features, bias=layer.bias is not None)
    with torch.no_grad():
        twin.weight.copy_(torch.from_numpy(layer.weight.numpy()))
        if layer.bias is not None:
            twin.bias.copy_(torch.from_numpy(layer.bias.numpy()))
    return twin


def torch_twin(module: nn.Module) -> tnn.Module:
    """The torch.nn.Module computing what `module` computes, with the same initial weights."""
    makers = {
        nn.Sequential: lambda m: tnn.Sequential(*(torch_twin(child) for child in m)),
        nn.Conv2d: Conv,
        nn.Linear: _linear,
        nn.BatchNorm1d: _batch_norm,
        nn.BatchNorm2d: _batch_norm,
        nn.ReLU: lambda m: tnn.ReLU(),
        nn.Dropout: lambda m: tnn.Dropout(m.rate),
        nn.MaxPool2d: MaxPool,
        nn.Flatten: lambda m: tnn.Flatten(),
        nn.GlobalAvgPool2d: lambda m: GlobalAvgPool(),
        nn.ZeroPad2d: lambda m: tnn.ZeroPad2d(m.padding),
        nn.ResidualBlock: Residual,
    }
    if type(module) not in makers:
        raise ValueError(f"torch_twin has no PyTorch copy of {type(module).__name__}")
    return makers[type(module)](module)
