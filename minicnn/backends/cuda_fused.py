"""Launchers of kernels/fused.cu: dropout with a recomputed mask, pooling + dropout, and a
conv -> ReLU pair (conv.cu's ReLU epilogue, fused.cu's ReLU backward with the bias gradient).

FusedLaunches is a mixin of CudaKernels (it uses KernelLauncher's helpers and CudaKernels'
_pool_geometry); each method is the numpy_ref function of the same name.

The dropout kernels read their step from a device counter, one per seed (each nn.Dropout
draws its own seed), never from a kernel argument: a layer's next step (its forward) is an
increment the kernel makes on the device, the same step again (its backward) reads the
counter, and only a jump (the first step, a resume) is written from the host. So once warm,
the launches of one training step are those of the next, as a CUDA graph needs.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from minicnn.backends.cuda_launch import cdiv, i32, uint64
from minicnn.backends.kernel_facts import conv_kernel


class StepCounter:
    """The device counter of one dropout seed, and what the host knows it holds."""

    def __init__(self, xp):
        self.device = xp.zeros(1, np.uint64)
        self.holds = 0
        self.host_writes = 0

    def reach(self, step: int) -> np.int32:
        """Prepare the counter for a launch at `step` -> the kernel's advance flag (0 or 1)."""
        if step == self.holds + 1:  # the kernel adds 1 on the device
            self.holds = step
            return np.int32(1)
        self.hold(step)
        return np.int32(0)

    def hold(self, step: int) -> None:
        """Make the counter hold `step` (a host write only when it holds another)."""
        if step != self.holds:
            self.device[...] = step % 2**64
            self.host_writes += 1
            self.holds = step


