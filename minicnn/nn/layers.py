"""The layers of the documented networks, as Modules over minicnn.functional."""
from __future__ import annotations

import numpy as np

from minicnn import functional as F
from minicnn.backends.checks import only_supported
from minicnn.nn import init
from minicnn.nn.module import Module, Parameter
from minicnn.random import generator


class Conv2d(Module):
    """x: (N, in_channels, H, W) -> (N, out_channels, Ho, Wo).

    padding: int, (ph, pw), (top, bottom, left, right), 'valid', or 'same' (TensorFlow's rule).
    init: a scheme of minicnn.nn.init (default 'torch', PyTorch's own default).
    dilation, groups, padding_mode: PyTorch's arguments, accepted with their default values.
    """
    kind = "conv"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", init="torch", name=None):
        super().__init__(name)
        only_supported("Conv2d", dilation=(dilation, 1), groups=(groups, 1),
                       padding_mode=(padding_mode, "zeros"))
        kernel = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.weight_shape = (out_channels, in_channels) + kernel
        self.stride, self.padding, self.use_bias, self.init = stride, padding, bias, init
        self.reset_parameters()

    def reset_parameters(self, rng=None):
        self.weight = Parameter(init.weight(self.init, self.weight_shape, rng=rng))
        self.bias = Parameter(init.bias(self.init, self.weight_shape, rng=rng)) if self.use_bias else None

    def forward(self, x, relu=False):
        """relu=True: relu of the output from one fused pass (nn/fusion.py's conv -> ReLU)."""
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, relu=relu)

    def extra_repr(self):
        out, inp, kh, kw = self.weight_shape
        return f"{inp}, {out}, {kh}x{kw}, stride={self.stride}, padding={self.padding!r}, init={self.init}"


class Linear(Module):
    """x: (N, in_features) -> (N, out_features); weight (out, in) like PyTorch."""
    kind = "fc"

    def __init__(self, in_features, out_features, bias=True, init="torch", name=None):
        super().__init__(name)
        self.weight_shape = (out_features, in_features)
        self.use_bias, self.init = bias, init
        self.reset_parameters()

    def reset_parameters(self, rng=None):
        self.weight = Parameter(init.weight(self.init, self.weight_shape, rng=rng))
        self.bias = Parameter(init.bias(self.init, self.weight_shape, rng=rng)) if self.use_bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"{self.weight_shape[1]}, {self.weight_shape[0]}, init={self.init}"


class _BatchNorm(Module):
    """Batch norm over channels with learnable scale (weight) and shift (bias).

    convention='torch': momentum is the weight of the new batch (default 0.1), eps 1e-5, and
    running_var stores the unbiased variance. convention='keras': momentum is the weight of the
    OLD average (Keras' default 0.99), and running_var stores the biased batch variance, so
    `BatchNorm2d(c, momentum=0.99, eps=1e-3, convention='keras')` is exactly Keras' layer.
    """
    kind = "bn"

    def __init__(self, num_features, eps=None, momentum=None, affine=True, track_running_stats=True,
                 convention="torch", name=None):
        super().__init__(name)
        only_supported(type(self).__name__, affine=(affine, True),
                       track_running_stats=(track_running_stats, True))
        if convention not in ("torch", "keras"):
            raise ValueError(f"batch norm convention must be 'torch' or 'keras', got {convention!r}")
        keras = convention == "keras"
        momentum = (0.99 if keras else 0.1) if momentum is None else momentum
        if not 0 <= momentum <= 1:
            raise ValueError(f"batch norm momentum must be in [0, 1], got {momentum}")
        self.convention = convention
        self.momentum = 1 - momentum if keras else momentum  # stored in the torch sense
        self.eps = (1e-3 if keras else 1e-5) if eps is None else eps
        self.weight = Parameter(np.ones(num_features, np.float32))
        self.bias = Parameter(np.zeros(num_features, np.float32))
        self.register_buffer("running_mean", np.zeros(num_features, np.float32))
        self.register_buffer("running_var", np.ones(num_features, np.float32))

    def forward(self, x):
        return self.normalize(x)

    def normalize(self, x, relu=None, pool=None, dropout=None):
        """F.batch_norm with this layer's state; relu='before' / 'after' fuses a ReLU in, pool
        (a pooling layer) the pooling after it, and dropout=(rate, seed, step) a dropout after
        that (F.batch_norm's relu, pool and dropout)."""
        if x.ndim != self.expected_ndim:
            raise ValueError(f"{type(self).__name__}: input must have {self.expected_ndim} dims, got {x.shape}")
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, self.momentum, self.eps, unbiased=self.convention == "torch",
                            relu=relu, pool=pool and pool.geometry(), dropout=dropout)

    def extra_repr(self):
        return f"{self.weight.shape[0]}, momentum={self.momentum:g} (torch sense), eps={self.eps:g}"


class BatchNorm1d(_BatchNorm):
    """Over features of (N, C)."""
    expected_ndim = 2


class BatchNorm2d(_BatchNorm):
    """Over channels of (N, C, H, W)."""
    expected_ndim = 4


