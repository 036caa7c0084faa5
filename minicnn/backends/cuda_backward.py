"""Launchers of kernels/backward.cu: all the gradients of a convolution or a linear layer (its
input's, its weights', its bias's) from one launch, the two products and the bias's channel
sums in one grid, the same bits as the separate launches.

BackwardLaunches is a mixin of CudaKernels (it uses KernelLauncher's helpers and CudaKernels'
_conv_shape and _taps); each method is the numpy_ref function of the same name. With
backward_in_one_launch off they run the separate launches instead (numpy_ref's chain over these
kernels: backward-data, the ReLU's backward, backward-weight, the channel sums of dy), the
unfused reference.
"""
from __future__ import annotations

from minicnn.backends import numpy_ref
from minicnn.backends.cuda_launch import i32, reduction_slices
from minicnn.backends.kernel_facts import BackwardPlan, backward_kernel, backward_tiles


class BackwardLaunches:

    # One launch per layer backward (backward.cu); False: the separate launches (same bits).
    backward_in_one_launch = True

    def conv2d_backward(self, dy, x, w, stride, pads, need_dx, need_db, relu_input, wt=None):
        """dy: (N, F, Ho, Wo), x: (N, C, H, W), w: (F, C, kH, kW) -> (dx or None, dw, db or
        None); dx is relu_backward(dx, x) when relu_input (x is a ReLU's output). wt: w
        transposed, (C, F, kH, kW), as conv2d_forward_train kept it, which dx's product reads
        (its rows are contiguous); None: transposed here (conv_weight_transpose, a launch more)."""
        if not self.backward_in_one_launch:
            return numpy_ref._conv2d_backward_chain(self, dy, x, w, stride, pads, need_dx, need_db,
                                                    relu_input)
        dy, x, w = self._float_arrays(dy, x, w)
        if need_dx:
            wt = self._conv_weight_transpose(w) if wt is None else self._float_arrays(wt, w)[0]
        s = self._conv_shape(x.shape, w.shape, stride, pads)
        # dw = dY @ X_col^T and dx = W^T @ dY_col (conv.cu), each split as its own launch splits it
        weight = (s.F, s.patch, s.N * s.Ho * s.Wo)
        data = (s.C, s.N * s.H * s.W if need_dx else 0, s.F * s.kh * s.kw)
        splits = [self._tile_for(dy.dtype, *shape[:2]).split(*shape) for shape in (weight, data)]
        return self._backward_launch("conv2d_backward", weight, data, splits, (s.N, s.F, s.Ho * s.Wo),
                                     need_db, x.shape, w.shape, (dy, wt if need_dx else w, x),
                                     (self._taps(s, False), self._taps(s, True), *i32(*s.ints())),
                                     (need_dx, relu_input))

    def linear_backward(self, dy, x, w, need_dx, need_db):
        """dy: (N, OUT), x: (N, IN), w: (OUT, IN) -> (dx or None, dw, db or None)."""
        if not self.backward_in_one_launch:
            return numpy_ref._linear_backward_chain(self, dy, x, w, need_dx, need_db)
        dy, x, w = self._float_arrays(dy, x, w)
        (n, inputs), outputs = x.shape, w.shape[0]
        weight, data = (outputs, inputs, n), (n if need_dx else 0, inputs, outputs)
        product = self.products[self._product_precision(dy.dtype)]  # gemm's own tile and splits
        return self._backward_launch("linear_backward", weight, data,
                                     [product.split(*shape) for shape in (weight, data)],
                                     (n, outputs, 1), need_db, x.shape, w.shape, (dy, w, x),
                                     i32(n, inputs, outputs), (need_dx,))

    def _backward_launch(self, name, weight, data, splits, dy_view, need_db, x_shape, w_shape,
                         inputs, sizes, flags):
        """backward.cu's kernel `name` -> (dx or None, dw, db or None). weight, data: the
        products' (rows, cols, depth), data with 0 columns when dx is not wanted; splits: their
        (splits, k_chunk); dy_view: dy as (N, F, S) for the bias's channel sums; inputs: (dy,
        the weights as the data product reads them, x); sizes: the arguments after them;
        flags: need_dx[, relu_input]."""
        dtype = inputs[0].dtype
        dx = self.xp.empty(x_shape, dtype) if flags[0] else None
        dw = self.xp.empty(w_shape, dtype)
        n, channels, s = dy_view
        bias = (channels, reduction_slices(channels, n * s)) if need_db else (0, 0)
        db = self.xp.empty(channels, dtype) if need_db else None
        precision = self._product_precision(dtype)
        tiles = backward_tiles(self.simt_products if precision == "fp32" else [self.products[precision]],
                               weight, data)
        plan = BackwardPlan.of(tiles, weight[:2], data[:2], splits, bias)
        if plan.blocks:
            unused = self._zeros(1, dtype)  # stands for the outputs and scratch not written
            scratch = [self.xp.empty((count, rows * cols), dtype) if count > 1 else unused
                       for (rows, cols, _), (count, _) in ((data, plan.data), (weight, plan.weight))]
            scratch.append(self.xp.empty(bias, dtype) if need_db else unused)
            self._kernel("backward.cu", backward_kernel(name, *tiles), dtype)(
                (plan.blocks,), (tiles[0].threads,),
                (unused if dx is None else dx, dw, unused if db is None else db, *scratch,
                 self._arrivals(plan.counters), *inputs, *sizes,
                 *i32(*plan.data, *plan.weight, plan.bias_slices, *flags)))
        return dx, dw, db
