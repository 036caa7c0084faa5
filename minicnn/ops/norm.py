"""Batch normalization over the channel axis of (N, C) or (N, C, H, W), alone or fused with a
ReLU (and a pooling) for the fusion pass of nn.Sequential (minicnn/nn/fusion.py)."""
from minicnn.autograd import Function, Tensor
from minicnn.backends import checks
from minicnn.ops.arguments import check_tensor
from minicnn.ops.pool import pool_geometry


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5, unbiased=True, relu=None, pool=None, dropout=None):
    """Normalize each channel of (N, C) or (N, C, H, W).

    running_mean, running_var: arrays (C,) updated in place when training. momentum is the
    weight of the new batch in the running average (PyTorch's convention: Keras'
    momentum=0.99 is momentum=0.01 here, with unbiased=False). weight / bias None: 1 / 0.
    relu: 'before' (batch_norm(relu(x))) or 'after' (relu(batch_norm(x))) fuses a ReLU into
    the same passes, training only (nn.Sequential's fusion pass uses it, minicnn/nn/fusion.py).
    pool: (mode, kernel_size, stride, padding) with relu='after' pools the result in the same
    pass as well (max_pool2d's arguments; mode 'max', 'min' or 'avg'). With relu='before',
    pool and dropout=(rate, seed, step), the pooled map is dropped out in that pass too
    (vgg_like's ReLU -> BN -> pool -> dropout); without pool, dropout fuses the same way into a
    ReLU -> BN of (N, C) features (vgg_like's FC layer).
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
    if pool is None and dropout:
        if relu != "before" or x.ndim != 2:
            raise ValueError(f"batch_norm: a dropout without a pool needs relu='before' and (N, C) "
                             f"features, got relu={relu!r} and shape {tuple(x.shape)}")
        return ReLUBatchNormDropout(*state, tuple(dropout))(x, weight, bias)
    if pool is None:
        return FUSED_BATCH_NORMS[relu](*state)(x, weight, bias)
    mode, kernel_size, stride, padding = pool
    if relu != ("before" if dropout else "after"):
        needs = "relu='before' with a dropout" if dropout else "relu='after'"
        raise ValueError(f"batch_norm: pool needs {needs}, got relu={relu!r}")
    geometry = pool_geometry(f"{mode}_pool2d", x, kernel_size, stride, padding)
    if dropout:
        return ReLUBatchNormPoolDropout(*state, mode, *geometry, tuple(dropout))(x, weight, bias)
    return BatchNormReLUPool(*state, mode, *geometry)(x, weight, bias)


class TakesBiasGrad:
    """Mixed into a Function with a bias (Conv2d, Linear): a batch norm fed by its output may
    hand it the bias gradient (BatchNorm.bias_grad_to), summed in the batch norm's own dx pass;
    otherwise (given_bias_grad None) the layer's backward computes it with its other gradients."""

    given_bias_grad = None


class BatchNorm(Function):
    """Inputs x, gamma, beta; running statistics are buffers updated in place in training.

    training=True normalizes with the batch's mean/variance (and updates the running ones);
    training=False uses the running statistics, so the op is a fixed affine map per channel.
    """

    # A Function with a bias whose output is this batch norm's input (nn/fusion.py sets it):
    # the backward's dx pass then also sums dx per channel, which is that bias's gradient, and
    # hands it over (TakesBiasGrad), so the layer before needs no pass of its own for it.
    bias_grad_to = None

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
        if self.bias_grad_to is None:
            return self._gradients(dy)
        dx, dgamma, dbeta, self.bias_grad_to.given_bias_grad = self._gradients(dy, dx_sums=True)
        return dx, dgamma, dbeta

    def _gradients(self, dy, dx_sums=False):
        """(dx, dgamma, dbeta), then the channel sums of dx when dx_sums (training only)."""
        if self.training:
            return self.kernels.batch_norm_backward(dy, self.x, self.gamma, self.mean, self.rstd,
                                                    dx_sums)
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

    def _gradients(self, dy, dx_sums=False):
        return self.kernels.relu_batch_norm_backward(dy, self.x, self.gamma, self.mean, self.rstd,
                                                     dx_sums)


class BatchNormReLU(BatchNorm):
    """relu(batch_norm(x)): inputs x, gamma, beta; keeps its output for the backward."""

    def forward(self, x, gamma, beta):
        self.x, self.gamma = x, gamma
        self.y, self.mean, self.rstd = self._train("batch_norm_relu_forward_train", x, gamma, beta)
        return self.y

    def _gradients(self, dy, dx_sums=False):
        return self.kernels.batch_norm_relu_backward(dy, self.y, self.x, self.gamma, self.mean,
                                                     self.rstd, dx_sums)


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

    def _gradients(self, dy, dx_sums=False):
        return self.kernels.batch_norm_relu_pool_backward(dy, self.index, self.x, self.gamma,
                                                          self.beta, self.mean, self.rstd,
                                                          *self.pool, dx_sums)


class ReLUBatchNormPoolDropout(BatchNormReLUPool):
    """dropout(pool(batch_norm(relu(x)))): inputs x (the ReLU's input), gamma, beta; dropout =
    (rate, seed, step). Neither the normalized map nor the mask is stored: the backward
    recomputes the mask from (seed, step)."""

    def __init__(self, running_mean, running_var, training, momentum, eps, unbiased, mode,
                 kernel, stride, pads, dropout):
        super().__init__(running_mean, running_var, training, momentum, eps, unbiased, mode,
                         kernel, stride, pads)
        self.dropout = dropout

    def forward(self, x, gamma, beta):
        self.x, self.gamma, self.beta = x, gamma, beta
        y, self.index, self.mean, self.rstd = self._train(
            "relu_batch_norm_pool_dropout_forward_train", x, gamma, beta, *self.pool, *self.dropout)
        return y

    def _gradients(self, dy, dx_sums=False):
        return self.kernels.relu_batch_norm_pool_dropout_backward(
            dy, self.index, self.x, self.gamma, self.beta, self.mean, self.rstd, *self.pool,
            *self.dropout, dx_sums)


class ReLUBatchNormDropout(ReLUBatchNormPoolDropout):
    """dropout(batch_norm(relu(x))) of features x: (N, C): the pass above on the (N, C, 1, 1)
    view with a 1 x 1 window, which is the identity (the same bits as no pooling: element i of
    the view is element i of x, mask and all)."""

    def __init__(self, running_mean, running_var, training, momentum, eps, unbiased, dropout):
        super().__init__(running_mean, running_var, training, momentum, eps, unbiased, "max",
                         (1, 1), (1, 1), (0, 0, 0, 0), dropout)

    def forward(self, x, gamma, beta):
        return super().forward(x.reshape(x.shape + (1, 1)), gamma, beta).reshape(x.shape)

    def _gradients(self, dy, dx_sums=False):
        dx, *rest = super()._gradients(dy.reshape(dy.shape + (1, 1)), dx_sums)
        return (dx.reshape(dy.shape), *rest)


FUSED_BATCH_NORMS = {None: BatchNorm, "before": ReLUBatchNorm, "after": BatchNormReLU}
