"""Batch-norm launches (batchnorm.cu version 2), plain and with a ReLU folded in.

BatchNormLaunches is a mixin of CudaKernels: batch_norm_forward_train / batch_norm_backward
are numpy_ref's functions, and the fused pairs relu_batch_norm_* (ReLU -> BN) and
batch_norm_relu_* (BN -> ReLU) are numpy_ref's twins of the same names. All of them are one
launch sequence, told apart by batchnorm.cu's PRE_RELU / POST_RELU template flags:

    training  bn_moments, bn_normalize                   2 launches (+1 for a separate ReLU)
              (version 2: bn_mean, bn_variance, bn_normalize, 3 launches)
    backward  bn_backward_sums, bn_backward_dx           2 launches (+1 for a separate ReLU)

Each backward takes dx_sums=True to return also the channel sums of dx, the bias gradient
of the conv (or linear) layer before the batch norm: its dx pass becomes bn_backward_dx_sums
(bn_relu_pool_backward_dx_sums), a channel reduction that writes dx as it sums it, so that
bias gradient needs no launch of its own.

With bn_in_one_launch (the default) every pattern, plain or fused with pooling and dropout,
takes one launch forward and one backward: kernels/bn_one_launch.cu, cooperative grids whose
grid-wide barrier stands where the launch boundary was, with the same bits. The launch
sequences above stay the selectable reference (bn_in_one_launch = False).
"""
from __future__ import annotations

import math

import numpy as np

from minicnn.backends.cuda_launch import THREADS, cdiv, i32, reduction_slices


def _flags(pre_relu: bool, post_relu: bool) -> str:
    return f"{str(pre_relu).lower()}, {str(post_relu).lower()}"


