"""Pooling: max / min / average over windows, and global average pooling."""
from minicnn.autograd import Function


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
            y, self.index = self.kernels.pool2d_dropout_forward(x, *geometry, *self.dropout)
        else:
            y, self.index = self.kernels.pool2d_forward(x, *geometry)
        return y

    def backward(self, dy):
        geometry = (self.index, self.x_shape, self.mode, self.kernel, self.stride, self.pads)
        if self.dropout:  # the mask is recomputed from (seed, step), never stored
            return self.kernels.pool2d_dropout_backward(dy, *geometry, *self.dropout)
        return self.kernels.pool2d_backward(dy, *geometry)


class GlobalAvgPool2d(Function):
    """x: (N, C, H, W) -> (N, C): one mean per channel map."""

    def forward(self, x):
        self.x_shape = x.shape
        return self.kernels.global_avg_pool_forward(x)

    def backward(self, dy):
        return self.kernels.global_avg_pool_backward(dy, self.x_shape)
