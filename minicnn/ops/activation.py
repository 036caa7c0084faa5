"""Activations and dropout.

ReLU, sigmoid, softmax and log-softmax all have backward passes cheapest to write in terms
of their *output* y (relu: y > 0; sigmoid: y(1 - y); softmax: y(dy - sum(dy y))), so one
class serves them: it keeps y and calls the kernels named `<kernel>_forward/_backward`.
"""
from minicnn.autograd import Function
from minicnn.backends import checks
from minicnn.backends.checks import dropout_rate
from minicnn.ops.arguments import check_tensor


def relu(x, inplace=False):
    """max(x, 0). inplace is accepted for PyTorch's signature; the result is a new tensor."""
    return ReLU()(x)


def sigmoid(x):
    return Sigmoid()(x)


def _dim(op, x, dim):
    """dim as an axis of x: negative dims count from the end; None is PyTorch's implicit
    choice (0 for 0-, 1- and 3-D inputs, else 1: the class axis of (N, K) and (N, C, H, W))."""
    check_tensor(op, x)
    if dim is None:
        dim = 0 if x.ndim in (0, 1, 3) else 1
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"{op}: dim {dim} is out of range for an input of shape {x.shape}")
    return dim % x.ndim


def softmax(x, dim=None):
    """Probabilities along `dim`, for inputs of any rank."""
    return Softmax(_dim("softmax", x, dim))(x)


def log_softmax(x, dim=None):
    """log(softmax(x, dim)), computed without forming softmax (no log(0))."""
    return LogSoftmax(_dim("log_softmax", x, dim))(x)


def dropout(x, p=0.5, training=True, inplace=False, *, seed=0, step=0):
    """Inverted dropout with rate p; the identity when not training or p == 0.

    (seed, step) choose the mask: nn.Dropout advances step on every call. inplace is accepted
    for PyTorch's signature; minicnn always returns a new tensor.
    """
    dropout_rate("dropout", p)  # also when not training: a bad rate is a bug either way
    if not training or p == 0:
        return x
    return Dropout(p, seed, step)(x)


class _FromOutput(Function):
    kernel = None  # the kernel name stem

    def forward(self, x):
        name = f"{self.kernel}_forward"
        getattr(checks, name)(x)  # the kernel's rule (checks.relu_forward ...), then the kernel
        self.y = getattr(self.kernels, name)(x)
        return self.y

    def backward(self, dy):
        return getattr(self.kernels, f"{self.kernel}_backward")(dy, self.y)


class ReLU(_FromOutput):
    kernel = "relu"


class Sigmoid(_FromOutput):
    kernel = "sigmoid"


class _AlongDim(_FromOutput):
    """The row kernels (softmax.cu: one warp per row of (M, K)) along any `dim` of any rank:
    dim is moved last and the other axes are flattened into rows; a view, or one copy."""

    def __init__(self, dim):
        self.dim = dim

    def _rows(self, a):
        self.moved_shape = a.shape[:self.dim] + a.shape[self.dim + 1:] + (a.shape[self.dim],)
        return self.xp.moveaxis(a, self.dim, -1).reshape(-1, a.shape[self.dim])

    def _back(self, rows):
        return self.xp.moveaxis(rows.reshape(self.moved_shape), -1, self.dim)

    def forward(self, x):
        return self._back(super().forward(self._rows(x)))

    def backward(self, dy):
        return self._back(getattr(self.kernels, f"{self.kernel}_backward")(self._rows(dy), self.y))


class Softmax(_AlongDim):
    kernel = "softmax"


class LogSoftmax(_AlongDim):
    kernel = "log_softmax"


class Dropout(Function):
    """Inverted dropout with a counter-based mask: (seed, step) fully determine it, so the
    backward recomputes the mask (dy times it) instead of keeping it in memory."""

    def __init__(self, rate, seed, step):
        self.rate, self.seed, self.step = rate, seed, step

    def forward(self, x):
        checks.dropout_apply(x, self.rate, self.seed, self.step)
        return self.kernels.dropout_apply(x, self.rate, self.seed, self.step)

    def backward(self, dy):
        return self.kernels.dropout_apply(dy, self.rate, self.seed, self.step)