class BatchNormLaunches:
    """Batch norm for CudaKernels (uses KernelLauncher's helpers)."""

    # Training statistics in one launch (batchnorm.cu version 3, bn_moments: shifted sums of
    # d and d^2); False: version 2, bn_mean then bn_variance (two-pass, the reference's maths).
    bn_statistics_in_one_launch = True
    # Statistics and output (sums and dx) in one cooperative launch each (bn_one_launch.cu);
    # False: the two-launch passes below, the reference.
    bn_in_one_launch = True

    def _bn_view(self, x):
        """(N, C) or (N, C, H, W) -> (N, C, S, count = N*S): how batchnorm.cu sees x."""
        n, c, s = x.shape[0], x.shape[1], math.prod(x.shape[2:])
        return n, c, s, n * s

    def _bn_train(self, x, gamma, beta, running_mean, running_var, momentum, eps, unbiased,
                  pre_relu=False, post_relu=False):
        x, gamma, beta = self._float_arrays(x, gamma, beta)
        if self.bn_in_one_launch:
            y = self.xp.empty_like(x)
            mean, rstd = self._bn_forward_one_launch(
                f"bn_train_one_launch<{{T}}, {_flags(pre_relu, post_relu)}>", x, gamma, beta,
                running_mean, running_var, momentum, eps, unbiased, x.size, (y,))
            return y, mean, rstd
        mean, rstd = self._bn_statistics(x, running_mean, running_var, momentum, eps, unbiased,
                                         pre_relu)
        n, c, s, _ = self._bn_view(x)
        y = self.xp.empty_like(x)
        self._launch("batchnorm.cu", f"bn_normalize<{{T}}, {_flags(pre_relu, post_relu)}>",
                     x.dtype, x.size, y, x, mean, rstd, gamma, beta, *i32(x.size, c, s))
        return y, mean, rstd

    def _bn_statistics(self, x, running_mean, running_var, momentum, eps, unbiased, pre_relu):
        """(mean, rstd) of the batch x (of relu(x) when pre_relu); running stats updated."""
        self._check_running_statistics(x, running_mean, running_var)
        n, c, s, _ = self._bn_view(x)
        T = x.dtype.type
        mean, rstd = self.xp.empty(c, x.dtype), self.xp.empty(c, x.dtype)
        pre, update = str(pre_relu).lower(), (T(momentum), T(1 - momentum), T(eps),
                                              *i32(bool(unbiased)))
        if self.bn_statistics_in_one_launch:  # version 3: two halves of one grid, + c counters
            self._channel_reduce("batchnorm.cu", f"bn_moments<{{T}}, {pre}>", x.dtype, n, c, s,
                                 mean, rstd, running_mean, running_var, inputs=(x,),
                                 scalars=update, reductions=2, counters=3 * c)
            return mean, rstd
        self._channel_reduce("batchnorm.cu", f"bn_mean<{{T}}, {pre}>", x.dtype, n, c, s, mean,
                             inputs=(x,))
        self._channel_reduce("batchnorm.cu", f"bn_variance<{{T}}, {pre}>", x.dtype, n, c, s,
                             rstd, running_mean, running_var, inputs=(x, mean), scalars=update)
        return mean, rstd

    def _check_running_statistics(self, x, running_mean, running_var):
        for name, buffer in (("running_mean", running_mean), ("running_var", running_var)):
            if not (isinstance(buffer, self.xp.ndarray) and buffer.flags.c_contiguous
                    and buffer.dtype == x.dtype):
                raise ValueError(f"{name} must be a C-contiguous {x.dtype} array of this "
                                 f"device: it is updated in place")

    def _bn_forward_one_launch(self, expression, x, gamma, beta, running_mean, running_var,
                               momentum, eps, unbiased, outputs, leading, trailing=()):
        """bn_one_launch.cu's forward `expression`: kernel(*leading, mean, rstd, running_mean,
        running_var, partial, arrivals, x, gamma, beta, n, c, s, P, momentum, 1 - momentum,
        eps, unbiased, *trailing), its phase 2 `outputs` items -> (mean, rstd)."""
        self._check_running_statistics(x, running_mean, running_var)
        n, c, s, count = self._bn_view(x)
        mean, rstd = self.xp.empty(c, x.dtype), self.xp.empty(c, x.dtype)
        if c:
            T, slices = x.dtype.type, reduction_slices(c, count)  # the reference's slices
            partial = self.xp.empty((2, c, slices), x.dtype)
            grid = self.cooperative_grid(max(2 * c * slices, cdiv(outputs, THREADS)))
            self._kernel("bn_one_launch.cu", expression, x.dtype)(
                (grid,), (THREADS,),
                (*leading, mean, rstd, running_mean, running_var, partial, self._arrivals(3 * c),
                 x, gamma, beta, *i32(n, c, s, slices), T(momentum), T(1 - momentum), T(eps),
                 *i32(bool(unbiased)), *trailing))
        return mean, rstd

    def _bn_backward_one_launch(self, expression, x, outputs, inputs, trailing):
        """bn_one_launch.cu's backward `expression`: kernel(*outputs, partial, arrivals,
        *inputs, P, *trailing), outputs = (dx, dx_sums, dbeta, dgamma)."""
        n, c, s, count = self._bn_view(x)
        if c:
            slices = reduction_slices(c, count)
            partial = self.xp.empty((3, c, slices), x.dtype)
            grid = self.cooperative_grid(max(2 * c * slices, cdiv(x.size, THREADS)))
            self._kernel("bn_one_launch.cu", expression, x.dtype)(
                (grid,), (THREADS,),
                (*outputs, partial, self._arrivals(3 * c), *inputs, *i32(slices), *trailing))

    def _dx_sums_output(self, written, c, dtype):
        """The dx_sums argument of a one-launch backward: (c,) when the kernel writes it, else
        the launcher's zeros, never touched (no allocation per step)."""
        return self.xp.empty(c, dtype) if written else self._zeros(1, dtype)

    def _bn_backward(self, dy, y, x, gamma, mean, rstd, pre_relu=False, post_relu=False,
                     dx_sums=False):
        """y: the fused ReLU's output when post_relu (else unused, pass dy)."""
        dy, y, x, gamma, mean, rstd = self._float_arrays(dy, y, x, gamma, mean, rstd)
        n, c, s, count = self._bn_view(x)
        dbeta, dgamma = self.xp.empty(c, x.dtype), self.xp.empty(c, x.dtype)
        flags = _flags(pre_relu, post_relu)
        if self.bn_in_one_launch:
            dx, sums = self.xp.empty_like(x), self._dx_sums_output(dx_sums, c, x.dtype)
            self._bn_backward_one_launch(f"bn_backward_one_launch<{{T}}, {flags}>", x,
                                         (dx, sums, dbeta, dgamma),
                                         (dy, y, x, gamma, mean, rstd, *i32(n, c, s)),
                                         i32(bool(dx_sums)))
            return (dx, dgamma, dbeta, sums) if dx_sums else (dx, dgamma, dbeta)
        self._channel_reduce("batchnorm.cu", f"bn_backward_sums<{{T}}, {flags}>", x.dtype, n, c,
                             s, dbeta, dgamma, inputs=(dy, y, x, mean, rstd), reductions=2)
        dx = self.xp.empty_like(x)
        if dx_sums:
            sums = self.xp.empty(c, x.dtype)
            self._channel_reduce("batchnorm.cu", f"bn_backward_dx_sums<{{T}}, {flags}>", x.dtype,
                                 n, c, s, dx, sums, inputs=(dy, y, x, gamma, mean, rstd, dbeta,
                                                               dgamma))
            return dx, dgamma, dbeta, sums
        self._launch("batchnorm.cu", f"bn_backward_dx<{{T}}, {flags}>", x.dtype, x.size, dx, dy,
                     y, x, gamma, mean, rstd, dbeta, dgamma, *i32(x.size, c, s, count))
        return dx, dgamma, dbeta

    # ---- numpy_ref's functions

    def batch_norm_forward_train(self, x, gamma, beta, running_mean, running_var, momentum, eps,
                                 unbiased):
        """Normalize with the batch's statistics and update the running ones in place.

        x: (N, C) or (N, C, H, W); gamma, beta, running_*: (C,). Returns (y, mean, rstd).
        """
        return self._bn_train(x, gamma, beta, running_mean, running_var, momentum, eps,
                              unbiased)

    def batch_norm_backward(self, dy, x, gamma, mean, rstd, dx_sums=False):
        """Gradients of training-mode batch norm -> (dx, dgamma, dbeta), and with dx_sums
        the channel sums of dx after them."""
        return self._bn_backward(dy, dy, x, gamma, mean, rstd, dx_sums=dx_sums)

    def relu_batch_norm_forward_train(self, x, gamma, beta, running_mean, running_var, momentum,
                                      eps, unbiased):
        """batch_norm_forward_train of relu(x), relu(x) never stored -> (y, mean, rstd)."""
        return self._bn_train(x, gamma, beta, running_mean, running_var, momentum, eps,
                              unbiased, pre_relu=True)

    def relu_batch_norm_backward(self, dy, x, gamma, mean, rstd, dx_sums=False):
        """Gradients of batch_norm(relu(x)) -> (dx, dgamma, dbeta[, sums of dx]); x: the ReLU's
        input."""
        return self._bn_backward(dy, dy, x, gamma, mean, rstd, pre_relu=True, dx_sums=dx_sums)

    def batch_norm_relu_forward_train(self, x, gamma, beta, running_mean, running_var, momentum,
                                      eps, unbiased):
        """relu(batch_norm_forward_train(x)) in one pass over the output -> (y, mean, rstd)."""
        return self._bn_train(x, gamma, beta, running_mean, running_var, momentum, eps,
                              unbiased, post_relu=True)

    def batch_norm_relu_backward(self, dy, y, x, gamma, mean, rstd, dx_sums=False):
        """Gradients of relu(batch_norm(x)) -> (dx, dgamma, dbeta[, sums of dx]); y: the
        forward's output."""
        return self._bn_backward(dy, y, x, gamma, mean, rstd, post_relu=True, dx_sums=dx_sums)

    # ---- batch norm + ReLU + pooling (kernels/fused.cu)

    def _bn_relu_pool_arguments(self, x, mean, rstd, gamma, beta, mode, kernel, stride, pads):
        """fused.cu's BN_RELU_POOL_PARAMETERS for x: (N, C, H, W), and the pooled (Ho, Wo)."""
        if x.ndim != 4:
            raise ValueError(f"batch norm + ReLU + pooling takes (N, C, H, W), got {x.shape}")
        n, c, s, _ = self._bn_view(x)
        code, geometry, out_hw = self._pool_geometry(x.shape, mode, kernel, stride, pads)
        return (x, mean, rstd, gamma, beta, *i32(n, c, s, code, *geometry)), out_hw

    def batch_norm_relu_pool_forward_train(self, x, gamma, beta, running_mean, running_var,
                                           momentum, eps, unbiased, mode, kernel, stride, pads):
        """pool(relu(batch_norm_forward_train(x))) without storing the full-size map
        -> (y, index, mean, rstd); index as pool2d_forward's (None for avg)."""
        return self._bn_pool_forward("bn_relu_pool", False, x, gamma, beta, running_mean,
                                     running_var, momentum, eps, unbiased, mode, kernel, stride,
                                     pads)

    def batch_norm_relu_pool_backward(self, dy, index, x, gamma, beta, mean, rstd, mode, kernel,
                                      stride, pads, dx_sums=False):
        """Gradients of pool(relu(batch_norm(x))) -> (dx, dgamma, dbeta[, sums of dx])."""
        return self._bn_pool_backward("bn_relu_pool", dy, index, x, gamma, beta, mean, rstd,
                                      (mode, kernel, stride, pads), dx_sums)

    def _bn_pool_forward(self, kind, pre_relu, x, gamma, beta, running_mean, running_var,
                         momentum, eps, unbiased, mode, kernel, stride, pads, dropout=tuple):
        """The statistics (of relu(x) when pre_relu), then fused.cu's `kind`_forward, one
        thread per pooled output -> (y, index, mean, rstd). dropout() gives the kernel's
        trailing dropout arguments, asked for only when there is a launch."""
        x, gamma, beta = self._float_arrays(x, gamma, beta)
        if self.bn_in_one_launch:
            return self._bn_pool_forward_one_launch(kind, pre_relu, x, gamma, beta,
                                                    running_mean, running_var, momentum, eps,
                                                    unbiased, (mode, kernel, stride, pads),
                                                    dropout)
        mean, rstd = self._bn_statistics(x, running_mean, running_var, momentum, eps, unbiased,
                                         pre_relu)
        arguments, out_hw = self._bn_relu_pool_arguments(x, mean, rstd, gamma, beta, mode, kernel,
                                                         stride, pads)
        y = self.xp.empty(x.shape[:2] + out_hw, x.dtype)
        index = self.xp.empty(y.shape if mode != "avg" else (1,), np.int32)
        if y.size:
            self._launch("fused.cu", f"{kind}_forward<{{T}}>", x.dtype, y.size, y, index,
                         *arguments, *dropout())
        return y, (index if mode != "avg" else None), mean, rstd

    def _bn_pool_backward(self, kind, dy, index, x, gamma, beta, mean, rstd, pool, dx_sums,
                          dropout=()):
        """fused.cu's `kind`_backward_sums (dbeta, dgamma), then its dx pass: `kind`_backward_dx,
        or `kind`_backward_dx_sums with the channel sums of dx (returned when dx_sums; the
        dropout kinds have only this pass). dropout: the kernels' trailing dropout arguments.
        With bn_in_one_launch: both in bn_one_launch.cu's `kind`_backward_one_launch."""
        dy, x, gamma, beta, mean, rstd = self._float_arrays(dy, x, gamma, beta, mean, rstd)
        index = self.xp.empty(1, np.int32) if index is None else self._array(index, np.int32)
        arguments, _ = self._bn_relu_pool_arguments(x, mean, rstd, gamma, beta, *pool)
        n, c, s, _ = self._bn_view(x)
        dbeta, dgamma = self.xp.empty(c, x.dtype), self.xp.empty(c, x.dtype)
        if self.bn_in_one_launch:
            # the dropout kinds write the sums whether or not they are asked for
            dx, sums = self.xp.empty_like(x), self._dx_sums_output(dx_sums or dropout, c, x.dtype)
            self._bn_backward_one_launch(f"{kind}_backward_one_launch<{{T}}>", x,
                                         (dx, sums, dbeta, dgamma), (dy, index, *arguments),
                                         dropout or i32(bool(dx_sums)))
            return (dx, dgamma, dbeta, sums) if dx_sums else (dx, dgamma, dbeta)
        scalars = (*arguments[8:], *dropout)
        self._channel_reduce("fused.cu", f"{kind}_backward_sums<{{T}}>", x.dtype, n, c, s,
                             dbeta, dgamma, inputs=(dy, index, *arguments[:5]), scalars=scalars,
                             reductions=2)
        dx = self.xp.empty_like(x)
        if dx_sums or dropout:
            sums = self.xp.empty(c, x.dtype)
            self._channel_reduce("fused.cu", f"{kind}_backward_dx_sums<{{T}}>", x.dtype, n, c, s,
                                 dx, sums, inputs=(dy, index, dbeta, dgamma, *arguments[:5]),
                                 scalars=scalars)
            return (dx, dgamma, dbeta, sums) if dx_sums else (dx, dgamma, dbeta)
        self._launch("fused.cu", f"{kind}_backward_dx<{{T}}>", x.dtype, x.size, dx, dy, index,
                     dbeta, dgamma, *arguments)
        return dx, dgamma, dbeta

    def _bn_pool_forward_one_launch(self, kind, pre_relu, x, gamma, beta, running_mean,
                                    running_var, momentum, eps, unbiased, pool, dropout):
        """_bn_pool_forward in one launch: bn_one_launch.cu's `kind`_forward_one_launch. The
        dropout kinds take dropout()'s (rate, seed, step counter, advance), not its arrivals:
        the step moves after the grid barrier."""
        # the pool geometry's arguments (mean and rstd are the kernel's outputs, passed below)
        arguments, out_hw = self._bn_relu_pool_arguments(x, None, None, gamma, beta, *pool)
        y = self.xp.empty(x.shape[:2] + out_hw, x.dtype)
        index = self.xp.empty(y.shape if pool[0] != "avg" else (1,), np.int32)
        if y.size:
            mean, rstd = self._bn_forward_one_launch(
                f"{kind}_forward_one_launch<{{T}}>", x, gamma, beta, running_mean, running_var,
                momentum, eps, unbiased, y.size, (y, index), (*arguments[8:], *dropout()[:4]))
        else:  # no output: the statistics alone, and a dropout step counter stays
            mean, rstd = self._bn_statistics(x, running_mean, running_var, momentum, eps,
                                             unbiased, pre_relu)
        return y, (index if pool[0] != "avg" else None), mean, rstd