class Dropout(Module):
    """Inverted dropout. Each training call draws a fresh mask from (seed, step); both are saved
    in the state dict, so a resumed run draws the very masks the uninterrupted run would have."""
    kind = "dropout"

    def __init__(self, p=0.5, inplace=False, seed=None, name=None):
        super().__init__(name)
        if not 0 <= p < 1:
            raise ValueError(f"Dropout rate must be in [0, 1), got {p}")
        self.rate = p
        seed = int(generator().integers(2 ** 63)) if seed is None else seed
        self.register_buffer("seed", np.array(seed, np.int64))
        self.register_buffer("step", np.array(0, np.int64))

    def forward(self, x):
        if not self.training or self.rate == 0:
            return x
        rate, seed, step = self.next_mask()
        return F.dropout(x, rate, True, seed=seed, step=step)

    def next_mask(self) -> tuple:
        """Advance to the next mask -> (rate, seed, step)."""
        self.step += 1
        return self.rate, int(self.seed), int(self.step)

    def extra_repr(self):
        return f"rate={self.rate}"


class _Activation(Module):
    kind = "act"
    function = None

    def forward(self, x):
        return type(self).function(x)


class ReLU(_Activation):
    """max(x, 0). inplace is PyTorch's argument, accepted; minicnn returns a new tensor."""
    kind = "relu"
    function = F.relu

    def __init__(self, inplace=False, name=None):
        super().__init__(name)


class Sigmoid(_Activation):
    kind = "sigmoid"
    function = F.sigmoid


class Softmax(Module):
    """Probabilities along dim (None: PyTorch's implicit choice, 1 for (N, K))."""
    kind = "softmax"

    def __init__(self, dim=None, name=None):
        super().__init__(name)
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, self.dim)


class _Pool(Module):
    kind = "pool"
    function = None

    def __init__(self, kernel_size, stride=None, padding=0, name=None, **options):
        super().__init__(name)
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.options = options  # PyTorch's further arguments, checked by the function

    def forward(self, x, dropout=None):
        """dropout: (rate, seed, step) of a dropout layer fused into the pass (nn/fusion.py)."""
        return type(self).function(x, self.kernel_size, self.stride, self.padding, **self.options,
                                   dropout=dropout)

    def geometry(self) -> tuple:
        """(mode, kernel_size, stride, padding): F.batch_norm's pool argument."""
        return self.mode, self.kernel_size, self.stride, self.padding

    def extra_repr(self):
        return f"{self.kernel_size}, stride={self.stride or self.kernel_size}, padding={self.padding!r}"


class MaxPool2d(_Pool):
    function = F.max_pool2d
    mode = "max"

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False, name=None):
        super().__init__(kernel_size, stride, padding, name, dilation=dilation,
                         return_indices=return_indices, ceil_mode=ceil_mode)


class AvgPool2d(_Pool):
    """Padded cells are not counted: count_include_pad=False (PyTorch's default is True)."""
    function = F.avg_pool2d
    mode = "avg"

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=False, divisor_override=None, name=None):
        super().__init__(kernel_size, stride, padding, name, ceil_mode=ceil_mode,
                         count_include_pad=count_include_pad, divisor_override=divisor_override)


class MinPool2d(_Pool):
    function = F.min_pool2d
    mode = "min"


class GlobalAvgPool2d(Module):
    """(N, C, H, W) -> (N, C)."""
    kind = "gap"

    def forward(self, x):
        return F.global_avg_pool2d(x)


class Flatten(Module):
    """(N, ...) -> (N, prod(...)); start_dim/end_dim are PyTorch's, accepted at 1 and -1."""
    kind = "flatten"

    def __init__(self, start_dim=1, end_dim=-1, name=None):
        super().__init__(name)
        only_supported("Flatten", start_dim=(start_dim, 1), end_dim=(end_dim, -1))

    def forward(self, x):
        return F.flatten(x)


class ZeroPad2d(Module):
    """Zeros around H and W. padding: an int or PyTorch's (left, right, top, bottom)."""
    kind = "pad"

    def __init__(self, padding, name=None):
        super().__init__(name)
        if not isinstance(padding, (int, np.integer)):
            if len(tuple(padding)) != 4:
                raise ValueError(f"ZeroPad2d: padding must be an int or (left, right, top, bottom), "
                                 f"got {padding!r}")
            left, right, top, bottom = padding
            padding = (top, bottom, left, right)  # F.zero_pad2d's order, as in conv2d
        self.padding = padding

    def forward(self, x):
        return F.zero_pad2d(x, self.padding)

    def extra_repr(self):
        return repr(self.padding)


class Sequential(Module):
    """Layers applied in order. Unnamed layers are named by kind and position: conv1, conv2,
    bn1, pool1, fc1 ... (the names `--layer` accepts)."""
    kind = "seq"

    def __init__(self, *layers, name=None):
        super().__init__(name)
        counts = {}
        for layer in layers:
            counts[layer.kind] = counts.get(layer.kind, 0) + 1
            key = layer.name or f"{layer.kind}{counts[layer.kind]}"
            if key in self._modules:
                raise ValueError(f"Sequential: two layers are named {key!r}")
            setattr(self, key, layer)

    def forward(self, x):
        from minicnn.nn.fusion import run_layers  # fusion imports this module
        return run_layers(list(self._modules.values()), x)

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, index):
        return list(self._modules.values())[index]
