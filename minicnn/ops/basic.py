"""Shape and arithmetic ops: add, mul, sum, mean, reshape, flatten, zero padding, linear.

Tensor's operators (+, *, -, reshape, sum, mean) call the functions here.
"""
import numpy as np

from minicnn.autograd import Function, Tensor
from minicnn.backends import checks
from minicnn.ops.arguments import check_tensor, resolve_padding
from minicnn.ops.norm import TakesBiasGrad


def _as_tensor(value, like):
    if isinstance(value, Tensor):
        return value
    return Tensor(like.device.asarray(value, dtype=like.dtype), like.device)


def add(a, b):
    """a + b with broadcasting."""
    a, b = (_as_tensor(a, b), b) if not isinstance(a, Tensor) else (a, _as_tensor(b, a))
    return Add()(a, b)


class Add(Function):
    """a + b with broadcasting (residual connections, bias terms)."""

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        checks.add_forward(a, b)
        return self.kernels.add_forward(a, b)

    def backward(self, dout):
        # an operand of the output's shape receives dout itself: passing it on computes nothing
        return tuple(None if not needed else dout if shape == dout.shape
                     else self.kernels.sum_to(dout, shape, 1.0)
                     for shape, needed in zip(self.shapes, self.needs_grad))


def mul(a, b):
    """a * b with broadcasting (e.g. SE scaling: (N, C, H, W) * (N, C, 1, 1))."""
    a, b = (_as_tensor(a, b), b) if not isinstance(a, Tensor) else (a, _as_tensor(b, a))
    return Mul()(a, b)


class Mul(Function):
    """a * b with broadcasting (SE channel scaling, masks)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        checks.mul_forward(a, b)
        return self.kernels.mul_forward(a, b)

    def backward(self, dout):
        k = self.kernels
        da = k.sum_to(k.mul_forward(dout, self.b), self.a.shape, 1.0) if self.needs_grad[0] else None
        db = k.sum_to(k.mul_forward(dout, self.a), self.b.shape, 1.0) if self.needs_grad[1] else None
        return da, db


def _axes(dim, axis, keepdim, keepdims):
    """PyTorch's (dim, keepdim) or NumPy's (axis, keepdims): (axes tuple or None, keepdims)."""
    dim = axis if dim is None else dim
    keep = keepdim if keepdims is None else keepdims
    return (None if dim is None else tuple(np.atleast_1d(dim).tolist())), bool(keep)


def sum(x, dim=None, keepdim=False, *, axis=None, keepdims=None):  # noqa: A001 - mirrors torch.sum
    """Sum over `dim` (an int, a tuple, or None for all); NumPy's axis/keepdims also work."""
    axes, keep = _axes(dim, axis, keepdim, keepdims)
    return Sum(axes, keep)(x)


def mean(x, dim=None, keepdim=False, *, axis=None, keepdims=None):
    """Mean over `dim` (an int, a tuple, or None for all); NumPy's axis/keepdims also work."""
    axes, keep = _axes(dim, axis, keepdim, keepdims)
    count = x.size if axes is None else int(np.prod([x.shape[a] for a in axes]))
    return Sum(axes, keep, scale=1.0 / count)(x)


class Sum(Function):
    """Sum over `axes` (None = all); mean is this times 1 / count."""

    def __init__(self, axes, keepdims, scale=1.0):
        self.axes, self.keepdims, self.scale = axes, keepdims, scale

    def forward(self, x):
        self.x_shape = x.shape
        axes = range(x.ndim) if self.axes is None else [a % x.ndim for a in self.axes]
        self.kept_shape = tuple(1 if k in axes else n for k, n in enumerate(x.shape))
        out = self.kernels.sum_to(x, self.kept_shape, self.scale)
        if self.keepdims:
            return out
        return out.reshape(tuple(n for k, n in enumerate(x.shape) if k not in axes))

    def backward(self, dout):
        return self.kernels.broadcast_to(dout.reshape(self.kept_shape), self.x_shape, self.scale)


def flatten(x):
    """(N, ...) -> (N, prod(...))."""
    return Reshape((x.shape[0], -1))(x)


def reshape(x, shape):
    return Reshape(tuple(shape))(x)


class Reshape(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.x_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, dout):
        return dout.reshape(self.x_shape)


def zero_pad2d(x, padding):
    """Pad H and W with zeros: padding as in conv2d (int, pair or 4-tuple)."""
    check_tensor("zero_pad2d", x)
    return ZeroPad2d(resolve_padding("zero_pad2d", padding, x.shape[2:], (1, 1), (1, 1)))(x)


class ZeroPad2d(Function):
    """Pad the H and W axes of (N, C, H, W) with zeros; pads = (top, bottom, left, right)."""

    def __init__(self, pads):
        self.pads = pads

    def forward(self, x):
        checks.zero_pad2d_forward(x, self.pads)
        return self.kernels.zero_pad2d_forward(x, self.pads)

    def backward(self, dout):
        return self.kernels.zero_pad2d_backward(dout, self.pads)


def linear(x, w, b=None):
    """x: (N, IN), w: (OUT, IN), b: (OUT,) -> (N, OUT)."""
    check_tensor("linear", x)
    return Linear()(*((x, w) if b is None else (x, w, b)))


class Linear(TakesBiasGrad, Function):
    """y = x @ w.T + b; x: (N, IN), w: (OUT, IN), b: (OUT,)."""

    def forward(self, x, w, b=None):
        self.x, self.w = x, w
        checks.linear_forward(x, w, b)
        return self.kernels.linear_forward(x, w, b)

    def backward(self, dy):
        has_bias, given = len(self.needs_grad) == 3, self.given_bias_grad
        dx, dw, db = self.kernels.linear_backward(dy, self.x, self.w, self.needs_grad[0],
                                                  has_bias and given is None)
        return (dx, dw, db if given is None else given) if has_bias else (dx, dw)
