"""Activations and dropout.

ReLU, sigmoid, softmax and log-softmax all have backward passes cheapest to write in terms
of their *output* y (relu: y > 0; sigmoid: y(1 - y); softmax: y(dy - sum(dy y))), so one
class serves them: it keeps y and calls the kernels named `<kernel>_forward/_backward`.
"""
from minicnn.autograd import Function


class _FromOutput(Function):
    kernel = None  # the kernel name stem

    def forward(self, x):
        self.y = getattr(self.kernels, f"{self.kernel}_forward")(x)
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
        return self.kernels.dropout_apply(x, self.rate, self.seed, self.step)

    def backward(self, dy):
        return self.kernels.dropout_apply(dy, self.rate, self.seed, self.step)
