"""Launchers of kernels/backward.cu: all the gradients of a convolution or a linear layer (its
input's, its weights', its bias's) from one launch, the two products in one grid.

BackwardLaunches is a mixin of CudaKernels (it uses KernelLauncher's helpers and CudaKernels'
_conv_shape and _taps); each method is the numpy_ref function of the same name. With
backward_in_one_launch off they run the separate passes instead (numpy_ref's chain over
these kernels: backward-data, the ReLU's backward, backward-weight, the channel sums of dy),
the unfused reference the tests compare with.
"""
from __future__ import annotations

import functools

import numpy as np

from minicnn.backends import numpy_ref
from minicnn.backends.cuda_launch import i32
from minicnn.backends.kernel_facts import BackwardPlan, best_shared_tile, conv_kernel


class BackwardLaunches:

    # One launch per layer backward (backward.cu); False: the separate passes.
    backward_in_one_launch = True

    def conv2d_backward(self, dy, x, w, stride, pads, need_dx, need_db, relu_input):
        """dy: (N, F, Ho, Wo), x: (N, C, H, W), w: (F, C, kH, kW) -> (dx or None, dw, db or
        None); dx is relu_backward(dx, x) when relu_input (x is a ReLU's output)."""
        if not self.backward_in_one_launch:
            return numpy_ref._conv2d_backward_chain(self, dy, x, w, stride, pads, need_dx, need_db,
                                                    relu_input)
        dy, x, w = self._float_arrays(dy, x, w)
        s = self._conv_shape(x.shape, w.shape, stride, pads)
        # [dw | db] = dY @ [X_col^T | 1] and dx = W^T @ dY_col (backward.cu's header)
        weight = (s.F, s.patch + bool(need_db), s.N * s.Ho * s.Wo)
        data = (s.C, s.N * s.H * s.W if need_dx else 0, s.F * s.kh * s.kw)
        return self._backward_launch("conv2d_backward", weight, data, x.shape, w.shape,
                                     (dy, w, x), (self._taps(s, False), self._taps(s, True),
                                                  *i32(*s.ints())), (need_dx, need_db, relu_input))

    def linear_backward(self, dy, x, w, need_dx, need_db):
        """dy: (N, OUT), x: (N, IN), w: (OUT, IN) -> (dx or None, dw, db or None)."""
        if not self.backward_in_one_launch:
            return numpy_ref._linear_backward_chain(self, dy, x, w, need_dx, need_db)
        dy, x, w = self._float_arrays(dy, x, w)
        (n, inputs), outputs = x.shape, w.shape[0]
        weight, data = (outputs, inputs + bool(need_db), n), (n if need_dx else 0, inputs, outputs)
        return self._backward_launch("linear_backward", weight, data, x.shape, w.shape, (dy, w, x),
                                     i32(n, inputs, outputs), (need_dx, need_db))

    def _backward_launch(self, name, weight, data, x_shape, w_shape, inputs, sizes, flags):
        """backward.cu's kernel `name` on the products weight and data ((rows, cols, depth)
        each) -> (dx or None, dw, db or None); inputs: (dy, w, x); sizes: the arguments after
        the ones; flags: need_dx, need_db[, relu_input]."""
        dtype = inputs[0].dtype
        need_dx, need_db = flags[:2]
        dx = self.xp.empty(x_shape, dtype) if need_dx else None
        dw = self.xp.empty(w_shape, dtype)
        db = self.xp.empty(w_shape[0], dtype) if need_db else None
        precision = self._product_precision(dtype)
        product = (best_shared_tile(self.simt_products, [weight] + [data] * bool(need_dx))
                   if precision == "fp32" else self.products[precision])
        plan = BackwardPlan.of(product, weight, data)
        if plan.blocks:
            unused = self._unused[np.dtype(dtype)]  # stands for the outputs and scratch not written
            partials = [self.xp.empty((splits, rows * cols), dtype) if splits > 1 else unused
                        for (rows, cols, _), (splits, _) in ((data, plan.data), (weight, plan.weight))]
            self._kernel("backward.cu", conv_kernel(name, product), dtype)(
                (plan.blocks,), (product.threads,),
                (unused if dx is None else dx, dw, unused if db is None else db, *partials,
                 self._arrivals(plan.counters), *inputs, self._one(dtype), *sizes,
                 *i32(*plan.data, *plan.weight, *flags)))
        return dx, dw, db

    def _one(self, dtype):
        """A device array holding 1 (backward.cu's column of ones points at it)."""
        return self._ones[np.dtype(dtype)]

    @functools.cached_property
    def _ones(self) -> dict:
        return {np.dtype(t): self.xp.ones(1, t) for t in (np.float32, np.float64)}

    @functools.cached_property
    def _unused(self) -> dict:
        """dtype -> a device word passed for the arrays a launch does not use (no allocation
        per step)."""
        return {np.dtype(t): self.xp.zeros(1, t) for t in (np.float32, np.float64)}
