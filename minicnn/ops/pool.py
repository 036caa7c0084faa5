"""Pooling: max / min / average over windows, and global average pooling."""
from minicnn.autograd import Function


class Pool2d(Function):
    """mode in ('max', 'min', 'avg'); x: (N, C, H, W) -> (N, C, Ho, Wo).

    Max and min remember which input won each window (int32 index), so backward routes each
    output's gradient to exactly that input.
    """

    def __init__(self, mode, kernel, stride, pads):
        self.mode, self.kernel, self.stride, self.pads = mode, kernel, stride, pads

    def forward(self, x):
        self.x_shape = x.shape
        y, self.index = self.kernels.pool2d_forward(x, self.mode, self.kernel, self.stride, self.pads)
        return y

    def backward(self, dy):
        return self.kernels.pool2d_backward(dy, self.index, self.x_shape, self.mode,
                                            self.kernel, self.stride, self.pads)


class GlobalAvgPool2d(Function):
    """x: (N, C, H, W) -> (N, C): one mean per channel map."""

    def forward(self, x):
        self.x_shape = x.shape
        return self.kernels.global_avg_pool_forward(x)

    def backward(self, dy):
        return self.kernels.global_avg_pool_backward(dy, self.x_shape)
