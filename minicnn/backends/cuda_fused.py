"""Launchers of kernels/fused.cu: dropout with a recomputed mask, and pooling + dropout.

FusedLaunches is a mixin of CudaKernels (it uses KernelLauncher's helpers and CudaKernels'
_pool_geometry); each method is the numpy_ref function of the same name.
"""
from __future__ import annotations

import numpy as np

from minicnn.backends.cuda_launch import cdiv, i32, uint64


class FusedLaunches:

    def dropout_apply(self, x, rate, seed, step):
        """x * the dropout mask of (seed, step), the mask never stored (forward and backward)."""
        (x,) = self._float_arrays(x)
        y = self.xp.empty_like(x)
        self._launch("fused.cu", "dropout_apply<{T}>", x.dtype, cdiv(x.size, 4), y, x,
                     *i32(x.size), np.float64(rate), *uint64(seed, step))
        return y

    def pool2d_dropout_forward(self, x, mode, kernel, stride, pads, rate, seed, step):
        """Pooling, then dropout of its output, in one pass -> (y, index)."""
        (x,) = self._float_arrays(x)
        code, geometry, (ho, wo) = self._pool_geometry(x.shape, mode, kernel, stride, pads)
        y = self.xp.empty(x.shape[:2] + (ho, wo), x.dtype)
        index = self.xp.empty(y.shape if mode != "avg" else (1,), np.int32)
        self._launch("fused.cu", "pool2d_dropout_forward<{T}>", x.dtype, y.size, y, index, x,
                     *i32(code, *geometry), np.float64(rate), *uint64(seed, step))
        return y, (index if mode != "avg" else None)

    def pool2d_dropout_backward(self, dy, index, x_shape, mode, kernel, stride, pads, rate, seed,
                                step):
        """The pooling's backward of dy * the recomputed dropout mask -> dx: x_shape."""
        (dy,) = self._float_arrays(dy)
        code, geometry, _ = self._pool_geometry(x_shape, mode, kernel, stride, pads)
        index = self.xp.empty(1, np.int32) if index is None else self._array(index, np.int32)
        dx = self.xp.empty(tuple(x_shape), dy.dtype)
        self._launch("fused.cu", "pool2d_dropout_backward<{T}>", dy.dtype, dx.size, dx, dy,
                     index, *i32(code, *geometry), np.float64(rate), *uint64(seed, step))
        return dx
