"""Activations and dropout. Backward passes reuse the forward's output where that is cheaper."""
from minicnn.autograd import Function


class ReLU(Function):
    def forward(self, x):
        self.y = self.kernels.relu_forward(x)
        return self.y

    def backward(self, dy):
        return self.kernels.relu_backward(dy, self.y)


class Sigmoid(Function):
    def forward(self, x):
        self.y = self.kernels.sigmoid_forward(x)
        return self.y

    def backward(self, dy):
        return self.kernels.sigmoid_backward(dy, self.y)


class Softmax(Function):
    """Along axis 1 of (N, K)."""

    def forward(self, x):
        self.y = self.kernels.softmax_forward(x)
        return self.y

    def backward(self, dy):
        return self.kernels.softmax_backward(dy, self.y)


class LogSoftmax(Function):
    """Along axis 1 of (N, K)."""

    def forward(self, x):
        self.y = self.kernels.log_softmax_forward(x)
        return self.y

    def backward(self, dy):
        return self.kernels.log_softmax_backward(dy, self.y)


class Dropout(Function):
    """Inverted dropout with a counter-based mask: (seed, step) fully determine it."""

    def __init__(self, rate, seed, step):
        self.rate, self.seed, self.step = rate, seed, step

    def forward(self, x):
        y, self.mask = self.kernels.dropout_forward(x, self.rate, self.seed, self.step)
        return y

    def backward(self, dy):
        return self.kernels.dropout_backward(dy, self.mask)
