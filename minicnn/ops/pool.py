"""Pooling: max / min / average over windows, and global average pooling."""
from minicnn.autograd import Function
from minicnn.backends import checks
from minicnn.backends.checks import dropout_rate, only_supported
from minicnn.ops.arguments import check_tensor, pair, resolve_padding


def pool_geometry(op, x, kernel_size, stride, padding):
    """(kernel, stride, pads) of a pooling of x: (N, C, H, W) (the kernels check the rest)."""
    check_tensor(op, x)
    kernel = pair(op, "kernel_size", kernel_size)
    stride = kernel if stride is None else pair(op, "stride", stride)
    return kernel, stride, resolve_padding(op, padding, x.shape[2:], kernel, stride)


def _pool(mode, x, kernel_size, stride, padding, dropout=None):
    """dropout: (rate, seed, step) of a dropout applied to the output in the same pass."""
    op = f"{mode}_pool2d"
    kernel, stride, pads = pool_geometry(op, x, kernel_size, stride, padding)
    if dropout is not None:
        dropout_rate(op, dropout[0])
    if dropout is None or dropout[0] == 0:
        return Pool2d(mode, kernel, stride, pads)(x)
    return Pool2d(mode, kernel, stride, pads, tuple(dropout))(x)


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


class Pool2d(Function):
    """mode in ('max', 'min', 'avg'); x: (N, C, H, W) -> (N, C, Ho, Wo).

    Max and min remember which input won each window (int32 index), so backward routes each
    output's gradient to exactly that input. dropout=(rate, seed, step) multiplies the output
    by that dropout mask in the same pass (a pool followed by a dropout layer, fused).
    """

    def __init__(self, mode, kernel, stride, pads, dropout=None):
        self.mode, self.kernel, self.stride, self.pads = mode, kernel, stride, pads
        self.dropout = dropout  # (rate, seed, step): dropout of the output, in the same pass

    def forward(self, x):
        self.x_shape = x.shape
        geometry = (self.mode, self.kernel, self.stride, self.pads)
        if self.dropout:
            checks.pool2d_dropout_forward(x, *geometry, *self.dropout)
            y, self.index = self.kernels.pool2d_dropout_forward(x, *geometry, *self.dropout)
        else:
            checks.pool2d_forward(x, *geometry)
            y, self.index = self.kernels.pool2d_forward(x, *geometry)
        return y

    def backward(self, dy):
        geometry = (self.index, self.x_shape, self.mode, self.kernel, self.stride, self.pads)
        if self.dropout:  # the mask is recomputed from (seed, step), never stored
            return self.kernels.pool2d_dropout_backward(dy, *geometry, *self.dropout)
        return self.kernels.pool2d_backward(dy, *geometry)


def global_avg_pool2d(x):
    """(N, C, H, W) -> (N, C)."""
    check_tensor("global_avg_pool2d", x)
    return GlobalAvgPool2d()(x)


class GlobalAvgPool2d(Function):
    """x: (N, C, H, W) -> (N, C): one mean per channel map."""

    def forward(self, x):
        self.x_shape = x.shape
        checks.global_avg_pool_forward(x)
        return self.kernels.global_avg_pool_forward(x)

    def backward(self, dy):
        return self.kernels.global_avg_pool_backward(dy, self.x_shape)
