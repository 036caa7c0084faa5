"""Shape and arithmetic ops: add, mul, sum, reshape, zero padding, linear."""
from minicnn.autograd import Function


def sum_to(grad, shape):
    """Undo broadcasting: sum grad over the axes that were broadcast up to reach grad.shape."""
    if grad.shape == tuple(shape):
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape) if n == 1 and grad.shape[i + lead] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


class Add(Function):
    """a + b with broadcasting (residual connections, bias terms)."""

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, dout):
        return sum_to(dout, self.shapes[0]), sum_to(dout, self.shapes[1])


class Mul(Function):
    """a * b with broadcasting (SE channel scaling, masks)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, dout):
        return sum_to(dout * self.b, self.a.shape), sum_to(dout * self.a, self.b.shape)


class Sum(Function):
    """Sum over `axes` (None = all); mean is this times 1 / count."""

    def __init__(self, axes, keepdims, scale=1.0):
        self.axes, self.keepdims, self.scale = axes, keepdims, scale

    def forward(self, x):
        self.x_shape = x.shape
        out = x.sum(axis=self.axes, keepdims=self.keepdims)
        return out * self.scale if self.scale != 1.0 else out

    def backward(self, dout):
        if not self.keepdims and self.axes is not None:
            axes = tuple(a % len(self.x_shape) for a in self.axes)
            dout = self.xp.expand_dims(dout, axes)
        return self.xp.broadcast_to(dout * self.scale, self.x_shape).copy()


class Reshape(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.x_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, dout):
        return dout.reshape(self.x_shape)


class ZeroPad2d(Function):
    """Pad the H and W axes of (N, C, H, W) with zeros; pads = (top, bottom, left, right)."""

    def __init__(self, pads):
        self.pads = pads

    def forward(self, x):
        top, bottom, left, right = self.pads
        return self.xp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))

    def backward(self, dout):
        top, bottom, left, right = self.pads
        h, w = dout.shape[2] - top - bottom, dout.shape[3] - left - right
        return dout[:, :, top:top + h, left:left + w]


class Linear(Function):
    """y = x @ w.T + b; x: (N, IN), w: (OUT, IN), b: (OUT,)."""

    def forward(self, x, w, b=None):
        self.x, self.w = x, w
        return self.kernels.linear_forward(x, w, b)

    def backward(self, dy):
        k = self.kernels
        dx = k.gemm(dy, self.w) if self.needs_grad[0] else None
        dw = k.gemm(dy, self.x, trans_a=True)
        return (dx, dw, k.bias_grad(dy)) if len(self.needs_grad) == 3 else (dx, dw)