class FusedLaunches:

    @functools.cached_property
    def _step_counters(self) -> dict:
        return {}  # seed -> StepCounter

    def _dropout_step(self, seed, step) -> tuple:
        """(seed, counter, advance, arrivals): the dropout kernels' last four arguments."""
        seed, counter = self._step_counter(seed)
        advance = counter.reach(int(step) % 2**64)
        return (seed, counter.device, advance, self._arrivals(1))

    def _held_dropout_step(self, seed, step) -> tuple:
        """(seed, counter) for kernels that read the step and never advance it (backward
        passes that are channel reductions: their arrival counters are in use)."""
        seed, counter = self._step_counter(seed)
        counter.hold(int(step) % 2**64)
        return seed, counter.device

    def _step_counter(self, seed) -> tuple:
        """(seed as the kernels' uint64, its StepCounter)."""
        seed = int(seed) % 2**64
        if seed not in self._step_counters:
            self._step_counters[seed] = StepCounter(self.xp)
        return uint64(seed)[0], self._step_counters[seed]

    def dropout_apply(self, x, rate, seed, step):
        """x * the dropout mask of (seed, step), the mask never stored (forward and backward)."""
        (x,) = self._float_arrays(x)
        y = self.xp.empty_like(x)
        if x.size == 0:  # no launch: the step counter must not move either
            return y
        self._launch("fused.cu", "dropout_apply<{T}>", x.dtype, cdiv(x.size, 4), y, x,
                     *i32(x.size), np.float64(rate), *self._dropout_step(seed, step))
        return y

    def pool2d_dropout_forward(self, x, mode, kernel, stride, pads, rate, seed, step):
        """Pooling, then dropout of its output, in one pass -> (y, index)."""
        (x,) = self._float_arrays(x)
        code, geometry, (ho, wo) = self._pool_geometry(x.shape, mode, kernel, stride, pads)
        y = self.xp.empty(x.shape[:2] + (ho, wo), x.dtype)
        index = self.xp.empty(y.shape if mode != "avg" else (1,), np.int32)
        if y.size == 0:
            return y, (index if mode != "avg" else None)
        self._launch("fused.cu", "pool2d_dropout_forward<{T}>", x.dtype, y.size, y, index, x,
                     *i32(code, *geometry), np.float64(rate), *self._dropout_step(seed, step))
        return y, (index if mode != "avg" else None)

    def pool2d_dropout_backward(self, dy, index, x_shape, mode, kernel, stride, pads, rate, seed,
                                step):
        """The pooling's backward of dy * the recomputed dropout mask -> dx: x_shape."""
        (dy,) = self._float_arrays(dy)
        code, geometry, _ = self._pool_geometry(x_shape, mode, kernel, stride, pads)
        index = self.xp.empty(1, np.int32) if index is None else self._array(index, np.int32)
        dx = self.xp.empty(tuple(x_shape), dy.dtype)
        if dx.size == 0:
            return dx
        self._launch("fused.cu", "pool2d_dropout_backward<{T}>", dy.dtype, dx.size, dx, dy,
                     index, *i32(code, *geometry), np.float64(rate),
                     *self._dropout_step(seed, step))
        return dx

    def conv2d_relu_forward(self, x, w, b, stride, pads):
        """relu(conv2d_forward(x, w, b)): the bias and the ReLU in the product's epilogue, which
        needs whole sums, so K is never split. x: (N, C, H, W) -> y: (N, F, Ho, Wo)."""
        return self._conv2d_relu_forward(x, w, b, stride, pads, keep_wt=False)[0]

    def conv2d_relu_forward_train(self, x, w, b, stride, pads):
        """conv2d_relu_forward with the backward's transposed weights -> (y, wt), as
        conv2d_forward_train."""
        return self._conv2d_relu_forward(x, w, b, stride, pads, keep_wt=self.backward_in_one_launch)

    def _conv2d_relu_forward(self, x, w, b, stride, pads, keep_wt):
        x, s, args, wt, (tail, extra_blocks) = self._conv_forward_args(x, w, b, stride, pads, keep_wt)
        y = self.xp.empty(s.y_shape, x.dtype)
        if y.size:
            product = self._tile_for(x.dtype, s.F, s.N * s.Ho * s.Wo)
            self._tiled_launch("conv.cu", conv_kernel("conv2d_relu_forward", product), x.dtype, s.F,
                               s.N * s.Ho * s.Wo, (y, *args, *tail), 1, product, extra_blocks)
        return y, wt

    def relu_backward_bias_grad(self, dy, y):
        """(relu_backward(dy, y), the channel sums of it) in one pass: dy, y (N, C, ...)."""
        dy, y = self._float_arrays(dy, y)
        dx, db = self.xp.empty_like(dy), self.xp.empty(dy.shape[1], dy.dtype)
        self._channel_reduce("fused.cu", "relu_backward_channel_sums<{T}>", dy.dtype, dy.shape[0],
                             dy.shape[1], math.prod(dy.shape[2:]), dx, db, inputs=(dy, y))
        return dx, db

    def relu_batch_norm_pool_dropout_forward_train(self, x, gamma, beta, running_mean,
                                                   running_var, momentum, eps, unbiased, mode,
                                                   kernel, stride, pads, rate, seed, step):
        """dropout(pool(relu_batch_norm_forward_train(x))): the statistics, then one pass
        -> (y, index, mean, rstd); index as pool2d_forward's (None for avg)."""
        return self._bn_pool_forward(
            "relu_bn_pool_dropout", True, x, gamma, beta, running_mean, running_var, momentum,
            eps, unbiased, mode, kernel, stride, pads,
            dropout=lambda: (np.float64(rate), *self._dropout_step(seed, step)))

    def relu_batch_norm_pool_dropout_backward(self, dy, index, x, gamma, beta, mean, rstd, mode,
                                              kernel, stride, pads, rate, seed, step,
                                              dx_sums=False):
        """Gradients of the forward above -> (dx, dgamma, dbeta[, sums of dx])."""
        return self._bn_pool_backward("relu_bn_pool_dropout", dy, index, x, gamma, beta, mean,
                                      rstd, (mode, kernel, stride, pads), dx_sums,
                                      (np.float64(rate), *self._held_dropout_step(seed, step)))

    def dropout_step_advanced(self, seed, step) -> None:
        """A replayed CUDA graph moved seed's device counter to `step` (minicnn/train/
        graph_step.py): the host's note of what the counter holds follows."""
        counter = self._step_counters.get(int(seed) % 2**64)
        if counter is not None:
            counter.holds = int(step) % 2**64
