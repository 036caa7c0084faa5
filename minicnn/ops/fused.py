"""A ReLU and a batch norm (and a pooling) as one Function (training mode), for the fusion pass
of nn.Sequential.

Each computes exactly what the two separate Functions compute (the kernels are
numpy_ref.relu_batch_norm_* / batch_norm_relu_*, compositions of the single-layer ones), but
the map between the two layers is never stored and each pass over the data does both.
"""
from minicnn.ops.norm import BatchNorm


class ReLUBatchNorm(BatchNorm):
    """batch_norm(relu(x)): inputs x (the ReLU's input), gamma, beta."""

    def forward(self, x, gamma, beta):
        self.x, self.gamma = x, gamma
        y, self.mean, self.rstd = self.kernels.relu_batch_norm_forward_train(
            x, gamma, beta, self.running_mean, self.running_var, self.momentum, self.eps,
            self.unbiased)
        return y

    def backward(self, dy):
        return self.kernels.relu_batch_norm_backward(dy, self.x, self.gamma, self.mean, self.rstd)


class BatchNormReLU(BatchNorm):
    """relu(batch_norm(x)): inputs x, gamma, beta; keeps its output for the backward."""

    def forward(self, x, gamma, beta):
        self.x, self.gamma = x, gamma
        self.y, self.mean, self.rstd = self.kernels.batch_norm_relu_forward_train(
            x, gamma, beta, self.running_mean, self.running_var, self.momentum, self.eps,
            self.unbiased)
        return self.y

    def backward(self, dy):
        return self.kernels.batch_norm_relu_backward(dy, self.y, self.x, self.gamma, self.mean,
                                                     self.rstd)


class BatchNormReLUPool(BatchNorm):
    """pool(relu(batch_norm(x))): inputs x, gamma, beta. The full-size map is never stored;
    the backward recomputes the ReLU's output from x and the statistics."""

    def __init__(self, running_mean, running_var, training, momentum, eps, unbiased, mode,
                 kernel, stride, pads):
        super().__init__(running_mean, running_var, training, momentum, eps, unbiased)
        self.pool = (mode, kernel, stride, pads)

    def forward(self, x, gamma, beta):
        self.x, self.gamma, self.beta = x, gamma, beta
        y, self.index, self.mean, self.rstd = self.kernels.batch_norm_relu_pool_forward_train(
            x, gamma, beta, self.running_mean, self.running_var, self.momentum, self.eps,
            self.unbiased, *self.pool)
        return y

    def backward(self, dy):
        return self.kernels.batch_norm_relu_pool_backward(dy, self.index, self.x, self.gamma,
                                                          self.beta, self.mean, self.rstd,
                                                          *self.pool)
