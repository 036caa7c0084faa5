"""Batch normalization over the channel axis of (N, C) or (N, C, H, W), alone or fused with a
ReLU (and a pooling) for the fusion pass of nn.Sequential (minicnn/nn/fusion.py)."""
from minicnn.autograd import Function, Tensor
from minicnn.backends import checks
from minicnn.ops.arguments import check_tensor
from minicnn.ops.pool import pool_geometry


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5, unbiased=True, relu=None, pool=None):
    """Normalize each channel of (N, C) or (N, C, H, W).

    running_mean, running_var: arrays (C,) updated in place when training. momentum is the
    weight of the new batch in the running average (PyTorch's convention: Keras'
    momentum=0.99 is momentum=0.01 here, with unbiased=False). weight / bias None: 1 / 0.
    relu: 'before' (batch_norm(relu(x))) or 'after' (relu(batch_norm(x))) fuses a ReLU into
    the same passes, training only (nn.Sequential's fusion pass uses it, minicnn/nn/fusion.py).
    pool: (mode, kernel_size, stride, padding) with relu='after' pools the result in the same
    pass as well (max_pool2d's arguments; mode 'max', 'min' or 'avg').
    """
    check_tensor("batch_norm", x)
    if weight is None:
        weight = Tensor(x.device.xp.ones(x.shape[1], x.dtype), x.device)
    if bias is None:
        bias = Tensor(x.device.xp.zeros(x.shape[1], x.dtype), x.device)
    if relu not in FUSED_BATCH_NORMS or (relu and not training):
        raise ValueError(f"batch_norm: relu must be None, or 'before' / 'after' in training, "
                         f"got {relu!r} with training={training}")
    state = (running_mean, running_var, training, momentum, eps, unbiased)
    if pool is None:
        return FUSED_BATCH_NORMS[relu](*state)(x, weight, bias)
    mode, kernel_size, stride, padding = pool
    if relu != "after":
        raise ValueError(f"batch_norm: pool needs relu='after', got relu={relu!r}")
    geometry = pool_geometry(f"{mode}_pool2d", x, kernel_size, stride, padding)
    return BatchNormReLUPool(*state, mode, *geometry)(x, weight, bias)


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
        if self.training:
            y, self.mean, self.rstd = self._train("batch_norm_forward_train", x, gamma, beta)
            return y
        args = (x, gamma, beta, self.running_mean, self.running_var, self.eps)
        checks.batch_norm_forward_eval(*args)
        return self.kernels.batch_norm_forward_eval(*args)

    def _train(self, kernel, x, gamma, beta, *pool):
        """The training kernel `kernel` (this one or a fused one) after its rule; it updates
        the running statistics in place."""
        args = (x, gamma, beta, self.running_mean, self.running_var, self.momentum, self.eps,
                self.unbiased, *pool)
        getattr(checks, kernel)(*args)
        return getattr(self.kernels, kernel)(*args)

    def backward(self, dy):
        if self.training:
            return self.kernels.batch_norm_backward(dy, self.x, self.gamma, self.mean, self.rstd)
        return self.kernels.batch_norm_backward_eval(dy, self.x, self.gamma, self.running_mean,
                                                     self.running_var, self.eps)


# --------------------------------------------------------------------------- fused with a ReLU
# Each computes exactly what the separate Functions compute (the kernels are
# numpy_ref.relu_batch_norm_* / batch_norm_relu_*, compositions of the single-layer ones), but
# the map between the two layers is never stored and each pass over the data does both.


class ReLUBatchNorm(BatchNorm):
    """batch_norm(relu(x)): inputs x (the ReLU's input), gamma, beta."""

    def forward(self, x, gamma, beta):
        self.x, self.gamma = x, gamma
        y, self.mean, self.rstd = self._train("relu_batch_norm_forward_train", x, gamma, beta)
        return y

    def backward(self, dy):
        return self.kernels.relu_batch_norm_backward(dy, self.x, self.gamma, self.mean, self.rstd)


class BatchNormReLU(BatchNorm):
    """relu(batch_norm(x)): inputs x, gamma, beta; keeps its output for the backward."""

    def forward(self, x, gamma, beta):
        self.x, self.gamma = x, gamma
        self.y, self.mean, self.rstd = self._train("batch_norm_relu_forward_train", x, gamma, beta)
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
        y, self.index, self.mean, self.rstd = self._train("batch_norm_relu_pool_forward_train",
                                                          x, gamma, beta, *self.pool)
        return y

    def backward(self, dy):
        return self.kernels.batch_norm_relu_pool_backward(dy, self.index, self.x, self.gamma,
                                                          self.beta, self.mean, self.rstd,
                                                          *self.pool)


FUSED_BATCH_NORMS = {None: BatchNorm, "before": ReLUBatchNorm, "after": BatchNormReLU}
