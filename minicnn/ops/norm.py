"""Batch normalization over the channel axis of (N, C) or (N, C, H, W)."""
from minicnn.autograd import Function


class BatchNorm(Function):
    """Inputs x, gamma, beta; running statistics are buffers updated in place in training.

    training=True normalizes with the batch's mean/variance (and updates the running ones);
    training=False uses the running statistics, so the op is a fixed affine map per channel.
    """

    def __init__(self, running_mean, running_var, training, momentum, eps, unbiased):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps, self.unbiased = training, momentum, eps, unbiased

    def forward(self, x, gamma, beta):
        self.x, self.gamma = x, gamma
        k = self.kernels
        if self.training:
            y, self.mean, self.rstd = k.batch_norm_forward_train(
                x, gamma, beta, self.running_mean, self.running_var, self.momentum, self.eps, self.unbiased)
            return y
        return k.batch_norm_forward_eval(x, gamma, beta, self.running_mean, self.running_var, self.eps)

    def backward(self, dy):
        if self.training:
            return self.kernels.batch_norm_backward(dy, self.x, self.gamma, self.mean, self.rstd)
        return self.kernels.batch_norm_backward_eval(dy, self.x, self.gamma, self.running_mean,
                                                     self.running_var, self.eps)
