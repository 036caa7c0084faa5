"""Launchers of kernels/fused.cu: dropout with a recomputed mask, and pooling + dropout.

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

import numpy as np

from minicnn.backends.cuda_launch import cdiv, i32, uint64


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
        if step != self.holds:
            self.device[...] = step % 2**64
            self.host_writes += 1
            self.holds = step
        return np.int32(0)


class FusedLaunches:

    @functools.cached_property
    def _step_counters(self) -> dict:
        return {}  # seed -> StepCounter

    def _dropout_step(self, seed, step) -> tuple:
        """(seed, counter, advance, arrivals): the dropout kernels' last four arguments."""
        seed = int(seed) % 2**64
        if seed not in self._step_counters:
            self._step_counters[seed] = StepCounter(self.xp)
        counter = self._step_counters[seed]
        advance = counter.reach(int(step) % 2**64)
        return (*uint64(seed), counter.device, advance, self._arrivals(1))

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

    def dropout_step_advanced(self, seed, step) -> None:
        """A replayed CUDA graph moved seed's device counter to `step` (minicnn/train/
        graph_step.py): the host's note of what the counter holds follows."""
        counter = self._step_counters.get(int(seed) % 2**64)
        if counter is not None:
            counter.holds = int(step) % 2**64
